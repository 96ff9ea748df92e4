"""Corrupt, truncated and hostile streams end in a CodecError naming the offset, nothing else."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from buildr_podman.errors import CodecError
from buildr_podman.s2 import MAX_BLOCK_SIZE, S2Decoder, S2Reader, compress, decompress
from buildr_podman.s2._format import STREAM_IDENTIFIER, masked_crc

ID = STREAM_IDENTIFIER


def chunk(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "little") + body


def header(kind: int, length: int) -> bytes:
    return bytes([kind]) + length.to_bytes(3, "little")


def compressed(block: bytes, data: bytes) -> bytes:
    return chunk(0x00, masked_crc(data).to_bytes(4, "little") + block)


def chunk_boundaries(stream: bytes) -> set[int]:
    ends, pos = {0}, 0
    while pos < len(stream):
        pos += 4 + int.from_bytes(stream[pos + 1:pos + 4], "little")
        ends.add(pos)
    return ends


def small_stream() -> tuple[bytes, bytes]:
    """A stream with every kind of chunk, but short enough to cut at every byte."""
    data = b"The quick brown fox " * 40 + os.urandom(300)
    stream = compress(data, block_size=256) + chunk(0xFE, bytes(20)) + chunk(0x99, b"idx")
    stream += compress(b"second stream", compress=False)
    return stream, data + b"second stream"


def test_every_truncation_fails_or_is_a_chunk_boundary() -> None:
    stream, data = small_stream()
    boundaries = chunk_boundaries(stream)
    for cut in range(len(stream)):
        try:
            out = decompress(stream[:cut])
        except CodecError as err:
            assert cut not in boundaries or cut == 0
            assert err.offset is not None and 0 <= err.offset <= cut
        else:
            assert cut in boundaries
            assert data.startswith(out)


def test_truncation_is_reported_at_the_incomplete_chunk() -> None:
    stream = compress(b"abc" * 1000)
    with pytest.raises(CodecError, match="truncated") as caught:
        decompress(stream[:-1])
    assert caught.value.offset == 10


def test_truncated_header_is_reported_where_it_starts() -> None:
    stream = compress(b"abc") + compress(b"", compress=False)
    with pytest.raises(CodecError, match="header") as caught:
        decompress(stream + b"\x01\x00")
    assert caught.value.offset == len(stream)


def test_truncation_through_the_reader() -> None:
    stream = compress(os.urandom(5000))
    with pytest.raises(CodecError, match="truncated"):
        S2Reader([stream[:-3]]).read()


@pytest.mark.parametrize("stream,offset,match", [
    (b"", 0, "empty input"),
    (b"\xff\x06\x00", 0, "no stream identifier"),
    (b"\x00\x05\x00\x00" + b"\0" * 5, 0, "not an S2 stream"),
    (b"sNaPpY", 0, "not an S2 stream"),
    (b"\xff\x07\x00\x00S2sTwO!", 0, "length 7"),
    (b"\xff\x06\x00\x00S2sTwX", 0, "unknown stream identifier"),
    (ID + header(0x00, 4) + b"\0" * 4, 10, "out of range"),
    (ID + header(0x01, 3) + b"\0" * 3, 10, "out of range"),
    (ID + chunk(0x01, b"\0\0\0\0abc"), 10, "checksum mismatch"),
    (ID + compressed(b"\x03\x08abc", b"abd"), 10, "checksum mismatch"),
    (ID + compressed(b"\x04\x08abc", b"abc"), 23, "fewer bytes|declares"),
    (ID + compressed(b"\x05\x0cabcd\x01\x00", b"abcda"), 24, "before the start"),
])
def test_corrupt_stream(stream: bytes, offset: int, match: str) -> None:
    with pytest.raises(CodecError, match=match) as caught:
        decompress(stream)
    assert caught.value.offset == offset


@pytest.mark.parametrize("hostile", [
    header(0x00, 0xFFFFFF),  # compressed chunk far above 4 MiB
    header(0x01, 0xFFFFFF),
    header(0x01, MAX_BLOCK_SIZE + 5),  # one byte more than a full stored block
    header(0x00, MAX_BLOCK_SIZE + 13),  # one byte more than the largest compressed block
])
def test_oversized_chunk_fails_on_its_header(hostile: bytes) -> None:
    decoder = S2Decoder()
    assert decoder.decode(ID) == b""
    with pytest.raises(CodecError, match="out of range") as caught:
        decoder.decode(hostile)  # the body is never sent: the header alone must fail
    assert caught.value.offset == 10


def test_largest_legal_chunks_are_accepted_on_their_header() -> None:
    decoder = S2Decoder()
    decoder.decode(ID + header(0x01, MAX_BLOCK_SIZE + 4))
    decoder = S2Decoder()
    decoder.decode(ID + header(0x00, MAX_BLOCK_SIZE + 12))


def test_smaller_limit_is_enforced_on_headers() -> None:
    decoder = S2Decoder(max_block_size=65536)
    with pytest.raises(CodecError):
        decoder.decode(ID + header(0x01, 65536 + 5))


def test_block_claiming_more_than_the_limit_fails_before_decoding() -> None:
    # Decoded length 4 MiB + 1 (a uvarint) in a small chunk: refused without allocating it.
    varint = bytes([0x81, 0x80, 0x80, 0x02])
    assert sum((b & 0x7F) << (7 * i) for i, b in enumerate(varint)) == MAX_BLOCK_SIZE + 1
    with pytest.raises(CodecError, match="more than the limit") as caught:
        decompress(ID + compressed(varint + b"\x00a", b"a"))
    assert caught.value.offset == 18


def test_error_is_sticky() -> None:
    decoder = S2Decoder()
    with pytest.raises(CodecError):
        decoder.decode(b"garbage!")
    with pytest.raises(CodecError):
        decoder.decode(compress(b"fine"))
    with pytest.raises(CodecError):
        decoder.flush()


def mutate(rng: random.Random, stream: bytes) -> bytes:
    data = bytearray(stream)
    for _ in range(rng.randint(1, 3)):
        action = rng.random()
        if action < 0.5 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif action < 0.65 and data:
            del data[rng.randrange(len(data)):]
        elif action < 0.8:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif action < 0.9 and len(data) > 4:
            at = rng.randrange(len(data) - 4)
            data[at + 1:at + 4] = rng.randbytes(3)  # a wild length field
        else:
            start = rng.randrange(len(data) + 1)
            data += data[start:start + rng.randint(1, 200)]
    return bytes(data)


def fuzz_seeds(vectors: Path) -> list[bytes]:
    text = b"int main(void) { return 0; }\n" * 30
    seeds = [compress(text, 128), compress(os.urandom(600), 256), compress(b"", 64),
             compress(text, compress=False), small_stream()[0]]
    seeds += [p.read_bytes() for p in sorted(vectors.glob("*.s2")) if p.stat().st_size < 20000]
    return seeds


def test_fuzz_the_decoder_for_three_seconds(vectors_dir: Path) -> None:
    rng = random.Random(20240607)
    seeds = fuzz_seeds(vectors_dir)
    deadline = time.monotonic() + 3.0
    runs = 0
    while time.monotonic() < deadline:
        stream = mutate(rng, rng.choice(seeds))
        started = time.monotonic()
        try:
            if rng.random() < 0.5:
                decompress(stream)
            else:
                cut = rng.randrange(len(stream) + 1)
                S2Reader(iter([stream[:cut], stream[cut:]])).read()
        except CodecError:
            pass
        assert time.monotonic() - started < 1.0, stream[:64].hex()
        runs += 1
    assert runs > 200
