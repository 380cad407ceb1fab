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

# The same model converted in memory (nothing written), and a check in all three predict modes.
in_memory = konverter.load(here / "model.h5")
print("in memory   :", in_memory.predict([0.5]))
report = konverter.verify(here / "model.h5", out, reference=here / "reference.npz")
print("verify      :", "ok" if report.ok else "DIFFERS", f"(max |error| {max(c.max_abs for c in report.checks):.2g})")
