"""Errors that end a conversion with one line and a documented exit code."""

from __future__ import annotations

# Exit codes of the `konverter` command (documented in the README).
EXIT_OK = 0
EXIT_SOME_FAILED = 1  # folder mode: at least one file failed
EXIT_USAGE = 2  # bad command line (typer's own code)
EXIT_BAD_FILE = 3  # not a Keras model, corrupt, truncated, weights-only, inconsistent
EXIT_UNSUPPORTED = 4  # valid model, but a layer/activation/feature Konverter cannot convert
EXIT_OUTPUT = 5  # the output could not be written (or exists and was not written by Konverter)
EXIT_MISMATCH = 6  # verify / --embed-check: outputs differ from the reference beyond the tolerance
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_INTERNAL = 70  # a bug in Konverter (please report it); --debug shows the traceback


class KonverterWarning(UserWarning):
    """Converted, with something to know (weights that hold NaN or inf): one line."""


class KonverterError(Exception):
    """Base class: `str(err)` is the one line shown to the user."""

    exit_code = EXIT_BAD_FILE


class BadModelFile(KonverterError):
    """The file is not a readable, self-consistent Keras full-model file."""

    exit_code = EXIT_BAD_FILE


class UnsupportedModel(KonverterError):
    """The model is valid but uses something Konverter refuses or does not implement."""

    exit_code = EXIT_UNSUPPORTED


class OutputError(KonverterError):
    """The generated file could not be written."""

    exit_code = EXIT_OUTPUT


class UsageError(KonverterError):
    """A file or setting given on the command line (not the model) is unusable, e.g. a bad reference .npz."""

    exit_code = EXIT_USAGE


class MismatchError(KonverterError):
    """Konverter's outputs differ from the reference (Keras or stored outputs) beyond the tolerance."""

    exit_code = EXIT_MISMATCH
