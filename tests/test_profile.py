"""konverter profile: the time of each layer call of a converted model's predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES
from test_cli import run

from konverter.convert import generate_source, module_from_source
from konverter.errors import UsageError
from konverter.profile import profile, profile_source, profiled_module

CNN = FIXTURES / "conv" / "cnn_classifier__k2h5.h5"


def test_timers_change_no_result_and_label_every_layer_call():
    source, _, _ = generate_source(CNN)
    plain = module_from_source(source, "plain")
    timed, labels = profiled_module(source, "timed")
    x = np.random.default_rng(0).standard_normal((3,) + plain.INPUT_SHAPE[1:]).astype(np.float32)
    np.testing.assert_array_equal(timed.predict(x), plain.predict(x))
    lines = source.splitlines()
    for line, function, layer in labels:  # each label: the statement's own function and the comment above it
        assert f"{function}(" in lines[line - 1] and f"# {layer}" in "\n".join(lines[:line])
    assert {function for _, function, _ in labels} >= {"dense"} and all(timed._PROFILE)


@pytest.mark.parametrize("batch", [0, 5])
def test_profile_of_one_sample_and_of_a_batch(batch):
    report = profile(CNN, batch=batch, calls=3)
    expected = ([5] if batch else []) + list(module_from_source(generate_source(CNN)[0], "m").INPUT_SHAPE[1:])
    assert report.inputs == [expected] and report.batch == batch and report.calls == 3
    inside = sum(t.seconds for t in report.layers)
    assert 0 < inside <= report.seconds  # the timers sit inside the timed predict calls
    assert sum(report.by_function().values()) == pytest.approx(inside)


def test_given_inputs_are_used_and_several_inputs_work():
    source, _, _ = generate_source(FIXTURES / "functional" / "two_inputs__k3h5.h5")
    module = module_from_source(source, "m")
    inputs = [np.ones((2,) + shape[1:], np.float32) for shape in module.INPUT_SHAPES]
    report = profile_source(source, "two_inputs", calls=2, inputs=inputs)
    assert report.batch == 2 and len(report.inputs) == 2 and report.layers


def test_text_inputs_are_refused_in_one_line():
    with pytest.raises(UsageError, match="numeric inputs"):
        profile(FIXTURES / "preprocessing" / "string_lookup__k2h5.h5", calls=1)


def test_profile_command(capsys):
    code, out, _ = run(capsys, "profile", CNN, "--calls", "2", "--top", "2")
    assert code == 0 and "ms per predict call" in out and "Slowest 2 layer calls" in out and "dense" in out
    code, out, _ = run(capsys, "profile", CNN, "--calls", "2", "--batch", "4", "--json")
    data = json.loads(out)
    assert code == 0 and data["batch"] == 4 and data["layers"] and "dense" in data["by_function"]


def test_profile_command_errors_are_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "profile", tmp_path / "missing.h5")
    assert code == 2 and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not a model")
    code, _, err = run(capsys, "profile", bad)
    assert code == 3 and len(err.strip().splitlines()) == 1
