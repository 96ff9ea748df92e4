"""Benchmark of buildr_podman.s2 beside the compiled Snappy library (run by hand, not in CI).

    python bench/bench_s2.py [--rounds 7] [--size-mb 48] [--testdata DIR]

Builds a tar of source files, then in alternating rounds times our S2 compress
and decompress beside cramjam's raw Snappy on the same data, and prints median
MB/s (of uncompressed data) with the ratio to Snappy. Then it decodes the
reference vectors whose blocks use S2 repeat offsets, with the block decoder
in use and with the pure-Python one. Figures go in bench/README-s2.md.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import sysconfig
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cramjam

from buildr_podman import s2
from buildr_podman.s2 import _block

_SOURCE_SUFFIXES = (".py", ".pyi", ".c", ".h")
_REPO = Path(__file__).resolve().parents[1]


def _source_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = [paths["stdlib"], paths["purelib"], "/usr/lib/python3/dist-packages",
             paths["include"], "/usr/include"]
    return [Path(r) for r in dict.fromkeys(roots) if Path(r).is_dir()]


def _source_files() -> Iterator[Path]:
    for root in _source_roots():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(_SOURCE_SUFFIXES):
                    yield Path(dirpath, name)


def build_source_tar(limit: int) -> bytes:
    """A tar of source files (Python, C headers) up to about `limit` bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in _source_files():
            if buf.tell() >= limit:
                break
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=str(path).lstrip("/"), recursive=False)
    return buf.getvalue()


def _time(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _rate(nbytes: int, seconds: list[float]) -> float:
    return nbytes / statistics.median(seconds) / 1e6


def bench_own_streams(data: bytes, rounds: int) -> None:
    """Our codec beside raw Snappy, case by case in each round so drift hits all alike."""
    snappy_packed = bytes(cramjam.snappy.compress_raw(data))
    ours = s2.compress(data)
    stored = s2.compress(data, compress=False)
    assert s2.decompress(ours) == data and s2.decompress(stored) == data
    cases: dict[str, Callable[[], object]] = {
        "snappy raw compress": lambda: cramjam.snappy.compress_raw(data),
        "s2 compress": lambda: s2.compress(data),
        "s2 compress, stored blocks": lambda: s2.compress(data, compress=False),
        "s2 S2Writer (64 KiB writes)": lambda: _write_stream(data),
        "snappy raw decompress": lambda: cramjam.snappy.decompress_raw(snappy_packed),
        "s2 decompress": lambda: s2.decompress(ours),
        "s2 decompress, stored blocks": lambda: s2.decompress(stored),
        "s2 S2Reader (64 KiB reads)": lambda: _read_stream(ours),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, func in cases.items():
            times[name].append(_time(func))
    snappy = {"compress": _rate(len(data), times["snappy raw compress"]),
              "decompress": _rate(len(data), times["snappy raw decompress"])}
    print(f"\nsource tar: {len(data) / 1e6:.1f} MB; snappy ratio "
          f"{len(snappy_packed) / len(data):.3f}, s2 ratio {len(ours) / len(data):.3f}")
    print(f"{'case (median of ' + str(rounds) + ' rounds)':<36}{'MB/s':>8}{'x snappy':>10}")
    for name, secs in times.items():
        rate = _rate(len(data), secs)
        base = snappy["decompress" if "decomp" in name or "Reader" in name else "compress"]
        print(f"{name:<36}{rate:>8.0f}{rate / base:>10.2f}")


def _write_stream(data: bytes) -> None:
    sink = io.BytesIO()
    with s2.S2Writer(sink) as writer:
        view = memoryview(data)
        for start in range(0, len(data), 64 << 10):
            writer.write(view[start:start + (64 << 10)])


def _read_stream(stream: bytes) -> None:
    buf = bytearray(64 << 10)
    with s2.S2Reader(io.BytesIO(stream)) as reader:
        while reader.readinto(buf):
            pass


def _has_repeat_codes(stream: bytes) -> bool:
    """True if some block of the stream needs S2 (the Snappy library rejects it)."""
    for body in _compressed_blocks(stream):
        try:
            cramjam.snappy.decompress_raw(body)
        except cramjam.DecompressionError:
            return True
    return False


def _compressed_blocks(stream: bytes) -> Iterator[bytes]:
    pos = 0
    while pos + 4 <= len(stream):
        kind, length = stream[pos], int.from_bytes(stream[pos + 1:pos + 4], "little")
        if kind == 0x00:
            yield stream[pos + 8:pos + 4 + length]
        pos += 4 + length


def bench_reference_vectors(testdata: Path, min_seconds: float) -> None:
    """Decode each reference vector that uses repeat offsets for at least `min_seconds`."""
    print(f"\nreference vectors with S2 repeat offsets ({testdata})")
    print(f"{'file':<30}{'MB out':>8}{'MB/s':>8}{'pure Python MB/s':>18}")
    for path in sorted(testdata.glob("*.s2")):
        stream = path.read_bytes()
        if not _has_repeat_codes(stream):
            continue
        size = len(s2.decompress(stream))
        fast = _rate_for(lambda stream=stream: s2.decompress(stream), size, min_seconds)
        pure = _rate_for(lambda stream=stream: _decode_pure(stream), size, min_seconds)
        print(f"{path.name:<30}{size / 1e6:>8.2f}{fast:>8.0f}{pure:>18.1f}")


def _decode_pure(stream: bytes) -> None:
    for body in _compressed_blocks(stream):
        _block.decode_block_reference(body, s2.MAX_BLOCK_SIZE)


def _rate_for(func: Callable[[], object], size: int, min_seconds: float) -> float:
    runs: list[float] = []
    deadline = time.perf_counter() + min_seconds
    while time.perf_counter() < deadline or len(runs) < 5:
        runs.append(_time(func))
    return _rate(size, runs)


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, nproc {os.cpu_count()}, Python {platform.python_version()}, "
            f"cramjam {cramjam.__version__}, compiled S2 block decoder: {s2.accelerated()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size-mb", type=int, default=48)
    parser.add_argument("--testdata", type=Path, default=_REPO / "tests" / "data" / "s2")
    args = parser.parse_args()
    print(_machine())
    data = build_source_tar(args.size_mb << 20)
    bench_own_streams(data, args.rounds)
    if args.testdata.is_dir():
        bench_reference_vectors(args.testdata, 1.0)
    else:
        print(f"\nno reference vectors at {args.testdata}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
