"""What the rewrites ask of an op list: bound arguments, readers of a value, per-feature constants."""

from __future__ import annotations

import inspect
from typing import Any, Optional

import numpy as np

from ..layers.base import Const, Op, Tensor, tensors_in


def arguments(op: Op) -> dict:
    """The op's arguments by parameter name ({} when they cannot be bound: then no rewrite applies)."""
    try:
        return dict(inspect.signature(op.fn).bind(*op.args, **op.kwargs).arguments)
    except (TypeError, ValueError):
        return {}


def readers(ops: list) -> dict:
    """Tensor id -> number of ops that read it."""
    count: dict[int, int] = {}
    for op in ops:
        for key in {id(t) for t in tensors_in([op.args, op.kwargs])}:
            count[key] = count.get(key, 0) + 1
    return count


def only_reader(t: Tensor, counts: dict, roots: list) -> bool:
    """`t` is read by exactly one op and is not a root (a model output or a carried state)."""
    return counts.get(id(t)) == 1 and all(t is not o for o in roots)


def per_feature(value: Any, units: int) -> Optional[np.ndarray]:
    """A scale/shift that varies over the last axis only, as a float64 vector of `units`, else None."""
    if isinstance(value, Const):
        a = np.asarray(value.array, dtype=np.float64)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        a = np.asarray(float(value))
    else:
        return None
    if a.ndim and (any(d != 1 for d in a.shape[:-1]) or a.shape[-1] not in (1, units)):
        return None
    return np.broadcast_to(a.reshape(-1) if a.ndim else a, (units,))
