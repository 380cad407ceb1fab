"""Convert the bundled example model and predict with it, NumPy only.

    python examples/predict.py
"""

from pathlib import Path

import numpy as np

import konverter

here = Path(__file__).parent
out = konverter.konvert(here / "model.h5", here / "model.py")
print(f"wrote {out}")

import model  # noqa: E402  (the file just written, next to this script)

print("one sample  :", model.predict([0.5]))
print("a batch     :", model.predict([[0.5], [-1.0], [2.0]]))
ref = np.load(here / "reference.npz")
print("max |error| vs Keras:", float(np.abs(model.predict(ref["x0"]) - ref["y0"]).max()))
