"""Property-based fuzzing of the host's decoders of untrusted bytes (issue 13, class 3): the S2
block decoders (Snappy first, the compiled S2 decoder, the pure one), the S2 stream reader, the
tar reader and the whole extraction. Corrupt or truncated input never crashes them, never makes
them produce more than their limits allow, and fails with one error of ours: a BuildrError
whose message is one line.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from buildr_podman.agent.packer import PackStats, pack_changes
from buildr_podman.archive import tarstream
from buildr_podman.archive.extract import extract_tar_stream
from buildr_podman.archive.tarstream import Member, TarReader
from buildr_podman.errors import ArchiveError, BuildrError, CodecError
from buildr_podman.s2 import S2Reader, _block, accelerated, compress, decompress
from buildr_podman.s2._block_py import BlockError

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LIMIT = 1 << 16


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """data with a few bytes overwritten, maybe cut short, maybe with bytes inserted."""
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        out = bytearray(data)
        for _ in range(draw(st.integers(0, 4))):
            if out:
                out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()) and out:
            at = draw(st.integers(0, len(out) - 1))
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        if draw(st.booleans()):
            del out[draw(st.integers(0, len(out))):]
        return bytes(out)
    return build()


def one_line(error: BaseException) -> None:
    assert isinstance(error, BuildrError), f"{type(error).__name__}: {error}"
    assert "\n" not in str(error) and str(error)


# ---- S2 blocks -------------------------------------------------------------------------------

BLOCK_SEEDS = [bytes(_block.encode_block(data) or b"") for data in (
    b"abc" * 300, bytes(range(256)) * 4, b"hello, world " * 50 + os.urandom(64))]


@FUZZ
@given(st.one_of(st.binary(max_size=2048), st.sampled_from(BLOCK_SEEDS).flatmap(mutated)),
       st.integers(1, LIMIT))
def test_block_decoders_stay_within_their_limit_or_say_why(body: bytes, limit: int) -> None:
    decoders = [_block.decode_block, _block.decode_block_reference]
    if accelerated():
        decoders.append(_block.decode_block_s2)  # the compiled decoder alone
    for decode in decoders:
        try:
            out = decode(memoryview(body), limit)
        except BlockError as error:
            assert str(error)
            continue
        assert len(out) <= limit, decode.__name__


# ---- S2 streams ------------------------------------------------------------------------------

STREAM_SEEDS = [compress(b"tar-like " * 2000), compress(os.urandom(5000), block_size=4096),
                compress(b"")]


@FUZZ
@given(st.one_of(st.binary(max_size=4096), st.sampled_from(STREAM_SEEDS).flatmap(mutated)),
       st.sampled_from([1, 100, 1 << 20]))
def test_the_stream_reader_fails_with_one_codec_error(stream: bytes, read_size: int) -> None:
    reader = S2Reader(io.BytesIO(stream))
    total = 0
    try:
        while chunk := reader.read(read_size):
            total += len(chunk)
            assert total <= 64 * (len(stream) + 64), "more out than any valid stream gives"
    except CodecError as error:
        one_line(error)


# ---- tar -------------------------------------------------------------------------------------


def tar_seed(*names: str, pax: bool = False) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w",
                      format=tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT) as tar:
        for name in names:
            if name.endswith("/"):
                info = tarfile.TarInfo(name.rstrip("/"))
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                body = name.encode() * 3
                info = tarfile.TarInfo(name)
                info.size = len(body)
                info.mtime = 1_700_000_000.5 if pax else 1_700_000_000
                tar.addfile(info, io.BytesIO(body))
    return data.getvalue()


TAR_SEEDS = [tar_seed("a/", "a/b.txt", "c"), tar_seed("x" * 150, "d/", pax=True),
             tar_seed("long/" * 30 + "name")]


@FUZZ
@given(st.one_of(st.binary(max_size=3072), st.sampled_from(TAR_SEEDS).flatmap(mutated)))
def test_the_tar_reader_fails_with_one_archive_error(data: bytes) -> None:
    tar = TarReader(io.BytesIO(data))
    body = 0
    try:
        for member in tar:
            assert isinstance(member.name, str) and member.size >= 0 or not member.isreg()
            while chunk := tar.read_body(1 << 16):
                body += len(chunk)
    except ArchiveError as error:
        one_line(error)
    assert body <= len(data)  # a body is only what the input holds
    assert tar.header_bytes <= len(data)


@FUZZ
@given(st.sampled_from(TAR_SEEDS).flatmap(mutated), st.booleans())
def test_extraction_of_a_corrupt_archive_is_all_or_nothing(tmp_path_factory: pytest.TempPathFactory,
                                                           data: bytes, s2: bool) -> None:
    root = tmp_path_factory.mktemp("x")
    target = root / "out" / "t"
    (target / "previous").mkdir(parents=True)
    stream = compress(data) if s2 else data
    assume(stream)
    source = S2Reader(io.BytesIO(stream)) if s2 else io.BytesIO(stream)
    try:
        extract_tar_stream(source, target, anchor=root, max_bytes=1 << 20, max_entries=100)
    except BuildrError as error:
        one_line(error)
        assert sorted(p.name for p in target.iterdir()) == ["previous"]  # as it was
    else:
        assert not (target / "previous").exists()  # replaced whole
    assert sorted(p.name for p in root.iterdir()) == ["out"]
    assert sorted(p.name for p in (root / "out").iterdir()) == ["t"]  # no staging, no trash


# ---- the tar reader's compiled headers against the reference ---------------------------------

needs_tarhead = pytest.mark.skipif(tarstream._fast is None,
                                   reason="the compiled tar headers were not built")


def ours_seed(root: Path) -> bytes:
    """What the agent sends: a pax mtime before nearly every member, long names and links as
    pax records, directories, a symlink."""
    (root / "d").mkdir()
    (root / "d" / "f.txt").write_bytes(b"hello\n")
    (root / "d" / ("é-long-" * 20)).write_bytes(b"x" * 700)
    os.symlink("t" * 120, root / "link")
    os.utime(root / "d" / "f.txt", ns=(0, 1_700_000_000_123_456_789))
    os.utime(root / "d", ns=(0, 1_700_000_000 * 10**9))  # whole seconds: no pax header
    names = sorted(str(path.relative_to(root)) for path in root.rglob("*"))
    return decompress(b"".join(pack_changes(str(root), names, PackStats())))


class Chunked(io.RawIOBase):
    """Hands out `size` bytes a read, so that headers fall across reads."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data, self._size, self._at = data, size, 0

    def read(self, size: int = -1, /) -> bytes:
        out = self._data[self._at:self._at + min(self._size, size if size >= 0 else self._size)]
        self._at += len(out)
        return out


def read_all(source: io.RawIOBase | io.BytesIO, fast: bool) -> list[object]:
    """Every member with the header bytes counted so far and its body, then the error if any."""
    tar = TarReader(source)
    tar.fast = fast
    seen: list[object] = []
    try:
        for member in tar:
            body = b"".join(bytes(chunk) for chunk in iter(lambda: tar.read_body(1 << 16), b""))
            seen.append((member, tar.header_bytes, body))
    except ArchiveError as error:
        seen.append(str(error))
    return seen


@pytest.fixture(scope="module")
def agent_seed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return ours_seed(tmp_path_factory.mktemp("seed"))  # once, not once per example


@needs_tarhead
@FUZZ
@given(st.data(), st.sampled_from([1 << 20, 700]))
def test_the_compiled_headers_read_what_the_reference_reads(
        agent_seed: bytes, data: st.DataObject, read_size: int) -> None:
    archive = data.draw(st.one_of(st.binary(max_size=3072),
                                  st.sampled_from([*TAR_SEEDS, agent_seed]).flatmap(mutated)))
    assert (read_all(Chunked(archive, read_size), fast=True)
            == read_all(Chunked(archive, read_size), fast=False))


PAX_TIMES = st.one_of(
    st.from_regex(r"\A-?[0-9]{1,22}(\.[0-9]{0,12})?\Z"),
    st.sampled_from(["9223372036.854775807", "9223372036.854775808", "-9223372036.854775807",
                     "0", "-0", "1.", ".5", "1e9", " 1", "1_000", "+1", "١٢"]),
    st.text(max_size=12))


def pax_archive(records: dict[str, str]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.size, info.pax_headers = 3, records
        tar.addfile(info, io.BytesIO(b"abc"))
    return data.getvalue()


@needs_tarhead
@FUZZ
@given(PAX_TIMES, st.sampled_from(["mtime", "path", "linkpath", "size", "atime",
                                   "GNU.sparse.major"]))
def test_the_compiled_pax_records_agree_with_the_reference(value: str, key: str) -> None:
    archive = pax_archive({key: value})
    assert read_all(io.BytesIO(archive), fast=True) == read_all(io.BytesIO(archive), fast=False)


@needs_tarhead
def test_the_compiled_headers_take_the_agents_usual_members(tmp_path: Path) -> None:
    """The fast path must not be dead: the agent's members (pax mtime, ustar) go through it,
    and what it does not know (GNU long names) is left to the reference."""
    archive = ours_seed(tmp_path)
    assert tarstream._fast is not None
    end, header_bytes, name, kind, mode, size, mtime_ns, link = tarstream._fast.parse_member(
        archive, 0)
    first = next(iter(TarReader(io.BytesIO(archive))))
    assert Member(name, kind, mode, size, mtime_ns, link) == first
    assert (end, header_bytes) == (512, 512)  # the directory "d": no sub-second mtime
    members = read_all(io.BytesIO(archive), fast=True)
    assert [m[0].mtime_ns for m in members if isinstance(m, tuple) and m[0].name == "d/f.txt"] \
        == [1_700_000_000_123_456_789]
    assert tarstream._fast.parse_member(tar_seed("long/" * 30 + "name"), 0) is None
