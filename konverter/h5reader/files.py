"""Byte sources for the HDF5 readers: a file, or the weights member of a .keras archive, never copied whole."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from typing import Iterator

from ..errors import BadModelFile
from . import rawcheck
from .text import shown

LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
COPY_BYTES = 1 << 20


class Window(io.RawIOBase):
    """Bytes [start, start + length) of an open binary file, read as a file of their own.

    A `.keras` archive stores its weights uncompressed: h5py and pyfive read them in place through
    this, with no copy. Reads stop at the window's end, so a size read from a damaged file cannot
    make a reader allocate more than the window holds.
    """

    def __init__(self, handle, start: int, length: int) -> None:
        super().__init__()
        self.handle, self.start, self.length, self.pos = handle, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the file")
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        wanted = max(0, min(len(view), self.length - self.pos))
        if wanted == 0:
            return 0
        self.handle.seek(self.start + self.pos)
        done = self.handle.readinto(view[:wanted]) or 0
        self.pos += done
        return done

    def read(self, size: int = -1) -> bytes:
        left = max(0, self.length - self.pos)
        size = left if size is None or size < 0 else min(size, left)
        buffer = bytearray(size)
        done = self.readinto(buffer)
        return bytes(buffer[:done])

    def check(self, what: str) -> None:
        """The byte-level checks (rawcheck) over the window's bytes."""
        with rawcheck.mapped(self.handle) as raw:
            rawcheck.check(raw, self.start, self.start + self.length, what)


@contextmanager
def member(archive: zipfile.ZipFile, path: str, info: zipfile.ZipInfo) -> Iterator[Window]:
    """A member of the archive at `path` as a Window: in place when stored, else inflated to a temporary file.

    Either way it is checked against its CRC first, as zipfile would, and never held in memory whole.
    """
    if info.flag_bits & 0x1:
        raise BadModelFile(f"archive member {shown(info.filename)} is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb", buffering=0) as handle:
            start = _data_offset(handle, info)
            window = Window(handle, start, info.file_size)
            _check_crc(window, info)
            window.seek(0)
            yield window
        return
    # Inflated on disk, not in memory: an anonymous temporary file, gone when closed (or on a crash).
    with tempfile.TemporaryFile() as spill:
        try:
            with archive.open(info) as source:
                copied = _copy(source, spill, info.file_size + 1)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as err:
            raise BadModelFile(f"archive member {shown(info.filename)} is damaged ({err})") from None
        if copied != info.file_size:
            raise BadModelFile(f"archive member {shown(info.filename)} is not the size its header declares")
        spill.flush()
        yield Window(spill, 0, copied)


def _copy(source, target, limit: int) -> int:
    copied = 0
    while copied < limit:
        block = source.read(min(COPY_BYTES, limit - copied))
        if not block:
            break
        target.write(block)
        copied += len(block)
    return copied


def _data_offset(handle, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start: after its local header, name and extra field."""
    size = os.fstat(handle.fileno()).st_size
    handle.seek(info.header_offset)
    header = handle.read(LOCAL_HEADER)
    if len(header) != LOCAL_HEADER or header[:4] != b"PK\x03\x04":
        raise BadModelFile(f"archive member {shown(info.filename)} has a damaged local header")
    start = info.header_offset + LOCAL_HEADER + int.from_bytes(header[26:28], "little")
    start += int.from_bytes(header[28:30], "little")
    if start + info.file_size > size or info.compress_size != info.file_size:
        raise BadModelFile(f"archive member {shown(info.filename)} runs past the end of the archive")
    return start


def _check_crc(window: Window, info: zipfile.ZipInfo) -> None:
    crc = 0
    buffer = bytearray(COPY_BYTES)
    while True:
        done = window.readinto(buffer)
        if not done:
            break
        crc = zlib.crc32(memoryview(buffer)[:done], crc)
    if crc != info.CRC:
        raise BadModelFile(f"archive member {shown(info.filename)} is damaged (its CRC does not match)")
