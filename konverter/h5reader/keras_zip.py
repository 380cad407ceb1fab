"""`.keras` archives (Keras 3, and tf.keras 2.12+): config.json, metadata.json, model.weights.h5."""

from __future__ import annotations

import zipfile
from typing import Callable

from ..errors import BadModelFile, UnsupportedModel
from . import config as cfgmod
from .files import member
from .hdf5 import MAX_EXPANSION, WeightSet, child, is_group, keys, open_file
from .memory import human
from .model import ModelFile
from .text import MAX_JSON_BYTES, parse_json, shown

MAX_MEMBER_BYTES = 4 << 30
MAX_MEMBERS = 10_000
# Weights compress ~1.1x and JSON ~10x; a member inflating more than this is a zip bomb (the same
# bound as for compressed HDF5 datasets).
MAX_COMPRESSION_RATIO = MAX_EXPANSION
SMALL_MEMBER_BYTES = 1 << 20
# Child objects of wrapper layers are stored under attribute names; Keras's weight order
# lists them in this order (alphabetical order would put backward before forward).
CHILD_ORDER = [
    "cell",
    "cells",
    "forward_layer",
    "backward_layer",
    "layer",
    "query_dense",
    "key_dense",
    "value_dense",
    "output_dense",
    "_query_dense",
    "_key_dense",
    "_value_dense",
    "_output_dense",
]


def read_keras_zip(
    path: str, read_weights: Callable[[WeightSet], None], progress: Callable = lambda: None
) -> ModelFile:
    """The config and weight layout of a .keras archive; `read_weights` runs while its HDF5 file is open."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise BadModelFile(f"not a readable .keras archive ({err})") from None
    with archive:
        members = _members(archive)
        if "config.json" not in members:
            raise BadModelFile("this zip file is not a Keras model (no config.json)")
        if "model.weights.h5" not in members:
            if "model.weights.npz" in members:
                raise UnsupportedModel(
                    "weights stored as model.weights.npz are refused (NumPy archives may hold pickles); "
                    "save with the default .h5 weights"
                )
            if "variables.h5" not in members:
                raise BadModelFile("this .keras archive has no model.weights.h5")
        config = parse_json(_json_member(archive, members["config.json"]), "config.json")
        version = "3"
        if "metadata.json" in members:
            meta = parse_json(_json_member(archive, members["metadata.json"]), "metadata.json")
            version = str(meta.get("keras_version", version))
        model = ModelFile(path, "keras", version, "", config)
        if not cfgmod.is_model(config):
            raise BadModelFile(f"the top-level object is a {shown(cfgmod.class_of(config))}, not a model")
        weights_info = members.get("model.weights.h5") or members["variables.h5"]
        if weights_info.file_size > MAX_MEMBER_BYTES:
            raise BadModelFile(
                f"archive member {shown(weights_info.filename)} declares {human(weights_info.file_size)}, "
                "over the limit"
            )
        with member(archive, path, weights_info) as source, open_file(source, "model.weights.h5") as f:
            weights = WeightSet(f, source.length, progress)
            _read_container(model, f, config, (), weights)
            read_weights(weights)
    return model


def _members(archive: zipfile.ZipFile) -> dict:
    """Member name -> ZipInfo, refusing names that could point outside the archive, duplicates and bombs.

    Konverter never extracts anything, but an archive that tries such tricks is not one Keras wrote.
    """
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise BadModelFile(f"the archive has {len(infos)} members, over the {MAX_MEMBERS} limit")
    members: dict = {}
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or "\\" in name or "\0" in name or ".." in parts or ":" in parts[0]:
            raise BadModelFile(f"unsafe archive member name {ascii(name)[:80]} (absolute or path traversal)")
        if name in members:
            raise BadModelFile(f"archive member {ascii(name)[:80]} appears twice")
        if info.file_size > SMALL_MEMBER_BYTES and info.file_size > MAX_COMPRESSION_RATIO * info.compress_size:
            raise BadModelFile(
                f"archive member {ascii(name)[:80]} would inflate {info.compress_size} compressed bytes "
                f"to {info.file_size} (a zip bomb)"
            )
        members[name] = info
    return members


def _json_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_JSON_BYTES:
        raise BadModelFile(f"archive member {shown(info.filename)} declares {human(info.file_size)}, over the limit")
    try:
        with archive.open(info) as handle:
            # zipfile stops at the declared size, so a member lying about its size cannot inflate further.
            data = handle.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise BadModelFile(f"archive member {shown(info.filename)} is damaged ({err})") from None
    if len(data) > info.file_size:
        raise BadModelFile(f"archive member {shown(info.filename)} is larger than declared")
    return data


def _read_container(model: ModelFile, group, entry: dict, prefix: tuple, weights: WeightSet) -> None:
    """Walk a Sequential/Functional config in order, mirroring Keras's class-based group names."""
    layers_group = None
    for key in ("layers", "_layer_checkpoint_dependencies"):  # the second: tf.keras 2.12-2.14
        if is_group(group):
            layers_group = child(group, key)
            if layers_group is not None:
                break
    sequential = cfgmod.class_of(entry) == "Sequential"
    counts: dict[str, int] = {}
    for layer in cfgmod.sublayers(entry):
        cls = cfgmod.class_of(layer)
        if cfgmod.is_op_node(layer) or (sequential and cls == "InputLayer"):
            continue
        base = cfgmod.snake_case("Functional" if cls == "Model" else cls)
        n = counts.get(base, 0)
        counts[base] = n + 1
        key = base if n == 0 else f"{base}_{n}"
        path = prefix + (cfgmod.name_of(layer),)
        group_of_layer = child(layers_group, key, f"layers/{key}") if is_group(layers_group) else None
        if cfgmod.is_model(layer):
            if group_of_layer is not None:
                _read_container(model, group_of_layer, layer, path, weights)
            continue
        if group_of_layer is None:
            continue
        names: list[str] = []
        numbers = _collect(group_of_layer, key, names, weights)
        if numbers:
            model.weights[path] = numbers
            model.weight_names[path] = names


def _collect(group, where: str, names: list, weights: WeightSet) -> list:
    """A layer's variables: its own `vars/0..n` (numeric order), then child objects in Keras order."""
    numbers = []
    if not is_group(group):
        raise BadModelFile(f"weights entry {shown(where)} is not a group")
    vars_group = child(group, "vars", f"{where}/vars")
    if vars_group is not None:
        if not is_group(vars_group):
            raise BadModelFile(f"weights entry {shown(where + '/vars')} is not a group")
        for k in sorted(keys(vars_group, f"{where}/vars"), key=lambda k: int(k) if k.isdigit() else -1):
            if not k.isdigit():
                raise BadModelFile(f"unexpected weights entry {shown(f'{where}/vars/{k}')}")
            numbers.append(weights.add(vars_group, k))
            names.append(f"{where}/vars/{k}")
    children = [k for k in keys(group, where) if k != "vars"]
    children.sort(key=lambda k: (CHILD_ORDER.index(k) if k in CHILD_ORDER else len(CHILD_ORDER), k))
    for k in children:
        sub = child(group, k, f"{where}/{k}")
        if is_group(sub) and not weights.first_visit(group, k, sub):
            # Keras never links one group twice; followed each time, links could make the walk exponential.
            raise BadModelFile(f"weights group {shown(f'{where}/{k}')} is linked more than once")
        numbers.extend(_collect(sub, f"{where}/{k}", names, weights))
    return numbers
