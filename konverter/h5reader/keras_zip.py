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
# Layer assets (a lookup layer's vocabulary.txt) are read whole: each, and all together, bounded.
MAX_ASSET_BYTES = 256 << 20
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
# The weights group is named after the Python class; the config holds the public name, which
# differs for this one Keras 3 layer (every other alias is saved under its class's own name).
PYTHON_CLASS = {"GroupQueryAttention": "GroupedQueryAttention"}


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
        cfgmod.require_model(config)
        folders = {name.rpartition("/")[0] + "/" for name in members if name.startswith("assets/")}
        weights_info = members.get("model.weights.h5") or members["variables.h5"]
        if weights_info.file_size > MAX_MEMBER_BYTES:
            raise BadModelFile(
                f"archive member {shown(weights_info.filename)} declares {human(weights_info.file_size)}, "
                "over the limit"
            )
        with member(archive, path, weights_info) as source, open_file(source, "model.weights.h5") as f:
            weights = WeightSet(f, source.length, progress)
            _read_container(model, f, config, (), weights, folders)
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


def read_assets(path: str, folders: dict) -> dict:
    """The files of each layer's assets folder ({layer path: {file name: bytes}}), MAX_ASSET_BYTES in all.

    Read here, with zipfile only (no HDF5 involved): `folders` ({layer path: "assets/.../"}) comes
    from the walk over the weights, which may run in the reader process.
    """
    if not folders:
        return {}
    found: dict = {}
    total = 0
    with zipfile.ZipFile(path) as archive:
        members = _members(archive)
        for layer, folder in folders.items():
            for name, info in members.items():
                if name.startswith(folder) and "/" not in name[len(folder) :] and not name.endswith("/"):
                    total += info.file_size
                    if total > MAX_ASSET_BYTES:
                        raise UnsupportedModel(f"the archive's assets exceed {MAX_ASSET_BYTES >> 20} MiB")
                    found.setdefault(layer, {})[name[len(folder) :]] = _json_member(archive, info, MAX_ASSET_BYTES)
    return found


def _json_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = MAX_JSON_BYTES) -> bytes:
    if info.file_size > limit:
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


def _read_container(
    model: ModelFile, group, entry: dict, prefix: tuple, weights: WeightSet, folders: set, where: str = ""
) -> None:
    """Walk a Sequential/Functional config in order, mirroring Keras's class-based group names.

    `where` is the container's path in the archive ("" at the top, "layers/<model>/" nested): a layer's
    weights are at `<where>layers/<key>` in model.weights.h5, its assets under `assets/<where>layers/<key>/`
    (`folders`: the archive's asset folders; `model.asset_folders` records each layer's).
    """
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
        base = cfgmod.snake_case(PYTHON_CLASS.get(cls, "Functional" if cls == "Model" else cls))
        n = counts.get(base, 0)
        counts[base] = n + 1
        key = base if n == 0 else f"{base}_{n}"
        path = prefix + (cfgmod.name_of(layer),)
        group_of_layer = child(layers_group, key, f"layers/{key}") if is_group(layers_group) else None
        if cfgmod.is_model(layer):
            if group_of_layer is not None:
                _read_container(model, group_of_layer, layer, path, weights, folders, f"{where}layers/{key}/")
            continue
        if f"assets/{where}layers/{key}/" in folders:
            model.asset_folders[path] = f"assets/{where}layers/{key}/"
        if group_of_layer is None:
            continue
        names: list[str] = []
        numbers = _collect(group_of_layer, key, names, weights, cfgmod.config_of(layer))
        if numbers:
            model.weights[path] = numbers
            model.weight_names[path] = names


def _collect(group, where: str, names: list, weights: WeightSet, config: object = None) -> list:
    """A layer's variables: its own `vars/0..n` (numeric order), then child objects in Keras order.

    `config` is the object's config (or, for a list attribute such as StackedRNNCells's `cells`, the
    list of entries): it orders a list's children as Keras saved them, class-based names in list order."""
    numbers = []
    if not is_group(group):
        raise BadModelFile(f"weights entry {shown(where)} is not a group")
    vars_group = child(group, "vars", f"{where}/vars")
    if vars_group is not None:
        if not is_group(vars_group):
            raise BadModelFile(f"weights entry {shown(where + '/vars')} is not a group")
        # Variables are numbered 0..n; a few layers store theirs by name (IndexLookup's idf_weights): after them.
        for k in sorted(keys(vars_group, f"{where}/vars"), key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k)):
            numbers.append(weights.add(vars_group, k))
            names.append(f"{where}/vars/{k}")
    children = [k for k in keys(group, where) if k != "vars"]
    listed = _list_order(config)
    children.sort(
        key=lambda k: (CHILD_ORDER.index(k) if k in CHILD_ORDER else len(CHILD_ORDER), listed.get(k, len(listed)), k)
    )
    for k in children:
        sub = child(group, k, f"{where}/{k}")
        if is_group(sub) and not weights.first_visit(group, k, sub):
            # Keras never links one group twice; followed each time, links could make the walk exponential.
            raise BadModelFile(f"weights group {shown(f'{where}/{k}')} is linked more than once")
        numbers.extend(_collect(sub, f"{where}/{k}", names, weights, _child_config(config, k)))
    return numbers


def _child_config(config: object, key: str) -> object:
    """The config of child object `key` (a Bidirectional's forward/backward layers come from `layer`)."""
    if not isinstance(config, dict):
        return None
    entry = config.get(key)
    if entry is None and key in ("forward_layer", "backward_layer"):
        entry = config.get("layer")
    if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
        return entry["config"]
    return entry if isinstance(entry, list) else None


def _list_order(entries: object) -> dict:
    """Group name -> position for a list of layer entries, named as Keras names list items on saving
    (snake_case of the class, `_1`, `_2`... for repeats): HDF5 lists groups alphabetically instead."""
    if not isinstance(entries, list):
        return {}
    counts: dict[str, int] = {}
    order: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
            return {}
        base = cfgmod.snake_case(entry["class_name"])
        n = counts.get(base, 0)
        counts[base] = n + 1
        order[base if n == 0 else f"{base}_{n}"] = i
    return order
