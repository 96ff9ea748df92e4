"""Changes and files at the edges, in a real container: every change comes back, every odd file
works, every failure says what happened (issue 14).

Property tests drive a real rootless pod through the command line; each example is one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_faults import Running, containers_of, need_image

from buildr_podman.archive.owned import remove_tree

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

IMAGE = "localhost/buildr-busybox:latest"
# Each example is a run of its own (seconds): no shrinking, which would take many more.
PROPERTY = settings(max_examples=4, deadline=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def buildr(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildr_podman", *args], cwd=root,
                          capture_output=True, text=True, timeout=timeout, check=False)


def task(name: str, script: str, *, inputs: str = "mount", extra: str = "",
         container: str = "") -> str:
    return (f'task "script" "{name}" {{\n  container {{\n    image = "{IMAGE}"\n'
            f'    inputs = "{inputs}"\n{container}  }}\n{extra}'
            f"  script = <<-EOT\n{script}\n  EOT\n}}\n")


def repo(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        # Whole seconds: busybox keeps times to the microsecond only.
        os.utime(root / rel, ns=(1_600_000_000_000_000_000,) * 2)
    return root


def finished(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {e["task"]: e for e in events if e["event"] == "task_finished"}


# -- 1. a change that keeps size and mtime ---------------------------------------------------

# How ordinary tools put new bytes under the old size and mtime: a rewrite then `touch -r`,
# `cp -p` over it, and a new file renamed over it with the old mtime.
KEEP_MTIME = {
    "touch -r": "cp -p a.txt /tmp/ref && printf %s {new} > a.txt && touch -r /tmp/ref a.txt",
    "cp -p": "printf %s {new} > /tmp/n && touch -r a.txt /tmp/n && cp -p /tmp/n a.txt",
    "mv": "printf %s {new} > /tmp/n && touch -r a.txt /tmp/n && mv /tmp/n a.txt",
}


@PROPERTY
@given(how=st.sampled_from(sorted(KEEP_MTIME)), inputs=st.sampled_from(["mount", "copy"]),
       new=st.text(alphabet="XYZ", min_size=8, max_size=8))
def test_a_rewrite_keeping_size_and_mtime_comes_back_and_is_undone(
        tmp_path_factory, how: str, inputs: str, new: str) -> None:
    """Returned, written back, and undone before the next task of the same warm pod."""
    need_image()
    root = repo(tmp_path_factory.mktemp("keep"), {"a.txt": b"original"})
    rewrite = KEEP_MTIME[how].format(new=new)
    (root / ".buildr" / "t.hcl").write_text(
        task("rewrite", rewrite, inputs=inputs)
        + task("reader", "echo \"$(cat a.txt)\"", inputs=inputs)
        + task("back", rewrite, inputs=inputs, extra="  write_back = true\n"))
    result = buildr(root, "-v", "run", "rewrite", "reader", "-j", "1", "--output", "plain")
    assert result.returncode == 0, result.stderr
    assert "reused after 1 tasks" in result.stderr
    assert (root / ".buildr" / "out" / "rewrite" / "a.txt").read_bytes() == new.encode()
    assert result.stdout.splitlines()[0] == "original", "the warm pod undid the rewrite"
    written = buildr(root, "run", "back", "--output", "plain")
    assert written.returncode == 0, written.stderr
    assert (root / "a.txt").read_bytes() == new.encode()
    assert (root / "a.txt").stat().st_mtime_ns // 10**9 == 1_600_000_000  # the old mtime


# -- 2. deleting a big tree ------------------------------------------------------------------

def test_deleting_a_45000_file_tree_is_written_back(tmp_path: Path) -> None:
    """45,000 paths of ~200 bytes: 9 MB of deletions, past gRPC's 8 MiB message limit, which
    one result message once had to hold."""
    need_image()
    root = repo(tmp_path, {"keep.txt": b"keep\n"})
    tree = root / "node_modules"
    tree.mkdir()
    for index in range(45_000):
        os.close(os.open(tree / (f"{index:06d}-" + "m" * 190), os.O_CREAT | os.O_WRONLY))
    (root / ".buildr" / "t.hcl").write_text(
        task("prune", "rm -rf node_modules", extra="  write_back = true\n"))
    result = buildr(root, "run", "prune", "--output", "json", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    deleted = finished(result)["prune"]["deleted_paths"]
    assert len(deleted) == 45_001 and "node_modules" in deleted
    assert sorted(p.name for p in root.iterdir()) == [".buildr", "keep.txt"]


# -- 5. deep trees ---------------------------------------------------------------------------

DEEP = ("i=0; while [ $i -lt 1500 ]; do mkdir d && cd d || exit 1; i=$((i + 1)); done; "
        "echo deep > f; chmod 500 .")


def test_a_1500_level_tree_comes_back_again_and_is_written_back(tmp_path: Path) -> None:
    """Every step that walks or removes it: tracking, packing and extracting it, removing
    the previous output on the second run, undoing it in the warm pod, writing it back."""
    need_image()
    root = repo(tmp_path, {"keep.txt": b"keep\n"})
    (root / ".buildr" / "t.hcl").write_text(
        task("deep", DEEP) + task("after", "ls") + task("back", DEEP, extra="  write_back = true\n"))
    try:
        check_deep_tree(root)
    finally:  # pytest's own clean-up of old temporary directories recurses per level
        remove_tree(root)


def check_deep_tree(root: Path) -> None:
    for _ in range(2):
        result = buildr(root, "run", "deep", "after", "-j", "1", "--output", "plain")
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split() == ["keep.txt"], "the warm pod removed the tree"
    deepest = "/".join(["d"] * 1500)
    assert (root / ".buildr" / "out" / "deep" / deepest / "f").read_text() == "deep\n"
    written = buildr(root, "run", "back", "--output", "plain")
    assert written.returncode == 0, written.stderr[-3000:]
    assert (root / deepest / "f").read_text() == "deep\n"
    cleaned = buildr(root, "clean", "--all")
    assert cleaned.returncode == 0, cleaned.stderr[-3000:]


# -- 3. what the task leaves, whatever its modes and names --------------------------------

CLOSED = st.lists(st.tuples(st.sampled_from(["f", "d/f", "d/e/f", "g"]),
                            st.sampled_from(["000", "200", "400"]),
                            st.sampled_from(["", "000", "100", "500"])),
                  min_size=1, max_size=4)
DROP_ALL = '    capabilities {\n      drop = ["ALL"]\n    }\n'


@PROPERTY
@given(closed=CLOSED)
def test_what_a_task_closes_comes_back_under_drop_all(tmp_path_factory, closed) -> None:
    """Without CAP_DAC_OVERRIDE the agent opens up what it owns, reads it, and puts the
    task's modes back: the files, their modes and the warm pod's reset are all exact."""
    need_image()
    root = repo(tmp_path_factory.mktemp("closed"), {"keep.txt": b"keep\n"})
    lines, expected = [], {}
    for index, (rel, file_mode, dir_mode) in enumerate(closed):
        path = f"c{index}/{rel}"
        lines.append(f'mkdir -p "$(dirname {path})" && echo {index} > {path} && '
                     f"chmod {file_mode} {path}")
        expected[path] = (f"{index}\n".encode(), int(file_mode, 8))
        if dir_mode and "/" in rel:
            lines.append(f'chmod {dir_mode} "$(dirname {path})"')
    (root / ".buildr" / "t.hcl").write_text(
        task("closer", "\n".join(lines), container=DROP_ALL)
        + task("after", "ls", container=DROP_ALL))
    try:
        result = buildr(root, "run", "closer", "after", "-j", "1", "--output", "plain")
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split() == ["keep.txt"], "the warm pod removed what was closed"
        out = root / ".buildr" / "out" / "closer"
        for path, (data, mode) in expected.items():
            opened = out
            for part in path.split("/")[:-1]:
                opened = opened / part
                opened.chmod(0o700)
            assert (out / path).stat().st_mode & 0o777 == mode, path
            (out / path).chmod(0o600)
            assert (out / path).read_bytes() == data, path
    finally:
        remove_tree(root)


def test_names_that_are_not_utf8_are_returned_deleted_and_written_back(tmp_path: Path) -> None:
    """A Latin-1 name the task makes is written back as its bytes; one it deletes is listed
    (as \\xNN in JSON) and deleted by write_back."""
    need_image()
    root = repo(tmp_path, {"keep.txt": b"keep\n"})
    os.close(os.open(os.fsencode(root) + b"/old\xe9.txt", os.O_CREAT | os.O_WRONLY))
    (root / ".buildr" / "t.hcl").write_text(task(
        "latin", "rm ./old*.txt && echo new > \"$(printf 'new\\351.txt')\"",
        extra="  write_back = true\n"))
    result = buildr(root, "run", "latin", "--output", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert finished(result)["latin"]["deleted_paths"] == ["old\\xe9.txt"]
    assert sorted(os.listdir(os.fsencode(root))) == [b".buildr", b"keep.txt", b"new\xe9.txt"]
    assert (root / os.fsdecode(b"new\xe9.txt")).read_bytes() == b"new\n"


# -- a time past 2262 ----------------------------------------------------------------------

@pytest.mark.parametrize("cache", ["on", "off"])
def test_a_file_dated_past_2262_comes_back_with_its_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: str) -> None:
    """Linux keeps times past 64-bit nanoseconds (`cp -p` of a file dated 2300): the output
    comes back with that time, also when the task cache lands it, never refused as a broken
    archive. Three runs in a row."""
    need_image()
    monkeypatch.setenv("BUILDR_CACHE", cache)
    root = repo(tmp_path, {"far.txt": b"far\n"})
    far = 10_413_792_000 * 10**9  # 2300-01-01: busybox keeps whole seconds here
    os.utime(root / "far.txt", ns=(far, far))
    (root / ".buildr" / "t.hcl").write_text(task("far", "mkdir -p out && cp -p far.txt out/"))
    for attempt in range(3):
        result = buildr(root, "run", "far", "--output", "plain")
        assert result.returncode == 0, (attempt, result.stdout + result.stderr)
        landed = root / ".buildr" / "out" / "far" / "out" / "far.txt"
        assert landed.read_bytes() == b"far\n", attempt
        assert landed.stat().st_mtime_ns == far, attempt


# -- write_back over inputs_from: the repository's file beneath a laid output ---------------

@pytest.mark.parametrize("cache", ["on", "off"])
def test_deleting_a_laid_output_never_deletes_the_repositorys_file_beneath(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: str) -> None:
    """The producer's gen/x.txt is laid over the repository's own: the consumer deletes
    the one it sees, and write_back keeps the user's (said once); its own deletion of a
    repository file still happens. Three runs in a row."""
    need_image()
    monkeypatch.setenv("BUILDR_CACHE", cache)
    root = repo(tmp_path, {"gen/x.txt": b"the user's\n", "old.txt": b"old\n"})
    (root / ".buildr" / "t.hcl").write_text(
        task("producer", "mkdir -p gen && echo produced > gen/x.txt")
        + task("consumer", "cat gen/x.txt > seen.txt && rm gen/x.txt && rm -f old.txt",
               extra='  inputs_from = ["producer"]\n  write_back = true\n'))
    for attempt in range(3):
        result = buildr(root, "run", "consumer", "--output", "plain")
        assert result.returncode == 0, (attempt, result.stdout + result.stderr)
        assert (root / "gen" / "x.txt").read_bytes() == b"the user's\n", attempt
        assert (root / "seen.txt").read_text() == "produced\n", attempt
        assert not (root / "old.txt").exists(), attempt
        said = result.stdout + result.stderr
        assert "not deleted in the repository: 1 paths" in said and "'gen/x.txt'" in said, said


# -- 7. a host killed with SIGKILL -----------------------------------------------------------

def services_of(pid: int) -> list[str]:
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", "podman system service"],
                           capture_output=True, text=True, check=False)
    return found.stdout.split()


def test_a_host_killed_with_sigkill_leaves_nothing_once_the_next_run_went(
        tmp_path: Path) -> None:
    """Its private API service goes within seconds (the kernel's parent-death signal), and
    the next run removes its pod (nothing else could: its owner is gone)."""
    need_image()
    root = repo(tmp_path, {"keep.txt": b"keep\n"})
    (root / ".buildr" / "t.hcl").write_text(task("sleeper", "echo up\nsleep 600")
                                            + task("quick", "true"))
    run = Running(root, "run", "sleeper")
    run.wait_for_line("up")
    services = services_of(run.pid)
    assert services, "the run has no private API service (a user socket answered?)"
    assert containers_of(run.pid)
    empty = empty_directories_of(run.pid)
    assert empty, "the run has no empty directory (PodmanSession.empty)"
    run.process.kill()
    run.finish(timeout=30)
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{pid}") for pid in services):
        assert time.monotonic() < deadline, f"the API service {services} outlived its run"
        time.sleep(0.1)
    after = buildr(root, "run", "quick", "--output", "plain")
    assert after.returncode == 0, after.stderr
    deadline = time.monotonic() + 30
    while containers_of(run.pid) or empty_directories_of(run.pid):
        assert time.monotonic() < deadline, "the next run left the dead run's pod or its " \
                                            f"empty directory {empty}"
        time.sleep(0.2)


def empty_directories_of(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"buildr-podman-empty-{pid}-*"))


# -- 4. sparse files -------------------------------------------------------------------------

SPARSE = st.lists(st.tuples(st.integers(0, 4 << 30), st.binary(min_size=1, max_size=9000)),
                  max_size=4)


@PROPERTY
@given(size=st.integers(1, 64 << 30), writes=SPARSE)
def test_sparse_files_come_back_sparse_under_a_small_limit(tmp_path_factory, size: int,
                                                           writes) -> None:
    """Up to 64 GiB of nothing with a few writes in it comes back with its holes, under a
    1 MiB max_return_size: what the archive stores is what counts."""
    need_image()
    root = repo(tmp_path_factory.mktemp("sparse"), {"keep.txt": b"keep\n"})
    lines = [f"truncate -s {size} big"]
    for index, (offset, data) in enumerate(writes):
        (root / f"w{index}").write_bytes(data)
        lines.append(f"dd if=w{index} of=big bs=1 seek={offset} conv=notrunc 2>/dev/null")
    (root / ".buildr" / "t.hcl").write_text(
        'buildr {\n  max_return_size = "1m"\n}\n' + task("sparse", "\n".join(lines)))
    result = buildr(root, "run", "sparse", "--output", "plain")
    assert result.returncode == 0, result.stderr[-3000:]
    big = root / ".buildr" / "out" / "sparse" / "big"
    final_size = max([size] + [offset + len(data) for offset, data in writes])
    assert big.stat().st_size == final_size
    assert big.stat().st_blocks * 512 <= 64 * 1024 * (len(writes) + 1), "holes came back dense"
    written: dict[int, int] = {}  # position -> byte, later writes over earlier ones
    for offset, data in writes:
        written.update(zip(range(offset, offset + len(data)), data, strict=True))
    with open(big, "rb") as back:
        for offset, data in writes:
            back.seek(offset)
            assert back.read(len(data)) == bytes(written[p] for p in range(
                offset, offset + len(data))), offset


# -- 3. paths near PATH_MAX ------------------------------------------------------------------

# 4,090 bytes relative to the workspace: past PATH_MAX as /workspace/...
LONG_PARTS = [f"p{index:03d}" + "q" * 196 for index in range(20)]
LONG_REL = "/".join([*LONG_PARTS, "f" * 70])


def long_file(root: Path, data: bytes | None = None) -> bytes:
    """Writes (data given) or reads LONG_REL under root, a directory at a time."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in LONG_PARTS:
            if data is not None:
                os.mkdir(part, dir_fd=fd)
            deeper = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        flags = os.O_RDONLY if data is None else os.O_WRONLY | os.O_CREAT
        file_fd = os.open(LONG_REL.rsplit("/", 1)[1], flags, 0o644, dir_fd=fd)
    finally:
        os.close(fd)
    with open(file_fd, "rb" if data is None else "wb") as opened:
        if data is None:
            return opened.read()
        opened.write(data)
        return data


@pytest.mark.parametrize("inputs", ["mount", "copy"])
def test_a_repository_holding_a_path_past_path_max_works(tmp_path: Path, inputs: str) -> None:
    """A repository that merely holds such a path once failed every task with mounted inputs;
    a task that rewrites it gets it back, and the warm pod's next task reads the original."""
    need_image()
    root = repo(tmp_path, {"keep.txt": b"keep\n"})
    long_file(root, b"original\n")
    (root / ".buildr" / "t.hcl").write_text(
        task("other", "echo new > new.txt", inputs=inputs)
        + task("rewrite", f"echo changed > {LONG_REL}", inputs=inputs)
        + task("reader", f"cat {LONG_REL}", inputs=inputs))
    result = buildr(root, "-v", "run", "other", "rewrite", "reader", "-j", "1",
                    "--output", "plain")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reused after 2 tasks" in result.stderr
    assert result.stdout.splitlines() == ["original"]
    out = root / ".buildr" / "out"
    assert sorted(p.name for p in (out / "other").iterdir()) == ["new.txt"]
    assert long_file(out / "rewrite") == b"changed\n"
    assert long_file(root) == b"original\n"
