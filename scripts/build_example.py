"""Build the bundled example model `examples/model.h5` with real Keras (tf-keras, the legacy format
most shipped models use): 1 input feature -> Dense 16 relu -> Dense 4 softmax.
Run with the fixture virtualenv: `.venv-keras/bin/python scripts/build_example.py`.
"""

from __future__ import annotations

import numpy as np
from fixturelib import ROOT, keras_for, randomize

K = keras_for("k2h5")
K.utils.set_random_seed(7)
model = K.Sequential(
    [K.Input(shape=(1,), name="x"), K.layers.Dense(16, activation="relu"), K.layers.Dense(4, activation="softmax")],
    name="example",
)
randomize(model, 7)
model.save(str(ROOT / "examples" / "model.h5"))
x = np.array([[0.5], [-1.0], [2.0]], dtype=np.float32)
np.savez(ROOT / "examples" / "reference.npz", x0=x, y0=np.asarray(model(x)))
print(np.asarray(model(x)))
