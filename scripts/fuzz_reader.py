"""Byte-level fuzzer of Konverter's model reader (issue 15, section 0).

Mutates valid model files byte by byte (flips, boundary values, little-endian fields set to
interesting numbers, truncations, insertions, deletions, copied blocks; inside a .keras archive the
weights member is mutated and re-zipped with a correct CRC) and reads each mutant in a forked process
with an address-space limit and an alarm. The promise: `read_model` returns a ModelFile or raises a
KonverterError with a one-line message; never a signal, another exception, a hang or a blow-up.

    python scripts/fuzz_reader.py --cases 5000 --seed 1             # h5py, through the reader process
    KONVERTER_FORCE_PYFIVE=1 python scripts/fuzz_reader.py --cases 2000
    KONVERTER_READER=inline python scripts/fuzz_reader.py --save out/  # the raw library: finds crashes

Mutants are a pure function of (source, seed, case number), so a finding is reproduced with
`--source NAME --seed S --only N`; `--save DIR` writes each finding to DIR (the regression corpus in
tests/fixtures/hostile/fuzz/ came from there). POSIX only (fork).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import signal
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from konverter.errors import KonverterError  # noqa: E402  (imported once, before any fork)
from konverter.h5reader import read_here, read_model  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
# Small files of the kinds the issue names: an LSTM, BatchNormalization + Dense, a nested Sequential,
# a Functional model, and a .keras archive.
SOURCES = {
    "lstm": FIXTURES / "recurrent" / "text_classifier__k2h5.h5",
    "batchnorm": FIXTURES / "functional" / "normalization__k2h5.h5",
    "nested": FIXTURES / "core" / "nested_sequential__k2h5.h5",
    "functional": FIXTURES / "functional" / "shared_twice__k3h5.h5",
    "dense3": FIXTURES / "core" / "dense_relu__k3h5.h5",
    "keras": FIXTURES / "core" / "dense_relu__k3keras.keras",
}
INTERESTING = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1, 4096]
# Outcomes: exit codes of the forked reader.
OK, REFUSED, UNSUPPORTED = 0, 3, 4
UNEXPECTED, MULTILINE, MEMORY = 70, 71, 72
HANG_SECONDS = 30
ADDRESS_SPACE = 3 << 30  # beyond what the fuzzer process maps already


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four mutations of `data`, drawn from `rng`."""
    blob = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not blob:
            break
        # Mostly single bytes set anew (what found libhdf5's crashes), some fields and structure.
        kind = rng.choices(["byte", "flip", "field", "truncate", "insert", "delete", "copy"], [10, 3, 4, 1, 1, 1, 1])[0]
        at = rng.randrange(len(blob))
        if kind == "flip":
            blob[at] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            blob[at] = rng.choice([0x00, 0xFF, rng.randrange(256), rng.randrange(256)])
        elif kind == "field":
            width = rng.choice([1, 2, 4, 8])
            value = rng.choice(INTERESTING + [len(blob), len(blob) - at, rng.randrange(1 << 16)])
            blob[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif kind == "truncate":
            del blob[rng.randrange(len(blob) // 2, len(blob)) :]
        elif kind == "insert":
            blob[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == "delete":
            del blob[at : at + rng.randint(1, 8)]
        else:
            length = rng.randint(4, 64)
            source = rng.randrange(len(blob))
            blob[at : at + length] = blob[source : source + length]
    return bytes(blob)


def mutant(source: Path, seed: int, case: int) -> bytes:
    """The mutant number `case` of `source` for `seed` (inside a .keras: its weights member)."""
    rng = random.Random(f"{source.name}:{seed}:{case}")
    data = source.read_bytes()
    if source.suffix != ".keras":
        return mutate(data, rng)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            member = zin.read(info)
            if info.filename == "model.weights.h5":
                member = mutate(member, rng)
            zout.writestr(info, member)
    return out.getvalue()


def run_one(path: Path) -> int:
    """Read `path` in a forked process; its outcome (exit code, or -signal, or None for a hang)."""
    pid = os.fork()
    if pid == 0:
        code = UNEXPECTED
        try:
            code = _child(path)
        finally:
            os._exit(code)
    deadline_hit = False

    def on_alarm(signum, frame):
        nonlocal deadline_hit
        deadline_hit = True
        os.kill(pid, signal.SIGKILL)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(HANG_SECONDS)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if deadline_hit:
        return None
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _child(path: Path) -> int:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    used = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + ADDRESS_SPACE, resource.RLIM_INFINITY))
    inline = os.environ.get("KONVERTER_READER") == "inline"
    try:
        (read_here if inline else read_model)(path)
    except KonverterError as err:
        return MULTILINE if "\n" in str(err) or not str(err) else err.exit_code
    except MemoryError:
        return MEMORY
    except BaseException:
        return UNEXPECTED
    return OK


def describe(outcome) -> str:
    if outcome is None:
        return "hang"
    if outcome < 0:
        return signal.Signals(-outcome).name
    return {OK: "read", REFUSED: "refused", UNSUPPORTED: "unsupported", UNEXPECTED: "other exception"}.get(
        outcome, {MULTILINE: "multi-line message", MEMORY: "MemoryError"}.get(outcome, f"exit {outcome}")
    )


def fuzz(sources: list, cases: int, seed: int, save: Path | None = None, only: int | None = None) -> list:
    """Run `cases` mutants spread over `sources`; return the findings as (source, seed, case, outcome)."""
    findings = []
    counts: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="konverter-fuzz-") as tmp:
        numbers = [only] if only is not None else range(cases)
        for case in numbers:
            source = sources[case % len(sources)]
            path = Path(tmp) / f"mutant{source.suffix}"
            data = mutant(source, seed, case)
            path.write_bytes(data)
            outcome = run_one(path)
            counts[describe(outcome)] += 1
            if outcome not in (OK, REFUSED, UNSUPPORTED):
                findings.append((source.name, seed, case, describe(outcome)))
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    name = f"{describe(outcome).replace(' ', '_')}__{source.stem}__s{seed}_c{case}{source.suffix}"
                    (save / name).write_bytes(data)
    print(", ".join(f"{n} {k}" for k, n in counts.most_common()), file=sys.stderr)
    return findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", action="append", choices=sorted(SOURCES), help="default: all")
    parser.add_argument("--only", type=int, help="run only this case number (to reproduce a finding)")
    parser.add_argument("--save", type=Path, help="write each finding's file to this folder")
    args = parser.parse_args()
    sources = [SOURCES[name] for name in (args.source or sorted(SOURCES))]
    findings = fuzz(sources, args.cases, args.seed, args.save, args.only)
    keys = {path.name: key for key, path in SOURCES.items()}
    for name, seed, case, outcome in findings:
        print(f"{outcome}: --source {keys[name]} --seed {seed} --only {case}  ({name})")
    raise SystemExit(1 if findings else 0)


if __name__ == "__main__":
    main()
