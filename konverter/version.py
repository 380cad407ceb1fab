"""Konverter's version: written into every generated file's header and compared to skip up-to-date outputs."""

__version__ = "0.1.0"
