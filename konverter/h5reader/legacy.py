"""Legacy HDF5 full-model files: Keras 2.0-2.2, tf.keras / tf-keras 2.x and Keras 3's `.h5` writer."""

from __future__ import annotations

from ..errors import BadModelFile
from . import config as cfgmod
from .hdf5 import WeightSet, walk
from .model import ModelFile
from .text import TextBudget, as_str, parse_json, read_names, shown


def read_legacy(f, path: str, weights: WeightSet, budget: TextBudget) -> ModelFile:
    """The config and weight layout of a legacy HDF5 file; weights as numbers into `weights`."""
    attrs = f.attrs
    if "model_config" not in attrs:
        if read_names(attrs, "layer_names", budget) is not None or "layers" in f or "vars" in f:
            raise BadModelFile(
                "this is a weights-only file (save_weights); Konverter needs a full model "
                "saved with model.save('model.h5') or model.save('model.keras')"
            )
        raise BadModelFile("this HDF5 file is not a Keras model (no model_config attribute)")
    config = parse_json(as_str(attrs["model_config"]), "the model config")
    version = as_str(attrs["keras_version"]) if "keras_version" in attrs else "1"
    backend = as_str(attrs["backend"]) if "backend" in attrs else ""
    model = ModelFile(path, "h5", version, backend, config)
    cfgmod.class_of(config)
    root = walk(f, "model_weights") if "model_weights" in f else f
    layer_names = read_names(root.attrs, "layer_names", budget) or []
    cfgmod.require_model(config)
    entries = {cfgmod.name_of(e): e for e in cfgmod.sublayers(config)}
    for name in layer_names:
        group = walk(root, name)
        names = read_names(group.attrs, "weight_names", budget) or []
        numbers = [weights.add(group, w) for w in names]
        if not numbers:
            continue
        entry = entries.get(name)
        if entry is not None and cfgmod.is_model(entry):
            _spread_nested(model, entry, (name,), names, numbers)
        else:
            model.weights[(name,)] = numbers
            model.weight_names[(name,)] = names
    return model


def _spread_nested(model: ModelFile, entry: dict, prefix: tuple, names: list, numbers: list) -> None:
    """A nested model is one group holding all its descendants' weights: assign each by name.

    Keras orders them all-trainable-then-all-non-trainable across sublayers, so position says
    little; the owning layer's name appears as a component of each weight name instead
    ("dense/kernel:0"). Keras 3 also prefixes weights inside a nested Sequential with its name
    ("seq/dense/kernel"), which tells apart equally named layers at different depths.
    """
    leaves = cfgmod.leaf_paths(entry, prefix)
    by_name: dict[str, list] = {}
    for leaf in leaves:
        by_name.setdefault(leaf[-1], []).append(leaf)
    seen: dict[str, int] = {}
    for wname, number in zip(names, numbers):
        parts = wname.split(":")[0].split("/")[:-1]
        owner = None
        for i, part in enumerate(parts):
            candidates = by_name.get(part)
            if not candidates:
                continue
            # Prefer the leaf whose enclosing models' names precede its own in the weight name,
            # then the one with the fewest enclosing models ("dense/kernel" is the shallow one).
            ranks = [_match_rank(leaf[len(prefix) : -1], parts[:i]) for leaf in candidates]
            candidates = [leaf for leaf, r in zip(candidates, ranks) if r == max(ranks)]
            # Identical weight names cannot share one HDF5 group, so this is only a safety net.
            n = seen.get(wname, 0)
            seen[wname] = n + 1
            owner = candidates[n % len(candidates)]
            break
        if owner is None:
            raise BadModelFile(f"weight {shown(wname)} of nested model {shown(prefix[-1])} matches none of its layers")
        model.weights.setdefault(owner, []).append(number)
        model.weight_names.setdefault(owner, []).append(wname)


def _match_rank(ancestors: tuple, before: list) -> tuple:
    """(trailing names shared by the leaf's enclosing models and the weight-name components
    before the leaf's name, minus the nesting depth): larger is a better match."""
    n = 0
    while n < len(ancestors) and n < len(before) and ancestors[-1 - n] == before[-1 - n]:
        n += 1
    return n, -len(ancestors)
