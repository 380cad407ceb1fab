"""Helpers every generated file contains (copied verbatim, like the layer functions)."""

from __future__ import annotations

import base64
import math

import numpy as np


def as_batch(x, shape, dtype, name):
    # One sample (rank of `shape` minus the batch axis) or a batch; returns (array, batched).
    if type(x) is np.ndarray and x.dtype == dtype:  # fast path: used as it is, no copy, no conversion
        if x.shape == shape[1:]:
            return x[None], False
        if x.ndim == len(shape) and x.shape[1:] == shape[1:]:
            return x, True
    return batch_of(as_numbers(x, dtype, shape, name), shape, name)


def as_text_batch(x, shape, dtype, name):
    # as_batch for a text input (dtype "string"): str values, or UTF-8 bytes.
    return batch_of(text_batch(x, name), shape, name)


def batch_of(a, shape, name):
    # (a as a batch, whether it was one) after checking its rank and fixed dimensions against `shape`.
    if a.ndim == len(shape) - 1:
        a = a[None]
        batched = False
    elif a.ndim == len(shape):
        batched = True
    else:
        raise ValueError(
            f"input {name!r}: expected shape {shape[1:]} (one sample) or {shape} (a batch), "
            f"got an array of shape {np.shape(a)}"
        )
    for got, want in zip(a.shape[1:], shape[1:]):
        if want is not None and got != want:
            raise ValueError(f"input {name!r}: expected shape {shape[1:]} or {shape}, got {a.shape}")
    return a, batched


def text_batch(x, name):
    # A text input: a NumPy array or (nested) list of str (or UTF-8 bytes), as a NumPy str array.
    a = np.asarray(x)
    if a.dtype.kind == "S":
        return np.char.decode(a, "utf-8")
    if a.dtype.kind == "O" and all(isinstance(v, str) for v in a.flat):
        a = a.astype(str)
    if a.dtype.kind != "U":
        raise ValueError(f"input {name!r}: expected str values, got an array of {a.dtype}")
    return a


def as_numbers(x, dtype, shape, name):
    # An array or nested list of real numbers as an array of `dtype`; anything else is a ValueError
    # saying what was passed. Checked first: NumPy would make None a NaN and parse strings.
    if type(x) is np.ndarray and x.dtype.kind in "biuf":  # the usual case: another numeric dtype
        return x.astype(dtype)
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):  # e.g. nested lists of different lengths
        a = None
    # (Strings, bytes and dicts are arrays of kind U, S and O: refused here too.)
    if a is not None and (a.dtype.kind in "biuf" or (a.dtype.kind == "O" and all(is_real(v) for v in a.flat))):
        try:
            return a.astype(dtype, copy=False)
        except (TypeError, ValueError, OverflowError):
            pass
    raise ValueError(
        f"input {name!r}: expected numbers, an array or nested list of shape {shape[1:]} (one sample) "
        f"or {shape} (a batch), got {described(x, a)}"
    )


def is_real(v):
    return isinstance(v, (int, float, np.bool_, np.integer, np.floating))


def described(x, a):
    # What a caller passed instead of numbers, in a few words (never its whole repr).
    if x is None:
        return "None"
    if isinstance(x, (str, bytes)):
        return f"the {type(x).__name__} {x[:30]!r}" + ("..." if len(x) > 30 else "")
    if isinstance(x, dict):
        return "a dict (only a model with several inputs takes them by name)"
    if a is None:
        return f"a {type(x).__name__} that is not a rectangular array (rows of different lengths?)"
    if not isinstance(x, np.ndarray) and not a.ndim:
        return f"an object of type {type(x).__name__}"
    what = "an array" if isinstance(x, np.ndarray) else f"a {type(x).__name__}"
    if a.dtype.kind == "O":
        for v in a.flat:
            if not is_real(v):
                return f"{what} holding {type(v).__name__}"
        return f"{what} holding numbers out of range"
    return f"{what} of strings" if a.dtype.kind in "US" else f"{what} of dtype {a.dtype}"


def collect_inputs(args, names):
    # predict(x0, x1), predict([x0, x1]) and predict({"name": x0, ...}) all give [x0, x1].
    if len(args) == 1 and isinstance(args[0], dict):
        given = args[0]
        missing = [n for n in names if n not in given]
        if missing or len(given) != len(names):
            raise ValueError(f"expected inputs named {list(names)}, got {list(given)}")
        return [given[n] for n in names]
    if len(args) == 1 and len(names) > 1 and isinstance(args[0], (list, tuple)) and len(args[0]) == len(names):
        return list(args[0])
    if len(args) != len(names):
        raise ValueError(f"expected {len(names)} inputs {list(names)}, got {len(args)}")
    return list(args)


def unpack_weights(blob, table):
    # Embedded weights: one base64 blob, sliced into read-only arrays by (offset, dtype, shape).
    # float16 storage (konverter --weights float16) is widened to float32 once, here.
    raw = base64.b64decode(blob)
    arrays = []
    for offset, dtype, shape in table:
        a = np.frombuffer(raw, dtype, math.prod(shape), offset).reshape(shape)
        if a.dtype == np.float16:
            a = a.astype(np.float32)
            a.flags.writeable = False
        arrays.append(a)
    return arrays


def read_weights(namespace, table, size, narrow=()):
    # The weights are base64 in the "#:" comment lines at the end of this module's source, after the
    # code: never compiled, so the .pyc holds none of them and no string copy of them is ever made.
    # Decoded here once, 1 MB at a time, straight into each array's own buffer (allocated when the
    # stream reaches it); float16 storage is widened to float32 as soon as an array is complete,
    # except the arrays numbered in `narrow` (large ones): they stay float16, and predict widens each
    # at the call that uses it (widen). Peak memory: the arrays as kept plus one array's stored
    # bytes. Arrays are read-only.
    arrays, current, pos = [], None, 0  # pos: bytes of the stream consumed so far
    try:
        for data in weight_blocks(module_source(namespace)):
            data, at = memoryview(data), 0
            while at < len(data):
                if len(arrays) == len(table):  # the last array's alignment padding (pos is checked below)
                    pos += len(data) - at
                    break
                offset, dtype, shape = table[len(arrays)]
                nbytes = np.dtype(dtype).itemsize * math.prod(shape)
                if pos < offset:  # alignment padding before this array
                    skip = min(offset - pos, len(data) - at)
                    at, pos = at + skip, pos + skip
                    continue
                if current is None:
                    current = bytearray(nbytes)
                take = min(offset + nbytes - pos, len(data) - at)
                current[pos - offset : pos - offset + take] = data[at : at + take]
                at, pos = at + take, pos + take
                if pos == offset + nbytes:
                    arrays.append(stored_array(current, dtype, shape, len(arrays) in narrow))
                    current = None
    except (ValueError, TypeError) as err:  # a damaged line
        raise ImportError(f"the weights at the end of this file are damaged ({type(err).__name__})") from None
    while len(arrays) < len(table) and table[len(arrays)][0] >= pos and 0 in table[len(arrays)][2]:
        arrays.append(stored_array(bytearray(0), table[len(arrays)][1], table[len(arrays)][2], False))  # empty arrays
    if len(arrays) != len(table) or pos != size:
        raise ImportError(f"the weights at the end of this file are damaged or cut off ({pos} bytes, not {size})")
    return arrays


def stored_array(buffer, dtype, shape, narrow):
    # One array of read_weights: a read-only view of its bytes, float16 widened to float32 unless `narrow`.
    a = np.frombuffer(buffer, dtype).reshape(shape)
    if a.dtype == np.float16 and not narrow:
        a = a.astype(np.float32)
    a.flags.writeable = False
    return a


def widen(weight):
    # A weight kept float16 in memory (read_weights' `narrow`) as the exact float32 array a layer
    # function computes with: made at the call that uses it, dropped after. Layer functions never see
    # float16 (NumPy computes float16 with float16 in float16).
    return weight.astype(np.float32)


def weight_blocks(lines):
    # The decoded bytes of the "#:" lines after the "# konverter-weights" marker, 256 lines at a time.
    try:
        for line in lines:  # the code, up to the marker line
            if line.startswith(b"# konverter-weights"):
                break
        block = []
        for line in lines:
            if not line.startswith(b"#:"):
                break
            block.append(line)
            if len(block) == 256:
                yield base64.b64decode(b"".join(block))  # skips the "#:" and the line ends
                block = []
        if block:
            yield base64.b64decode(b"".join(block))
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()


def module_source(namespace):
    # This module's own source, as lines of bytes: streamed from its file (constant memory), or from
    # its loader when there is no file (konverter.load() imports from memory, zip imports).
    path = namespace.get("__file__")
    if path:
        try:
            return open(path, "rb")
        except OSError:
            pass
    spec = namespace.get("__spec__")
    get_data = getattr(getattr(spec, "loader", None), "get_data", None)
    if get_data is None or not getattr(spec, "origin", None):
        raise ImportError("cannot read the weights: they are stored at the end of this module's source file")
    return lines_of(get_data(spec.origin))


def lines_of(data):
    # The lines of a bytes object, one at a time (no list of all of them).
    start = 0
    while start < len(data):
        end = data.find(b"\n", start) + 1 or len(data)
        yield data[start:end]
        start = end


def one_sample_buffers(widths):
    # Per-thread work buffers of the one-sample path: for each width n, a float32 vector of n + 1
    # ending in 1.0 (it multiplies the bias row of an augmented kernel), a view of its first n
    # entries, and n zeros for ReLU. First of all, the input's entries as a (1, n) row, which takes
    # one sample of shape (n,) or (1, n) alike.
    buffers = []
    for n in widths:
        full = np.ones(n + 1, dtype=np.float32)
        buffers += [full, full[:n], np.zeros(n, dtype=np.float32)]
    return [buffers[0][None, : widths[0]]] + buffers


def row_workspaces(rows, widths):
    # Per-thread workspaces of the batch path of a Dense chain: one (rows, width) float32 array per layer.
    return [np.empty((rows, n), dtype=np.float32) for n in widths]


def compare_outputs(got, want, atol, rtol):
    # Per output: (max abs error, max rel error, within |got - want| <= atol + rtol * |want|). NaN matches only NaN.
    # float64 on purpose: this measures the model's float32 results, it is not part of the model's math.
    report = []
    for g, w in zip(got, want):
        g = np.asarray(g, dtype=np.float64)
        w = np.asarray(w, dtype=np.float64)
        if g.shape != w.shape:
            report.append((math.inf, math.inf, False))
            continue
        err = np.abs(g - w)
        err = np.where(np.isnan(g) & np.isnan(w), 0.0, np.where(np.isnan(err), math.inf, err))
        scale = np.abs(np.where(np.isnan(w), 0.0, w))
        within = bool(np.all(err <= atol + rtol * scale))
        # Relative error only where |want| exceeds atol: near zero the absolute tolerance governs.
        rel = np.divide(err, scale, out=np.zeros_like(err), where=scale > atol)
        report.append((float(err.max(initial=0.0)), float(rel.max(initial=0.0)), within))
    return report


def quiet_fp_state():
    # (set, reset, state): run predict with NumPy's floating-point warnings off, like Keras (inf and
    # NaN propagate silently). NumPy 2 keeps that state in a ContextVar (per thread); setting it
    # directly costs ~0.1 us where the np.errstate context manager costs ~0.9 us, a tenth of a small
    # model's whole prediction. Any other NumPy: the public np.errstate.
    try:
        from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

        return _extobj_contextvar.set, _extobj_contextvar.reset, _make_extobj(all="ignore")
    except (ImportError, AttributeError, TypeError):
        return errstate_enter, errstate_exit, None


def errstate_enter(_):
    state = np.errstate(all="ignore")
    state.__enter__()
    return state


def errstate_exit(state):
    state.__exit__(None, None, None)
