"""Layers that keras.applications defines outside keras.layers: ConvNeXt's LayerScale and
StochasticDepth (Keras 3 and tf-keras alike).

They are not registered serializables: a `.keras` file names them by module
(`keras.src.applications.convnext`, `tf_keras.src.applications.convnext`) with a bare registered
name, a `.h5` file by class name alone. A class of the same name registered by a package
(`registered_name` "package>LayerScale") is somebody else's code and stays refused.
"""

from __future__ import annotations

from .base import Layer, Tensor, as_int, converter
from .normalization import scale_only


def _foreign(entry: dict) -> str | None:
    """Config-level check (graph.unsupported_layers): refuse a same-named custom class."""
    registered = entry.get("registered_name")
    if isinstance(registered, str) and ">" in registered:
        return "custom object; its code is not in the file"
    return None


# Neither supports masking: Keras 3 destroys an incoming mask there (tf-keras cannot even build that model).
@converter("LayerScale", mask="drop")
def layer_scale_layer(layer: Layer) -> Tensor:
    # x * gamma, gamma of shape (projection_dim,) on the last axis; an affine op a Dense before it absorbs.
    x = layer.input
    dim = as_int(layer.get("projection_dim"), "LayerScale projection_dim")
    if x.shape is None or not x.shape or x.shape[-1] not in (dim, None):
        raise layer.unsupported(f"LayerScale of {dim} channels on an input of shape {x.shape}")
    (gamma,) = layer.expect_weights((dim,))
    return layer.call(scale_only, x, gamma, shape=x.shape)


@converter("StochasticDepth", mask="drop")
def stochastic_depth_layer(layer: Layer) -> Tensor:
    # Drops whole residual branches while training only: the identity at inference.
    layer.expect_weights()
    return layer.input


layer_scale_layer.refuses = _foreign  # read by graph.unsupported_layers
stochastic_depth_layer.refuses = _foreign
