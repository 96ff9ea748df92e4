"""Stream framing: identifiers, Snappy framing, skippable chunks, streams back to back."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import snappy

from buildr_podman.errors import CodecError
from buildr_podman.s2 import S2Decoder, S2Encoder, compress, decompress
from buildr_podman.s2._format import STREAM_IDENTIFIER, masked_crc

SNAPPY_IDENTIFIER = b"\xff\x06\x00\x00sNaPpY"


def chunk(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "little") + body


def stored(data: bytes) -> bytes:
    return chunk(0x01, masked_crc(data).to_bytes(4, "little") + data)


def test_masked_crc_known_value() -> None:
    # CRC-32C("123456789") is 0xE3069283; the framing format rotates it and adds a constant.
    c = 0xE3069283
    assert masked_crc(b"123456789") == (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_the_checksum_loads_crc32cs_compiled_core_without_the_package() -> None:
    # The package's __init__ reads its own metadata (~18 ms of a cold agent's first task).
    code = ("import sys, os; from buildr_podman.s2._format import _crc32c; f = _crc32c(); "
            "data = os.urandom(100_000); "
            "print('crc32c' in sys.modules, hex(f(b'123456789')), type(f).__name__); "
            "import crc32c; print(f(data) == crc32c.crc32c(data), f(b'') == crc32c.crc32c(b''))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "0xe3069283", "builtin_function_or_method", "True", "True"]


def test_streams_back_to_back() -> None:
    assert decompress(compress(b"one ") + compress(b"") + compress(b"two" * 9999)) == (
        b"one " + b"two" * 9999)


def test_snappy_framed_stream_from_python_snappy() -> None:
    data = b"hello snappy " * 20000
    source, sink = io.BytesIO(data), io.BytesIO()
    snappy.stream_compress(source, sink)
    framed = sink.getvalue()
    assert framed.startswith(SNAPPY_IDENTIFIER)
    assert decompress(framed) == data
    assert decompress(framed + compress(b"then s2")) == data + b"then s2"


def test_snappy_framing_caps_blocks_at_64_kib() -> None:
    big = b"x" * 65537
    assert decompress(STREAM_IDENTIFIER + stored(big)) == big
    with pytest.raises(CodecError) as caught:
        decompress(SNAPPY_IDENTIFIER + stored(big))
    assert caught.value.offset == 10


def test_a_later_s2_identifier_lifts_the_snappy_cap() -> None:
    big = b"x" * 65537
    assert decompress(SNAPPY_IDENTIFIER + STREAM_IDENTIFIER + stored(big)) == big


@pytest.mark.parametrize("kind", [0x80, 0x99, 0xFD, 0xFE])
def test_skippable_chunks_are_skipped(kind: int) -> None:
    stream = (STREAM_IDENTIFIER + chunk(kind, b"") + stored(b"a") + chunk(kind, b"\x01" * 70000)
              + stored(b"b"))
    assert decompress(stream) == b"ab"


def test_large_skippable_chunk_is_dropped_as_it_arrives() -> None:
    decoder = S2Decoder()
    decoder.decode(STREAM_IDENTIFIER + b"\xfe\xff\xff\xff")  # 16 MiB of padding follows
    piece = bytes(65536)
    for _ in range((1 << 24) // 65536 - 1):
        assert decoder.decode(piece) == b""
        assert decoder._pending.size == 0  # nothing kept
    assert decoder.decode(piece[:65535] + stored(b"ok")) == b"ok"
    decoder.flush()


@pytest.mark.parametrize("kind", [0x02, 0x10, 0x7F])
def test_reserved_unskippable_chunk_is_an_error(kind: int) -> None:
    with pytest.raises(CodecError, match="unskippable") as caught:
        decompress(STREAM_IDENTIFIER + stored(b"a") + chunk(kind, b"abc"))
    assert caught.value.offset == 10 + 4 + 4 + 1


def test_empty_uncompressed_chunk_is_valid() -> None:
    assert decompress(STREAM_IDENTIFIER + stored(b"") + stored(b"z")) == b"z"


def test_identifier_may_repeat() -> None:
    assert decompress(STREAM_IDENTIFIER * 3 + stored(b"q") + STREAM_IDENTIFIER) == b"q"


def test_flush_returns_undrained_output() -> None:
    decoder = S2Decoder()
    decoder.feed(compress(b"fed but not drained"))
    assert decoder.flush() == b"fed but not drained"


def test_next_block_hands_out_one_block_at_a_time() -> None:
    decoder = S2Decoder()
    decoder.feed(compress(b"a" * 10 + b"b" * 10, block_size=10))
    assert bytes(decoder.next_block() or b"") == b"a" * 10
    assert bytes(decoder.next_block() or b"") == b"b" * 10
    assert decoder.next_block() is None
    assert decoder.wanted == 4


def test_feeding_a_byte_at_a_time_keeps_few_objects() -> None:
    data = bytes(range(256)) * 400
    stream = compress(data, compress=False)
    decoder = S2Decoder()
    out = bytearray()
    for i in range(len(stream)):
        out += decoder.decode(stream[i:i + 1])
        assert len(decoder._pending._pieces) <= 1
    decoder.flush()
    assert out == data


def test_the_encoder_groups_its_output_by_chunk() -> None:
    encoder = S2Encoder(block_size=100, compress=False)
    frames = encoder.encode_frames(bytes(250)) + encoder.flush_frames()
    assert [b"".join(frame)[:1] for frame in frames] == [b"\xff", b"\x01", b"\x01", b"\x01"]
    for frame in frames:  # each is one whole chunk: header, then exactly its body
        whole = b"".join(frame)
        assert len(whole) == 4 + int.from_bytes(whole[1:4], "little")
        assert len(whole) <= encoder.max_frame_size
    assert decompress(b"".join(b"".join(frame) for frame in frames)) == bytes(250)


def test_the_decoder_keeps_views_of_bytes_and_copies_what_may_change() -> None:
    data = os.urandom(200_000)  # pieces below 16 KiB are gathered (copied) by design
    stream = compress(data, block_size=50_000, compress=False)
    decoder = S2Decoder()
    decoder.feed(memoryview(stream))  # a view of bytes cannot change: kept as it is
    block = decoder.next_block()
    assert block is not None and block.obj is stream
    mutable = bytearray(stream)
    decoder = S2Decoder()
    decoder.feed(memoryview(mutable))
    mutable[:] = bytes(len(mutable))  # the caller reuses its buffer
    assert decoder.decode(b"") + decoder.flush() == data
