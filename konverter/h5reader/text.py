"""Decoding of strings and JSON stored by every h5py/Keras combination."""

from __future__ import annotations

import json

import numpy as np

from ..errors import BadModelFile
from .memory import human

# The largest model config (or metadata) read: configs of thousands of layers take a few MiB.
MAX_JSON_BYTES = 32 << 20


def shown(value: object, limit: int = 80) -> str:
    """A string from the file inside a message: quoted, escaped to printable ASCII, cut short."""
    text = ascii(str(value))
    return text if len(text) <= limit else text[: limit - 4] + "..." + text[-1]


def escaped(value: object, limit: int = 200) -> str:
    """A string from the file as printable ASCII without quotes (comments, docstrings, tables), cut short."""
    text = ascii(str(value))[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def label(value: object, quote: bool = True) -> str:
    """A layer or class name from the file in a list of problems: escaped, at most 60 characters."""
    text = escaped(value, 60)
    return f"'{text}'" if quote else text


def as_str(value: object) -> str:
    """One attribute value as `str`, whether h5py gave str, bytes, numpy.bytes_ or a 0-d array."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadModelFile(f"a text attribute is not valid UTF-8 ({err.reason})") from None
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # h5py hands undecodable bytes over as lone surrogates
        except UnicodeEncodeError:
            raise BadModelFile("a text attribute is not valid UTF-8") from None
        return value
    raise BadModelFile(f"expected a text attribute, found {type(value).__name__}")


def as_str_list(value: object) -> list[str]:
    """A list-of-names attribute; h5py returns object/`|S` arrays, or an empty float array for []."""
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return []
        if value.dtype.kind in "SUO":
            return [as_str(v) for v in value.ravel()]
        raise BadModelFile(f"expected a list of names, found an array of {value.dtype}")
    if isinstance(value, (list, tuple)):
        return [as_str(v) for v in value]
    return [as_str(value)]


class TextBudget:
    """Characters of names a file may make Konverter hold: a multiple of its size.

    A file stores each name somewhere, so honest files stay far below; one heap object named by
    thousands of list entries (or thousands of hard links) does not.
    """

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, names: list[str], what: str) -> list[str]:
        self.left -= sum(map(len, names))
        if self.left < 0:
            raise BadModelFile(f"{what} repeat far more text than the file holds")
        return names


def read_names(attrs: object, key: str, budget: TextBudget | None = None) -> list[str] | None:
    """`key` from HDF5 attributes, following Keras's chunking into key0, key1, ... when large."""
    if key in attrs:
        names = as_str_list(attrs[key])
    elif f"{key}0" not in attrs:
        return None
    else:
        names = []
        chunk = 0
        while f"{key}{chunk}" in attrs:
            names.extend(as_str_list(attrs[f"{key}{chunk}"]))
            chunk += 1
    return budget.take(names, f"the names in {key}") if budget is not None else names


def _reject_constant(token: str) -> None:
    raise BadModelFile(f"the model config contains the non-JSON number {token}")


def parse_json(text: str | bytes, what: str) -> dict:
    """Parse a JSON document from the file into a dict, with one clear error when it is not."""
    if len(text) > MAX_JSON_BYTES:  # parsed, JSON takes 10-20 times its size in memory
        raise BadModelFile(f"{what} is {human(len(text))}, over the {human(MAX_JSON_BYTES)} limit")
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise BadModelFile(f"{what} is not valid UTF-8") from None
    except RecursionError:
        raise BadModelFile(f"{what} is nested too deeply") from None
    except ValueError as err:
        raise BadModelFile(f"{what} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise BadModelFile(f"{what} is not a JSON object")
    return data
