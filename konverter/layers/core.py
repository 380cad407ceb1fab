"""Core layers: Dense and the layers that are the identity at inference time."""

from __future__ import annotations

import numpy as np

from .activations import apply_activation, relu
from .base import Layer, Tensor, as_int, converter, kernel
from .quantized import quantization, quantized_dense_layer

IDENTITY_AT_INFERENCE = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)


@kernel(fresh=True, row_wise=True)
def dense(x, kernel, bias):
    # The product is a fresh array, so the bias is added in place: no second temporary.
    y = x @ kernel
    y += bias
    return y


@kernel(fresh=True, row_wise=True)
def dense_no_bias(x, kernel):
    return x @ kernel


@kernel(row_wise=True, fuses=(dense, relu))
def dense_relu(x, kernel, bias):
    # Dense followed by ReLU (chosen by konverter.rewrites.in_place), both in place on the fresh product.
    y = x @ kernel
    y += bias
    return np.maximum(y, 0.0, out=y)


def dense_rows(x, kernel, bias, out):
    # Rows of a batch into a preallocated workspace.
    np.matmul(x, kernel, out=out)
    out += bias
    return out


def dense_relu_rows(x, kernel, bias, out):
    np.matmul(x, kernel, out=out)
    out += bias
    return np.maximum(out, 0.0, out=out)


def dense_no_bias_rows(x, kernel, out):
    return np.matmul(x, kernel, out=out)


def dense_into(x, kernel, out):
    # One sample as a 1-D vector, written into a preallocated buffer. When x ends with 1.0 and the
    # bias is the kernel's last row, this one call is x @ kernel + bias.
    return np.dot(x, kernel, out=out)


def dense_vector(x, kernel):
    # One sample as a 1-D vector, into a new array (np.dot has less call overhead than @ here).
    return np.dot(x, kernel)


def dense_relu_into(x, kernel, out, zeros):
    # dense_into, then ReLU in place; comparing with a zero vector is cheaper than with the scalar 0.0.
    np.dot(x, kernel, out=out)
    return np.maximum(out, zeros, out=out)


@converter("Dense", mask="pass")
def dense_layer(layer: Layer) -> Tensor:
    x = layer.input
    units = as_int(layer.get("units"), "Dense units")
    if x.shape is None or not x.shape:
        raise layer.unsupported("Dense on an input without a feature axis")
    features = x.shape[-1]
    if quantization(layer) is not None:
        y = quantized_dense_layer(layer, x, units)
    elif layer.get("use_bias", True):
        kernel, bias = layer.expect_weights((features, units), (units,))
        y = layer.call(dense, x, kernel, bias, shape=x.shape[:-1] + (units,))
    else:
        (kernel,) = layer.expect_weights((features, units))
        y = layer.call(dense_no_bias, x, kernel, shape=x.shape[:-1] + (units,))
    return apply_activation(layer, y, layer.get("activation"))


# tf-keras's Identity does not support masking (it drops the mask); Keras 3's does.
@converter(*IDENTITY_AT_INFERENCE, mask="pass")
@converter("Identity", mask="pass", mask_keras2="drop")
def identity_layer(layer: Layer) -> Tensor:
    layer.expect_weights()
    return layer.input
