"""Every fixture under tests/fixtures/<family>/ converts and matches Keras in all three predict modes.

Fixture families are added by the builder scripts in scripts/; this test picks them up by name:
`<name>__<format>.npz` beside `<name>__<format>.h5|.keras`.
"""

from __future__ import annotations

import pytest
from conftest import FIXTURES, check_all_modes, convert_and_import, load_reference, model_file_for

# quantized/: tests/test_quantized.py checks them (and more).
REFERENCES = sorted(p for p in FIXTURES.glob("*/*.npz") if p.parent.name not in ("bad", "stateful", "quantized"))


@pytest.mark.parametrize("npz", REFERENCES, ids=[f"{p.parent.name}/{p.stem}" for p in REFERENCES])
def test_fixture_matches_keras(npz, tmp_path):
    module = convert_and_import(model_file_for(npz), tmp_path)
    xs, ys = load_reference(npz)
    check_all_modes(module, xs, ys, npz.stem)


def test_fixtures_exist_in_every_format():
    """Guard against a builder silently writing nothing: core models exist in all four formats."""
    names = {p.stem for p in REFERENCES}
    for fmt in ("k2h5", "k2keras", "k3h5", "k3keras"):
        assert f"dense_relu__{fmt}" in names
        assert f"name_order__{fmt}" in names
