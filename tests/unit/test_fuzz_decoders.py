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

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from buildr_podman.archive.extract import extract_tar_stream
from buildr_podman.archive.tarstream import TarReader
from buildr_podman.errors import ArchiveError, BuildrError, CodecError
from buildr_podman.s2 import S2Reader, _block, accelerated, compress
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
