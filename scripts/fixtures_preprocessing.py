"""Fixtures for preprocessing layers inside models (issue 12): resizing and cropping, augmentation
layers at inference, CategoryEncoding, Discretization, Hashing, IntegerLookup and StringLookup.

Run with the fixture virtualenv: `/work/venv-keras/bin/python scripts/fixtures_preprocessing.py [--only NAME]`.
Every model is tiny. An adapted lookup vocabulary exists only in `.keras` archives (Keras 3's `.h5`
loses it, tf-keras cannot write it to `.h5`), so those fixtures are `.keras` only. `random_crop_v35`/`_v37` are the
Keras 3 `.keras` file with the Keras version in metadata.json rewritten, and references computed
with Keras's own smart_resize / image.resize as those versions' RandomCrop called them.
"""

from __future__ import annotations

import json
import sys
import zipfile

import fixturelib
import numpy as np
from fixturelib import FIXTURES, is_keras3, rand, run

FAMILY = "preprocessing"
BATCH = 3
# These layers hold no trained weights; randomizing would scramble adapted statistics Keras cached.
fixturelib.randomize = lambda model, seed: None


def keras3_only(build):
    def wrapped(K, fmt):
        return build(K, fmt) if is_keras3(K) else None

    wrapped.__name__ = build.__name__
    return wrapped


def keras_archives_only(build):
    """Lookup layers: Keras 3 .h5 loses an adapted vocabulary and tf-keras cannot write them to .h5."""

    def wrapped(K, fmt):
        return build(K, fmt) if fmt.endswith("keras") else None

    wrapped.__name__ = build.__name__
    return wrapped


def image(shape, seed, scale=1.0, offset=0.0):
    return rand((BATCH,) + shape, seed, scale) + np.float32(offset)


# ----------------------------------------------------------------------------- resizing and cropping
def resizing_methods(K, fmt):
    L = K.layers
    x = K.Input(shape=(5, 7, 2))
    methods = ["bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5"]
    if not is_keras3(K):
        methods += ["gaussian", "mitchellcubic"]  # tf-keras offers these too
    outs = []
    for i, method in enumerate(methods):
        outs.append(L.Resizing(9, 4, interpolation=method)(x))  # up in height, down in width
        outs.append(L.Resizing(3, 11 + i % 2, interpolation=method)(x))
    return K.Model(x, outs), [image((5, 7, 2), 1, 3.0)]


@keras3_only
def resizing_antialias(K, fmt):
    L = K.layers
    x = K.Input(shape=(9, 12, 2))
    outs = [
        L.Resizing(4, 5, interpolation=m, antialias=True)(x) for m in ("bilinear", "bicubic", "lanczos3", "lanczos5")
    ]
    outs.append(L.Resizing(13, 5, interpolation="bilinear", antialias=True)(x))  # antialias only matters downwards
    return K.Model(x, outs), [image((9, 12, 2), 2, 2.0)]


def resizing_aspect(K, fmt):
    L = K.layers
    x = K.Input(shape=(6, 9, 3))
    outs = [
        L.Resizing(4, 4, crop_to_aspect_ratio=True)(x),
        L.Resizing(5, 3, interpolation="nearest", crop_to_aspect_ratio=True)(x),
        L.Resizing(8, 8, interpolation="bicubic", crop_to_aspect_ratio=True)(x),
    ]
    if is_keras3(K):
        outs += [
            L.Resizing(4, 4, pad_to_aspect_ratio=True, fill_value=0.5)(x),
            L.Resizing(10, 5, interpolation="area", pad_to_aspect_ratio=True)(x),
        ]
    return K.Model(x, outs), [image((6, 9, 3), 3)]


@keras3_only
def resizing_channels_first(K, fmt):
    L = K.layers
    x = K.Input(shape=(2, 6, 5))
    cf = "channels_first"
    outs = [
        L.Resizing(4, 7, data_format=cf)(x),
        L.Resizing(3, 3, interpolation="lanczos3", data_format=cf, crop_to_aspect_ratio=True)(x),
        L.Resizing(5, 5, data_format=cf, pad_to_aspect_ratio=True, fill_value=-1.0)(x),
        L.CenterCrop(4, 3, data_format=cf)(x),
        L.CenterCrop(8, 4, data_format=cf)(x),
    ]
    return K.Model(x, outs), [image((2, 6, 5), 4)]


def resizing_uint8(K, fmt):
    L = K.layers
    x = K.Input(shape=(5, 6, 3), dtype="uint8")
    outs = [L.Resizing(7, 4)(x), L.Resizing(3, 3, interpolation="nearest")(x), L.CenterCrop(3, 4)(x)]
    pixels = np.random.RandomState(5).randint(0, 256, size=(BATCH, 5, 6, 3)).astype(np.uint8)
    return K.Model(x, outs), [pixels]


def center_crop(K, fmt):
    L = K.layers
    x = K.Input(shape=(6, 8, 2))
    outs = [
        L.CenterCrop(3, 5)(x),
        L.CenterCrop(6, 8)(x),
        L.CenterCrop(9, 12)(x),  # larger on both sides: crop to the aspect ratio, resize up
        L.CenterCrop(4, 10)(x),  # larger on one side only
    ]
    return K.Model(x, outs), [image((6, 8, 2), 6)]


def random_crop(K, fmt):
    """At inference: tf-keras resizes (smart_resize); Keras 3.15 returns the images unchanged."""
    L = K.layers
    x = K.Input(shape=(6, 8, 2))
    outs = [L.RandomCrop(6, 8)(x), L.RandomCrop(4, 5)(x), L.RandomCrop(7, 5)(x)]
    return K.Model(x, outs), [image((6, 8, 2), 7)]


# ----------------------------------------------------------------------------- augmentation at inference
KERAS2_AUGMENT = [
    ("RandomFlip", ()),
    ("RandomTranslation", (0.2, 0.3)),
    ("RandomRotation", (0.2,)),
    ("RandomZoom", (0.3,)),
    ("RandomContrast", (0.4,)),
    ("RandomBrightness", (0.3,)),
    ("RandomHeight", (0.2,)),
    ("RandomWidth", (0.2,)),
]
KERAS3_AUGMENT = [
    ("AugMix", ()),
    ("CutMix", ()),
    ("MixUp", ()),
    ("RandAugment", ()),
    ("RandomBrightness", (0.3,)),
    ("RandomColorDegeneration", (0.5,)),
    ("RandomColorJitter", ()),
    ("RandomContrast", (0.4,)),
    ("RandomElasticTransform", ()),
    ("RandomErasing", ()),
    ("RandomFlip", ()),
    ("RandomGaussianBlur", ()),
    ("RandomGrayscale", ()),
    ("RandomHue", (0.3, (0, 255))),
    ("RandomInvert", ()),
    ("RandomPerspective", ()),
    ("RandomPosterization", (2,)),
    ("RandomRotation", (0.2,)),
    ("RandomSaturation", (0.5,)),
    ("RandomSharpness", (0.5,)),
    ("RandomTranslation", (0.2, 0.3)),
    ("RandomZoom", (0.3,)),
    ("Solarization", ()),
    ("MaxNumBoundingBoxes", (4,)),
]
# Keras 3.15 cannot write these to .h5 ("cannot pickle 'module' object"); RandomShear it cannot
# reload from either format, so no fixture has it.
KERAS3_H5_UNSAVABLE = {
    "RandomBrightness",
    "RandomColorDegeneration",
    "RandomPosterization",
    "RandomSaturation",
    "RandomSharpness",
    "Solarization",
}


def augment_layers(K, fmt) -> list:
    if not is_keras3(K):
        return KERAS2_AUGMENT
    return [(n, a) for n, a in KERAS3_AUGMENT if fmt != "k3h5" or n not in KERAS3_H5_UNSAVABLE]


def augment_identity(K, fmt):
    """Every augmentation layer of the writer's Keras, each on the model input: unchanged at inference."""
    L = K.layers
    x = K.Input(shape=(6, 6, 3))
    outs = [getattr(L, name)(*args)(x) for name, args in augment_layers(K, fmt)]
    outs.append(L.Dense(2)(L.RandomFlip()(L.RandomZoom(0.2)(x))))  # inside a network too
    return K.Model(x, outs), [image((6, 6, 3), 8, 60.0, 128.0)]


def augment_uint8(K, fmt):
    """Integer images: some layers cast them to float32 at inference, others leave them be (a few of each)."""
    L = K.layers
    x = K.Input(shape=(5, 5, 3), dtype="uint8")
    names = {"RandomFlip", "RandomZoom", "RandomRotation", "RandomContrast", "RandomInvert", "MixUp", "RandomHeight"}
    outs = [getattr(L, name)(*args)(x) for name, args in augment_layers(K, fmt) if name in names]
    pixels = np.random.RandomState(9).randint(0, 256, size=(BATCH, 5, 5, 3)).astype(np.uint8)
    return K.Model(x, outs), [pixels]


@keras3_only
def auto_contrast(K, fmt):
    L = K.layers
    x = K.Input(shape=(4, 5, 3))
    outs = [L.AutoContrast()(x), L.AutoContrast(value_range=(0, 1))(L.Rescaling(1 / 255.0)(x))]
    return K.Model(x, outs), [image((4, 5, 3), 10, 40.0, 100.0)]


# ----------------------------------------------------------------------------- categorical encoding
def codes(shape, high, seed, low=0):
    return np.random.RandomState(seed).randint(low, high, size=(BATCH,) + shape)


def category_encoding(K, fmt):
    L = K.layers
    one = K.Input(shape=(1,), dtype="int64")
    row = K.Input(shape=(4,), dtype="int64")
    scalar = K.Input(shape=(), dtype="int64")
    outs = [
        L.CategoryEncoding(6, output_mode="one_hot")(one),
        L.CategoryEncoding(6, output_mode="multi_hot")(one),
        L.CategoryEncoding(6, output_mode="count")(one),
        L.CategoryEncoding(6, output_mode="multi_hot")(row),
        L.CategoryEncoding(6, output_mode="count")(row),
        L.CategoryEncoding(6, output_mode="one_hot")(scalar),
    ]
    inputs = [codes((1,), 6, 11), codes((4,), 6, 12), codes((), 6, 13)]
    if is_keras3(K):
        outs.append(L.CategoryEncoding(6, output_mode="one_hot")(row))  # Keras 3 only: a row per code
    return K.Model([one, row, scalar], outs), inputs


@keras3_only
def category_encoding_rank3(K, fmt):
    """Keras 3: one_hot of every code; multi_hot and count over axis 1 (not the last), codes outside ignored."""
    L = K.layers
    x = K.Input(shape=(2, 3), dtype="int32")
    col = K.Input(shape=(3, 1), dtype="int32")
    outs = [
        L.CategoryEncoding(5, output_mode="one_hot")(x),
        L.CategoryEncoding(5, output_mode="multi_hot")(x),
        L.CategoryEncoding(5, output_mode="count")(x),
        L.CategoryEncoding(5, output_mode="one_hot")(col),
        L.CategoryEncoding(5, output_mode="count")(col),
    ]
    return K.Model([x, col], outs), [codes((2, 3), 7, 14, low=-2), codes((3, 1), 5, 15)]


@keras3_only
def category_encoding_keras3_codes(K, fmt):
    """Keras 3 at rank 2: codes >= num_tokens are skipped by multi_hot/count and zero rows in one_hot;
    float codes are truncated."""
    L = K.layers
    x = K.Input(shape=(4,), dtype="int64")
    f = K.Input(shape=(3,))
    outs = [
        L.CategoryEncoding(5, output_mode="multi_hot")(x),
        L.CategoryEncoding(5, output_mode="count")(x),
        L.CategoryEncoding(5, output_mode="one_hot")(x),
        L.CategoryEncoding(5, output_mode="count")(f),
    ]
    floats = np.random.RandomState(17).uniform(0, 4.99, size=(BATCH, 3)).astype(np.float32)
    return K.Model([x, f], outs), [codes((4,), 8, 16), floats]


def category_count_weights(K, fmt):
    L = K.layers
    x = K.Input(shape=(4,), dtype="int64")
    w = K.Input(shape=(4,))
    y = L.CategoryEncoding(5, output_mode="count")(x, count_weights=w)
    return K.Model([x, w], y), [codes((4,), 5, 18), rand((BATCH, 4), 19)]


def discretization(K, fmt):
    L = K.layers
    x = K.Input(shape=(4,))
    one = K.Input(shape=(1,))
    bounds = [-1.0, -0.25, 0.0, 0.5, 1.5]
    outs = [
        L.Discretization(bin_boundaries=bounds)(x),
        L.Discretization(bin_boundaries=bounds, output_mode="one_hot")(one),
        L.Discretization(bin_boundaries=bounds, output_mode="multi_hot")(x),
        L.Discretization(bin_boundaries=bounds, output_mode="count")(x),
    ]
    if is_keras3(K):
        outs.append(L.Discretization(bin_boundaries=bounds, output_mode="one_hot")(L.Reshape((4, 1))(x)))
    if fmt != "k2keras":  # tf-keras's .keras loader forgets adapted boundaries (its reload outputs all 0)
        adapted = L.Discretization(num_bins=4, epsilon=0.01)
        adapted.adapt(np.random.RandomState(20).normal(size=(200, 4)).astype(np.float32))
        outs.append(adapted(x))
    data = rand((BATCH, 4), 21)
    data[0, :3] = [0.0, 0.5, -1.0]  # exactly on boundaries
    return K.Model([x, one], outs), [data, rand((BATCH, 1), 22)]


# ----------------------------------------------------------------------------- lookups
def integer_lookup(K, fmt):
    """Vocabularies from the config: OOV, mask, several OOV buckets (floormod), invert, output modes."""
    L = K.layers
    x = K.Input(shape=(5,), dtype="int64")
    vocab = [12, 7, 30, 4]
    outs = [
        L.IntegerLookup(vocabulary=vocab)(x),
        L.IntegerLookup(vocabulary=vocab, mask_token=0)(x),
        L.IntegerLookup(vocabulary=vocab, num_oov_indices=3)(x),
        L.IntegerLookup(vocabulary=vocab, mask_token=0, output_mode="multi_hot")(x),
        L.IntegerLookup(vocabulary=vocab, output_mode="count")(x),
        L.IntegerLookup(vocabulary=vocab, invert=True)(L.IntegerLookup(vocabulary=vocab)(x)),
        L.IntegerLookup(
            vocabulary=[-1, 12, 7], num_oov_indices=1, output_mode="count", pad_to_max_tokens=True, max_tokens=6
        )(x),
        L.IntegerLookup(vocabulary=vocab, mask_token=0, invert=True, oov_token=99)(L.Reshape((5,))(x)),
    ]
    data = np.array([[12, 7, 0, 5, 30], [4, 4, -3, 12, 100], [0, 0, 7, 30, 8]], dtype=np.int64)
    return K.Model(x, outs), [data]


@keras3_only
def integer_lookup_one_hot(K, fmt):
    L = K.layers
    x = K.Input(shape=(3,), dtype="int64")
    col = K.Input(shape=(1,), dtype="int64")
    vocab = [5, 6, 9]
    outs = [
        L.IntegerLookup(vocabulary=vocab, output_mode="one_hot")(x),
        L.IntegerLookup(vocabulary=vocab, output_mode="one_hot")(col),
    ]
    return K.Model([x, col], outs), [np.array([[5, 1, 9], [6, 6, 0], [9, 5, 2]]), np.array([[6], [1], [9]])]


@keras_archives_only
def integer_lookup_adapted(K, fmt):
    """An adapted vocabulary lives in the archive's assets/ (vocabulary.txt)."""
    L = K.layers
    x = K.Input(shape=(4,), dtype="int64")
    plain = L.IntegerLookup()
    masked = L.IntegerLookup(mask_token=0, max_tokens=5)
    sample = np.array([[3, 3, 9, 1], [9, 9, 9, 4], [2, 3, 1, 0]])
    plain.adapt(sample)
    masked.adapt(sample)
    outs = [plain(x), masked(x), L.IntegerLookup(output_mode="multi_hot", vocabulary=[3, 9])(x)]
    return K.Model(x, outs), [np.array([[3, 9, 8, 0], [1, 2, 4, 3], [0, 0, 9, 9]])]


def text(rows):
    return np.array(rows, dtype=str)


def string_lookup(K, fmt):
    L = K.layers
    x = K.Input(shape=(4,), dtype="string")
    known = K.Input(shape=(2,), dtype="string")
    vocab = ["the", "cat", "sat", "on", "mat", "ünï"]
    ids = L.StringLookup(vocabulary=vocab)(x)
    outs = [
        ids,
        L.StringLookup(vocabulary=vocab, mask_token="")(x),
        L.StringLookup(vocabulary=vocab, output_mode="multi_hot")(x),
        L.StringLookup(vocabulary=vocab, output_mode="count", num_oov_indices=0, mask_token="")(known),
        L.StringLookup(vocabulary=vocab, invert=True)(ids),
        L.StringLookup(vocabulary=vocab, invert=True, mask_token="<m>")(L.IntegerLookup(vocabulary=[1, 2])(ids)),
    ]
    data = text([["the", "cat", "", "dog"], ["mat", "ünï", "ü", "the"], ["", "", "on", "sat"]])
    return K.Model([x, known], outs), [data, text([["cat", ""], ["ünï", "ünï"], ["", "on"]])]


@keras_archives_only
def string_lookup_adapted(K, fmt):
    L = K.layers
    x = K.Input(shape=(3,), dtype="string")
    adapted = L.StringLookup(mask_token="")
    adapted.adapt(text([["b", "a", "b"], ["c", "b", ""], ["a", "d", "b"]]))
    capped = L.StringLookup(max_tokens=3)
    capped.adapt(text([["b", "a", "b"], ["c", "b", "x"]]))
    h = L.Dense(3)(L.CategoryEncoding(6, output_mode="count")(adapted(x)))
    return K.Model(x, [adapted(x), capped(x), h]), [text([["a", "b", "z"], ["", "d", "c"], ["b", "b", "b"]])]


@keras_archives_only
def lookup_nested(K, fmt):
    """An adapted vocabulary inside a nested model: assets/layers/<model>/layers/<lookup>/vocabulary.txt."""
    L = K.layers
    inner_in = K.Input(shape=(2,), dtype="string")
    lookup = L.StringLookup(num_oov_indices=1)
    lookup.adapt(text([["x", "y"], ["y", "z"]]))
    inner = K.Model(inner_in, lookup(inner_in), name="inner")
    x = K.Input(shape=(2,), dtype="string")
    return K.Model(x, [inner(x), L.IntegerLookup(vocabulary=[1, 2])(inner(x))]), [
        text([["y", "q"], ["z", "x"], ["", "y"]])
    ]


# Texts of every length branch of FarmHash64 (0-3, 4-7, 8-16, 17-32, 33-64, longer) and non-ASCII.
HASHED_TEXT = [
    "",
    "a",
    "abc",
    "wxyz",
    "seven!!",
    "é" * 4,
    "sixteen chars..",
    "x" * 17,
    "twenty-nine characters here..",
    "y" * 33,
]
HASHED_TEXT += ["ü" * 32, "z" * 65, "long " * 40, "[UNK]"]


def hashing(K, fmt):
    L = K.layers
    words = K.Input(shape=(len(HASHED_TEXT),), dtype="string")
    ints = K.Input(shape=(4,), dtype="int64")
    floats = K.Input(shape=(3,))
    outs = [
        L.Hashing(num_bins=7)(words),
        L.Hashing(num_bins=1000003)(words),
        L.Hashing(num_bins=5, mask_value="")(words),
        L.Hashing(num_bins=11, salt=1337)(words),
        L.Hashing(num_bins=11, salt=[-5, 2**40 + 3])(words),
        L.Hashing(num_bins=9)(ints),
        L.Hashing(num_bins=9, mask_value=0, output_mode="count")(ints),
        L.Hashing(num_bins=6, output_mode="multi_hot")(ints),
    ]
    if is_keras3(K):  # tf-keras cannot hash floats
        outs.append(L.Hashing(num_bins=4)(floats))
    numbers = np.array([[0, -1, 123456789012, 7], [2**62, -(2**63), 5, 0], [1, 2, 3, 4]], dtype=np.int64)
    rows = np.array([HASHED_TEXT, HASHED_TEXT[::-1], HASHED_TEXT[3:] + HASHED_TEXT[:3]], dtype=str)
    return K.Model([words, ints, floats], outs), [rows, numbers, np.array([[0.5, -1.7, 3e9]] * 3, dtype=np.float32)]


def lookup_hashed_oov(K, fmt):
    """Several OOV indices for text: the unknown token's FarmHash64 (Keras 3 with a salt: SipHash) bucket."""
    L = K.layers
    x = K.Input(shape=(len(HASHED_TEXT),), dtype="string")
    i = K.Input(shape=(3,), dtype="int64")
    outs = [L.StringLookup(vocabulary=["a", "abc"], num_oov_indices=3)(x)]
    outs.append(L.StringLookup(vocabulary=["a"], num_oov_indices=4, mask_token="", output_mode="count")(x))
    if is_keras3(K):
        outs.append(L.StringLookup(vocabulary=["a"], num_oov_indices=5, salt=[3, 4])(x))
        outs.append(L.IntegerLookup(vocabulary=[7], num_oov_indices=3, oov_method="farmhash")(i))
        outs.append(L.IntegerLookup(vocabulary=[7], num_oov_indices=3, oov_method="farmhash", salt=99)(i))
    rows = np.array([HASHED_TEXT, HASHED_TEXT[::-1], HASHED_TEXT[5:] + HASHED_TEXT[:5]], dtype=str)
    return K.Model([x, i], outs), [rows, np.array([[7, 8, -9], [100, 7, 0], [1, 2, 3]], dtype=np.int64)]


@keras3_only
def lookup_tf_idf(K, fmt):
    L = K.layers
    x = K.Input(shape=(4,), dtype="int64")
    outs = [
        L.IntegerLookup(vocabulary=[4, 5, 6], idf_weights=[0.5, 1.5, 2.5], output_mode="tf_idf")(x),
        L.IntegerLookup(vocabulary=[-1, 4, 5], idf_weights=[0.1, 0.5, 1.5], output_mode="tf_idf")(x),
    ]
    if fmt.endswith("keras"):
        adapted = L.IntegerLookup(output_mode="tf_idf")
        adapted.adapt(np.array([[4, 5, 5, 9], [6, 6, 6, 4]]))
        outs.append(adapted(x))
    return K.Model(x, outs), [np.array([[4, 7, 5, 5], [6, 6, 0, 4], [9, 9, 9, 5]])]


BUILDERS = {
    "resizing_methods": resizing_methods,
    "resizing_antialias": resizing_antialias,
    "resizing_aspect": resizing_aspect,
    "resizing_channels_first": resizing_channels_first,
    "resizing_uint8": resizing_uint8,
    "center_crop": center_crop,
    "random_crop": random_crop,
    "augment_identity": augment_identity,
    "augment_uint8": augment_uint8,
    "auto_contrast": auto_contrast,
    "category_encoding": category_encoding,
    "category_encoding_rank3": category_encoding_rank3,
    "category_encoding_keras3_codes": category_encoding_keras3_codes,
    "category_count_weights": category_count_weights,
    "discretization": discretization,
    "integer_lookup": integer_lookup,
    "integer_lookup_one_hot": integer_lookup_one_hot,
    "integer_lookup_adapted": integer_lookup_adapted,
    "string_lookup": string_lookup,
    "string_lookup_adapted": string_lookup_adapted,
    "lookup_nested": lookup_nested,
    "hashing": hashing,
    "lookup_hashed_oov": lookup_hashed_oov,
    "lookup_tf_idf": lookup_tf_idf,
}


def older_random_crop() -> None:
    """RandomCrop as Keras 3.0-3.5 and 3.6-3.7 ran it at inference, on the 3.15 file relabelled.

    3.0-3.5: smart_resize (the centered window of the target's aspect ratio, resized bilinearly).
    3.6-3.7: the target-size window from that window's corner, resized (bilinear) if it came out
    smaller. For a 6x8 image: target 4x5 -> window 6x7 at (0, 0), slice 4x5; target 7x5 -> window
    6x4 at (0, 2), slice 6x5, resized to 7x5.
    """
    from keras import ops
    from keras.src.utils.image_utils import smart_resize

    folder = FIXTURES / FAMILY
    source = folder / "random_crop__k3keras.keras"
    with np.load(folder / "random_crop__k3keras.npz") as data:
        x = data["x0"]
    references = {
        "3.5.0": [x, np.asarray(smart_resize(x, (4, 5))), np.asarray(smart_resize(x, (7, 5)))],
        "3.7.0": [x, x[:, 0:4, 0:5], np.asarray(ops.image.resize(x[:, 0:6, 2:7], (7, 5)))],
    }
    for version, outputs in references.items():
        tag = "v" + version.replace(".", "")[:2]
        target = folder / f"random_crop_{tag}__k3keras.keras"
        with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
            for info in src.infolist():
                data = src.read(info)
                if info.filename == "metadata.json":
                    meta = json.loads(data)
                    meta["keras_version"] = version
                    data = json.dumps(meta).encode()
                out.writestr(info, data)
        arrays = {"x0": x, **{f"y{i}": np.asarray(y, dtype=np.float32) for i, y in enumerate(outputs)}}
        np.savez(folder / f"random_crop_{tag}__k3keras.npz", **arrays)
        print(f"wrote {target.relative_to(FIXTURES.parent.parent)}", file=sys.stderr)


if __name__ == "__main__":
    run(FAMILY, BUILDERS)
    if "--only" not in sys.argv or "random_crop" in sys.argv:
        older_random_crop()
