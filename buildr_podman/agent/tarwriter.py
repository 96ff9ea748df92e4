"""A lean POSIX (pax) tar writer for the agent: the headers of `tarfile`, at a fraction of the cost.

`tarfile.gettarinfo` + `addfile` cost ~100 µs a member (user and group lookups, copies, generic
pax handling); returning 20,000 small files spent most of its time there. This writer emits
ustar headers with ids zeroed and no names, plus a pax record only for what ustar cannot hold
(long names or links, large sizes, mtimes with nanoseconds or outside the octal field).

Headers and bodies are collected in a buffer handed to the sink in multiples of FLUSH_SIZE:
each sink write (the packer frames it as S2) has a fixed cost, which five writes a member used
to pay.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from types import ModuleType
from typing import Protocol

from buildr_podman.agent import long_paths
from buildr_podman.agent.access import ACCESS

__all__ = ["TarWriter"]

_compiled: ModuleType | None
try:
    from buildr_podman.agent import _tarpack as _compiled  # type: ignore[attr-defined,no-redef]
except ImportError:  # pragma: no cover - depends on the install (setup.py builds it)
    _compiled = None

BLOCK = 512
FLUSH_SIZE = 1 << 20  # the packer's S2 block size (packer.CHUNK_SIZE): whole blocks, no copy
REGULAR, SYMLINK, DIRECTORY, PAX = b"0", b"2", b"5", b"x"
MAX_OCTAL = 8**11 - 1  # the largest size or mtime an 11-digit octal field holds
NS_PER_SECOND = 1_000_000_000
NUL = b"\0"
# What os.fsencode does, without its call and type checks (two a member).
FS_ENCODING, FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
ZEROS = memoryview(bytes(BLOCK))  # padding is sliced from this view without a copy
# mode, uid, gid, size and mtime; ids are zero (ownership is the host's business)
USTAR_NUMBERS = b"%07o\0" + b"0000000\0" * 2 + b"%011o\0%011o\0"
# Everything after the linkname: magic and version, then empty owner names, devices and prefix.
USTAR_TAIL = b"ustar\x0000" + bytes(BLOCK - 265)
# The checksum counts its own field as eight spaces, plus the constant magic and version.
CHECKSUM_BASE = 8 * ord(" ") + sum(USTAR_TAIL)


class _Sink(Protocol):
    def write(self, data: bytearray | memoryview, /) -> int | None: ...


class TarWriter:
    """Writes members to a binary sink; `close()` writes the end-of-archive blocks and hands
    over what is still buffered (it does not close the sink)."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink
        self._buffer = bytearray()
        self._block = bytearray(FLUSH_SIZE)  # the big files' bodies, read a block at a time
        self._pax_headers: dict[int, bytes] = {}  # the pax ustar header by records length

    def add(self, path: str, name: str, st: os.stat_result) -> int:
        """Adds the file, symlink or directory at path as `name`; returns the bytes of content
        written. Other file types are skipped (they never leave the container)."""
        mode = st.st_mode
        if stat.S_ISREG(mode):
            return self._add_file(path, name, st)
        if stat.S_ISLNK(mode):
            self._header(name, st, SYMLINK, 0, long_paths.readlink(path))
        elif stat.S_ISDIR(mode):
            self._header(name, st, DIRECTORY, 0, "")
        return 0

    def close(self) -> None:
        self._buffer += bytes(2 * BLOCK)
        self._sink.write(self._buffer)
        self._buffer = bytearray()

    def add_regular(self, path: str, name: str) -> int | None:
        """Adds path as `name` when it is a regular file the agent can open as it is, most of
        what comes back; returns the bytes stored for it. None for anything else (gone, a
        symlink, a directory, a FIFO, closed to the agent): nothing is added, and the caller
        looks at it through ACCESS. Small files go through the compiled writer when it is
        built, which writes the same bytes; what it declines is added here."""
        if _compiled is not None:
            stored: int = _compiled.add_regular(self._buffer, path, name)
            if stored >= 0:
                self._flush()
                return stored
            if stored == _compiled.NOT_REGULAR:
                return None
        opened = _open_regular(path)
        return None if opened is None else self.add_open_file(*opened, name)

    def add_open_file(self, fd: int, st: os.stat_result, name: str) -> int:
        """Adds the regular file open as fd (st: its fstat), then closes fd; returns the bytes
        stored for it (a sparse file's data only)."""
        try:
            segments = data_segments(fd, st)
            if segments is None:
                stored = st.st_size
                self._header(name, st, REGULAR, stored, "")
                self._copy(fd, stored)
            else:
                stored = self._add_sparse(fd, name, st, segments)
        finally:
            os.close(fd)
        self._buffer += ZEROS[:-stored % BLOCK]
        self._flush()
        return stored

    def _add_file(self, path: str, name: str, st: os.stat_result) -> int:
        """Adds the regular file at path; returns the bytes stored for it."""
        # os.open/os.read: open() adds a buffered reader and an fstat, a third more time for a
        # small file. The open comes first so that an unreadable file adds no header.
        return self.add_open_file(ACCESS.open_file(path), st, name)

    def _add_sparse(self, fd: int, name: str, st: os.stat_result,
                    segments: list[tuple[int, int]]) -> int:
        """A sparse file as a GNU sparse 1.0 member (what GNU tar and Python's tarfile read):
        pax records give its real name and size; its body is the map of its data segments
        (decimal lines, padded to a block), then those segments alone. A hole costs nothing
        in the archive, nor on the host, which seeks over it."""
        sparse_map = b"%d\n" % len(segments) + b"".join(
            b"%d\n%d\n" % segment for segment in segments)
        sparse_map += bytes(-len(sparse_map) % BLOCK)
        stored = len(sparse_map) + sum(length for _, length in segments)
        directory, _, base = name.rpartition("/")
        stand_in = f"{directory}/GNUSparseFile.0/{base}" if directory else f"GNUSparseFile.0/{base}"
        self._header(stand_in, st, REGULAR, stored, "", sparse=(name, st.st_size))
        self._buffer += sparse_map
        for offset, length in segments:
            os.lseek(fd, offset, os.SEEK_SET)
            self._copy(fd, length)
        return stored

    def _copy(self, fd: int, size: int) -> None:
        """size bytes of fd from where it stands; zeros for what it no longer has."""
        written = 0
        self._flush()  # the buffer is then shorter than a block
        while written < size:
            count = min(size - written, FLUSH_SIZE - len(self._buffer))
            read = self._read_block(fd, count) if count == FLUSH_SIZE else self._read(fd, count)
            if not read:
                break
            written += read
        if written < size:  # the file shrank while we read it: keep the archive well-formed
            self._buffer += bytes(size - written)

    def _read(self, fd: int, count: int) -> int:
        """Appends up to `count` bytes of fd to the buffer and hands over any whole block."""
        chunk = os.read(fd, count)
        self._buffer += chunk
        self._flush()
        return len(chunk)

    def _read_block(self, fd: int, count: int) -> int:
        """Reads a whole block of fd (the buffer is empty) into a block reused for every read
        and hands it over. A bytes object per read, copied into the buffer, then freed, cost
        two passes over fresh memory a megabyte (page faults) for nothing. The sink uses what
        it is given before write() returns (io's contract), so reusing the block is safe."""
        with memoryview(self._block) as block:
            read = os.readv(fd, [block[:count]])
            if read == count:
                self._sink.write(block)
            else:  # the file shrank or the read was cut short: buffer what came
                self._buffer += block[:read]
        return read

    def _flush(self) -> None:
        """Hands over the buffered bytes in whole multiples of FLUSH_SIZE, the rest waits."""
        whole = len(self._buffer) - len(self._buffer) % FLUSH_SIZE
        if whole:
            self._sink.write(memoryview(self._buffer)[:whole])
            # A new buffer: the sink may keep views of the old one (which would also stop a
            # bytearray from shrinking).
            self._buffer = self._buffer[whole:]

    def _header(self, name: str, st: os.stat_result, kind: bytes, size: int,
                link: str, sparse: tuple[str, int] | None = None) -> None:
        """sparse: (real name, real size) of a sparse member, whose name is a stand-in."""
        name_b = name.encode(FS_ENCODING, FS_ERRORS)
        link_b = link.encode(FS_ENCODING, FS_ERRORS)
        seconds, nanos = divmod(st.st_mtime_ns, NS_PER_SECOND)
        pax_mtime = bool(nanos) or not 0 <= seconds <= MAX_OCTAL
        if (pax_mtime or len(name_b) > 100 or len(link_b) > 100 or size > MAX_OCTAL
                or sparse is not None):
            self._pax(name_b, link_b, size, st.st_mtime_ns if pax_mtime else None, sparse)
        self._buffer += _ustar(name_b[:100], stat.S_IMODE(st.st_mode), min(size, MAX_OCTAL),
                               seconds if 0 <= seconds <= MAX_OCTAL else 0, kind, link_b[:100])

    def _pax(self, name: bytes, link: bytes, size: int, mtime_ns: int | None,
             sparse: tuple[str, int] | None = None) -> None:
        """The pax header and records for what the ustar header that follows cannot hold."""
        records = b""
        if sparse is not None:
            records += (_pax_record(b"GNU.sparse.major", b"1")
                        + _pax_record(b"GNU.sparse.minor", b"0")
                        + _pax_record(b"GNU.sparse.name", sparse[0].encode(FS_ENCODING, FS_ERRORS))
                        + _pax_record(b"GNU.sparse.realsize", b"%d" % sparse[1]))
        if len(name) > 100:
            records += _pax_record(b"path", name)
        if len(link) > 100:
            records += _pax_record(b"linkpath", link)
        if size > MAX_OCTAL:
            records += _pax_record(b"size", b"%d" % size)
        if mtime_ns is not None:
            records += _pax_record(b"mtime", _pax_time(mtime_ns))
        header = self._pax_headers.get(len(records))
        if header is None:
            header = _ustar(b"././@PaxHeader", 0o644, len(records), 0, PAX, b"")
            if len(records) < BLOCK:  # bounds the cache; these are the usual sizes
                self._pax_headers[len(records)] = header
        self._buffer += header
        self._buffer += records
        self._buffer += ZEROS[:-len(records) % BLOCK]


def _open_regular(path: str) -> tuple[int, os.stat_result] | None:
    """An fd of path and its fstat, when it is a regular file the agent can read as it is.
    One lookup of the path instead of two (lstat, then open), which through the container's
    overlay is most of the cost of a small file. None for anything else (gone, a symlink, a
    directory, a FIFO, unreadable, ...). O_NONBLOCK: opening a FIFO must not wait for a
    writer."""
    try:
        fd = long_paths.open_fd(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def data_segments(fd: int, st: os.stat_result) -> list[tuple[int, int]] | None:
    """(offset, length) of each run of data of a sparse file, found with SEEK_DATA and
    SEEK_HOLE; None for a file stored whole (most: it uses as many blocks as its size needs,
    which costs no system call to know), or where the file system cannot say."""
    blocks = getattr(st, "st_blocks", None)  # a stat made up by a caller may have none
    if blocks is None or blocks * 512 >= st.st_size:
        return None
    segments = []
    offset = 0
    try:
        while offset < st.st_size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # only a hole up to the end
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), st.st_size)
            segments.append((start, end - start))
            offset = end
    except OSError:
        return None
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    return segments if segments != [(0, st.st_size)] else None


def _pax_time(ns: int) -> bytes:
    """Decimal seconds, exact to the nanosecond: "1764300000.123456789", "-1.5", "7"."""
    sign = b"-" if ns < 0 else b""
    seconds, nanos = divmod(abs(ns), NS_PER_SECOND)
    if not nanos:
        return b"%s%d" % (sign, seconds)
    return (b"%s%d.%09d" % (sign, seconds, nanos)).rstrip(b"0")


def _pax_record(key: bytes, value: bytes) -> bytes:
    """ "LEN key=value\\n", where LEN counts the whole record, its own digits included."""
    body = b" %s=%s\n" % (key, value)
    digits = len(str(len(body)))
    length = len(body) + digits
    if len(str(length)) > digits:  # adding the digits carried into one more digit
        length += 1
    return b"%d%s" % (length, body)


def _ustar(name: bytes, mode: int, size: int, mtime: int, kind: bytes, link: bytes) -> bytes:
    """One ustar header block."""
    numbers = USTAR_NUMBERS % (mode, size, mtime)
    # Only these parts vary: summing them, not the whole block, halves the cost of a header.
    checksum = CHECKSUM_BASE + sum(name) + sum(numbers) + kind[0] + sum(link)
    return b"".join((name.ljust(100, NUL), numbers, b"%06o\0 " % checksum, kind,
                     link.ljust(100, NUL), USTAR_TAIL))
