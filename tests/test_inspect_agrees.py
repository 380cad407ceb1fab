"""`inspect` and conversion share one builder (issue 11): they never disagree about what converts."""

from __future__ import annotations

import pytest
from conftest import FIXTURES, edit_keras_config

from konverter import KonverterError, UnsupportedModel, inspect
from konverter.convert import generate_source

MODELS = sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".h5", ".keras"))


def _converts(path) -> tuple[bool, str, str]:
    try:
        generate_source(path)
    except KonverterError as err:
        return False, str(err), type(err).__name__
    return True, "", ""


@pytest.mark.parametrize("path", MODELS, ids=[str(p.relative_to(FIXTURES)) for p in MODELS])
def test_inspect_says_convertible_exactly_when_conversion_succeeds(path):
    converts, why, kind = _converts(path)
    try:
        summary = inspect(path)
    except KonverterError as err:  # not a readable layer graph at all (a damaged file, a keras_hub Backbone)
        assert not converts and type(err).__name__ == kind, (str(err), why)
        return
    assert summary.convertible == converts, (summary.problems, why)
    assert all(row.supported for row in summary.layers) == converts


def _unsupported_twins(config):
    # One layer of an unknown class and one Lambda, next to layers that convert.
    layers = config["config"]["layers"]
    layers[1]["class_name"] = "NoSuchLayer"
    layers[-1]["class_name"] = "Lambda"


def test_inspect_lists_the_same_unsupported_layers_as_conversion(tmp_path):
    model = edit_keras_config(FIXTURES / "core" / "dense_relu__k3keras.keras", tmp_path / "m.keras", _unsupported_twins)
    with pytest.raises(UnsupportedModel) as refused:
        generate_source(model)
    summary = inspect(model)
    assert not summary.convertible
    assert len(summary.problems) == 2
    for problem in summary.problems:
        assert problem in str(refused.value)
    assert sum(not row.supported for row in summary.layers) == 2
