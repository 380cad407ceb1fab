"""Image preprocessing layers where inference is simple: CenterCrop (cropping only) and
Resizing (bilinear or nearest, no antialiasing, no aspect-ratio cropping or padding).

Resizing follows tf.image.resize (Keras's TensorFlow backend): half-pixel centers. The source
rows/columns and interpolation weights are computed once at conversion, in float32 like TF.
"""

from __future__ import annotations

import numpy as np

from .base import Layer, Tensor, as_int, converter


def center_crop(x, top, left, height, width):
    return x[:, top : top + height, left : left + width]


def image_resize_nearest(x, rows, cols):
    return x[:, rows][:, :, cols]


def image_resize_bilinear(x, y0, y1, y_lerp, x0, x1, x_lerp):
    # y_lerp has shape (out_height, 1, 1) and x_lerp (out_width, 1): they broadcast over channels.
    top, bottom = x[:, y0], x[:, y1]
    top = top[:, :, x0] + (top[:, :, x1] - top[:, :, x0]) * x_lerp
    bottom = bottom[:, :, x0] + (bottom[:, :, x1] - bottom[:, :, x0]) * x_lerp
    return top + (bottom - top) * y_lerp


def _image_size(layer: Layer) -> tuple[Tensor, int, int, int, int]:
    x = layer.input
    layer.expect_weights()
    if x.rank != 4 or layer.get("data_format", "channels_last") not in (None, "channels_last"):
        raise layer.unsupported("only channels-last images (batch, height, width, channels) are supported")
    height, width = as_int(layer.get("height"), "height"), as_int(layer.get("width"), "width")
    if height <= 0 or width <= 0:
        raise layer.unsupported(f"target size {height}x{width}")
    in_h, in_w = x.shape[0], x.shape[1]
    if in_h is None or in_w is None:
        raise layer.unsupported("images of unknown height or width")
    return x, in_h, in_w, height, width


@converter("CenterCrop")
def center_crop_layer(layer: Layer) -> Tensor:
    x, in_h, in_w, height, width = _image_size(layer)
    if height > in_h or width > in_w:
        raise layer.unsupported("a crop larger than the image (Keras resizes instead)")
    top, left = (in_h - height) // 2, (in_w - width) // 2
    return layer.call(center_crop, x, shape=(height, width, x.shape[2]), top=top, left=left, height=height, width=width)


def _bilinear_axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = np.float32(in_size) / np.float32(out_size)
    source = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(source)
    lower = np.clip(floor, 0, in_size - 1).astype(np.int32)
    upper = np.clip(np.ceil(source), 0, in_size - 1).astype(np.int32)
    return lower, upper, (source - floor).astype(np.float32)


def _nearest_axis(in_size: int, out_size: int) -> np.ndarray:
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.floor((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale)
    return np.clip(source, 0, in_size - 1).astype(np.int32)


@converter("Resizing")
def resizing_layer(layer: Layer) -> Tensor:
    x, in_h, in_w, height, width = _image_size(layer)
    for option in ("crop_to_aspect_ratio", "pad_to_aspect_ratio", "antialias"):
        if layer.get(option):
            raise layer.unsupported(f"{option}=True")
    method = layer.get("interpolation", "bilinear")
    shape = (height, width, x.shape[2])
    if method == "nearest":
        rows, cols = _nearest_axis(in_h, height), _nearest_axis(in_w, width)
        return layer.call(image_resize_nearest, x, rows, cols, shape=shape)
    if method == "bilinear":
        y0, y1, y_lerp = _bilinear_axis(in_h, height)
        x0, x1, x_lerp = _bilinear_axis(in_w, width)
        args = (y0, y1, y_lerp.reshape(-1, 1, 1), x0, x1, x_lerp.reshape(-1, 1))
        return layer.call(image_resize_bilinear, x, *args, shape=shape)
    raise layer.unsupported(f"interpolation {str(method)[:20]!r} (bilinear and nearest are supported)")
