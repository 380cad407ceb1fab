"""Bidirectional: a forward and a backward recurrent layer on the same input, merged.

Keras builds the backward layer from the forward config with go_backwards flipped (or takes an
explicit `backward_layer`), reverses the backward sequence back into time order, and forces
zero_output_for_mask = return_sequences on both directions.
"""

from __future__ import annotations

import numpy as np

from ...errors import BadModelFile
from ..base import Layer, converter
from .loops import reverse_time
from .rnn import (
    RNN_CLASSES,
    call_inputs,
    check_states,
    rnn_spec,
    sequence_mask,
    stateful_states,
    weight_count,
    wrapped_config,
)


def merge_concat(a, b):
    return np.concatenate([a, b], axis=-1)


def merge_sum(a, b):
    return a + b


def merge_mul(a, b):
    return a * b


def merge_ave(a, b):
    return (a + b) * 0.5


MERGES = {"concat": merge_concat, "sum": merge_sum, "mul": merge_mul, "ave": merge_ave}


@converter("Bidirectional", mask="own", wraps=("layer", "backward_layer"))
def bidirectional_layer(layer: Layer):
    fwd_cls, fwd_cfg = wrapped_config(layer, "layer")
    if fwd_cls not in RNN_CLASSES:
        raise layer.unsupported(f"Bidirectional around {fwd_cls[:60]}")
    if isinstance(layer.get("backward_layer"), dict):
        bwd_cls, bwd_cfg = wrapped_config(layer, "backward_layer")
        if bwd_cls not in RNN_CLASSES:
            raise layer.unsupported(f"Bidirectional with a backward {bwd_cls[:60]}")
    else:
        bwd_cls, bwd_cfg = fwd_cls, dict(fwd_cfg, go_backwards=not fwd_cfg.get("go_backwards", False))
    x, states = call_inputs(layer)
    mask = sequence_mask(layer, x)
    weights = list(layer.weights)
    n_fwd = weight_count(fwd_cls, fwd_cfg)
    if len(weights) < n_fwd:
        raise BadModelFile(f"{layer.describe()} has {len(weights)} weight arrays, too few for both directions")
    features = x.shape[1]
    fwd = rnn_spec(layer, fwd_cls, fwd_cfg, weights[:n_fwd], features)
    bwd = rnn_spec(layer, bwd_cls, bwd_cfg, weights[n_fwd:], features)
    if fwd.stateful or bwd.stateful:
        if states:
            raise layer.unsupported("stateful=True together with an initial_state")
        fwd_states, fwd_slots = stateful_states(layer, x, fwd.state_shapes)
        bwd_states, bwd_slots = stateful_states(layer, x, bwd.state_shapes)
        slots = fwd_slots + bwd_slots
    else:
        if states and len(states) != fwd.state_count + bwd.state_count:
            raise layer.unsupported(f"{len(states)} initial states for a Bidirectional layer")
        fwd_states, bwd_states = states[: fwd.state_count], states[fwd.state_count :]
        if states:
            check_states(layer, fwd, fwd_states)
            check_states(layer, bwd, bwd_states)
    if fwd.return_sequences != bwd.return_sequences:
        raise layer.unsupported("forward and backward layers disagree on return_sequences")
    sequences = fwd.return_sequences
    y_f, s_f = fwd.run(x, fwd_states, mask, zero_masked=sequences)
    y_b, s_b = bwd.run(x, bwd_states, mask, zero_masked=sequences)
    if fwd.stateful or bwd.stateful:
        for slot, final in zip(slots, s_f + s_b):
            layer.state_output(slot, final)
    if sequences:
        y_b = layer.call(reverse_time, y_b, shape=y_b.shape)
    mode = layer.get("merge_mode", "concat")
    if mode is None:
        outputs = [y_f, y_b]
    elif mode in MERGES:
        if mode == "concat":
            shape = y_f.shape[:-1] + (fwd.units + bwd.units,)
        elif fwd.units != bwd.units:
            raise BadModelFile(f"{layer.describe()} merges {fwd.units} and {bwd.units} units with {mode!r}")
        else:
            shape = y_f.shape
        outputs = [layer.call(MERGES[mode], y_f, y_b, shape=shape)]
    else:
        raise layer.unsupported(f"merge_mode {str(mode)[:40]!r}")
    if sequences:
        for out in outputs:
            out.mask = mask
    if fwd.return_state:
        outputs += s_f + s_b
    return outputs if len(outputs) > 1 else outputs[0]
