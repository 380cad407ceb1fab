"""The normalized description of a model file that the rest of Konverter works from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LayerPath = tuple  # names from the outermost model down to the layer, e.g. ("encoder", "dense")


@dataclass
class ModelFile:
    """Everything Konverter needs from a model file, read without TensorFlow or Keras.

    `config` is the top-level `{"class_name": ..., "config": ...}` dict exactly as stored.
    `weights` maps each layer's name path to its arrays in the layer's own order (the order
    of `layer.weights` in Keras: e.g. BatchNormalization gamma, beta, moving_mean, moving_variance).
    """

    path: str
    format: str  # "h5" (legacy HDF5 full model) or "keras" (zip archive)
    keras_version: str
    backend: str
    config: dict
    weights: dict = field(default_factory=dict)  # LayerPath -> list[np.ndarray]
    weight_names: dict = field(default_factory=dict)  # LayerPath -> list[str], for messages
    assets: dict = field(default_factory=dict)  # LayerPath -> {file name: bytes} (.keras assets, e.g. vocabulary.txt)
    asset_folders: dict = field(default_factory=dict)  # LayerPath -> its "assets/.../" folder in the archive

    @property
    def keras_major(self) -> int:
        """Major version of the Keras that wrote the file (1 when the file does not say)."""
        head = self.keras_version.split(".")[0].strip()
        return int(head) if head.isdigit() else 1

    @property
    def class_name(self) -> str:
        return str(self.config.get("class_name"))

    def layer_weights(self, path: LayerPath) -> list[np.ndarray]:
        return self.weights.get(tuple(path), [])

    def layer_assets(self, path: LayerPath) -> dict:
        return self.assets.get(tuple(path), {})
