"""The agent's compiled tar writer (agent/_tarpack.c) against the Python writer, the reference:
the same bytes for any file it takes, and nothing at all for what it leaves to the reference."""

from __future__ import annotations

import os
import stat
import tarfile
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildr_podman.agent import tarwriter
from buildr_podman.agent.packer import PackStats, pack_changes
from buildr_podman.s2 import decompress

needs_tarpack = pytest.mark.skipif(tarwriter._compiled is None,
                                   reason="the compiled tar writer was not built")
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
NS = 1_000_000_000
MAX_OCTAL = 8**11 - 1

# Times around every edge the writers treat apart: before 1970, whole seconds, nanoseconds
# with trailing zeros, the ustar field's limit, and past 64-bit nanoseconds (year 2262).
MTIMES = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40).map(lambda s: s * NS),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.sampled_from([0, 1, -1, NS - 1, -NS + 1, 1_700_000_000_123_456_789,
                     1_700_000_000_120_000_000, MAX_OCTAL * NS, (MAX_OCTAL + 1) * NS,
                     MAX_OCTAL * NS + 5, 9_223_372_035 * NS, 9_223_372_036 * NS,
                     -9_223_372_035 * NS, 2**63 - 1]),
)
NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0")
NAMES = st.one_of(st.text(NAME_CHARS, min_size=1, max_size=12),
                  st.integers(min_value=90, max_value=120).map(lambda n: "n" * n),
                  st.sampled_from(["é" * 60, "a b", "-x", ".hidden", "x\ny"]))
SIZES = st.one_of(st.integers(min_value=0, max_value=2000),
                  st.sampled_from([511, 512, 513, 4096, 256 * 1024, 256 * 1024 + 1, 300_000]))


@st.composite
def files(draw: st.DrawFn) -> list[tuple[str, int, int, int]]:
    """(name, size, mtime_ns, mode) of a few regular files, some in a deep directory."""
    count = draw(st.integers(min_value=1, max_value=6))
    names = draw(st.lists(NAMES, min_size=count, max_size=count, unique_by=os.fsencode))
    # Names past 100 bytes (a pax "path" record), under a directory no drawn name can be.
    deep = "a-directory-of-long-names/" + "deep" * 30 + "/"
    return [((deep if draw(st.booleans()) else "") + name, draw(SIZES), draw(MTIMES),
             draw(st.integers(min_value=0o400, max_value=0o777)) | 0o400)
            for name in names]


def make(root: Path, specs: list[tuple[str, int, int, int]]) -> list[str]:
    """The files, their directories, and the names to pack (directories first)."""
    for name, size, mtime_ns, mode in specs:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
        path.chmod(mode)
        try:
            os.utime(path, ns=(0, mtime_ns))
        except (OSError, OverflowError):
            os.utime(path, ns=(0, 0))  # a time this file system cannot keep
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def packed(root: Path, names: list[str], compiled: object) -> tuple[bytes, PackStats]:
    saved = tarwriter._compiled
    tarwriter._compiled = compiled  # type: ignore[assignment]
    try:
        stats = PackStats()
        data = b"".join(pack_changes(str(root), names, stats, compress=False))
    finally:
        tarwriter._compiled = saved
    return decompress(data), stats


@needs_tarpack
@FUZZ
@given(files())
def test_the_compiled_writer_writes_what_the_reference_writes(
        tmp_path_factory: pytest.TempPathFactory, specs: list[tuple[str, int, int, int]]) -> None:
    root = tmp_path_factory.mktemp("tree")
    names = make(root, specs)
    ours, ours_stats = packed(root, names, tarwriter._compiled)
    reference, reference_stats = packed(root, names, None)
    assert ours == reference
    assert ours_stats == reference_stats


@needs_tarpack
def test_what_it_leaves_to_the_reference(tmp_path: Path) -> None:
    """The fast path must not be dead, nor take what it cannot write as the reference does;
    whatever it leaves, it leaves the buffer as it was."""
    compiled = tarwriter._compiled
    assert compiled is not None
    (tmp_path / "small").write_bytes(b"hello")
    os.utime(tmp_path / "small", ns=(0, 1_700_000_000 * NS + NS // 2))
    (tmp_path / "large").write_bytes(b"x" * (compiled.MAX_FAST_SIZE + 1))
    with open(tmp_path / "sparse", "wb") as sparse:
        sparse.truncate(1 << 20)
    (tmp_path / "future").write_bytes(b"f")
    os.utime(tmp_path / "future", ns=(0, 9_300_000_000 * NS))  # past 64-bit nanoseconds
    (tmp_path / "dir").mkdir()
    os.symlink("small", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "closed").write_bytes(b"secret")
    (tmp_path / "closed").chmod(0)
    closed = [] if os.access(tmp_path / "closed", os.R_OK) else ["closed"]  # root reads it
    outcomes = {}
    for name in ("large", "sparse", "future", "dir", "link", "fifo", "gone", *closed):
        buffer = bytearray(b"before")
        outcomes[name] = compiled.add_regular(buffer, str(tmp_path / name), name)
        assert buffer == b"before", name
    declined, not_regular = compiled.DECLINED, compiled.NOT_REGULAR
    assert outcomes == {"large": declined, "sparse": declined, "future": declined,
                        "dir": not_regular, "link": not_regular, "fifo": not_regular,
                        "gone": not_regular, **dict.fromkeys(closed, not_regular)}

    buffer = bytearray()
    assert compiled.add_regular(buffer, str(tmp_path / "small"), "small") == 5
    member = tarfile.open(fileobj=BytesIO(bytes(buffer) + bytes(1024))).getmember("small")
    assert (member.size, member.mtime, stat.S_IMODE(member.mode)) == (
        5, 1_700_000_000.5, stat.S_IMODE((tmp_path / "small").stat().st_mode))


@needs_tarpack
def test_a_file_it_declines_still_comes_back_whole(tmp_path: Path) -> None:
    """Declined files go the reference's way, sparse and large ones included."""
    (tmp_path / "large").write_bytes(os.urandom(300_000))
    with open(tmp_path / "sparse", "wb") as sparse:
        sparse.seek(1 << 20)
        sparse.write(b"end")
    data, stats = packed(tmp_path, ["large", "sparse"], tarwriter._compiled)
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        for name in ("large", "sparse"):
            body = tar.extractfile(name)
            assert body is not None and body.read() == (tmp_path / name).read_bytes()
    assert stats.files == 2
