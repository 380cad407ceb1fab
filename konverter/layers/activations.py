"""Activation functions and activation layers (Activation, ReLU, LeakyReLU, PReLU, ELU, Softmax...).

Every function below is plain NumPy on float32 arrays and is copied verbatim into generated
files. They avoid overflow warnings for large |x| (exp only ever sees non-positive values).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BadModelFile, UnsupportedModel
from .base import Layer, Tensor, as_float, converter, kernel

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@kernel(elementwise=True)
def relu(x):
    return np.maximum(x, 0.0)


@kernel(elementwise=True)
def relu6(x):
    return np.clip(x, 0.0, 6.0)


@kernel(elementwise=True)
def relu_general(x, negative_slope, max_value, threshold):
    # Keras's ReLU layer: x above threshold (clipped at max_value), negative_slope*(x - threshold) below.
    y = x * (x > threshold) if threshold != 0.0 else np.maximum(x, 0.0)
    if max_value is not None:
        y = np.clip(y, 0.0, max_value)
    if negative_slope != 0.0:
        y = y - negative_slope * np.maximum(threshold - x, 0.0)
    return y


@kernel(elementwise=True)
def leaky_relu(x, negative_slope):
    return np.where(x > 0.0, x, x * negative_slope)


@kernel(elementwise=True)
def sigmoid(x):
    # exp of -|x| never overflows; both branches are exact rewrites of 1 / (1 + exp(-x)).
    e = np.exp(-np.abs(x))
    return np.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


@kernel(elementwise=True)
def tanh(x):
    return np.tanh(x)


@kernel(elementwise=True)
def hard_sigmoid_keras2(x):
    return np.clip(x * 0.2 + 0.5, 0.0, 1.0)


@kernel(elementwise=True)
def hard_sigmoid(x):
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


@kernel(elementwise=True)
def hard_silu(x):
    return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)


@kernel(elementwise=True)
def softplus(x):
    return np.logaddexp(x, 0.0)


@kernel(elementwise=True)
def softsign(x):
    return x / (1.0 + np.abs(x))


@kernel(elementwise=True)
def elu(x, alpha):
    return np.where(x > 0.0, x, alpha * np.expm1(np.minimum(x, 0.0)))


@kernel(elementwise=True)
def selu(x):
    return SELU_SCALE * np.where(x > 0.0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))


@kernel(elementwise=True)
def celu(x, alpha):
    return np.maximum(x, 0.0) + alpha * np.expm1(np.minimum(x, 0.0) / alpha)


@kernel(elementwise=True)
def exponential(x):
    return np.exp(x)


@kernel(elementwise=True)
def swish(x):
    return x * sigmoid(x)


def erf(x):
    # Abramowitz & Stegun 7.1.26 in float64 (|error| < 1.5e-7), NumPy has no vectorized erf.
    a = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (np.sign(x) * (1.0 - poly * np.exp(-a * a))).astype(x.dtype)


@kernel(elementwise=True)
def gelu(x):
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


@kernel(elementwise=True)
def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * (x * x * x))))


@kernel(elementwise=True)
def mish(x):
    return x * np.tanh(np.logaddexp(x, 0.0))


@kernel(elementwise=True)
def softmax(x, axis):
    # np.maximum.reduce / np.add.reduce are what np.max / np.sum run, without ~1 us of Python dispatch.
    e = np.exp(x - np.maximum.reduce(x, axis=axis, keepdims=True))
    return e / np.add.reduce(e, axis=axis, keepdims=True)


MASK_PENALTY = -1e9  # the score Keras gives a masked position before a softmax


def hide_masked(x, keep, value, additive):
    # Keras's ways of keeping masked positions (keep False) out of a softmax: add (1 - keep) * value
    # (tf-keras, Keras 3 before 3.13: a float mask counts as it is), or put `value` in their place
    # (later Keras 3 and the attention kernels: a non-boolean mask keeps what is above 0.5).
    if additive:
        return x + (1.0 - keep.astype(x.dtype)) * value
    if keep.dtype != bool:
        keep = keep > 0.5
    return np.where(keep, x, value)


def softmax_masked(x, keep, axis, additive, zero_masked):
    # The Softmax layer called with a mask; Keras 3.10 and later also zero the masked positions
    # (a fully masked row gives zeros, not a uniform distribution).
    y = softmax(hide_masked(x, keep, MASK_PENALTY, additive), axis)
    return np.where(keep if keep.dtype == bool else keep > 0.5, y, 0.0) if zero_masked else y


@kernel(elementwise=True)
def log_softmax(x, axis):
    shifted = x - np.maximum.reduce(x, axis=axis, keepdims=True)
    return shifted - np.log(np.add.reduce(np.exp(shifted), axis=axis, keepdims=True))


@kernel(elementwise=True)
def log_sigmoid(x):
    return -np.logaddexp(-x, 0.0)


def squareplus(x, b):
    return (x + np.sqrt(x * x + b)) / 2.0


def sparse_plus(x):
    return np.where(x <= -1.0, 0.0, np.where(x < 1.0, 0.25 * (x + 1.0) ** 2, x)).astype(x.dtype)


def sparse_sigmoid(x):
    return np.clip(0.5 * (x + 1.0), 0.0, 1.0)


def hard_tanh(x):
    return np.clip(x, -1.0, 1.0)


def tanh_shrink(x):
    return x - np.tanh(x)


def soft_shrink(x, threshold):
    return np.where(x > threshold, x - threshold, np.where(x < -threshold, x + threshold, 0.0)).astype(x.dtype)


def hard_shrink(x, threshold):
    return np.where(np.abs(x) > threshold, x, 0.0).astype(x.dtype)


def threshold(x, threshold, default_value):
    # keras.ops.threshold: x where x > threshold, else default_value.
    return np.where(x > threshold, x, default_value).astype(x.dtype)


def glu(x, axis):
    a, b = np.split(x, 2, axis=axis)
    return a * sigmoid(b)


def sparsemax(x, axis):
    # Projection onto the simplex (Martins & Astudillo 2016) along `axis`.
    z = -np.sort(-x, axis=axis)
    cumsum = np.cumsum(z, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    k = np.arange(1, x.shape[axis] + 1, dtype=x.dtype).reshape(shape)
    support = z - (cumsum - 1.0) / k > 0.0
    count = np.sum(support, axis=axis, keepdims=True)
    tau = (np.sum(np.where(support, cumsum, 0.0), axis=axis, keepdims=True) - 1.0) / count
    return np.maximum(x - tau, 0.0).astype(x.dtype)


@kernel(fresh=True, row_wise=True)
def prelu(x, alpha):
    return np.maximum(x, 0.0) + alpha * np.minimum(x, 0.0)


# In-place variants, chosen by konverter.rewrites.in_place only for a fresh array that nothing else reads.


@kernel(in_place_of=relu)
def relu_inplace(x):
    return np.maximum(x, 0.0, out=x)


@kernel(in_place_of=tanh)
def tanh_inplace(x):
    return np.tanh(x, out=x)


@kernel(in_place_of=softmax)
def softmax_inplace(x, axis):
    # ufunc.reduce: what np.max/np.sum compute, without their Python-level wrappers (2.6 us less).
    x -= np.maximum.reduce(x, axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= np.add.reduce(x, axis=axis, keepdims=True)
    return x


# name -> (function, keyword arguments); "linear" is handled by the caller (no call at all).
_SIMPLE = {
    "relu": (relu, {}),
    "relu6": (relu6, {}),
    "sigmoid": (sigmoid, {}),
    "tanh": (tanh, {}),
    "softplus": (softplus, {}),
    "softsign": (softsign, {}),
    "elu": (elu, {"alpha": 1.0}),
    "selu": (selu, {}),
    "celu": (celu, {"alpha": 1.0}),
    "exponential": (exponential, {}),
    "swish": (swish, {}),
    "silu": (swish, {}),
    "gelu": (gelu, {}),
    "mish": (mish, {}),
    "hard_silu": (hard_silu, {}),
    "hard_swish": (hard_silu, {}),
    "leaky_relu": (leaky_relu, {"negative_slope": 0.2}),
    "log_sigmoid": (log_sigmoid, {}),
    "squareplus": (squareplus, {"b": 4.0}),
    "sparse_plus": (sparse_plus, {}),
    "sparse_sigmoid": (sparse_sigmoid, {}),
    "hard_tanh": (hard_tanh, {}),
    "tanh_shrink": (tanh_shrink, {}),
    "soft_shrink": (soft_shrink, {"threshold": 0.5}),
    "hard_shrink": (hard_shrink, {"threshold": 0.5}),
    # Only as a keras.ops node (the activation needs its arguments, so it never appears by name).
    "threshold": (threshold, {"threshold": None, "default_value": None}),
}
_AXIS = {"softmax": softmax, "softmax_v2": softmax, "log_softmax": log_softmax, "sparsemax": sparsemax, "glu": glu}
ACTIVATION_NAMES = sorted(["linear", "hard_sigmoid", *(n for n in _SIMPLE if n != "threshold"), *_AXIS])


def activation_name(value: object, layer: Layer) -> str:
    """The activation's name from a config value: a string, None, or Keras 3's function dict."""
    if value is None:
        return "linear"
    if isinstance(value, dict):
        # Keras 3 may write {"module": "keras.activations", "class_name": "function", "config": "relu"}.
        inner = value.get("config")
        if (
            value.get("class_name") == "function"
            and isinstance(inner, str)
            and value.get("module")
            in (
                "keras.activations",
                "keras.src.activations.activations",
                None,
            )
        ):
            value = inner
        elif isinstance(value.get("class_name"), str) and value.get("class_name") in _LAYER_ACTIVATIONS:
            raise layer.unsupported(f"activation given as a layer object {value['class_name']!r}")
        else:
            raise layer.unsupported(f"custom activation {str(value.get('class_name'))[:80]!r}")
    if not isinstance(value, str):
        raise BadModelFile(f"{layer.describe()} has an activation of type {type(value).__name__}")
    return value


def apply_activation(layer: Layer, x: Tensor, value: object) -> Tensor:
    """Record the activation named by a config value; its math depends on the writer's Keras version."""
    name = activation_name(value, layer)
    if name == "linear":
        return x
    if name == "gelu" and layer.keras_major < 2:
        raise layer.unsupported("gelu in a Keras 1 file")
    return record_activation(layer, x, name)


def activation_options(name: str) -> set:
    """The keyword arguments activation `name` takes (besides x)."""
    if name in _AXIS:
        return {"axis"}
    if name == "gelu":
        return {"approximate"}
    return set(_SIMPLE[name][1]) if name in _SIMPLE else set()


def record_activation(layer: Layer, x: Tensor, name: str, options: dict | None = None, axis: object = -1) -> Tensor:
    """Record activation `name` on `x`. `options` (e.g. a keras.ops node's config) override the
    keyword defaults in _SIMPLE (each checked as a number); `axis` is a non-negative axis, a tuple
    of them, or -1, for softmax-like activations."""
    options = options or {}
    if name == "hard_sigmoid":
        fn = hard_sigmoid_keras2 if layer.keras_major < 3 else hard_sigmoid
        return layer.call(fn, x, shape=x.shape)
    if name in _AXIS:
        shape = _glu_shape(layer, x, axis) if name == "glu" else x.shape
        return layer.call(_AXIS[name], x, shape=shape, axis=axis)
    if name not in _SIMPLE:
        raise UnsupportedModel(f"{layer.describe()}: unknown activation {name[:80]!r}")
    fn, defaults = _SIMPLE[name]
    if name == "gelu" and options.get("approximate", False):
        fn = gelu_tanh  # keras.ops.gelu defaults to the tanh approximation, the activation "gelu" does not
    kwargs = {}
    for key, default in defaults.items():
        value = options.get(key, default)
        if value is None:
            raise BadModelFile(f"{layer.describe()} has no {key}")
        kwargs[key] = as_float(value, f"{layer.describe()} {key}")
    if name == "celu" and kwargs["alpha"] == 0.0:
        raise layer.unsupported("celu with alpha 0 (Keras divides by alpha)")
    return layer.call(fn, x, shape=x.shape, **kwargs)


def _glu_shape(layer: Layer, x: Tensor, axis: object) -> tuple | None:
    if not isinstance(axis, int) or x.shape is None or not x.shape:
        raise layer.unsupported(f"glu over axis {str(axis)[:20]}")
    i = axis - 1 if axis > 0 else len(x.shape) + axis
    size = x.shape[i]
    if size is None:
        return x.shape
    if size % 2:
        raise BadModelFile(f"{layer.describe()}: glu splits an axis of odd size {size}")
    return x.shape[:i] + (size // 2,) + x.shape[i + 1 :]


# ----------------------------------------------------------------------------- layers


@converter("Activation", mask="pass")
def activation_layer(layer: Layer) -> Tensor:
    return apply_activation(layer, layer.input, layer.get("activation"))


@converter("ReLU", mask="pass")
def relu_layer(layer: Layer) -> Tensor:
    return record_relu(layer, layer.input)


def record_relu(layer: Layer, x: Tensor) -> Tensor:
    """Keras's relu with the config's `negative_slope`, `max_value` and `threshold` (the ReLU layer's,
    and the operation ReLU that `keras.activations.relu` records on a symbolic tensor)."""
    max_value = layer.get("max_value")
    max_value = None if max_value is None else as_float(max_value, "ReLU max_value")
    slope = as_float(layer.get("negative_slope", 0.0) or 0.0, "ReLU negative_slope")
    threshold = as_float(layer.get("threshold", 0.0) or 0.0, "ReLU threshold")
    if slope == 0.0 and threshold == 0.0 and max_value is None:
        return layer.call(relu, x, shape=x.shape)
    if slope == 0.0 and threshold == 0.0 and max_value == 6.0:
        return layer.call(relu6, x, shape=x.shape)
    if slope != 0.0 and threshold == 0.0 and max_value is None:
        return layer.call(leaky_relu, x, shape=x.shape, negative_slope=slope)
    return layer.call(relu_general, x, shape=x.shape, negative_slope=slope, max_value=max_value, threshold=threshold)


@converter("LeakyReLU", mask="pass")
def leaky_relu_layer(layer: Layer) -> Tensor:
    # Keras 2 calls the slope `alpha`, Keras 3 `negative_slope`; the layer's default is 0.3 in both.
    slope = layer.get("negative_slope", layer.get("alpha", 0.3))
    return layer.call(leaky_relu, layer.input, shape=layer.input.shape, negative_slope=as_float(slope, "slope"))


@converter("ELU", mask="pass")
def elu_layer(layer: Layer) -> Tensor:
    alpha = as_float(layer.get("alpha", 1.0), "ELU alpha")
    return layer.call(elu, layer.input, shape=layer.input.shape, alpha=alpha)


@converter("ThresholdedReLU", mask="pass")
def thresholded_relu_layer(layer: Layer) -> Tensor:
    theta = as_float(layer.get("theta", 1.0), "ThresholdedReLU theta")
    x = layer.input
    return layer.call(relu_general, x, shape=x.shape, negative_slope=0.0, max_value=None, threshold=theta)


@converter("Softmax", mask="own")
def softmax_layer(layer: Layer) -> Tensor:
    x = layer.input
    axis = layer.get("axis", -1)
    axes = axis if isinstance(axis, list) else [axis]
    norm = tuple(sorted(layer.axis(a, x.rank) for a in axes))
    if 0 in norm:
        raise layer.unsupported("softmax over the batch axis")
    axis = norm[0] if len(norm) == 1 else norm
    keep = layer.call_mask(x)
    if keep is None:
        return layer.call(softmax, x, shape=x.shape, axis=axis)
    if len(keep.shape) != len(x.shape) or any(m not in (1, d) for m, d in zip(keep.shape, x.shape) if m and d):
        # A mask of lower rank would meet the input right-aligned, its batch axis on another axis.
        raise layer.unsupported(f"a mask of shape {keep.shape} for input {x.shape} (it must have the input's rank)")
    additive, zero_masked = softmax_mask_rule(layer, keep)
    y = layer.call(softmax_masked, x, keep, shape=x.shape, axis=axis, additive=additive, zero_masked=zero_masked)
    y.mask = keep
    return y


def softmax_mask_rule(layer: Layer, keep: Tensor) -> tuple[bool, bool]:
    """(additive, zero_masked) of `softmax_masked` for the Keras that wrote the file."""
    if layer.keras_major < 3:
        return not layer.get("robust_masking", False), False
    release = layer.release()
    if release is None:
        raise layer.unsupported(f"a mask, in a file of unknown Keras version {layer.keras_version[:20]!r}")
    if release < (3, 10):
        return True, False
    if release < (3, 13):
        if keep.dtype != "bool":  # Keras scales the result by the mask's values
            raise layer.unsupported(f"a {keep.dtype} mask (Keras {release[0]}.{release[1]} scales by its values)")
        return True, True
    return False, True


@converter("PReLU", mask="pass")
def prelu_layer(layer: Layer) -> Tensor:
    x = layer.input
    (alpha,) = layer.expect_weights(None)
    shared = layer.get("shared_axes") or []
    shape = list(x.shape)
    for axis in shared if isinstance(shared, list) else [shared]:
        shape[layer.axis(axis, x.rank) - 1] = 1
    if alpha.size != int(np.prod([d if d is not None else 1 for d in shape])) or alpha.ndim not in (len(shape), 1):
        raise BadModelFile(f"{layer.describe()} alpha has shape {alpha.shape}, its input implies {tuple(shape)}")
    alpha = alpha.reshape([d if d is not None else 1 for d in shape])
    return layer.call(prelu, x, alpha, shape=x.shape)


_LAYER_ACTIVATIONS = {"ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU"}
