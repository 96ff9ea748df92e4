"""Whatever we write reads back, for any data, block size, mode and split of the stream."""

from __future__ import annotations

import io
import itertools
import os

import cramjam
from hypothesis import given, settings
from hypothesis import strategies as st

from buildr_podman.s2 import (
    MAX_BLOCK_SIZE,
    S2Decoder,
    S2Encoder,
    S2Reader,
    S2Writer,
    compress,
    decompress,
)
from buildr_podman.s2._format import STREAM_IDENTIFIER, masked_crc, max_chunk_body


def repetitive(unit: bytes, count: int) -> bytes:
    return unit * count


payloads = st.one_of(
    st.binary(max_size=5000),
    st.builds(repetitive, st.binary(min_size=1, max_size=12), st.integers(0, 20000)),
    st.builds(bytes, st.integers(0, 300_000)),  # zeros
    st.integers(0, 150_000).map(os.urandom),  # incompressible
    st.lists(st.sampled_from([b"def f(x):\n", b"    return x\n", os.urandom(40), b"\0" * 99]),
             max_size=2000).map(b"".join),
)
block_sizes = st.sampled_from([1, 7, 64, 4096, 65536, 1 << 20, MAX_BLOCK_SIZE])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def chunks_of(stream: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of every chunk of a well-formed stream."""
    out, pos = [], 0
    while pos < len(stream):
        kind, length = stream[pos], int.from_bytes(stream[pos + 1:pos + 4], "little")
        out.append((kind, stream[pos + 4:pos + 4 + length]))
        pos += 4 + length
    assert pos == len(stream)
    return out


@settings(max_examples=120, deadline=None)
@given(payloads, block_sizes, st.booleans())
def test_compress_then_decompress(data: bytes, block_size: int, packed: bool) -> None:
    if block_size < 64 and len(data) > 20000:
        data = data[:20000]  # a chunk per byte is slow to test, not different
    assert decompress(compress(data, block_size, packed)) == data


@settings(max_examples=80, deadline=None)
@given(payloads, block_sizes, st.booleans(), st.lists(st.integers(0, 1 << 30), max_size=6))
def test_our_streams_follow_the_format(data: bytes, block_size: int, packed: bool,
                                       cuts: list[int]) -> None:
    """What the reference reader checks: identifier, CRCs, chunk and block limits."""
    if block_size < 64 and len(data) > 20000:
        data = data[:20000]
    encoder = S2Encoder(block_size, packed)
    stream = b"".join(encoder.encode(piece) for piece in split(data, cuts)) + encoder.flush()
    assert stream.startswith(STREAM_IDENTIFIER)
    rebuilt = bytearray()
    for kind, body in chunks_of(stream)[1:]:
        assert kind in ((0x00, 0x01) if packed else (0x01,))
        assert len(body) <= max_chunk_body(block_size)
        block = bytes(cramjam.snappy.decompress_raw(body[4:])) if kind == 0x00 else body[4:]
        assert 0 < len(block) <= block_size
        assert int.from_bytes(body[:4], "little") == masked_crc(block)
        rebuilt += block
    assert rebuilt == data


@settings(max_examples=80, deadline=None)
@given(payloads, st.lists(st.integers(0, 1 << 30), max_size=8), st.sampled_from([4096, 65536]))
def test_decoder_accepts_any_split(data: bytes, cuts: list[int], block_size: int) -> None:
    stream = compress(data, block_size)
    decoder = S2Decoder()
    out = b"".join(decoder.decode(piece) for piece in split(stream, cuts)) + decoder.flush()
    assert out == data


@settings(max_examples=40, deadline=None)
@given(payloads, st.sampled_from([1000, 65536]), st.booleans(),
       st.lists(st.integers(1, 70000), min_size=1, max_size=5))
def test_writer_then_reader(data: bytes, block_size: int, packed: bool, sizes: list[int]) -> None:
    sink = io.BytesIO()
    with S2Writer(sink, block_size, packed) as writer:
        view, i = memoryview(data), 0
        while view:
            n = sizes[i % len(sizes)]
            assert writer.write(view[:n]) == len(view[:n])
            view, i = view[n:], i + 1
    stream = sink.getvalue()
    with S2Reader(io.BytesIO(stream)) as reader:
        out = bytearray()
        i = 0
        while chunk := reader.read(sizes[i % len(sizes)]):
            out += chunk
            i += 1
    assert out == data


def test_empty_input_is_an_identifier_only() -> None:
    assert compress(b"") == STREAM_IDENTIFIER
    assert decompress(STREAM_IDENTIFIER) == b""
    assert S2Encoder().flush() == STREAM_IDENTIFIER


def test_first_output_starts_with_the_identifier() -> None:
    encoder = S2Encoder(block_size=4)
    assert encoder.encode(b"ab") == STREAM_IDENTIFIER  # no whole block yet
    assert not encoder.encode(b"c")
    chunk = encoder.encode(b"de")
    assert chunk[0] == 0x01 and chunk[8:] == b"abcd"
    assert decompress(STREAM_IDENTIFIER + chunk + encoder.flush()) == b"abcde"


def test_flush_midstream_keeps_the_stream_valid() -> None:
    encoder = S2Encoder()
    stream = encoder.encode(b"x" * 1000) + encoder.flush() + encoder.encode(b"y" * 10)
    stream += encoder.flush() + encoder.flush()
    assert decompress(stream) == b"x" * 1000 + b"y" * 10


def test_stored_mode_never_compresses() -> None:
    stream = compress(b"a" * 100_000, compress=False)
    assert {kind for kind, _ in chunks_of(stream)} == {0xFF, 0x01}


def test_compressible_blocks_are_compressed() -> None:
    stream = compress(b"a" * 100_000)
    assert {kind for kind, _ in chunks_of(stream)} == {0xFF, 0x00}
    assert len(stream) < 6000  # Snappy copies are 64 bytes at most: 3 bytes per 64


def test_incompressible_blocks_are_stored() -> None:
    data = os.urandom(200_000)
    stream = compress(data, 65536)
    assert {kind for kind, _ in chunks_of(stream)} == {0xFF, 0x01}
    assert decompress(stream) == data


def test_block_size_is_checked() -> None:
    for bad in (0, MAX_BLOCK_SIZE + 1):
        for make in (lambda bad=bad: S2Encoder(bad), lambda bad=bad: S2Decoder(bad)):
            try:
                make()
            except ValueError:
                continue
            raise AssertionError(f"{bad} accepted")


def test_full_size_blocks() -> None:
    data = os.urandom(1 << 16) * 80  # 5 MiB: a 4 MiB block of repeats, then the rest
    assert decompress(compress(data, MAX_BLOCK_SIZE)) == data
    assert decompress(compress(data, MAX_BLOCK_SIZE, compress=False)) == data
