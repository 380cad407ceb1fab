"""Augmentation layers at inference (`training` false), as Keras's own source does them.

Almost all of them are the identity at inference: Keras casts the images to float32 or leaves
them as they are (which one is per layer, below), so the generated file returns a float32 copy or
a copy. Two do real work: RandomCrop (which changed between Keras versions, see
`random_crop_layer`) and AutoContrast (active at inference by design). A tf-keras layer called
with `training=True` in the model graph is random at inference too, and is refused.
"""

from __future__ import annotations

import numpy as np

from ...errors import BadModelFile
from ..base import Layer, Tensor, as_float, converter
from .resizing import Image, as_dtype, as_float_image, aspect_window, image_crop, image_input, resize, target_size

# Identity at inference, images cast to float32 first (Keras 3 and tf-keras).
CAST_AT_INFERENCE = (
    "AugMix",
    "CutMix",
    "RandAugment",
    "RandomElasticTransform",
    "RandomErasing",
    "RandomFlip",
    "RandomGaussianBlur",
    "RandomPerspective",
    "RandomRotation",
    "RandomSharpness",
    "RandomShear",
    "RandomTranslation",
    "RandomZoom",
    "Solarization",
)
# Identity at inference, in the input's own dtype in Keras 3 (tf-keras casts every one of its layers to float32).
KEEP_DTYPE_AT_INFERENCE = (
    "Equalization",
    "MaxNumBoundingBoxes",
    "MixUp",
    "RandomBrightness",
    "RandomColorDegeneration",
    "RandomColorJitter",
    "RandomContrast",
    "RandomGrayscale",
    "RandomHue",
    "RandomInvert",
    "RandomPosterization",
    "RandomSaturation",
)
# tf-keras only; they do not cast at inference.
KERAS2_KEEP_DTYPE = ("RandomHeight", "RandomWidth")


def auto_contrast(x, low, span):
    # Keras 3 AutoContrast: stretch each channel of each image over value_range [low, low + span]
    # (minimum and maximum over axes 1 and 2, as Keras takes them); NaN results keep the input.
    images = x.astype(np.float32)
    if (low, span) != (0.0, 255.0):
        images = (images - low) / span * 255.0
    lowest = np.min(images, axis=(1, 2), keepdims=True)
    highest = np.max(images, axis=(1, 2), keepdims=True)
    scale = 255.0 / (highest - lowest)
    offset = -lowest * scale
    result = np.clip(images * scale + offset, 0.0, 255.0)
    if (low, span) != (0.0, 255.0):
        result = result / 255.0 * span + low
    return np.where(np.isnan(result), x, result).astype(np.float32)


def _refuse_training(layer: Layer) -> None:
    # Keras 3 stores training=True in every such call and predict() overrides it; in tf-keras an
    # explicit training=True in the graph wins over predict(), so the layer stays random.
    if layer.keras_major < 3 and layer.kwargs.get("training") is True:
        raise layer.unsupported("called with training=True, so it is random at inference too")


def _image_tensor(layer: Layer) -> Tensor:
    _refuse_training(layer)
    layer.expect_weights()  # seed generators hold no weights Keras saves
    return layer.input


@converter(*CAST_AT_INFERENCE, mask="drop")
def cast_identity_layer(layer: Layer) -> Tensor:
    x = _image_tensor(layer)
    return layer.call(as_dtype, x, shape=x.shape, to="float32")


@converter(*KEEP_DTYPE_AT_INFERENCE, *KERAS2_KEEP_DTYPE, mask="drop")
def identity_layer(layer: Layer) -> Tensor:
    x = _image_tensor(layer)
    dtype = x.dtype if (layer.keras_major >= 3 or layer.class_name in KERAS2_KEEP_DTYPE) else "float32"
    return layer.call(as_dtype, x, shape=x.shape, dtype=dtype, to=dtype)


def _version(layer: Layer) -> tuple[int, int] | None:
    parts = layer.keras_version.split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


@converter("RandomCrop", mask="drop")
def random_crop_layer(layer: Layer) -> Tensor:
    """At inference Keras's RandomCrop does one of three things, by version:

    - tf-keras and Keras 3.0-3.5: crop the centered window of the target's aspect ratio and resize
      it to the target size (bilinear), like CenterCrop's larger-target case (smart_resize);
    - Keras 3.6-3.7: take the target-size window starting at that window's corner, then resize
      (bilinear) if it came out smaller;
    - Keras 3.8 and later: return the images unchanged, whatever the target size (keras-team/keras
      issue 21868): the output keeps the input's shape, although Keras declares the target's.
    """
    _refuse_training(layer)
    layer.expect_weights()
    image = image_input(layer)
    height, width = target_size(layer)
    version = (2, 0) if layer.keras_major < 3 else _version(layer)
    if (height, width) == (image.height, image.width):
        version = version or (3, 8)  # the same size: every version returns the (float32) image
    if version is None:
        raise layer.unsupported(
            f"Keras version {layer.keras_version[:20]!r} unknown: RandomCrop's inference changed in 3.6 and 3.8"
        )
    x = image.tensor
    if version >= (3, 8):
        return layer.call(as_dtype, x, shape=x.shape, dtype=x.dtype, to=x.dtype)
    image = as_float_image(layer, image)
    window = aspect_window(image.height, image.width, height, width)
    if version < (3, 6):
        return resize(layer, image, height, width, "bilinear", window=window)
    top, left = window[:2]
    rows, cols = min(height, image.height - top), min(width, image.width - left)
    crop = layer.call(
        image_crop,
        image.tensor,
        shape=image.shape(rows, cols),
        top=top,
        left=left,
        height=rows,
        width=cols,
        channels_first=image.channels_first,
    )
    if (rows, cols) == (height, width):
        return layer.call(as_dtype, crop, shape=crop.shape, to="float32")
    return resize(layer, Image(crop, image.channels_first, rows, cols), height, width, "bilinear")


@converter("AutoContrast", mask="drop")
def auto_contrast_layer(layer: Layer) -> Tensor:
    layer.expect_weights()
    x = layer.input
    value_range = layer.get("value_range", (0, 255))
    if not isinstance(value_range, (list, tuple)) or len(value_range) != 2:
        raise BadModelFile(f"{layer.describe()} has an invalid value_range")
    low, high = sorted(as_float(v, "value_range") for v in value_range)
    # Keras computes in float32: the range's ends and width are float32 numbers.
    low32 = np.float32(low)
    span = float(np.float32(high) - low32)
    return layer.call(auto_contrast, x, shape=x.shape, low=float(low32), span=span)


@converter("ContrastLimitedAdaptiveHistogramEqualization", mask="drop")
def clahe_layer(layer: Layer) -> Tensor:
    raise layer.unsupported("equalizes histograms at inference (tiles, clip limit, interpolation), not implemented")
