"""How much memory this process may still use, and sizes for messages."""

from __future__ import annotations

import math
import os

from ..errors import BadModelFile

try:
    import resource
except ImportError:  # Windows
    resource = None

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") and "SC_PAGE_SIZE" in os.sysconf_names else 4096
UNLIMITED = -1 if resource is None else resource.RLIM_INFINITY


def human(n: int) -> str:
    """A byte count for a message: "512 bytes", "12.0 KiB", "1.5 GiB"."""
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def nbytes(dtype, shape: tuple) -> int:
    return math.prod(shape) * dtype.itemsize


# How libhdf5 and NumPy say an allocation failed (the reader process's address-space limit, or the machine's).
OUT_OF_MEMORY_SIGNS = ("memory allocation failed", "Unable to allocate", "Cannot allocate memory")


def out_of_memory(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or any(sign in str(err) for sign in OUT_OF_MEMORY_SIGNS)


def require(need: int) -> None:
    """Refuse, saying how much, when reading the weights needs more memory than there is."""
    free = available()
    if free is not None and need > free:
        raise BadModelFile(f"reading its weights needs {human(need)} of memory, more than the {human(free)} available")


def mapped_bytes() -> int | None:
    """This process's address space in bytes (Linux), what RLIMIT_AS is counted against."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * PAGE
    except (OSError, ValueError, IndexError):
        return None


def available() -> int | None:
    """Bytes this process can still allocate, or None where that cannot be told.

    The least of: the machine's available memory, what the cgroup (container) still allows,
    and what the address-space limit (ulimit -v) leaves.
    """
    limits = [_meminfo_available(), _cgroup_available(), _rlimit_available()]
    known = [n for n in limits if n is not None]
    if known:
        return max(0, min(known))
    try:
        return os.sysconf("SC_PHYS_PAGES") * PAGE  # macOS, BSD: physical memory at least bounds it
    except (AttributeError, ValueError, OSError):
        return None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _cgroup_available() -> int | None:
    """Limit minus usage of this process's cgroup (v2, else v1), or None without a limit."""
    try:
        with open("/proc/self/cgroup") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] == "0" and parts[1] == "":  # cgroup v2
            folder = "/sys/fs/cgroup" + parts[2].rstrip("/")
            limit, usage = _read_int(folder + "/memory.max"), _read_int(folder + "/memory.current")
            if limit is not None and usage is not None:
                return limit - usage
    limit = _read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    usage = _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes")
    if limit is not None and usage is not None and limit < 1 << 60:  # v1 says "no limit" with a huge number
        return limit - usage
    return None


def _rlimit_available() -> int | None:
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    used = mapped_bytes()
    if soft == UNLIMITED or used is None:
        return None
    return soft - used


def limit_address_space(allowance: int, baseline: int | None = None) -> None:
    """Let this process map at most `allowance` bytes beyond `baseline` (default: what it maps now).

    Linux only (a no-op where the address space cannot be counted). Used in the reader process: what
    the HDF5 library allocates for a hostile file then fails there, as an allocation error, instead of
    taking the machine's memory. Never raised above the limit the process inherited (ulimit -v).
    """
    used = mapped_bytes() if baseline is None else baseline
    if resource is None or used is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    inherited = getattr(limit_address_space, "inherited", soft)
    limit_address_space.inherited = inherited
    wanted = min(n for n in (used + allowance, inherited, hard) if n != UNLIMITED)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    global allowed
    allowed = wanted - used


allowed = None  # what limit_address_space left this process, once called


def exhausted(file_size: int) -> str:
    """The refusal when reading ran out of memory."""
    if allowed is not None:
        return (
            f"reading it needs more than the {human(allowed)} of memory allowed for a {human(file_size)} file "
            "(a heap or decompression bomb?)"
        )
    return "reading it needs more memory than is available"
