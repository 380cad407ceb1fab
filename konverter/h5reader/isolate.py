"""The reader process: the HDF5 library parses an untrusted file in a child process.

libhdf5 is C, and byte-fuzzed files make it crash (SIGSEGV), loop or allocate without end. Run in a
child, the worst a file can do is end that process: the conversion reports one line, exit 3, and a
folder conversion goes on. The child is forked where that is safe (Linux, BSD: ~5 ms), else started
as `python -m konverter.h5reader.isolate FILE`. It has an address-space limit (a heap or
decompression bomb fails there as an allocation error), is killed when it stops making progress, and
dies with its parent.

Nothing it sends is unpickled: frames of JSON (the config, weight names and layout, errors) and raw
array bytes whose dtype and shape the parent checks before it allocates anything.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import warnings

import numpy as np

from .. import errors
from ..errors import BadModelFile
from . import memory
from .model import ModelFile

# A reader that sends nothing for this long is stuck (libhdf5 loops on some damaged structures).
STALL_SECONDS = 60.0
# The child may map this much beyond what it had when it started, plus ALLOWANCE_PER_BYTE times the
# file's size: config, names, the HDF5 library's own structures and its read buffers.
BASE_ALLOWANCE = 512 << 20
ALLOWANCE_PER_BYTE = 16
FRAME = struct.Struct("<cQ")  # kind, payload length
DTYPE = re.compile(r"[<>|=][fiub][0-9]{1,2}")
MAX_RANK = 32
PR_SET_PDEATHSIG = 1
PIPE_BYTES = 1 << 20
F_SETPIPE_SZ = 1031  # Linux fcntl


def wanted() -> bool:
    """Read in a child process unless KONVERTER_READER=inline (debugging, and fuzzing the raw reader)."""
    return os.environ.get("KONVERTER_READER", "") != "inline"


def _can_fork() -> bool:
    # macOS system libraries may not survive fork in a process that started threads; Windows has no fork.
    mode = os.environ.get("KONVERTER_READER", "")
    return mode != "spawn" and hasattr(os, "fork") and sys.platform != "darwin"


STOP_SIGNALS = {s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None}


class ReaderError(RuntimeError):
    """A bug in Konverter's reader, met in the reader process (its traceback is in the message's notes)."""


# ----------------------------------------------------------------------------- parent side
def read(path: str) -> ModelFile:
    """Read `path` in a child process and rebuild its ModelFile here."""
    size = os.path.getsize(path)
    try:
        child = _Child(path)
    except OSError:  # no process can be started here (a sandbox): read as before there was a reader process
        from . import read_here

        return read_here(path)
    try:
        return _Receiver(child, size).run()
    except MemoryError:  # the config or names, parsed here once more
        raise BadModelFile(memory.exhausted(size)) from None
    finally:
        child.close()


class _Child:
    """The reader process and the read end of its pipe, killed if it stalls."""

    def __init__(self, path: str) -> None:
        self.pid = self.proc = None
        self._reaping = threading.Lock()
        read_fd = self._fork(path) if _can_fork() else None
        if read_fd is None:
            # The child imports this very konverter, wherever the caller found it.
            package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            paths = [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            self.proc = subprocess.Popen(
                [sys.executable, "-m", __name__, path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONPATH=os.pathsep.join(paths)),
            )
            read_fd = os.dup(self.proc.stdout.fileno())
            self.proc.stdout.close()
        self.stream = os.fdopen(read_fd, "rb", buffering=0)
        self.last = time.monotonic()
        self.stalled = False
        self._done = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="konverter-reader-watchdog", daemon=True)
        self._watchdog.start()

    def _fork(self, path: str) -> int | None:
        """Fork the reader; the read end of its pipe, or None when fork failed (then it is spawned)."""
        read_fd, write_fd = os.pipe()
        _widen(write_fd)
        # Stop signals wait until the fork is done: one landing in the child while Python finishes the
        # fork would print a traceback there. The child then takes them the default way (it just ends).
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if hasattr(signal, "pthread_sigmask") else None
        pid = None
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns on fork in a process with threads (a progress bar): the child only
                # reads the file and never takes a lock those threads hold.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:  # e.g. a very large process under strict overcommit
            os.close(read_fd)
            os.close(write_fd)
            return None
        finally:
            if held is not None and pid != 0:  # the parent (or a failed fork) takes its signals again
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if pid == 0:  # the child: never returns into the caller's code
            code = 1
            try:
                for number in STOP_SIGNALS:
                    signal.signal(number, signal.SIG_DFL)
                if held is not None:
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
                gc.disable()  # a collection would touch (and so copy) every page of the parent's heap
                os.close(read_fd)
                serve(write_fd, path)
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        self.pid = pid
        return read_fd

    def _watch(self) -> None:
        while not self._done.wait(min(1.0, STALL_SECONDS / 4)):
            if time.monotonic() - self.last > STALL_SECONDS:
                self.stalled = True
                self.kill()
                return

    def read_into(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            n = self.stream.readinto(view[done:])
            if not n:
                raise EOFError
            done += n
            self.last = time.monotonic()

    def kill(self) -> None:
        with self._reaping:  # never a signal to a process id that was reaped (and maybe reused)
            try:
                if self.pid is not None:
                    os.kill(self.pid, signal.SIGKILL)
                elif self.proc is not None:
                    self.proc.kill()
            except (ProcessLookupError, OSError):
                pass

    def status(self) -> tuple:
        """(signal number or None, exit code or None) once the child has ended."""
        with self._reaping:
            if self.pid is not None:
                _, status = os.waitpid(self.pid, 0)
                self.pid = None
                if os.WIFSIGNALED(status):
                    return os.WTERMSIG(status), None
                return None, os.WEXITSTATUS(status)
        code = self.proc.wait()
        return (-code, None) if code < 0 else (None, code)

    def close(self) -> None:
        """Stop the child if it still runs; it is reaped in the background (its exit takes milliseconds)."""
        self._done.set()
        self.stream.close()
        if self.pid is not None or (self.proc is not None and self.proc.poll() is None):
            self.kill()
            threading.Thread(target=self.status, name="konverter-reader-reaper", daemon=True).start()


class _Receiver:
    """Reads the child's frames: a plan, arrays (header, then data), and the model or an error."""

    def __init__(self, child: _Child, size: int) -> None:
        self.child = child
        self.max_frame = (256 << 20) + 32 * size  # JSON frames: config and names, which the child bounded
        self.arrays: list = []
        self.budget = None

    def run(self) -> ModelFile:
        try:
            while True:
                head = bytearray(FRAME.size)
                self.child.read_into(memoryview(head))
                kind, length = FRAME.unpack(head)
                model = self._payload(kind, self._body(kind, length))
                if model is not None:
                    return model
        except EOFError:
            raise self._ended() from None

    def _body(self, kind: bytes, length: int) -> dict:
        if kind == b"d" or length > self.max_frame:
            raise _protocol(f"a frame {kind!r} of {length} bytes")
        body = bytearray(length)
        self.child.read_into(memoryview(body))
        try:
            return json.loads(body) if length else {}
        except ValueError:
            raise _protocol("a frame that is not JSON") from None

    def _payload(self, kind: bytes, payload: dict) -> ModelFile | None:
        """Act on one frame: the model when it is the last one."""
        if kind == b"k":
            return None
        if kind == b"p":
            self.budget = int(payload["need"])
            memory.require(self.budget)
            return None
        if kind == b"a":
            self._array(payload)
            return None
        if kind == b"m":
            return self._model(payload)
        if kind == b"e":
            raise _error(payload)
        if kind == b"x":
            err = ReaderError(f"{payload.get('type')}: {payload.get('message')}")
            err.__notes__ = [str(payload.get("traceback", ""))]
            raise err
        raise _protocol(f"frame {kind!r}")

    def _array(self, info: dict) -> None:
        dtype, shape = info.get("dtype"), info.get("shape")
        valid = isinstance(dtype, str) and DTYPE.fullmatch(dtype) and isinstance(shape, list) and len(shape) <= MAX_RANK
        if not valid or not all(isinstance(d, int) and d >= 0 for d in shape) or info.get("number") != len(self.arrays):
            raise _protocol("an array header")
        dtype = np.dtype(dtype)
        nbytes = memory.nbytes(dtype, shape)
        if self.budget is None or nbytes > self.budget:
            raise _protocol("an array beyond the announced size")
        self.budget -= nbytes
        try:
            out = np.empty(shape, dtype)
        except MemoryError:
            raise BadModelFile(
                f"reading its weights needs more memory than is available ({memory.human(nbytes)} for one)"
            ) from None
        view = memoryview(out.reshape(-1)).cast("B")
        filled = 0
        while filled < nbytes:
            head = bytearray(FRAME.size)
            self.child.read_into(memoryview(head))
            kind, length = FRAME.unpack(head)
            if kind in (b"k", b"e", b"x"):  # a sign of life between pieces, or the error that ended the reading
                self._payload(kind, self._body(kind, length))
                continue
            if kind != b"d":
                raise _protocol("array data")
            if length > nbytes - filled:
                raise _protocol("array data")
            self.child.read_into(view[filled : filled + length])
            filled += length
        self.arrays.append(out)

    def _model(self, info: dict) -> ModelFile:
        try:
            config = json.loads(info["config"])
            model = ModelFile(info["path"], info["format"], info["keras_version"], info["backend"], config)
            for key, numbers, names in info["weights"]:
                model.weights[tuple(key)] = [self.arrays[n] for n in numbers]
                model.weight_names[tuple(key)] = list(names)
            model.asset_folders = {tuple(key): str(folder) for key, folder in info.get("asset_folders", [])}
        except (KeyError, TypeError, ValueError, IndexError):
            raise _protocol("the model") from None
        return model

    def _ended(self) -> BadModelFile:
        sig, code = self.child.status()
        if self.child.stalled:
            return BadModelFile(
                f"the HDF5 library made no progress reading it for {STALL_SECONDS:.0f} s (a damaged file?)"
            )
        if sig is not None and sig == getattr(signal, "SIGKILL", None):
            return BadModelFile("the reader process was killed while reading it (out of memory?)")
        if sig is not None:
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            return BadModelFile(f"the HDF5 library crashed reading it ({name}): the file is damaged")
        return BadModelFile(f"the reader process ended without an answer (exit {code})")


def _protocol(what: str) -> BadModelFile:
    return BadModelFile(f"the reader process sent {what} that makes no sense (the file is damaged)")


def _error(info: dict) -> Exception:
    """The child's KonverterError, as the same class here."""
    cls = getattr(errors, str(info.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.KonverterError)):
        cls = BadModelFile
    return cls(str(info.get("message", "")))


def _widen(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)  # fewer wake-ups for large weights
    except (ImportError, OSError, ValueError):
        pass


# ----------------------------------------------------------------------------- child side
class _Writer:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _write(self, data) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            view = view[os.write(self.fd, view) :]

    def json(self, kind: bytes, value: dict) -> None:
        body = json.dumps(value).encode()
        self._write(FRAME.pack(kind, len(body)) + body)

    def data(self, piece: np.ndarray) -> None:
        piece = np.ascontiguousarray(piece)
        self._write(FRAME.pack(b"d", piece.nbytes))
        self._write(piece.reshape(-1).view(np.uint8))


def serve(fd: int, path: str) -> None:
    """The child's work: read `path` and send the frames to `fd`."""
    from . import load  # the reading code itself (imported here: it imports this module)

    _quiet_child()
    out = _Writer(fd)
    size = os.path.getsize(path)
    baseline = memory.mapped_bytes()
    allowance = BASE_ALLOWANCE + ALLOWANCE_PER_BYTE * size
    memory.limit_address_space(allowance, baseline)

    def plan(need: int, here: int) -> None:
        out.json(b"p", {"need": need})
        memory.limit_address_space(allowance + here, baseline)

    def deliver(number: int, dtype: np.dtype, shape: tuple, pieces) -> None:
        out.json(b"a", {"number": number, "dtype": dtype.str, "shape": list(shape)})
        for piece in pieces:
            out.data(piece)

    last = [time.monotonic()]

    def progress() -> None:  # a sign of life for the watchdog, at most twice a second
        now = time.monotonic()
        if now - last[0] > 0.5:
            last[0] = now
            out.json(b"k", {})

    try:
        model = load(path, plan, deliver, progress)
        weights = [[list(key), numbers, model.weight_names.get(key, [])] for key, numbers in model.weights.items()]
        info = {"path": model.path, "format": model.format, "keras_version": model.keras_version}
        folders = [[list(key), folder] for key, folder in model.asset_folders.items()]
        info.update(backend=model.backend, config=json.dumps(model.config), weights=weights, asset_folders=folders)
        out.json(b"m", info)
    except errors.KonverterError as err:
        out.json(b"e", {"class": type(err).__name__, "message": str(err)})
    except MemoryError:
        out.json(b"e", {"class": "BadModelFile", "message": memory.exhausted(size)})
    except RecursionError:
        out.json(b"e", {"class": "BadModelFile", "message": "the model config is nested too deeply"})
    except Exception as err:
        info = {"type": type(err).__name__, "message": str(err)[:500], "traceback": traceback.format_exc()[-8000:]}
        out.json(b"x", info)


def _quiet_child() -> None:
    """Nothing from the child reaches the terminal; it dies with its parent; Ctrl-C ends it at once."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    if faulthandler.is_enabled():
        faulthandler.disable()  # a crash of libhdf5 is reported by the parent, in one line
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def main() -> None:
    """`python -m konverter.h5reader.isolate FILE`: the reader process where fork is not used."""
    fd = os.dup(1)
    serve(fd, sys.argv[1])


if __name__ == "__main__":
    main()
