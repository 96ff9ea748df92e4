"""Load on a 2-core machine: many tasks at once, and many in a row with nothing growing.

The figures come from inside the host process: a plugin given with `-p` samples its memory,
file descriptors, sockets and threads as each task finishes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import hcl_task, need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

AT_ONCE = 32
IN_A_ROW = 200
COLD_IN_A_ROW = 60  # each in a pod of its own: ~0.4 s apiece
WARM_UP = 20  # tasks before the baseline sample: caches, imports and pools settle first

SAMPLER = '''
"""Samples this process (the buildr-podman host) as each task finishes."""
import json, os, threading
from buildr_podman.hookspecs import hookimpl

def _sample():
    fds = os.listdir("/proc/self/fd")
    sockets = sum(1 for fd in fds if _target(fd).startswith("socket:"))
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {"rss_kib": rss, "fds": len(fds), "sockets": sockets,
            "threads": threading.active_count()}

def _target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""

@hookimpl
def buildr_task_finished(task, outcome):
    sample = _sample()  # before opening the file, which would count as an fd
    sample.update(task=task.name, ok=outcome.succeeded)
    with open(os.environ["BUILDR_SAMPLES"], "a") as out:
        out.write(json.dumps(sample) + "\\n")
'''


def repo(tmp_path: Path, tasks: list[str]) -> Path:
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text("\n".join(tasks))
    return root


def run(root: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildr_podman", *args], cwd=root,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def own_files(name: str) -> dict[str, str]:
    """What task `name` writes: a few small files, nested, and one of 64 KiB."""
    files = {f"mine/{name}/line-{i}.txt": f"{name} line {i}\n" for i in range(5)}
    files[f"mine/{name}/deep/er/block.txt"] = (name * 8 + "\n") * (64 * 1024 // (len(name) * 8 + 1))
    return files


def writer_script(name: str) -> str:
    lines = [f"mkdir -p mine/{name}/deep/er"]
    for i in range(5):
        lines.append(f'echo "{name} line {i}" > mine/{name}/line-{i}.txt')
    repeat = 64 * 1024 // (len(name) * 8 + 1)
    lines.append(f'i=0; while [ $i -lt {repeat} ]; do echo "{name * 8}"; i=$((i+1)); done '
                 f"> mine/{name}/deep/er/block.txt")
    return "\n".join(lines)


def test_32_tasks_at_once_all_return_exactly_their_own_files(tmp_path: Path) -> None:
    need_image()
    names = [f"w{i:02d}" for i in range(AT_ONCE)]
    root = repo(tmp_path, [hcl_task(name, writer_script(name)) for name in names])
    started = time.monotonic()
    result = run(root, "run", *names, "-j", str(AT_ONCE), "--output", "plain")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    out = root / ".buildr" / "out"
    for name in names:
        got = {str(p.relative_to(out / name)): p.read_text()
               for p in (out / name).rglob("*") if p.is_file()}
        assert got == own_files(name), f"{name} returned something else"
    print(f"\n{AT_ONCE} tasks at once: {took:.1f} s")


def sampled_run(tmp_path: Path, root: Path, names: list[str],
                *args: str) -> tuple[subprocess.CompletedProcess[str], list[dict], float]:
    """Runs `names` one after another with the sampler loaded; its samples, in order."""
    (tmp_path / "sampler.py").write_text(SAMPLER)
    samples_file = tmp_path / "samples.jsonl"
    env = {"BUILDR_SAMPLES": str(samples_file),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    result = run(root, "-p", "sampler", "run", *names, "-j", "1", *args, "--output", "plain",
                 env=env)
    took = time.monotonic() - started
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert [s["task"] for s in samples] == names
    return result, samples, took


def test_200_tasks_in_a_row_keep_memory_fds_and_sockets_flat(tmp_path: Path) -> None:
    """One warm pod serves them all (same container settings)."""
    need_image()
    names = [f"t{i:03d}" for i in range(IN_A_ROW)]
    root = repo(tmp_path, [hcl_task(name, f"echo {name} > {name}.txt") for name in names])
    result, samples, took = sampled_run(tmp_path, root, names)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(s["ok"] for s in samples)
    for name in names:
        assert (root / ".buildr" / "out" / name / f"{name}.txt").read_text() == f"{name}\n"
    print(f"\n{IN_A_ROW} tasks in a row: {took:.1f} s")
    assert_flat(samples, WARM_UP)


def test_failing_tasks_in_a_row_each_in_a_new_pod_keep_everything_flat(tmp_path: Path) -> None:
    """A failed task's pod is never reused: this is the create-and-remove path, each time."""
    need_image()
    names = [f"c{i:02d}" for i in range(COLD_IN_A_ROW)]
    root = repo(tmp_path, [hcl_task(name, "true", extra='  shell = "/no/such/shell"\n')
                           for name in names])
    result, samples, took = sampled_run(tmp_path, root, names, "-k")
    assert result.returncode == 1
    failed = re.findall(r"^buildr: c\d\d failed in .*$", result.stderr, re.MULTILINE)
    assert len(failed) == len(names) and all("'/no/such/shell' is not in" in x for x in failed)
    print(f"\n{COLD_IN_A_ROW} tasks in a row, a new pod each: {took:.1f} s")
    assert_flat(samples, 10)


def assert_flat(samples: list[dict], warm_up: int) -> None:
    early, late = samples[warm_up - 1], samples[-1]
    print(f"after task {warm_up}: {early}\nafter task {len(samples)}: {late}")
    assert late["fds"] <= early["fds"] + 2, "file descriptors grow"
    assert late["sockets"] <= early["sockets"], "sockets grow"
    assert late["threads"] <= early["threads"] + 1, "threads grow"
    # Python's allocator keeps some slack; a leak of even 20 KiB a task would show as 3.5 MiB.
    assert late["rss_kib"] - early["rss_kib"] < 3 * 1024, "memory grows"
    tail = samples[-min(60, len(samples) - warm_up):]
    assert tail[-1]["rss_kib"] - tail[0]["rss_kib"] < 1024, "memory still grows at the end"
