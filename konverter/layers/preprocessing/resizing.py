"""Image resizing and cropping layers: Resizing and CenterCrop (and the resize that RandomCrop does
at inference, in `augmentation`).

Keras resizes with its TensorFlow backend's `tf.image.resize`, and so does Konverter: every method
is a linear map per axis (each output row is a weighted sum of a few input rows), so the source
rows and their weights are computed once at conversion, exactly as TensorFlow's kernels compute
them (half-pixel centers; bicubic through TF's 1024-entry coefficient table; area boxes; the
scale-and-translate kernels of lanczos3/5, gaussian, mitchellcubic and of antialiased bilinear and
bicubic), and the generated file only gathers and adds. Both data formats; the crop of
`crop_to_aspect_ratio` is folded into the source rows, `pad_to_aspect_ratio` pads first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...errors import BadModelFile
from ..base import Layer, Tensor, as_float, as_int, converter

# Resizing methods of Keras 3 (TensorFlow backend) and tf-keras; all are computed exactly.
METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
MAX_SIZE = 1 << 15  # a target height or width beyond this is refused (the file could ask for any size)
MAX_TAPS = 1 << 24  # source rows x output rows of one axis: bounds conversion time and the embedded weights
INT_RANGES = {
    f"{s}int{n}": (np.iinfo(f"{s}int{n}").min, np.iinfo(f"{s}int{n}").max) for s in ("", "u") for n in (8, 16, 32, 64)
}


# ----------------------------------------------------------------------------- generated-file math
def image_crop(x, top, left, height, width, channels_first):
    if channels_first:
        return x[:, :, top : top + height, left : left + width]
    return x[:, top : top + height, left : left + width]


def image_pad(x, pad_height, pad_width, value, channels_first):
    # pad_to_aspect_ratio: the same amount on both sides of the short side, filled with `value`.
    spatial = ((pad_height, pad_height), (pad_width, pad_width))
    widths = ((0, 0), (0, 0)) + spatial if channels_first else ((0, 0),) + spatial + ((0, 0),)
    return np.pad(x, widths, constant_values=value)


def take_axis(x, index, axis):
    # Nearest-neighbour resizing along one axis.
    return np.take(x, index, axis)


def resize_bilinear(x, y0, y1, y_lerp, x0, x1, x_lerp, channels_first):
    # TF's ResizeBilinear, in its order of operations (exact even where Keras rounds the result to
    # integers): interpolate along the width between columns x0 and x1, then along the height.
    if channels_first:
        top, bottom = x[:, :, y0], x[:, :, y1]
        top = top[..., x0] + (top[..., x1] - top[..., x0]) * x_lerp
        bottom = bottom[..., x0] + (bottom[..., x1] - bottom[..., x0]) * x_lerp
        return top + (bottom - top) * y_lerp[:, None]
    top, bottom = x[:, y0], x[:, y1]
    top = top[:, :, x0] + (top[:, :, x1] - top[:, :, x0]) * x_lerp[:, None]
    bottom = bottom[:, :, x0] + (bottom[:, :, x1] - bottom[:, :, x0]) * x_lerp[:, None]
    return top + (bottom - top) * y_lerp[:, None, None]


def resample_axis(x, index, weight, axis):
    # Resizing along one axis: output row o is the sum over taps k of weight[k, o] * x[index[k, o]]
    # (the weights are shaped to broadcast over the axes after `axis`).
    y = np.take(x, index[0], axis) * weight[0]
    for k in range(1, len(index)):
        y += np.take(x, index[k], axis) * weight[k]
    return y


def as_dtype(x, to):
    # Keras casts images to float32 first. Always a new array, so that a layer that is the identity
    # at inference never hands back (or lets later code write into) the caller's input.
    return x.astype(to)


def round_saturate(x, to, low, high):
    # Keras 3 gives integer images back in their own dtype: rounded half to even, clipped to its range.
    return np.clip(np.rint(x), low, high).astype(to)


# ----------------------------------------------------------------------------- resampling weights (conversion)
def _keys_cubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(
        x >= 2, 0.0, np.where(x >= 1, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, (1.5 * x - 2.5) * x * x + 1.0)
    )


def _mitchell_cubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    far = ((-7.0 / 18.0 * x + 2.0) * x - 10.0 / 3.0) * x + 16.0 / 9.0
    return np.where(x >= 2, 0.0, np.where(x >= 1, far, (7.0 / 6.0 * x - 2.0) * x * x + 8.0 / 9.0))


def _lanczos(radius: float) -> Callable[[np.ndarray], np.ndarray]:
    def kernel(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        safe = np.where(x <= 1e-3, 1.0, x)
        value = radius * np.sin(np.pi * safe) * np.sin(np.pi * safe / radius) / (np.pi * np.pi * safe * safe)
        return np.where(x > radius, 0.0, np.where(x <= 1e-3, 1.0, value))

    return kernel


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _gaussian(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)  # TF: radius 1.5, sigma = radius / 3
    return np.where(x >= 1.5, 0.0, np.exp(-x * x / (2.0 * 0.5 * 0.5)))


# tf.image.resize's scale_and_translate kernels: (function, radius).
KERNELS = {
    "lanczos3": (_lanczos(3.0), 3.0),
    "lanczos5": (_lanczos(5.0), 5.0),
    "gaussian": (_gaussian, 1.5),
    "mitchellcubic": (_mitchell_cubic, 2.0),
    "keyscubic": (_keys_cubic, 2.0),
    "triangle": (_triangle, 1.0),
}
F32 = np.float32
TINY = 1000.0 * float(np.finfo(np.float32).tiny)  # TF normalizes weights only when their sum exceeds this


def _scale_translate_taps(n_in: int, n_out: int, kernel: str, antialias: bool) -> list:
    """TF's ScaleAndTranslate (translation 0): per output, (source rows, weights)."""
    fn, radius = KERNELS[kernel]
    inv_scale = F32(1.0) / (F32(n_out) / F32(n_in))
    kernel_scale = max(inv_scale, F32(1.0)) if antialias else F32(1.0)
    reach = F32(radius) * kernel_scale
    taps = []
    for o in range(n_out):
        sample = F32(o + 0.5) * inv_scale
        start = min(max(math.ceil(sample - reach - F32(0.5)), 0), n_in - 1)
        end = min(max(math.floor(sample + reach - F32(0.5)), 0), n_in - 1) + 1
        rows = np.arange(start, end)
        weights = fn((rows.astype(F32) + F32(0.5) - sample) * (F32(1.0) / kernel_scale)).astype(np.float64)
        total = weights.sum()
        if abs(total) >= TINY:
            weights = weights / total
        taps.append((rows, weights))
    return taps


def bilinear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF's ResizeBilinear along one axis (half-pixel centers, float32 like TF): lower and upper
    source rows and the interpolation weight of the upper one."""
    scale = np.float32(n_in) / np.float32(n_out)
    source = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(source)
    lower = np.clip(floor, 0, n_in - 1).astype(np.int32)
    upper = np.clip(np.ceil(source), 0, n_in - 1).astype(np.int32)
    return lower, upper, (source - floor).astype(np.float32)


def _bicubic_table() -> np.ndarray:
    # TF's ResizeBicubic reads Keys cubic coefficients (A = -0.5) from a table of 1024 steps per pixel.
    steps, a = 1024, -0.5
    x = np.arange(steps + 1, dtype=np.float64) / steps
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    return np.stack([near, far], axis=1).astype(np.float32)


def _bicubic_taps(n_in: int, n_out: int) -> list:
    """TF's ResizeBicubic with half-pixel centers: taps outside the image get weight 0, the rest renormalized."""
    table = _bicubic_table()
    steps = len(table) - 1
    scale = F32(n_in) / F32(n_out)
    taps = []
    for o in range(n_out):
        source = (F32(o) + F32(0.5)) * scale - F32(0.5)
        base = int(np.floor(source))
        offset = int(np.rint(F32(source - F32(base)) * F32(steps)))
        coeffs = (table[offset, 1], table[offset, 0], table[steps - offset, 0], table[steps - offset, 1])
        rows = np.arange(base - 1, base + 3)
        weights = np.array([float(c) if 0 <= r < n_in else 0.0 for c, r in zip(coeffs, rows)])
        total = float(np.sum(weights.astype(np.float32), dtype=np.float32))
        if abs(total) >= TINY:
            weights = weights / total
        inside = (rows >= 0) & (rows < n_in)
        taps.append((rows[inside], weights[inside]))
    return taps


def _area_taps(n_in: int, n_out: int) -> list:
    """TF's ResizeArea: each output averages the input box it covers (fractional cells weighted)."""
    scale = F32(n_in) / F32(n_out)
    taps = []
    for o in range(n_out):
        low, high = F32(o) * scale, F32(o + 1) * scale
        rows, weights = [], []
        for i in range(int(np.floor(low)), int(np.ceil(high))):
            if i < low:
                part = scale if F32(i + 1) > high else F32(i + 1) - low
            else:
                part = high - F32(i) if F32(i + 1) > high else F32(1.0)
            rows.append(min(max(i, 0), n_in - 1))
            weights.append(float(part) / float(scale))
        taps.append((np.array(rows), np.array(weights)))
    return taps


def _nearest_taps(n_in: int, n_out: int) -> list:
    scale = F32(n_in) / F32(n_out)
    source = np.floor((np.arange(n_out, dtype=np.float32) + F32(0.5)) * scale)
    index = np.clip(source, 0, n_in - 1).astype(np.int64)
    return [(np.array([i]), np.array([1.0])) for i in index]


def resize_taps(n_in: int, n_out: int, method: str, antialias: bool) -> list:
    """Per output row, the source rows and weights of tf.image.resize(method, antialias) along one axis."""
    if method == "nearest":  # TF ignores antialias for nearest and area
        return _nearest_taps(n_in, n_out)
    if method == "area":
        return _area_taps(n_in, n_out)
    if method == "bilinear":  # without antialias: `bilinear_axis` and `resize_bilinear`
        return _scale_translate_taps(n_in, n_out, "triangle", True)
    if method == "bicubic":
        return _scale_translate_taps(n_in, n_out, "keyscubic", True) if antialias else _bicubic_taps(n_in, n_out)
    return _scale_translate_taps(n_in, n_out, method, antialias)


def _tap_arrays(taps: list, start: int) -> tuple[np.ndarray, np.ndarray]:
    """(taps, n_out) source indices (offset by `start`) and weights; short rows padded with weight 0."""
    width = max(len(rows) for rows, _ in taps)
    index = np.zeros((width, len(taps)), dtype=np.int32)
    weight = np.zeros((width, len(taps)), dtype=np.float32)
    for o, (rows, weights) in enumerate(taps):
        index[: len(rows), o] = rows + start
        index[len(rows) :, o] = start + (rows[0] if len(rows) else 0)
        weight[: len(rows), o] = weights
    return index, weight


# ----------------------------------------------------------------------------- converters
@dataclass
class Image:
    """An image tensor's layout: which axes are height and width."""

    tensor: Tensor
    channels_first: bool
    height: int
    width: int

    @property
    def axes(self) -> tuple[int, int]:
        return (2, 3) if self.channels_first else (1, 2)

    def shape(self, height: int, width: int) -> tuple:
        channels = self.tensor.shape[0] if self.channels_first else self.tensor.shape[2]
        return (channels, height, width) if self.channels_first else (height, width, channels)


def image_input(layer: Layer) -> Image:
    """The layer's input as a batch of images with known height and width, in either data format."""
    x = layer.input
    data_format = layer.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise BadModelFile(f"{layer.describe()} has data_format {str(data_format)[:30]!r}")
    if x.rank != 4:
        raise layer.unsupported(f"images of rank {x.rank} (a batch of images has rank 4)")
    channels_first = data_format == "channels_first"
    height, width = x.shape[1:3] if channels_first else x.shape[0:2]
    if height is None or width is None:
        raise layer.unsupported("images of unknown height or width")
    return Image(x, channels_first, height, width)


def target_size(layer: Layer) -> tuple[int, int]:
    height, width = as_int(layer.get("height"), "height"), as_int(layer.get("width"), "width")
    if not (0 < height <= MAX_SIZE and 0 < width <= MAX_SIZE):
        raise layer.unsupported(f"target size {height}x{width} (1 to {MAX_SIZE} per side is supported)")
    return height, width


def as_float_image(layer: Layer, image: Image) -> Image:
    """The image as float32, as Keras casts it before resizing (resampling makes new arrays anyway)."""
    if image.tensor.dtype == "float32":
        return image
    x = layer.call(as_dtype, image.tensor, shape=image.tensor.shape, to="float32")
    return Image(x, image.channels_first, image.height, image.width)


def aspect_window(height: int, width: int, target_height: int, target_width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centered window with the target's aspect ratio (smart_resize)."""
    crop_height = max(min(height, int(float(width * target_height) / target_width)), 1)
    crop_width = max(min(width, int(float(height * target_width) / target_height)), 1)
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def resize(
    layer: Layer,
    image: Image,
    height: int,
    width: int,
    method: str,
    antialias: bool = False,
    window: tuple[int, int, int, int] | None = None,
) -> Tensor:
    """Record tf.image.resize of `image` (or of its `window`: top, left, height, width) to height x width."""
    top, left, in_height, in_width = window or (0, 0, image.height, image.width)
    x = image.tensor
    if method == "bilinear" and not antialias:
        y0, y1, y_lerp = bilinear_axis(in_height, height)
        x0, x1, x_lerp = bilinear_axis(in_width, width)
        return layer.call(
            resize_bilinear,
            x,
            y0 + top,
            y1 + top,
            y_lerp,
            x0 + left,
            x1 + left,
            x_lerp,
            shape=image.shape(height, width),
            channels_first=image.channels_first,
        )
    # Height first; the window's columns are then picked by the width pass's source indices.
    passes = (
        (image.axes[0], in_height, height, top, (height, image.width)),
        (image.axes[1], in_width, width, left, (height, width)),
    )
    for axis, n_in, n_out, start, size in passes:
        if n_in * n_out > MAX_TAPS:
            raise layer.unsupported(f"resizing {n_in} to {n_out} pixels (over Konverter's size limit)")
        index, weight = _tap_arrays(resize_taps(n_in, n_out, method, antialias), start)
        if method == "nearest":
            x = layer.call(take_axis, x, index[0], shape=image.shape(*size), axis=axis)
        else:
            # The weights of output row o broadcast over the axes after `axis`.
            weight = weight.reshape(weight.shape + (1,) * (3 - axis))
            x = layer.call(resample_axis, x, index, weight, shape=image.shape(*size), axis=axis)
    return x


def back_to_input_dtype(layer: Layer, y: Tensor, dtype: str) -> Tensor:
    """Keras 3 returns integer images in their own dtype (rounded, saturated); floats stay float32."""
    if layer.keras_major < 3 or dtype not in INT_RANGES:
        return y
    low, high = INT_RANGES[dtype]
    return layer.call(round_saturate, y, shape=y.shape, dtype=dtype, to=dtype, low=int(low), high=int(high))


def interpolation(layer: Layer, offered: tuple = METHODS) -> str:
    method = layer.get("interpolation", "bilinear")
    if method not in offered:
        raise layer.unsupported(f"interpolation {str(method)[:20]!r} (supported: {', '.join(offered)})")
    return method


@converter("Resizing", mask="drop")
def resizing_layer(layer: Layer) -> Tensor:
    layer.expect_weights()
    image = image_input(layer)
    height, width = target_size(layer)
    method = interpolation(layer)
    crop, pad = bool(layer.get("crop_to_aspect_ratio")), bool(layer.get("pad_to_aspect_ratio"))
    if crop and pad:
        raise BadModelFile(f"{layer.describe()} has both crop_to_aspect_ratio and pad_to_aspect_ratio")
    if pad and layer.get("fill_mode", "constant") != "constant":
        raise layer.unsupported(f"fill_mode {str(layer.get('fill_mode'))[:20]!r} (Keras supports only 'constant')")
    dtype = image.tensor.dtype
    antialias = bool(layer.get("antialias", False))
    exact = method == "nearest" or (method == "bilinear" and not antialias)
    if layer.keras_major >= 3 and dtype in INT_RANGES and not exact:
        # Keras rounds the result back to integers, so values at .5 would need TF's exact arithmetic.
        raise layer.unsupported(
            f"{dtype} images with interpolation {method!r} (Keras rounds them; exact for bilinear and nearest only)"
        )
    image = as_float_image(layer, image)
    window = aspect_window(image.height, image.width, height, width) if crop else None
    if pad:
        pad_height = max(image.height, int(float(image.width * height) / width))
        pad_width = max(image.width, int(float(image.height * width) / height))
        top, left = (pad_height - image.height) // 2, (pad_width - image.width) // 2
        fill = as_float(layer.get("fill_value", 0.0), "fill_value")
        size = (image.height + 2 * top, image.width + 2 * left)
        padded = layer.call(
            image_pad,
            image.tensor,
            shape=image.shape(*size),
            pad_height=top,
            pad_width=left,
            value=fill,
            channels_first=image.channels_first,
        )
        image = Image(padded, image.channels_first, *size)
    y = resize(layer, image, height, width, method, antialias, window)
    return back_to_input_dtype(layer, y, dtype)


@converter("CenterCrop", mask="drop")
def center_crop_layer(layer: Layer) -> Tensor:
    layer.expect_weights()
    image = image_input(layer)
    height, width = target_size(layer)
    if height <= image.height and width <= image.width:
        top, left = (image.height - height) // 2, (image.width - width) // 2
        shape = image.shape(height, width)
        crop = layer.call(
            image_crop,
            image.tensor,
            shape=shape,
            top=top,
            left=left,
            height=height,
            width=width,
            channels_first=image.channels_first,
        )
        return layer.call(as_dtype, crop, shape=shape, to="float32")  # a new array, never a view of the input
    image = as_float_image(layer, image)
    # A target larger than the image on either side: Keras crops to the target's aspect ratio and resizes.
    return resize(
        layer, image, height, width, "bilinear", window=aspect_window(image.height, image.width, height, width)
    )
