"""Valid models that Konverter refuses by name rather than compute wrongly."""

from __future__ import annotations

import pytest
from conftest import FIXTURES, edit_keras_config

from konverter import UnsupportedModel, konvert


@pytest.mark.parametrize(
    "policy",
    [
        {"module": "keras", "class_name": "QuantizedDTypePolicy", "config": {"name": "float8_from_float32"}},
        {
            "module": "keras",
            "class_name": "QuantizedFloat8DTypePolicy",
            "config": {"mode": "float8", "source_name": "float32"},
        },
    ],
)
def test_quantized_layers_are_refused_by_name(tmp_path, policy):
    model = tmp_path / "quantized.keras"

    def quantize(config):
        config["config"]["layers"][1]["config"]["dtype"] = policy

    edit_keras_config(FIXTURES / "core" / "dense_relu__k3keras.keras", model, quantize)
    with pytest.raises(UnsupportedModel, match=r"'dense.*' \(Dense: float8 quantization not supported"):
        konvert(model, tmp_path / "out.py")
    assert not (tmp_path / "out.py").exists()
