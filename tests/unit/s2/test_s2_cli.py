"""`python -m buildr_podman.s2`: stdin to stdout, -d to decompress, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from buildr_podman.s2 import compress, decompress


def run(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "buildr_podman.s2", *args], input=stdin,
                          capture_output=True, timeout=60, check=False)


def test_compress_and_decompress_round_trip() -> None:
    data = b"print('hello')\n" * 10000 + os.urandom(5000)
    packed = run([], data)
    assert packed.returncode == 0 and packed.stderr == b""
    assert decompress(packed.stdout) == data
    unpacked = run(["-d"], packed.stdout)
    assert unpacked.returncode == 0 and unpacked.stdout == data


def test_store_and_block_size_options() -> None:
    data = b"a" * 200_000
    packed = run(["--store", "--blocksize", "64K"], data)
    assert packed.returncode == 0
    assert len(packed.stdout) > 200_000 and decompress(packed.stdout) == data


def test_reference_vector(vectors_dir: Path) -> None:
    result = run(["-d"], (vectors_dir / "tom-sawyer.txt.default.s2").read_bytes())
    assert result.returncode == 0
    assert result.stdout == (vectors_dir / "tom-sawyer.txt").read_bytes()


def test_bad_stream_is_one_line_and_exit_1() -> None:
    for bad in (b"not s2 at all", compress(b"x" * 5000)[:-2], b""):
        result = run(["-d"], bad)
        assert result.returncode == 1
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("s2: "), result.stderr
        assert "Traceback" not in result.stderr.decode()
