"""The reference encoder's streams decode byte for byte, through every API and any split."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from buildr_podman.s2 import MAX_BLOCK_SIZE, S2Decoder, S2Reader, _block, decompress

# From the README beside the vectors; any further *.s2 file there is tested too.
KNOWN_VECTORS = [
    "random.bin.blocks64k.s2",
    "tom-sawyer.txt.default.s2",
    "tom-sawyer.txt.slower.s2",
    "tree.tar.pad64k.s2",
    "zeros.bin.default.s2",
]


def original_of(path: Path) -> bytes:
    """NAME.OPTS.s2 was made from NAME."""
    return (path.parent / path.name.removesuffix(".s2").rsplit(".", 1)[0]).read_bytes()


def compressed_blocks(stream: bytes) -> list[bytes]:
    """Bodies (after the CRC) of the compressed chunks of a well-formed stream."""
    blocks, pos = [], 0
    while pos < len(stream):
        kind, length = stream[pos], int.from_bytes(stream[pos + 1:pos + 4], "little")
        if kind == 0x00:
            blocks.append(stream[pos + 8:pos + 4 + length])
        pos += 4 + length
    return blocks


@pytest.fixture(params=KNOWN_VECTORS)
def vector(request: pytest.FixtureRequest, vectors_dir: Path) -> tuple[bytes, bytes]:
    path = vectors_dir / request.param
    return path.read_bytes(), original_of(path)


def test_every_vector_file_is_known(vectors_dir: Path) -> None:
    assert {p.name for p in vectors_dir.glob("*.s2")} >= set(KNOWN_VECTORS)


def test_checksums_of_the_vectors_match(vectors_dir: Path) -> None:
    for line in (vectors_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((vectors_dir / name).read_bytes()).hexdigest() == digest, name


def test_decompress(vector: tuple[bytes, bytes]) -> None:
    stream, original = vector
    assert decompress(stream) == original


def test_reader_on_a_file(vector: tuple[bytes, bytes]) -> None:
    stream, original = vector
    with S2Reader(io.BytesIO(stream)) as reader:
        assert reader.read() == original


def test_reader_on_small_chunks(vector: tuple[bytes, bytes]) -> None:
    stream, original = vector
    pieces = (stream[i:i + 777] for i in range(0, len(stream), 777))
    out = bytearray()
    with S2Reader(pieces) as reader:
        while chunk := reader.read(5000):
            assert len(chunk) <= 5000
            out += chunk
    assert out == original


def test_decoder_byte_by_byte(vector: tuple[bytes, bytes]) -> None:
    stream, original = vector
    if len(stream) > 20000:
        stream = stream[:20000]  # enough to cross chunk boundaries; the rest is slow
        original = None  # type: ignore[assignment]
    decoder = S2Decoder()
    out = b"".join(decoder.decode(stream[i:i + 1]) for i in range(len(stream)))
    if original is not None:
        decoder.flush()
        assert out == original


@pytest.mark.parametrize("name", ["tom-sawyer.txt.default.s2", "zeros.bin.default.s2"])
def test_every_two_way_split(vectors_dir: Path, name: str) -> None:
    path = vectors_dir / name
    stream, original = path.read_bytes(), original_of(path)
    for cut in range(len(stream) + 1):
        decoder = S2Decoder()
        out = decoder.decode(stream[:cut]) + decoder.decode(stream[cut:]) + decoder.flush()
        assert out == original, cut


def test_repeat_offsets_need_s2(vectors_dir: Path) -> None:
    """The vectors really exercise S2's repeat codes, which the Snappy library rejects."""
    import cramjam

    rejected = 0
    for name in KNOWN_VECTORS:
        for block in compressed_blocks((vectors_dir / name).read_bytes()):
            try:
                cramjam.snappy.decompress_raw(block)
            except cramjam.DecompressionError:
                rejected += 1
    assert rejected >= 3


def test_pure_and_compiled_decoders_agree_on_vectors(vector: tuple[bytes, bytes]) -> None:
    stream, original = vector
    blocks = compressed_blocks(stream)
    pure = b"".join(_block.decode_block_reference(b, MAX_BLOCK_SIZE) for b in blocks)
    assert pure == b"".join(bytes(_block.decode_block_s2(b, MAX_BLOCK_SIZE)) for b in blocks)
    if len(blocks) == 1:  # the whole original is in this one block
        assert pure == original


def test_vectors_without_the_compiled_decoder(vector: tuple[bytes, bytes],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The Snappy-first path with the pure-Python fallback, as on an install without a compiler."""
    monkeypatch.setattr(_block, "_accel", None)
    stream, original = vector
    assert decompress(stream) == original
