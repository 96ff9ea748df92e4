"""The S2 block decoders against an independent model, and against each other."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildr_podman.s2 import MAX_BLOCK_SIZE, _block
from buildr_podman.s2._block_py import BlockError, decode_block, read_decoded_len

needs_compiled = pytest.mark.skipif(not _block.accelerated(),
                                    reason="compiled S2 block decoder not built")

# ---- a test-side encoder of every tag form, and the byte-by-byte meaning of each op ----


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def literal(data: bytes, width: int | None = None) -> bytes:
    """A literal tag; `width` forces 0 (inline) or 1-4 extra length bytes."""
    n = len(data) - 1
    if width is None:
        width = 0 if n < 60 else (n.bit_length() + 7) // 8
    if width == 0:
        return bytes([n << 2]) + data
    return bytes([(59 + width) << 2]) + n.to_bytes(width, "little") + data


def copy1(offset: int, length: int) -> bytes:
    assert 1 <= offset < 2048 and 4 <= length <= 11
    return bytes([1 | (length - 4) << 2 | (offset >> 8) << 5, offset & 0xFF])


def copy2(offset: int, length: int) -> bytes:
    assert 1 <= offset < 65536 and 1 <= length <= 64
    return bytes([2 | (length - 1) << 2]) + offset.to_bytes(2, "little")


def copy4(offset: int, length: int) -> bytes:
    assert 1 <= offset and 1 <= length <= 64
    return bytes([3 | (length - 1) << 2]) + offset.to_bytes(4, "little")


def repeat(length: int) -> bytes:
    """S2: copy with offset 0 reuses the last offset; longer lengths take 1-3 more bytes."""
    if length <= 8:
        return bytes([1 | (length - 4) << 2, 0])
    if length < 260:
        return bytes([1 | 5 << 2, 0, length - 8])
    if length < 65540:
        return bytes([1 | 6 << 2, 0]) + (length - 260).to_bytes(2, "little")
    return bytes([1 | 7 << 2, 0]) + (length - 65540).to_bytes(3, "little")


def model_copy(out: bytearray, offset: int, length: int) -> None:
    for _ in range(length):
        out.append(out[-offset])


@st.composite
def s2_blocks(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A valid S2 block using every tag form, and what it decodes to."""
    out = bytearray()
    tags = bytearray()
    last_offset = 0
    for _ in range(draw(st.integers(1, 40))):
        choices = ["literal"]
        if out:
            choices += ["copy1", "copy2", "copy4"]
        if last_offset:
            choices.append("repeat")
        op = draw(st.sampled_from(choices))
        if op == "literal":
            data = draw(st.binary(min_size=1, max_size=draw(st.sampled_from([8, 80, 300]))))
            width = draw(st.sampled_from([None, None, 1, 2, 3, 4]))
            if width is not None and len(data) - 1 >= 1 << (8 * width):
                width = None
            tags += literal(data, width)
            out += data
            continue
        if op == "repeat":
            length = draw(st.sampled_from([4, 8, 9, 200, 259, 260, 1000, 65539, 65540, 70000]))
            tags += repeat(length)
            model_copy(out, last_offset, length)
            continue
        max_offset = {"copy1": 2047, "copy2": 65535, "copy4": 1 << 20}[op]
        offset = draw(st.integers(1, min(len(out), max_offset)))
        if op == "copy1":
            length = draw(st.integers(4, 11))
            tags += copy1(offset, length)
        else:
            length = draw(st.integers(1, 64))
            tags += (copy2 if op == "copy2" else copy4)(offset, length)
        model_copy(out, offset, length)
        last_offset = offset
    return uvarint(len(out)) + bytes(tags), bytes(out)


@settings(max_examples=150, deadline=None)
@given(s2_blocks())
def test_pure_decoder_matches_the_model(case: tuple[bytes, bytes]) -> None:
    block, expected = case
    assert decode_block(block, MAX_BLOCK_SIZE) == expected


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(s2_blocks())
def test_compiled_decoder_matches_the_model(case: tuple[bytes, bytes]) -> None:
    block, expected = case
    assert _block.decode_block_s2(block, MAX_BLOCK_SIZE) == expected
    assert bytes(_block.decode_block(memoryview(block), MAX_BLOCK_SIZE)) == expected


@settings(max_examples=60, deadline=None)
@given(s2_blocks())
def test_snappy_first_path_matches_the_model(case: tuple[bytes, bytes]) -> None:
    block, expected = case
    saved, _block._accel = _block._accel, None
    try:
        assert bytes(_block.decode_block(memoryview(block), MAX_BLOCK_SIZE)) == expected
    finally:
        _block._accel = saved


# ---- hand-made blocks, corrupt ones named by position ----


def test_overlapping_copy_repeats_the_pattern() -> None:
    block = uvarint(3 + 100) + literal(b"abc") + copy2(3, 64) + repeat(36)
    assert decode_block(block, MAX_BLOCK_SIZE) == b"abc" * 34 + b"a"


def test_repeat_uses_the_offset_of_the_last_copy_of_any_kind() -> None:
    block = (uvarint(10 + 5 + 4 + 4) + literal(b"0123456789") + copy4(10, 5) + literal(b"xyzw")
             + repeat(4))
    assert decode_block(block, MAX_BLOCK_SIZE) == b"0123456789" + b"01234" + b"xyzw" + b"9012"


def test_empty_block() -> None:
    assert decode_block(b"\x00", MAX_BLOCK_SIZE) == b""


CORRUPT_BLOCKS = {
    "empty": (b"", 0),
    "varint without end": (b"\x80\x80", 0),
    "varint of six bytes": (b"\x80\x80\x80\x80\x80\x01", 0),
    "varint above 32 bits": (b"\xff\xff\xff\xff\x1f", 0),
    "claims more than the limit": (uvarint(MAX_BLOCK_SIZE + 1) + literal(b"x"), 0),
    "repeat as the first copy": (uvarint(8) + literal(b"abcd") + repeat(4), 6),
    "offset before the start": (uvarint(8) + literal(b"abcd") + copy1(5, 4), 6),
    "offset zero in copy2": (uvarint(8) + literal(b"abcd") + b"\x0e\x00\x00", 6),
    "copy past the declared length": (uvarint(6) + literal(b"abcd") + copy1(4, 4), 6),
    "literal past the declared length": (uvarint(2) + literal(b"abcd"), 1),
    "literal past the end of the block": (uvarint(4) + literal(b"abcd")[:-1], 1),
    "truncated literal length": (uvarint(100) + b"\xf4", 1),
    "truncated copy1": (uvarint(8) + literal(b"abcd") + b"\x01", 6),
    "truncated copy2": (uvarint(8) + literal(b"abcd") + b"\x0e\x04", 6),
    "truncated copy4": (uvarint(8) + literal(b"abcd") + b"\x0f\x04\x00\x00", 6),
    "truncated repeat length": (uvarint(300) + literal(b"abcd") + copy1(4, 4) + b"\x19\x00\x10",
                                9),
    "shorter than declared": (uvarint(5) + literal(b"abcd"), 6),
}


@pytest.mark.parametrize("name", CORRUPT_BLOCKS)
def test_corrupt_block_is_named_by_position(name: str) -> None:
    block, pos = CORRUPT_BLOCKS[name]
    with pytest.raises(BlockError) as caught:
        decode_block(block, MAX_BLOCK_SIZE)
    assert caught.value.pos == pos


@needs_compiled
@pytest.mark.parametrize("name", CORRUPT_BLOCKS)
def test_compiled_decoder_fails_at_the_same_position(name: str) -> None:
    block, pos = CORRUPT_BLOCKS[name]
    with pytest.raises(BlockError) as caught:
        _block.decode_block_s2(block, MAX_BLOCK_SIZE)
    assert caught.value.pos == pos


def test_read_decoded_len() -> None:
    assert read_decoded_len(b"\x00") == (0, 1)
    assert read_decoded_len(uvarint(MAX_BLOCK_SIZE)) == (MAX_BLOCK_SIZE, 4)
    assert read_decoded_len(b"\xff\xff\xff\xff\x0f") == (0xFFFFFFFF, 5)


def test_limit_applies_before_decoding() -> None:
    block = uvarint(100) + literal(b"x" * 100)
    with pytest.raises(BlockError):
        decode_block(block, 99)
    assert decode_block(block, 100) == b"x" * 100


# ---- differential fuzz: mutated blocks give the same result or the same failure ----


@needs_compiled
def test_pure_and_compiled_agree_on_mutated_blocks() -> None:
    rng = random.Random(1234)
    seeds = [uvarint(3 + 100) + literal(b"abc") + copy2(3, 64) + repeat(36),
             uvarint(300) + literal(b"abcd" * 10) + copy1(40, 11) + repeat(249),
             uvarint(22) + literal(b"0123456789") + copy4(10, 5) + literal(b"xyz") + repeat(4)]
    deadline = time.monotonic() + 1.5
    cases = 0
    while time.monotonic() < deadline:
        block = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            block[rng.randrange(len(block))] = rng.randrange(256)
        if rng.random() < 0.3:
            del block[rng.randrange(len(block)):]
        block = bytes(block)
        try:
            expected: bytes | int = decode_block(block, 1 << 16)
        except BlockError as err:
            expected = err.pos
        try:
            got: bytes | int = _block.decode_block_s2(block, 1 << 16)
        except BlockError as err:
            got = err.pos
        assert got == expected, block.hex()
        cases += 1
    assert cases > 100
