"""Core layers: Dense and the layers that are the identity at inference time."""

from __future__ import annotations

from .activations import apply_activation
from .base import Layer, Tensor, as_int, converter

IDENTITY_AT_INFERENCE = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
)


def dense(x, kernel, bias):
    return x @ kernel + bias


def dense_no_bias(x, kernel):
    return x @ kernel


@converter("Dense", mask="pass")
def dense_layer(layer: Layer) -> Tensor:
    x = layer.input
    units = as_int(layer.get("units"), "Dense units")
    if x.shape is None or not x.shape:
        raise layer.unsupported("Dense on an input without a feature axis")
    features = x.shape[-1]
    if layer.get("use_bias", True):
        kernel, bias = layer.expect_weights((features, units), (units,))
        y = layer.call(dense, x, kernel, bias, shape=x.shape[:-1] + (units,))
    else:
        (kernel,) = layer.expect_weights((features, units))
        y = layer.call(dense_no_bias, x, kernel, shape=x.shape[:-1] + (units,))
    return apply_activation(layer, y, layer.get("activation"))


@converter(*IDENTITY_AT_INFERENCE, mask="pass")
def identity_layer(layer: Layer) -> Tensor:
    layer.expect_weights()
    return layer.input
