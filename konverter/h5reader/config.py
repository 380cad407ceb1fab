"""Helpers over the model config JSON shared by the readers and the graph builder."""

from __future__ import annotations

import re

from ..errors import BadModelFile, UnsupportedModel
from .text import shown

MODEL_CLASSES = {"Sequential", "Functional", "Model"}


def config_of(entry: dict) -> dict:
    cfg = entry.get("config")
    if isinstance(entry.get("class_name"), str) and entry["class_name"] == "Sequential" and isinstance(cfg, list):
        return {"layers": cfg}  # Keras <= 2.2.2 stored a Sequential config as a bare list of layers
    if not isinstance(cfg, dict):
        raise BadModelFile(f"layer entry {shown(class_of(entry))} has no config object")
    return cfg


def class_of(entry: object) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise BadModelFile("a layer entry in the model config has no class_name")
    return entry["class_name"]


def name_of(entry: dict) -> str:
    name = entry.get("name")
    if name is None:
        name = config_of(entry).get("name")
    if not isinstance(name, str):
        raise BadModelFile(f"a {shown(class_of(entry))} layer in the model config has no name")
    return name


def is_model(entry: dict) -> bool:
    return class_of(entry) in MODEL_CLASSES


def require_model(entry: dict) -> None:
    """The top-level object must be a Sequential or Functional model. Keras saves only models: a
    layer class there is a damaged file, anything else a Model subclass (keras_hub's Backbone and
    Task models among them), whose config holds constructor arguments only."""
    if is_model(entry):
        return
    config_of(entry)
    cls = class_of(entry)
    registered = entry.get("registered_name")
    from ..layers import CONVERTERS  # imported late: the layer families use this module's helpers

    if cls in CONVERTERS and not (isinstance(registered, str) and ">" in registered):
        raise BadModelFile(f"the top-level object is a {shown(cls)} layer, not a model")
    who = registered if isinstance(registered, str) and registered else cls
    raise UnsupportedModel(
        f"the model is a {shown(who)}, a subclassed Model, which is not supported: its file holds only "
        "constructor arguments, and the code that builds its layers is not in the file"
    )


def sublayers(entry: dict) -> list[dict]:
    """The layer entries of a Sequential/Functional config, in stored order."""
    layers = config_of(entry).get("layers")
    if not isinstance(layers, list):
        raise BadModelFile(f"model {shown(class_of(entry))} has no list of layers")
    for layer in layers:
        class_of(layer)
    return layers


def is_op_node(entry: dict) -> bool:
    """Keras 3 stores `keras.ops.*` calls on symbolic tensors as entries that are not layers.

    `.keras` files say so in `module` (ops live in keras.src.ops, and `keras.activations.relu` on a
    symbolic tensor records the operation ReLU of keras.src.activations); Keras 3's legacy `.h5`
    writer drops `module`, so there an op is recognised by its config having neither `trainable`
    nor a `dtype` (layer configs have at least one of them; an op's `dtype` argument, if any, is
    mostly None): an op "Add" must never be taken for the Add layer, nor the op ReLU for the layer.
    """
    module = entry.get("module")
    if isinstance(module, str):
        return module.startswith(("keras.src.ops", "keras.src.activations"))
    cfg = entry.get("config")
    return (
        "module" not in entry
        and isinstance(cfg, dict)
        and "trainable" not in cfg
        and (cfg.get("dtype") is None or (entry.get("class_name") in OPS_WITH_DTYPE and isinstance(cfg["dtype"], str)))
        and entry.get("class_name") not in MODEL_CLASSES | {"InputLayer"}
    )


# Ops whose `dtype` argument Keras 3 writes (a plain string), among those that compute masks.
OPS_WITH_DTYPE = {"OnesLike", "ZerosLike", "ConvertToTensor"}


def snake_case(name: str) -> str:
    """Keras's naming.to_snake_case, which names weight groups inside `.keras` archives."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def leaf_paths(entry: dict, prefix: tuple = ()) -> list[tuple]:
    """Name paths of every non-model layer inside a model entry, in stored order."""
    paths = []
    for layer in sublayers(entry):
        path = prefix + (name_of(layer),)
        paths.extend(leaf_paths(layer, path) if is_model(layer) else [path])
    return paths
