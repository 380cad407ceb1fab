"""Layer families. Importing this package registers every converter in `base.CONVERTERS`."""

from __future__ import annotations

import importlib
import pkgutil

from .base import CONVERTERS, Layer, Tensor, converter

# Every module in this package is a layer family; each registers its own converters.
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["CONVERTERS", "Layer", "Tensor", "converter"]
