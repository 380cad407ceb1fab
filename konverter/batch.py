"""Converting many models: find them, pick distinct output paths, convert in parallel processes, skip
up-to-date ones, and stop every worker at once on Ctrl-C (or SIGTERM/SIGHUP)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional

from .convert import convert_file, default_output, is_up_to_date, output_path, require_regular_file
from .errors import EXIT_BAD_FILE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_OUTPUT, KonverterError
from .h5reader import MODEL_SUFFIXES

CONVERTED, SKIPPED, FAILED, NOT_RUN = "converted", "skipped", "failed", "not run"
# Signals that stop a run like Ctrl-C: the command's exit code is 128 + the signal's number.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@dataclass
class Outcome:
    """What happened to one model file."""

    source: Path
    target: Optional[Path]
    status: str  # CONVERTED, SKIPPED (output already up to date), FAILED, NOT_RUN (--fail-fast stopped first)
    code: int  # exit code: 0 unless FAILED
    message: str
    layers: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.code == EXIT_OK

    def to_dict(self) -> dict:
        data = asdict(self)
        data["source"] = str(self.source)
        data["target"] = None if self.target is None else str(self.target)
        data["seconds"] = round(self.seconds, 4)
        return data


def convert_one(
    source: Path,
    target: Optional[Path] = None,
    *,
    force: bool = False,
    options: Optional[dict] = None,
    embed_check: Optional[Path] = None,
    debug: bool = False,
) -> Outcome:
    """Convert one file into an Outcome, never raising (except with `debug`, for internal errors).

    The output is left alone when it is up to date: written by this Konverter version from a model
    file with the same SHA-256 and the same settings, and unchanged since. `force` converts anyway.
    """
    start = time.perf_counter()
    try:
        require_regular_file(source)  # before anything hashes or opens it: a FIFO would block
        dest = output_path(source, target)
        if not force and is_up_to_date(source, dest, options, embed_check):
            return Outcome(source, dest, SKIPPED, EXIT_OK, "up to date", 0, time.perf_counter() - start)
        dest, program = convert_file(source, dest, force=force, options=options, embed_check=embed_check)
        note = "; ".join(program.notes)  # converted, with something to know (NaN weights)
        return Outcome(source, dest, CONVERTED, EXIT_OK, note, program.layer_count, time.perf_counter() - start)
    except KonverterError as err:
        return Outcome(source, None, FAILED, err.exit_code, str(err), 0, time.perf_counter() - start)
    except RecursionError:
        message = "the model config is nested too deeply"
        return Outcome(source, None, FAILED, EXIT_BAD_FILE, message, 0, time.perf_counter() - start)
    except MemoryError:
        message = "needs more memory than this machine can give"
        return Outcome(source, None, FAILED, EXIT_BAD_FILE, message, 0, time.perf_counter() - start)
    except Exception as err:  # a bug in Konverter: still one line, unless --debug
        if debug:
            raise
        message = f"internal error, please report it ({type(err).__name__}: {str(err)[:200]}); --debug shows details"
        return Outcome(source, None, FAILED, EXIT_INTERNAL, message, 0, time.perf_counter() - start)


def find_models(folder: Path, recursive: bool = False) -> List[Path]:
    """Every .h5/.hdf5/.keras file in `folder` (and its subfolders with `recursive`), sorted.

    Only regular files count: a FIFO or device named like a model is never opened.
    """
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in MODEL_SUFFIXES and p.is_file())


@dataclass
class Plan:
    """What a run over several paths will do: output per model, files refused up front, hints."""

    models: List[Path] = field(default_factory=list)  # every model found, in the order given (folders sorted)
    targets: Dict[Path, Path] = field(default_factory=dict)  # model -> output, for those converted
    refused: Dict[Path, str] = field(default_factory=dict)  # model -> why it is not converted
    hints: List[str] = field(default_factory=list)


def plan(paths: Iterable[Path], out: Optional[str | os.PathLike] = None, recursive: bool = False) -> Plan:
    """Outputs for every model named by `paths` (files, and the model files in folders).

    Outputs go next to each model, or under `out` (a folder: a file's output goes inside it, a
    folder's layout is mirrored). The same model given twice is converted once. Models whose
    outputs would be one file (m.h5 and m.keras) get m_h5.py and m_keras.py; if that still leaves
    two models on one output (m.h5 and m.H5, or names that differ only in case, which are one file
    on macOS and Windows) those models are refused, never silently overwritten. A model whose own
    name gives that output (m_keras.keras) keeps it.
    """
    result = Plan()
    natural: Dict[Path, Path] = {}
    seen = set()
    for path in paths:
        if path.is_dir():
            found = find_models(path, recursive)
            if not found and not recursive and find_models(path, True):
                result.hints.append(f"{path} has model files only in subfolders: add --recursive")
            pairs = [(m, m.relative_to(path)) for m in found]
        else:
            pairs = [(path, Path(path.name))]
        for model, rel in pairs:
            key = _identity(model)
            if key in seen:
                continue
            seen.add(key)
            natural[model] = default_output(model if out is None else Path(out) / rel)
    renamed = {}
    for group in _collisions(natural).values():
        for model in group:
            target = natural[model]
            renamed[model] = target.with_name(f"{target.stem}_{model.suffix.lstrip('.').lower()}.py")
    targets = {**natural, **renamed}
    for group in _collisions(targets).values():
        # A model keeping its own name (m_keras.keras -> m_keras.py) wins over one renamed onto it (m.keras).
        keeps = [m for m in group if m not in renamed]
        losers = [m for m in group if m is not keeps[0]] if len(keeps) == 1 else group
        differ_in_case = len({str(targets[m]) for m in group}) > 1
        for model in losers:
            others = ", ".join(str(m) for m in group if m is not model)
            result.refused[model] = f"its output {targets[model]} would also be the output of {others}; rename one" + (
                " (names that differ only in case are one file on macOS and Windows)" if differ_in_case else ""
            )
    result.models = list(targets)
    result.targets = {m: t for m, t in targets.items() if m not in result.refused}
    return result


def _identity(path: Path) -> tuple:
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return (os.path.abspath(path),)


def _collisions(targets: Dict[Path, Path]) -> Dict[str, List[Path]]:
    """Outputs claimed by more than one model, compared as a case-insensitive file system would."""
    groups: Dict[str, List[Path]] = {}
    for model, target in targets.items():
        groups.setdefault(os.path.normcase(os.path.abspath(target)).casefold(), []).append(model)
    return {key: group for key, group in groups.items() if len(group) > 1}


def refused_outcome(source: Path, message: str) -> Outcome:
    return Outcome(source, None, FAILED, EXIT_OUTPUT, message, 0, 0.0)


def convert_many(
    targets: dict,
    *,
    jobs: int = 1,
    fail_fast: bool = False,
    force: bool = False,
    options: Optional[dict] = None,
    debug: bool = False,
    on_start: Optional[Callable[[Path], None]] = None,
) -> Iterator[Outcome]:
    """Convert every `source -> target` pair, yielding Outcomes as they finish.

    `jobs` > 1 converts in that many worker processes (0: one per CPU). With `fail_fast` nothing new starts after the
    first failure; the files not started are yielded as NOT_RUN (conversions already running finish).
    An exception in the caller (KeyboardInterrupt) or closing the iterator stops every worker at once: each
    removes its temporary file and exits, so no partial output is left and nothing more is converted.
    """
    pending = list(targets.items())
    jobs = jobs if jobs > 0 else (os.cpu_count() or 1)
    if jobs <= 1 or len(pending) <= 1:
        yield from _sequential(pending, fail_fast, force, options, debug, on_start)
        return
    # "spawn": the same on every OS, and safe although the caller may run threads (a progress bar).
    context = multiprocessing.get_context("spawn")
    before = set(multiprocessing.active_children())
    # The pool's helper processes (its workers and multiprocessing's resource tracker) start with the stop
    # signals blocked: a Ctrl-C, or a SIGHUP from a closing terminal, that reaches the whole process group
    # during their start-up can print no traceback there. Here, the signals arrive as soon as this ends.
    with _signals_blocked():
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=min(jobs, len(pending)), mp_context=context, initializer=_worker_start
        )
    try:
        with _signals_blocked():
            futures = {
                pool.submit(_convert_in_worker, source, target, force=force, options=options, debug=debug): source
                for source, target in pending
            }
        stopped = False
        for future in concurrent.futures.as_completed(futures):
            if future.cancelled():
                continue
            outcome = future.result()
            yield outcome
            if fail_fast and not outcome.ok and not stopped:
                stopped = True
                for other in futures:
                    other.cancel()
        for future, source in futures.items():
            if future.cancelled():
                yield _not_run(source, targets[source])
    except BaseException:
        _stop_workers(pool, before)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block the stop signals in this thread; processes started meanwhile inherit the mask."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: Ctrl-C reaches workers as an ordinary interrupt
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor, before: set) -> None:
    """Cancel what has not started and end the workers now (SIGTERM: each removes its temporary file)."""
    pool.shutdown(wait=False, cancel_futures=True)
    workers = [p for p in multiprocessing.active_children() if p not in before]
    for process in workers:
        process.terminate()
    for process in workers:
        process.join(10)
        if process.is_alive():  # stuck in a C call that never returns: nothing else ends it
            process.kill()
            process.join(1)


_BUSY = False  # in a worker: converting now (a stop signal must unwind to remove the temporary file)
_STOPPING = False  # in a worker: a stop signal arrived; later ones must not cut the cleanup short


def _worker_start() -> None:
    # Ctrl-C reaches every process of the terminal's group: the parent decides and ends the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in STOP_SIGNALS[1:]:
        signal.signal(signum, _worker_stop)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))


def _worker_stop(signum: int, frame: object) -> None:
    # A closing terminal sends SIGHUP to every process and the parent then sends SIGTERM: act on the first.
    global _STOPPING
    if _STOPPING:
        return
    _STOPPING = True
    if _BUSY:
        raise KeyboardInterrupt  # unwinds the conversion: write_atomically removes its temporary file
    os._exit(128 + signum)


def _convert_in_worker(source: Path, target: Optional[Path], **kwargs) -> Outcome:
    global _BUSY
    _BUSY = True
    try:
        return convert_one(source, target, **kwargs)
    except KeyboardInterrupt:  # stopped by the parent: no result, no traceback, no temporary file
        os._exit(EXIT_INTERRUPTED)
    finally:
        _BUSY = False


def _sequential(
    pending: Iterable, fail_fast: bool, force: bool, options: Optional[dict], debug: bool, on_start
) -> Iterator[Outcome]:
    stopped = False
    for source, target in pending:
        if stopped:
            yield _not_run(source, target)
            continue
        if on_start is not None:
            on_start(source)
        outcome = convert_one(source, target, force=force, options=options, debug=debug)
        stopped = fail_fast and not outcome.ok
        yield outcome


def _not_run(source: Path, target: Optional[Path]) -> Outcome:
    return Outcome(source, target, NOT_RUN, EXIT_OK, "not started: an earlier file failed (--fail-fast)", 0, 0.0)
