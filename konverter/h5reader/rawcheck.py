"""Byte-level checks of an HDF5 file before a library parses it: truncation and endless global heaps.

libhdf5 loops forever on one kind of damaged global heap collection (below); pyfive cannot tell a
truncated file from a whole one. Both are found here, in time linear in the file's size, without
refusing anything libhdf5 and pyfive would read correctly: a refusal names a structure that would hurt.
"""

from __future__ import annotations

import heapq
import mmap
import os
from contextlib import contextmanager
from typing import Iterator

from ..errors import BadModelFile

SIGNATURE = b"\x89HDF\r\n\x1a\n"
COLLECTION = b"GCOL"
WRAP = 1 << 64  # libhdf5 adds object sizes to a pointer in 64-bit arithmetic


@contextmanager
def mapped(handle) -> Iterator:
    """The whole of an open binary file as a read-only buffer (mmap, or bytes where mmap is unavailable)."""
    try:
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError, AttributeError):  # empty, or a file system (or object) without mmap
        handle.seek(0)
        yield handle.read()
        return
    try:
        yield view
    finally:
        view.close()


def check_file(path: str | os.PathLike, what: str) -> None:
    with open(path, "rb") as handle, mapped(handle) as raw:
        check(raw, 0, len(raw), what)


def check(raw, start: int, stop: int, what: str) -> None:
    """Check the HDF5 file held in raw[start:stop] (a region of an archive, or a whole file)."""
    lengths = _check_superblock(raw, start, stop, what)
    looping = _endless_heap_object(raw, start, stop, lengths)
    if looping is not None:
        raise BadModelFile(
            f"{what} has a damaged HDF5 global heap: the object at byte {looping - start} "
            "would make the HDF5 library loop forever"
        )


def _check_superblock(raw, start: int, stop: int, what: str) -> int:
    """The file's "size of lengths"; refuses a file shorter than its superblock says it is."""
    base = start
    while base + 8 <= stop and raw[base : base + 8] != SIGNATURE:
        base = start + (512 if base == start else 2 * (base - start))  # a user block: 512, 1024, 2048, ...
    if base + 48 > stop:
        return 8  # no superblock: libhdf5 and pyfive refuse the file on their own
    version = raw[base + 8]
    if version < 2:
        offsets, lengths = raw[base + 13], raw[base + 14]
        addresses = base + (24 if version == 0 else 28)
    else:
        offsets, lengths = raw[base + 9], raw[base + 10]
        addresses = base + 12
    if offsets not in (2, 4, 8) or lengths not in (2, 4, 8) or addresses + 3 * offsets > stop:
        return 8
    end_field = addresses + 2 * offsets
    # The stored end-of-file address counts from the start of the file, user block included
    # (libhdf5 compares it with the file's length as is).
    end = int.from_bytes(raw[end_field : end_field + offsets], "little")
    if end > stop - start:
        raise BadModelFile(f"{what} is truncated: {stop - start} bytes of the {end} its HDF5 header declares")
    return lengths


def _endless_heap_object(raw, start: int, stop: int, lengths: int) -> int | None:
    """Where libhdf5's walk over a global heap collection would never end, or None.

    libhdf5 reads a collection whole (one that runs past the end of the file is an error, not a
    loop), then steps from object to object: an object with index > 0 takes its header plus its size
    rounded up to 8 bytes, the free-space object (index 0) takes exactly its size. A step of 0, or
    one that wraps around to go backwards, never reaches the end. Anything else ends.

    Every "GCOL" in the file is taken for a collection, since which ones the file uses is not known
    here. Walks from different candidates follow the same chain once they meet at a position, so
    all walks advance together in order of position and merge where they meet: each position is
    visited once, and the whole check stays linear (n log n) however the candidates overlap.
    """
    header = 8 + lengths  # "GCOL", version, 3 reserved bytes, collection size
    object_header = 8 + lengths  # index (2), reference count (2), reserved (4), object size
    walks: list = []  # (position, end of the furthest collection walking through it)
    pos = raw.find(COLLECTION, start, stop)
    while pos != -1:
        if pos + header <= stop and raw[pos + 4 : pos + 8] == b"\x01\x00\x00\x00":
            end = pos + int.from_bytes(raw[pos + 8 : pos + 8 + lengths], "little")
            if pos + header <= end <= stop:
                walks.append((pos + header, end))
        pos = raw.find(COLLECTION, pos + 4, stop)
    heapq.heapify(walks)
    while walks:
        p, end = heapq.heappop(walks)
        while walks and walks[0][0] == p:
            end = max(end, heapq.heappop(walks)[1])
        if p + object_header > end:
            continue  # too small for an object: libhdf5 takes the rest for free space and stops
        index = int.from_bytes(raw[p : p + 2], "little")
        size = int.from_bytes(raw[p + 8 : p + 8 + lengths], "little")
        step = (object_header + ((size + 7) & ~7) if index else size) % WRAP
        if step == 0 or step >= WRAP // 2:
            return p
        if p + step < end:
            heapq.heappush(walks, (p + step, end))
    return None
