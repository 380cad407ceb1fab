"""Keras preprocessing layers inside models, one concern per module: image resizing and cropping,
augmentation layers at inference, categorical encoding and discretization, hashing, vocabulary lookups.

`konverter.layers` imports this package like any layer family; importing the modules here
registers their converters.
"""

from . import augmentation, encoding, hashing, lookup, resizing  # noqa: F401  (registers the converters)
