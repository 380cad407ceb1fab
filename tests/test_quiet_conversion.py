"""Conversion is quiet (issue 15, section 4): no NumPy RuntimeWarning, and weights that hold NaN or
inf are reported in one line, while the file still computes what Keras computes (NaN there too)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, import_file

from konverter import KonverterWarning, konvert

SOURCE = FIXTURES / "core" / "name_order__k2h5.h5"
VARIANCE = "model_weights/batch_normalization/batch_normalization/moving_variance:0"


@pytest.fixture
def negative_variance(tmp_path):
    model = tmp_path / "negative_variance.h5"
    shutil.copy(SOURCE, model)
    with h5py.File(model, "r+") as f:
        variance = f[VARIANCE]
        values = variance[()]
        values[0] = -4.0  # rsqrt of a negative number: NaN in Keras's BatchNormalization
        variance[...] = values
    return model


def test_api_warns_once_and_numpy_stays_silent(negative_variance, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = konvert(negative_variance, tmp_path / "m.py")
    assert [type(w.message) for w in caught] == [KonverterWarning]
    assert "NaN or inf" in str(caught[0].message) and "batch_normalization" in str(caught[0].message)
    module = import_file(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = module.predict(np.ones(module.INPUT_SHAPE[1:], dtype=np.float32))
    assert np.isnan(y).any()  # what Keras gives for a negative variance


def test_command_prints_one_note_and_no_numpy_warning(negative_variance, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "konverter", str(negative_variance), "-o", str(tmp_path / "m.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "RuntimeWarning" not in run.stderr
    notes = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and "NaN or inf" in notes[0], run.stderr


def test_finite_models_convert_without_any_note(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        konvert(SOURCE, tmp_path / "m.py")
