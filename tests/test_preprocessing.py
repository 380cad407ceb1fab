"""Preprocessing layers inside models (issue 12): resizing and cropping, augmentation at inference,
CategoryEncoding, Discretization, IntegerLookup and StringLookup.

Every fixture in tests/fixtures/preprocessing/ is also run by test_fixtures.py (batch, batch of
one, unbatched against real Keras outputs); this file checks what that cannot: dtypes, text
inputs, errors Keras raises at run time, refusals, hostile vocabularies and the archive's assets.
"""

from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, as_output_list, convert_and_import, edit_keras_config, load_reference, model_file_for

import konverter
from konverter import BadModelFile, UnsupportedModel, konvert
from konverter.h5reader import keras_zip
from konverter.layers.preprocessing.hashing import fingerprint64, hash_buckets, siphash24
from konverter.layers.preprocessing.resizing import (
    METHODS,
    bilinear_axis,
    resize_bilinear,
    resize_taps,
    take_axis,
)

FOLDER = FIXTURES / "preprocessing"
REFERENCES = sorted(FOLDER.glob("*.npz"))
ALL = {"k2h5", "k2keras", "k3h5", "k3keras"}
KERAS3 = {"k3h5", "k3keras"}
ARCHIVES = {"k2keras", "k3keras"}
# Each fixture and the formats it must exist in (where the writer's Keras has the layer and can save it).
EXPECTED = {
    "resizing_methods": ALL,
    "resizing_antialias": KERAS3,
    "resizing_aspect": ALL,
    "resizing_channels_first": KERAS3,
    "resizing_uint8": ALL,
    "center_crop": ALL,
    "random_crop": ALL,
    "random_crop_v35": {"k3keras"},
    "random_crop_v37": {"k3keras"},
    "augment_identity": ALL,
    "augment_uint8": ALL,
    "auto_contrast": KERAS3,
    "category_encoding": ALL,
    "category_encoding_rank3": KERAS3,
    "category_encoding_keras3_codes": KERAS3,
    "category_count_weights": ALL,
    "discretization": ALL,
    "integer_lookup": ALL,
    "integer_lookup_one_hot": KERAS3,
    "integer_lookup_adapted": ARCHIVES,
    "string_lookup": ALL,
    "string_lookup_adapted": ARCHIVES,
    "lookup_nested": ARCHIVES,
    "hashing": ALL,
    "lookup_hashed_oov": ALL,
    "lookup_tf_idf": KERAS3,
}


def _edited(tmp_path: Path, source: str, edit) -> Path:
    return edit_keras_config(FOLDER / source, tmp_path / source, edit)


def _layers(config: dict) -> list:
    return config["config"]["layers"]


def test_every_fixture_exists_in_its_formats():
    found: dict = {}
    for npz in REFERENCES:
        name, fmt = npz.stem.split("__")
        found.setdefault(name, set()).add(fmt)
    assert found == EXPECTED


@pytest.mark.parametrize("npz", REFERENCES, ids=[p.stem for p in REFERENCES])
def test_outputs_have_keras_dtypes(npz, tmp_path):
    """Keras's output dtypes too: int64 lookup indices, int32 (Keras 3) / int64 (tf-keras) bins,
    integer images left integer by some augmentation layers, text from StringLookup(invert=True)."""
    module = convert_and_import(model_file_for(npz), tmp_path)
    xs, ys = load_reference(npz)
    got = as_output_list(module, module.predict(*xs))
    assert [g.dtype for g in got] == [y.dtype for y in ys]


def test_identity_layers_never_return_the_callers_array(tmp_path):
    module = convert_and_import(FOLDER / "augment_identity__k3keras.keras", tmp_path)
    xs, _ = load_reference(FOLDER / "augment_identity__k3keras.npz")
    for x in (xs[0], xs[0][0]):
        for y in module.predict(x):
            assert not np.shares_memory(x, y)


# ----------------------------------------------------------------------------- text inputs
def test_text_input_takes_lists_bytes_and_object_arrays(tmp_path):
    module = convert_and_import(FOLDER / "string_lookup__k3keras.keras", tmp_path)
    xs, ys = load_reference(FOLDER / "string_lookup__k3keras.npz")
    assert module.INPUT_DTYPES == ("string", "string")
    expected = [y[1] for y in ys]
    variants = [
        (xs[0][1].tolist(), xs[1][1].tolist()),  # lists of str, one sample
        (xs[0][1].astype(object), xs[1][1].astype(object)),
        (np.char.encode(xs[0][1], "utf-8"), np.char.encode(xs[1][1], "utf-8")),  # UTF-8 bytes
    ]
    for a, b in variants:
        for got, want in zip(module.predict(a, b), expected):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="expected str values"):
        module.predict(np.zeros(4), xs[1][1])
    with pytest.raises(ValueError, match="expected shape"):
        module.predict(["the", "cat"], xs[1][1])


def test_unknown_token_without_oov_index_raises_like_keras(tmp_path):
    module = convert_and_import(FOLDER / "string_lookup__k3keras.keras", tmp_path)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        module.predict(["the", "cat", "sat", "on"], ["cat", "dog"])


def test_category_encoding_codes_keras_rejects(tmp_path):
    # Keras 3 (TensorFlow's bincount) rejects negative codes in multi_hot/count; tf-keras any code outside.
    keras3 = convert_and_import(FOLDER / "category_encoding__k3keras.keras", tmp_path)
    keras2 = convert_and_import(FOLDER / "category_encoding__k2keras.keras", tmp_path)
    one, row, scalar = np.array([1]), np.array([0, 1, 2, -1]), np.array(3)
    with pytest.raises(ValueError, match=r"in \[0, 6\)"):
        keras3.predict(one, row, scalar)
    keras3.predict(one, np.array([0, 1, 2, 9]), scalar)  # codes >= num_tokens are skipped
    with pytest.raises(ValueError, match=r"in \[0, 6\)"):
        keras2.predict(one, np.array([0, 1, 2, 9]), scalar)


# ----------------------------------------------------------------------------- refusals
def _refused(tmp_path: Path, source: str, edit, match: str) -> None:
    model = _edited(tmp_path, source, edit)
    with pytest.raises(UnsupportedModel, match=match):
        konvert(model, tmp_path / "out.py")
    assert not (tmp_path / "out.py").exists()


def _set(index: int, **values):
    def edit(config):
        _layers(config)[index]["config"].update(values)

    return edit


def _rename(index: int, class_name: str):
    def edit(config):
        _layers(config)[index]["class_name"] = class_name

    return edit


@pytest.mark.parametrize(
    ("source", "edit", "match"),
    [
        ("category_encoding__k3keras.keras", _rename(3, "HashedCrossing"), "sparse_cross hashing"),
        ("hashing__k2keras.keras", _set(3, mask_value=3), "mask_value '3' of another type"),
        (
            "augment_identity__k3keras.keras",
            _rename(1, "ContrastLimitedAdaptiveHistogramEqualization"),
            "equalizes histograms at inference",
        ),
        # The third input has shape (): multi_hot would count over the whole batch.
        ("category_encoding__k3keras.keras", _set(8, output_mode="multi_hot"), "counts over the whole batch"),
        ("category_encoding__k3keras.keras", _set(3, sparse=True), r"sparse=True"),
        ("string_lookup__k3keras.keras", _set(1, encoding="latin-1"), "only UTF-8"),
        ("resizing_uint8__k3keras.keras", _set(1, interpolation="bicubic"), "uint8 images with interpolation"),
        ("resizing_methods__k3keras.keras", _set(1, interpolation="cubic_spline"), "interpolation 'cubic_spline'"),
        ("resizing_methods__k3keras.keras", _set(1, height=10**6), "target size"),
        ("discretization__k3keras.keras", _set(3, bin_boundaries=[1.0, 0.0]), "increasing order"),
    ],
)
def test_refused_with_the_reason(tmp_path, source, edit, match):
    _refused(tmp_path, source, edit, match)


def test_tf_keras_training_true_is_refused(tmp_path):
    # tf-keras honours an explicit training=True at predict time (Keras 3 overrides it: not refused there).
    def train(config):
        for entry in _layers(config)[1:3]:
            entry["inbound_nodes"][0][0][3] = {"training": True}

    _refused(tmp_path, "augment_identity__k2keras.keras", train, "training=True, so it is random")


def test_random_crop_needs_the_keras_version(tmp_path):
    source = FOLDER / "random_crop__k3keras.keras"
    target = tmp_path / "random_crop.keras"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "metadata.json":
                data = json.dumps({"keras_version": "3"}).encode()
            out.writestr(info, data)
    with pytest.raises(UnsupportedModel, match="RandomCrop's inference changed"):
        konvert(target, tmp_path / "out.py")


def test_adapted_vocabulary_missing_from_the_archive_is_refused(tmp_path):
    source = FOLDER / "string_lookup_adapted__k3keras.keras"
    target = tmp_path / "no_assets.keras"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            if not info.filename.startswith("assets/"):
                out.writestr(info, src.read(info))
    with pytest.raises(UnsupportedModel, match="no vocabulary in the file"):
        konvert(target, tmp_path / "out.py")


def test_assets_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(keras_zip, "MAX_ASSET_BYTES", 10)
    with pytest.raises(UnsupportedModel, match="assets exceed"):
        konvert(FOLDER / "string_lookup_adapted__k3keras.keras", tmp_path / "out.py")


def test_assets_of_other_folders_are_not_read_as_a_vocabulary(tmp_path):
    # A vocabulary.txt anywhere but under the lookup layer's own folder does not count.
    source = FOLDER / "string_lookup_adapted__k3keras.keras"
    target = tmp_path / "moved.keras"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            name = info.filename.replace("assets/layers/", "assets/elsewhere/")
            out.writestr(name, src.read(info))
    with pytest.raises(UnsupportedModel, match="no vocabulary"):
        konvert(target, tmp_path / "out.py")


def test_vocabulary_that_breaks_keras_rules_is_a_bad_file(tmp_path):
    repeated = _edited(tmp_path, "integer_lookup__k3keras.keras", _set(1, vocabulary=[4, 4, 5]))
    with pytest.raises(BadModelFile, match="repeated vocabulary tokens"):
        konvert(repeated, tmp_path / "out.py")


# ----------------------------------------------------------------------------- untrusted vocabularies
HOSTILE = ['"', "'''", '"""', "\\", "a\nb", "\r", "\u2028", "x = __import__('os')", "\u202e", "\U0001f600", "", "}"]


def test_hostile_vocabulary_is_only_literals_and_looks_up_right(tmp_path):
    def hostile(config):
        for entry in _layers(config):
            if entry["class_name"] == "StringLookup":
                entry["config"]["vocabulary"] = HOSTILE
                entry["config"]["vocabulary_size"] = None
                if entry["config"]["mask_token"] == "":  # a mask token may not be in the vocabulary
                    entry["config"]["mask_token"] = None

    model = _edited(tmp_path, "string_lookup__k3keras.keras", hostile)
    source = konvert(model, tmp_path / "out.py").read_text()
    assert source.isascii()  # every token went in as an ascii() literal
    assert not any(isinstance(n, ast.Name) and n.id == "__import__" for n in ast.walk(ast.parse(source)))
    module = konverter.load(model)
    ids = module.predict(np.array(HOSTILE[:4]), np.array(HOSTILE[4:6]))
    np.testing.assert_array_equal(ids[0], [1, 2, 3, 4])  # index 0 is the OOV token
    np.testing.assert_array_equal(ids[4], HOSTILE[:4])  # inverted back to the tokens
    np.testing.assert_array_equal(
        module.predict(np.array(["?", "\n", "ab", "a\nb"]), np.array(HOSTILE[:2]))[0], [0, 0, 0, 5]
    )


def test_text_tables_are_deterministic(tmp_path):
    source = FOLDER / "string_lookup_adapted__k3keras.keras"
    first = konvert(source, tmp_path / "m.py").read_bytes()
    assert konvert(source, tmp_path / "m.py", force=True).read_bytes() == first


# ----------------------------------------------------------------------------- resizing weights
@pytest.mark.parametrize("method", [m for m in METHODS if m != "bilinear"])
@pytest.mark.parametrize("antialias", [False, True])
def test_resize_taps_are_normalized(method, antialias):
    for n_in, n_out in [(1, 4), (3, 7), (7, 3), (10, 10), (16, 5), (5, 16)]:
        taps = resize_taps(n_in, n_out, method, antialias)
        assert len(taps) == n_out
        for rows, weights in taps:
            assert ((rows >= 0) & (rows < n_in)).all()
            assert abs(weights.sum() - 1.0) < 1e-6


def test_bilinear_same_size_is_the_identity_and_nearest_doubles():
    x = np.random.RandomState(0).normal(size=(2, 3, 4, 2)).astype(np.float32)
    y0, y1, yl = bilinear_axis(3, 3)
    x0, x1, xl = bilinear_axis(4, 4)
    np.testing.assert_array_equal(resize_bilinear(x, y0, y1, yl, x0, x1, xl, False), x)
    cf = np.moveaxis(x, -1, 1)
    np.testing.assert_array_equal(resize_bilinear(cf, y0, y1, yl, x0, x1, xl, True), cf)
    rows = resize_taps(3, 6, "nearest", False)
    cols = resize_taps(4, 8, "nearest", False)
    doubled = take_axis(take_axis(x, np.array([r[0] for r, _ in rows]), 1), np.array([c[0] for c, _ in cols]), 2)
    np.testing.assert_array_equal(doubled, x.repeat(2, axis=1).repeat(2, axis=2))


def test_area_downscale_by_an_integer_averages_blocks():
    taps = resize_taps(6, 2, "area", False)
    assert [list(rows) for rows, _ in taps] == [[0, 1, 2], [3, 4, 5]]
    for _, weights in taps:
        np.testing.assert_allclose(weights, 1 / 3, rtol=1e-6)


# ----------------------------------------------------------------------------- hashing
# TensorFlow's own values (tf.fingerprint(method="farmhash64"), tf.strings.to_hash_bucket_strong with
# key [7, -3] and 2**63 - 1 buckets) for (b"konverter\xff" * 40)[:n]: every length branch of both hashes.
TF_FARMHASH64 = {
    0: 0x9AE16A3B2F90404F,
    1: 0x6394D20B061DF62D,
    2: 0x43BB481B230180D1,
    3: 0xB8ABE75EDF46DF5B,
    4: 0xB5C8B7D1B14DEBC1,
    5: 0xF63DEC7CFF688A19,
    7: 0x932E5DEBDDD68B31,
    8: 0xC06D568BFEEFCFDD,
    9: 0x3378B6C8E376B5DD,
    15: 0xE2687F6BC0117E91,
    16: 0x729EB8B6D460BCD9,
    17: 0xA1EA230AB6F959D6,
    31: 0xA264ED3EBC6B2252,
    32: 0x803B8C3B7BA43375,
    33: 0x928D1A6A022D7A54,
    63: 0x63E9AB9C97BF561B,
    64: 0x998691DEA016A75F,
    65: 0x4BC322DD589FBA63,
    127: 0x9424CB15A76879D1,
    128: 0x363B4A5BDB7066CB,
    129: 0x0AD237F8DCDEC730,
    200: 0x08BE9B2C18E2B34E,
    300: 0x7972D8A04194F6B9,
}
TF_SIPHASH_7_MINUS3 = {
    0: 6340755139282034347,
    1: 4673838178214507368,
    2: 6097138238378722295,
    3: 437459068487309652,
    4: 8232913295087141754,
    5: 3662405481504136462,
    7: 5996118490810281071,
    8: 1936327529366687188,
    9: 7932436880663091652,
    15: 4712499356213295629,
    16: 2425841528240089118,
    17: 3769062285841123730,
    31: 6796090232794064137,
    32: 143103933130391640,
    33: 1365039399018293962,
    63: 4621082087809817735,
    64: 5845979314454590834,
    65: 7385577176871520345,
    127: 8438869800720016240,
    128: 2183807694273559375,
    129: 6669669679662627187,
    200: 7868798848695269660,
    300: 4411602252461797940,
}


@pytest.mark.parametrize("n", sorted(TF_FARMHASH64))
def test_hashes_are_tensorflows_bit_for_bit(n):
    data = (b"konverter\xff" * 40)[:n]
    assert fingerprint64(data) == TF_FARMHASH64[n]
    assert siphash24(data, 7, -3 & 0xFFFFFFFFFFFFFFFF) % (2**63 - 1) == TF_SIPHASH_7_MINUS3[n]


def test_numbers_hash_as_their_decimal_text():
    ints = np.array([[0, -12, 2**62]], dtype=np.int64)
    texts = np.array([["0", "-12", str(2**62)]])
    np.testing.assert_array_equal(hash_buckets(ints, 1000, None), hash_buckets(texts, 1000, None))
    floats = np.array([-12.9, 0.5], dtype=np.float32)  # truncated toward zero first, as Keras 3 casts them
    np.testing.assert_array_equal(hash_buckets(floats, 97, (1, 2)), hash_buckets(np.array(["-12", "0"]), 97, (1, 2)))
