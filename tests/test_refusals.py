"""Valid models that Konverter refuses by name rather than compute wrongly."""

from __future__ import annotations

import pytest
from conftest import FIXTURES, edit_keras_config

from konverter import UnsupportedModel, konvert


@pytest.mark.parametrize(
    "policy",
    [
        {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "int8_from_float32"}},
        {"module": "keras", "class_name": "QuantizedDTypePolicy", "config": {"name": "float8_from_float32"}},
    ],
)
def test_quantized_layers_are_refused_by_name(tmp_path, policy):
    model = tmp_path / "quantized.keras"

    def quantize(config):
        config["config"]["layers"][1]["config"]["dtype"] = policy

    edit_keras_config(FIXTURES / "core" / "dense_relu__k3keras.keras", model, quantize)
    with pytest.raises(UnsupportedModel, match=r"quantized weights \(.*_from_float32\)"):
        konvert(model, tmp_path / "out.py")
    assert not (tmp_path / "out.py").exists()
