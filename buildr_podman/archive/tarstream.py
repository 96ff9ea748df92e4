"""A strict streaming tar reader: ustar, pax and GNU long names, from any readable stream.

Written for untrusted archives and for speed: `tarfile` spends ~60 µs a member on generic
header handling, which dominated returning 20,000 small files. Every header's checksum is
verified; a short body or a broken header is an ArchiveError naming the member. Times are
integer nanoseconds, so a pax mtime such as "1764300000.123456789" is kept exactly.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from buildr_podman.errors import ArchiveError

_fast: ModuleType | None
try:  # setup.py builds it when a C compiler is there; the Python below is the reference
    from buildr_podman.archive import _tarhead as _fast  # type: ignore[attr-defined,no-redef]
except ImportError:  # pragma: no cover - depends on the install
    _fast = None

__all__ = ["MAX_SPARSE_MAP", "Member", "Readable", "TarReader", "sparse_map"]

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
REGULAR = (b"0", b"\0", b"7")
DIRECTORY, SYMLINK, HARDLINK = b"5", b"2", b"1"
PAX_LOCAL, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK = b"x", b"g", b"L", b"K"
META = (PAX_LOCAL, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK)
MAX_META_SIZE = 1 << 20  # a pax or GNU long-name record larger than this is hostile
# All the extended headers before one member, together: ours hold a name, a link and two
# numbers (under 9 KiB); back-to-back headers beyond this are hostile.
MAX_META_PER_MEMBER = 1 << 20
# GNU sparse 1.0 (the agent's sparse files): the real name and size, the map in the body.
SPARSE_KEYS = ("GNU.sparse.major", "GNU.sparse.minor", "GNU.sparse.name", "GNU.sparse.realsize")
USED_PAX_KEYS = frozenset(("path", "linkpath", "size", "mtime", *SPARSE_KEYS))  # no others
MAX_SPARSE_MAP = 1 << 20  # bytes of a sparse file's map at most: ~50,000 segments
MAX_SPARSE_SIZE = 1 << 62  # the real size of a sparse file; beyond it, hostile
READ_SIZE = 1 << 20  # one S2 block: fewer, larger reads from the source
NS_PER_SECOND = 1_000_000_000
# What os.utime accepts: whole seconds in a 64-bit time_t. A file's time may pass 2262 (64-bit
# nanoseconds), as `touch -d 2300-01-01` or `cp -p` of such a file makes it; beyond this it
# is hostile.
MAX_MTIME_NS = ((1 << 63) - 1) * NS_PER_SECOND + NS_PER_SECOND - 1
# The digits of mode, size, mtime and checksum, each up to its closing NUL (checked apart).
USUAL_NUMBERS = struct.Struct("100x 7s x 16x 11s x 11s x 6s")
PAX_TIME = re.compile(r"(-?)([0-9]+)(?:\.([0-9]*))?", re.ASCII)


class Readable(Protocol):
    """What an archive is read from: a binary file object, an S2Reader..."""

    def read(self, size: int = -1, /) -> bytes | None: ...


@dataclass(slots=True)
class Member:
    name: str
    kind: bytes  #: the typeflag: b"0" file, b"5" directory, b"2" symlink, others refused later
    mode: int
    size: int
    mtime_ns: int  #: nanoseconds since the epoch
    linkname: str
    #: a GNU sparse 1.0 file's real size: its body (`size` bytes) is then the map of its data
    #: segments, padded to a block, followed by those segments (see sparse_map)
    sparse_size: int | None = None

    def isreg(self) -> bool:
        return self.kind in REGULAR

    def isdir(self) -> bool:
        return self.kind == DIRECTORY

    def issym(self) -> bool:
        return self.kind == SYMLINK

    def islnk(self) -> bool:
        return self.kind == HARDLINK


class TarReader:
    """Iterates members; the body of the current member is read with `read_body`."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        # An S2Reader hands out views of what it decoded: bodies are then never copied on
        # their way to the file (headers are, 512 bytes each, to parse them as bytes).
        self._read: Callable[[int], bytes | memoryview | None] = getattr(
            source, "read_view", source.read)
        # Read but not yet consumed: _data[_position:]. Taking is a slice and an addition;
        # a bytearray with `del buffer[:n]` moved the whole rest of the buffer every time.
        self._data: bytes | memoryview = b""
        self._position = 0
        self._remaining = 0  # body bytes of the current member not yet read
        self._padding = 0
        self._last_meta = (b"", 0)  # the last pax or GNU header verified, and its size
        #: bytes of every header and extended header so far: what an archive costs beyond its
        #: bodies, counted against the same limit (empty members and metadata are not free)
        self.header_bytes = 0
        #: headers in the usual form go through the compiled parser when it is built; False
        #: keeps to the pure-Python reference (the tests compare the two)
        self.fast = _fast is not None

    def __iter__(self) -> Iterator[Member]:
        while (member := self._next()) is not None:
            yield member

    def read_body(self, limit: int) -> bytes | memoryview:
        """Up to `limit` bytes of the current member's body (b"" at its end).

        Less may come back before the end: what is left of the last read from the source, so
        that a body is never copied to join pieces."""
        count = min(limit, self._remaining)
        if not count:
            return b""
        if self._position == len(self._data):
            self._data, self._position = self._read(max(count, READ_SIZE)) or b"", 0
            if not self._data:
                raise ArchiveError("broken archive: it ends inside a member's body")
        start = self._position
        self._position = min(start + count, len(self._data))
        self._remaining -= self._position - start
        return self._data[start:self._position]

    def _next(self) -> Member | None:
        if self._remaining or self._padding:
            self._skip_rest_of_body()
        member = self._next_usual() if self.fast else None
        if member is None:
            member = self._next_parsed()
        if member is not None:  # its body comes next
            self._remaining = member.size if member.isreg() else 0
            self._padding = -self._remaining % BLOCK
        return member

    def _next_parsed(self) -> Member | None:
        """The next member's headers, parsed in Python (the reference); None at the end."""
        overrides: dict[str, str] = {}
        meta = 0  # bytes of the extended headers before this member
        while True:
            block = self._take(BLOCK)
            if len(block) < BLOCK:
                raise ArchiveError("broken archive: it ends without an end-of-archive marker")
            if block == ZERO_BLOCK:
                return None  # end of archive (a second zero block may follow; not needed)
            self.header_bytes += BLOCK
            kind = block[156:157]
            if kind in META:
                size = self._meta_size(block)
                meta += BLOCK + size
                if meta > MAX_META_PER_MEMBER:
                    raise ArchiveError(f"broken archive: more than {MAX_META_PER_MEMBER} bytes "
                                       "of extended headers before one member")
                self._read_meta(kind, size, overrides)
                continue
            member = _parse_header(block, kind, *_verified_numbers(block))
            if overrides:
                _apply(member, overrides)
            return member

    def _next_usual(self) -> Member | None:
        """The next member when its headers are in the usual form and already buffered, parsed
        by the compiled fast path (a third of the cost); None sends the same bytes through the
        reference parser (_next_parsed), which also names whatever is wrong with them."""
        assert _fast is not None
        if self._position == len(self._data):  # all of it taken: read on, for the fast path
            self._data, self._position = self._read(READ_SIZE) or b"", 0
        parsed = _fast.parse_member(self._data, self._position)
        if parsed is None:
            return None
        self._position, header_bytes, name, kind, mode, size, mtime_ns, linkname = parsed
        self.header_bytes += header_bytes
        return Member(name, kind, mode, size, mtime_ns, linkname)

    def _meta_size(self, block: bytes) -> int:
        """The body size of a pax or GNU header, its checksum verified. A writer repeats the
        same header (pax headers of equal size are identical): verified once, it is then
        recognised by a compare, which costs a tenth as much."""
        if block != self._last_meta[0]:
            self._last_meta = (block, _verified_numbers(block)[1])
        return self._last_meta[1]

    def _read_meta(self, kind: bytes, size: int, overrides: dict[str, str]) -> None:
        """Reads a pax or GNU long-name header's body into overrides for the next member."""
        if size > MAX_META_SIZE:
            raise ArchiveError(f"broken archive: a {size}-byte extended header")
        data = self._take(size + (-size % BLOCK))
        self.header_bytes += len(data)
        if len(data) < size:
            raise ArchiveError("broken archive: it ends inside an extended header")
        data = data[:size]
        if kind == PAX_LOCAL:
            overrides.update((key, value) for key, value in _parse_pax(data).items()
                             if key in USED_PAX_KEYS)
        elif kind == GNU_LONGNAME:
            overrides["path"] = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        elif kind == GNU_LONGLINK:
            overrides["linkpath"] = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        # global pax headers carry nothing we use

    def _skip_rest_of_body(self) -> None:
        while self._remaining:
            self.read_body(1 << 20)
        if self._padding:
            self._take(self._padding)
            self._padding = 0

    def _take(self, count: int) -> bytes:
        """The next `count` bytes; fewer only at the end of the stream."""
        start = self._position
        end = start + count
        if end <= len(self._data):
            self._position = end
            return bytes(self._data[start:end])  # one copy: bytes() of a bytes slice is itself
        return self._take_across_reads(count)

    def _take_across_reads(self, count: int) -> bytes:
        """_take when the buffered bytes are too few: only the bytes taken are joined, and the
        rest of the last read stays buffered as it is (not copied into a new buffer)."""
        parts: list[bytes | memoryview] = [self._data[self._position:]]
        have = len(parts[0])
        self._data, self._position = b"", 0
        while have < count:
            chunk = self._read(max(count - have, READ_SIZE))
            if not chunk:
                break  # the end of the stream: fewer bytes than asked for
            used = min(len(chunk), count - have)
            parts.append(chunk[:used])
            have += used
            self._data, self._position = chunk, used
        return b"".join(parts)


def _verified_numbers(block: bytes) -> tuple[int, int, int]:
    """The header's mode, size and mtime, once its checksum is verified."""
    usual = _usual_numbers(block)
    checksum = usual[3] if usual else _number(block, 148, 156, "checksum")
    if checksum != _header_sum(block):
        raise ArchiveError("broken archive: a header's checksum does not match")
    if usual:
        return usual[0], usual[1], usual[2]
    return (_number(block, 100, 108, "mode"), _number(block, 124, 136, "size"),
            _number(block, 136, 148, "mtime"))


def _usual_numbers(block: bytes) -> tuple[int, int, int, int] | None:
    """Mode, size, mtime and checksum when each is octal digits ended by a NUL, as tar, tarfile
    and TarWriter write them: one unpack and four int() calls, a third of the cost of four
    _number calls. None for any other spelling, which _number then reads (or refuses)."""
    if block[107] or block[135] or block[147] or block[154]:
        return None
    mode, size, mtime, checksum = USUAL_NUMBERS.unpack_from(block)
    try:
        return int(mode, 8), int(size, 8), int(mtime, 8), int(checksum, 8)
    except ValueError:  # a NUL, a space or base-256 inside: _number knows these
        return None


def _header_sum(block: bytes) -> int:
    """The sum of the header's bytes, its checksum field counting as eight spaces.

    sum() over 512 bytes cost 1.4 µs, twice a member. The low 16 bits of an Adler-32 (computed
    in C) are 1 + the sum of the bytes modulo 65521: exact for up to 256 bytes (at most 65280).
    """
    return ((zlib.adler32(block[:148]) & 0xFFFF) + (zlib.adler32(block[156:356]) & 0xFFFF)
            + (zlib.adler32(block[356:]) & 0xFFFF) - 3 + 8 * ord(" "))


def _parse_header(block: bytes, kind: bytes, mode: int, size: int, mtime: int) -> Member:
    name = _text(block, 0, 100)
    if block[257:262] == b"ustar" and block[345]:
        name = _text(block, 345, 500) + "/" + name  # ustar prefix field
    mtime_ns = mtime * NS_PER_SECOND
    if abs(mtime_ns) > MAX_MTIME_NS:  # only base-256 reaches this far
        raise ArchiveError("broken archive: a header's mtime is out of range")
    return Member(name=name, kind=kind, mode=mode, size=size, mtime_ns=mtime_ns,
                  linkname=_text(block, 157, 257) if block[157] else "")


def _number(block: bytes, start: int, end: int, what: str) -> int:
    """The numeric field block[start:end]: octal digits up to a NUL, maybe space-padded, or
    GNU base-256 for values octal cannot hold."""
    if block[start] in (0x80, 0xFF):
        value = int.from_bytes(block[start + 1:end], "big")
        return -value if block[start] == 0xFF else value
    stop = block.find(0, start, end)
    digits = block[start:end if stop < 0 else stop]
    try:
        return int(digits, 8)  # int() ignores surrounding spaces, as tar does
    except ValueError:
        if not digits.strip():
            return 0  # an empty field
        raise ArchiveError(f"broken archive: a header's {what} is not a number") from None


def _text(block: bytes, start: int, end: int) -> str:
    """The NUL-terminated text in block[start:end]."""
    stop = block.find(0, start, end)
    return block[start:end if stop < 0 else stop].decode("utf-8", "surrogateescape")


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        try:
            length = int(data[position:space])
        except ValueError:
            raise ArchiveError("broken archive: a pax record has no length") from None
        record = data[space + 1:position + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ArchiveError("broken archive: a malformed pax record")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


def _apply(member: Member, overrides: dict[str, str]) -> None:
    if "path" in overrides:
        member.name = overrides["path"]
    if "GNU.sparse.major" in overrides:
        _apply_sparse(member, overrides)
    if "linkpath" in overrides:
        member.linkname = overrides["linkpath"]
    try:
        if "size" in overrides:
            member.size = int(overrides["size"])
        if "mtime" in overrides:
            member.mtime_ns = _pax_time(overrides["mtime"])
    except ValueError:
        raise ArchiveError(f"broken archive: bad pax size or mtime for {member.name!r}") from None


def _apply_sparse(member: Member, overrides: dict[str, str]) -> None:
    version = (overrides.get("GNU.sparse.major"), overrides.get("GNU.sparse.minor"))
    realsize = overrides.get("GNU.sparse.realsize", "")
    if version != ("1", "0") or "GNU.sparse.name" not in overrides or not realsize.isdigit():
        raise ArchiveError(f"broken archive: {member.name!r} is a sparse file of a format "
                           f"other than GNU 1.0 with a name and a size")
    member.name = overrides["GNU.sparse.name"]
    member.sparse_size = int(realsize)
    if member.sparse_size > MAX_SPARSE_SIZE:
        raise ArchiveError(f"broken archive: sparse file {member.name!r} claims "
                           f"{member.sparse_size} bytes")


def sparse_map(head: bytes, member: Member) -> tuple[list[tuple[int, int]], int]:
    """The data segments (offset, length) of a sparse member from the start of its body, and
    the bytes the map takes there (whole blocks). `head` holds at least min(size, MAX_MAP)
    bytes of the body. Refused unless the segments are in order, apart, inside the real size,
    and together exactly what the body holds after the map."""
    assert member.sparse_size is not None
    count_text, _, rest = head.partition(b"\n")
    if (not count_text.isdigit() or len(count_text) > 20
            or int(count_text) > (len(head) - len(count_text)) // 4):
        raise ArchiveError(f"broken archive: sparse file {member.name!r} has a bad map")
    numbers = rest.split(b"\n", 2 * int(count_text))
    values = numbers[:2 * int(count_text)]
    if len(values) < 2 * int(count_text) or not all(v.isdigit() for v in values):
        raise ArchiveError(f"broken archive: sparse file {member.name!r} has a bad map")
    used = len(head) - len(numbers[-1]) if len(numbers) > len(values) else len(head)
    used += -used % BLOCK
    segments = [(int(values[i]), int(values[i + 1])) for i in range(0, len(values), 2)]
    end = 0
    for offset, length in segments:
        if offset < end or offset + length > member.sparse_size:
            raise ArchiveError(f"broken archive: sparse file {member.name!r} has a bad map")
        end = offset + length
    if used + sum(length for _, length in segments) != member.size:
        raise ArchiveError(f"broken archive: sparse file {member.name!r} holds other than "
                           "its map says")
    return segments, used


def _pax_time(text: str) -> int:
    """Decimal seconds ("1764300000.123456789", "-1.5") as exact integer nanoseconds; digits
    past the ninth decimal are dropped. A float would lose the last digits of a 2025 time."""
    match = PAX_TIME.fullmatch(text)
    if match is None:
        raise ValueError(text)
    sign, seconds, fraction = match.groups()
    ns = int(seconds + (fraction or "")[:9].ljust(9, "0"))  # the digits of the nanoseconds
    if ns > MAX_MTIME_NS:
        raise ValueError(text)
    return -ns if sign else ns
