"""Converting many models: find them, pick output paths, convert in parallel processes, skip up-to-date ones."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional

from .convert import convert_file, default_output, is_up_to_date, output_path
from .errors import EXIT_BAD_FILE, EXIT_INTERNAL, EXIT_OK, KonverterError
from .h5reader import MODEL_SUFFIXES

CONVERTED, SKIPPED, FAILED, NOT_RUN = "converted", "skipped", "failed", "not run"


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
    file with the same SHA-256 and the same settings. `force` converts anyway.
    """
    start = time.perf_counter()
    try:
        dest = output_path(source, target)
        if not force and dest.exists() and is_up_to_date(source, dest, options, embed_check):
            return Outcome(source, dest, SKIPPED, EXIT_OK, "up to date", 0, time.perf_counter() - start)
        dest, program = convert_file(source, dest, force=force, options=options, embed_check=embed_check)
        return Outcome(source, dest, CONVERTED, EXIT_OK, "", program.layer_count, time.perf_counter() - start)
    except KonverterError as err:
        return Outcome(source, None, FAILED, err.exit_code, str(err), 0, time.perf_counter() - start)
    except RecursionError:
        message = "the model config is nested too deeply"
        return Outcome(source, None, FAILED, EXIT_BAD_FILE, message, 0, time.perf_counter() - start)
    except Exception as err:  # a bug in Konverter: still one line, unless --debug
        if debug:
            raise
        message = f"internal error, please report it ({type(err).__name__}: {str(err)[:200]}); --debug shows details"
        return Outcome(source, None, FAILED, EXIT_INTERNAL, message, 0, time.perf_counter() - start)


def find_models(folder: Path, recursive: bool = False) -> List[Path]:
    """Every .h5/.hdf5/.keras file in `folder` (and its subfolders with `recursive`), sorted."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)


def folder_targets(models: List[Path], folder: Path, out: Optional[Path]) -> dict:
    """Output path per model; model.h5 and model.keras side by side get model_h5.py and model_keras.py."""
    targets = {}
    for m in models:
        rel = m.relative_to(folder)
        base = (out / rel) if out is not None else m
        targets[m] = default_output(base)
    seen: dict = {}
    for m, t in targets.items():
        seen.setdefault(t, []).append(m)
    for t, group in seen.items():
        if len(group) > 1:
            for m in group:
                targets[m] = t.with_name(f"{t.stem}_{m.suffix.lstrip('.').lower()}.py")
    return targets


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
    """
    pending = list(targets.items())
    jobs = jobs if jobs > 0 else (os.cpu_count() or 1)
    if jobs <= 1 or len(pending) <= 1:
        yield from _sequential(pending, fail_fast, force, options, debug, on_start)
        return
    # "spawn": the same on every OS, and safe although the caller may run threads (a progress bar).
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=context) as pool:
        futures = {
            pool.submit(convert_one, source, target, force=force, options=options, debug=debug): source
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
