"""Decoding of strings and JSON stored by every h5py/Keras combination."""

from __future__ import annotations

import json

import numpy as np

from ..errors import BadModelFile


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


def read_names(attrs: object, key: str) -> list[str] | None:
    """`key` from HDF5 attributes, following Keras's chunking into key0, key1, ... when large."""
    if key in attrs:
        return as_str_list(attrs[key])
    if f"{key}0" not in attrs:
        return None
    names: list[str] = []
    chunk = 0
    while f"{key}{chunk}" in attrs:
        names.extend(as_str_list(attrs[f"{key}{chunk}"]))
        chunk += 1
    return names


def _reject_constant(token: str) -> None:
    raise BadModelFile(f"the model config contains the non-JSON number {token}")


def parse_json(text: str | bytes, what: str) -> dict:
    """Parse a JSON document from the file into a dict, with one clear error when it is not."""
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
