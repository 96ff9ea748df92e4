"""Remote execution end to end on a real cluster (reapi_cluster.py: PostgreSQL, BuildGrid with
Execution and Bots, two `buildr-podman worker`s in rootless Podman): the multi-step example
run remotely lands what a local run lands, byte for byte, write_back included, and twice more
from the cache; a failing task fails as it does here; a task with a bind_mount runs here, said
once; a worker killed mid-task costs time, not the run.

Every repository carries a unique file, so no entry of another test (or an earlier session)
in the cluster's ActionCache matches. Each clone has its own empty local cache (as another
machine has), so that a run here and a run there of the same task are both real runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reapi_cluster import ReapiCluster
from test_faults import LABEL, Running, buildr, need_image
from test_remote_cache import empty_local_cache
from test_task_cache import logs, output

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

BUSYBOX = "localhost/buildr-busybox:latest"
GCC = "localhost/buildr-gcc:bookworm"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "multistep"
LEASE_LINE = re.compile(r"^[0-9a-f]{12} \S+ .* in [0-9.]+ s", re.M)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ReapiCluster]:
    need_image(BUSYBOX)
    with ReapiCluster(workers=2) as running:
        yield running


def run(root: Path, *args: str, env: dict[str, str],
        ) -> tuple[int, dict[str, dict[str, Any]], list[dict[str, Any]], str]:
    """A run with -v and JSON events: its exit code, task_finished by task, every event, and
    its stderr."""
    result = buildr(root, "-v", "run", "--output", "json", *args,
                    env={"BUILDR_CACHE": "on", **env})
    events = [json.loads(line) for line in result.stdout.splitlines()]
    finished = {e["task"]: e for e in events if e["event"] == "task_finished"}
    return result.returncode, finished, events, result.stderr


def landed(directory: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[str, int, int]]:
    """Every path under directory: its content's digest (or link target), mode and owner.
    Not the mtime: a file made on a worker a second later is the same file."""
    found = {}
    for path in sorted(directory.rglob("*")):
        rel = str(path.relative_to(directory))
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        st = path.lstat()
        if path.is_symlink():
            what = "-> " + os.readlink(path)
        elif path.is_dir():
            what = "dir"
        else:
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        found[rel] = (what, st.st_mode, st.st_uid)
    return found


def local_pods(events: list[dict[str, Any]], *tasks: str) -> list[str]:
    """What the run's log says of pods it started here."""
    return [m for task in tasks for m in logs(events, task) if "pod " in m]


def warnings(events: list[dict[str, Any]]) -> list[str]:
    return [e["message"] for e in events if e["event"] == "warning"]


def leases(cluster: ReapiCluster) -> int:
    """The leases the workers have run so far (each worker says one line per lease:
    `HASH TASK SUMMARY in S s`)."""
    return sum(len(LEASE_LINE.findall(cluster.worker_log(name))) for name in cluster.workers)


def multistep(root: Path, unique: str) -> Path:
    """examples/multistep, with configure's build id fixed (it is new on every run by design,
    and a run here and one there must make the same bytes)."""
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("out"))
    configure = root / "configure.sh"
    configure.write_text(configure.read_text().replace(
        "id=$(cat /proc/sys/kernel/random/uuid)", f"id={unique}"))
    return root


def test_the_multistep_example_runs_remotely_as_it_runs_here(cluster: ReapiCluster,
                                                            tmp_path: Path) -> None:
    need_image(GCC)
    unique = str(uuid.uuid4())
    here = multistep(tmp_path / "here", unique)
    there = multistep(tmp_path / "there", unique)
    code, ran_here, _, stderr = run(here, "-j", "2",
                                    env=empty_local_cache(tmp_path / "here-cache"))
    assert code == 0, stderr
    there_env = empty_local_cache(tmp_path / "there-cache")
    before = leases(cluster)
    for attempt in range(3):
        code, ran, events, stderr = run(there, "-j", "2", "--remote", cluster.url,
                                        env=there_env)
        assert code == 0, (attempt, stderr, events[-5:])
        assert not warnings(events), attempt
        assert not local_pods(events, "configure", "build", "test"), attempt
        for task in ("configure", "build", "test"):
            assert landed(there / ".buildr" / "out" / task) \
                == landed(here / ".buildr" / "out" / task), (attempt, task)
            assert ran[task]["status"] == "ok"
            assert ran[task]["cached"] == (attempt > 0), (attempt, task)
            if attempt == 0:
                assert any(m.startswith("ran on the remote execution server")
                           for m in logs(events, task)), logs(events, task)
        assert output(events, "test")[-1] == f"Hello from a configured build (build {unique})"
        assert leases(cluster) == before + 3, "the later runs are hits here, sent nowhere"
    assert not ran_here["test"]["cached"]


WRITE_BACK = '''
task "script" "tidy" {{
  container {{ image = "{image}" }}
  write_back = true
  script = <<-EOT
    echo "tidying {unique}"
    mkdir -p gen/deep
    cat src/in.txt src/in.txt > gen/deep/twice.txt
    chmod 750 gen/deep/twice.txt
    ln -sf deep/twice.txt gen/link
    echo changed >> src/in.txt
    rm src/doomed.txt
  EOT
}}
'''


def write_back_repo(root: Path, unique: str) -> Path:
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(WRITE_BACK.format(image=BUSYBOX, unique=unique))
    (root / "src").mkdir()
    (root / "src" / "in.txt").write_text(f"unique {unique}\n")
    (root / "src" / "doomed.txt").write_text("to be deleted\n")
    return root


def test_write_back_of_a_remote_run_changes_the_repository_as_a_local_run(
        cluster: ReapiCluster, tmp_path: Path) -> None:
    unique = str(uuid.uuid4())
    here = write_back_repo(tmp_path / "here", unique)
    there = write_back_repo(tmp_path / "there", unique)
    code, _, _, stderr = run(here, "tidy", env=empty_local_cache(tmp_path / "here-cache"))
    assert code == 0, stderr
    code, ran, events, stderr = run(there, "tidy", "--remote", cluster.url,
                                    env=empty_local_cache(tmp_path / "there-cache"))
    assert code == 0, stderr
    assert not local_pods(events, "tidy")
    assert not ran["tidy"]["cached"]
    assert output(events, "tidy") == [f"tidying {unique}"]
    assert not (there / "src" / "doomed.txt").exists()
    assert (there / "src" / "in.txt").read_text() == f"unique {unique}\nchanged\n"
    assert landed(there, skip=(".buildr",)) == landed(here, skip=(".buildr",))


FAILING = '''
task "script" "broken" {{
  container {{ image = "{image}" }}
  script = "echo 'about to fail {unique}'; echo 'it broke' >&2; mkdir -p gen; echo half > gen/partial; exit 3"
}}

task "script" "after" {{
  container {{ image = "{image}" }}
  depends_on = ["broken"]
  script = "echo never"
}}
'''


def test_a_task_that_fails_remotely_fails_as_it_does_here(cluster: ReapiCluster,
                                                          tmp_path: Path) -> None:
    unique = str(uuid.uuid4())
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(FAILING.format(image=BUSYBOX, unique=unique))
    env = empty_local_cache(tmp_path / "cache")
    for attempt in range(2):  # a failure is not cached: it runs again
        before = leases(cluster)
        code, ran, events, stderr = run(root, "after", "--remote", cluster.url, env=env)
        assert code == 1, stderr
        assert ran["broken"]["status"] == "failed" and ran["broken"]["exit_code"] == 3
        assert not ran["broken"]["cached"], attempt
        assert output(events, "broken") == [f"about to fail {unique}"]
        assert output(events, "broken", "stderr") == ["it broke"]
        skipped = [e for e in events if e["event"] == "task_skipped"]
        assert [e["task"] for e in skipped] == ["after"]
        failed = root / ".buildr" / "out" / ".failed" / "broken" / "gen" / "partial"
        assert failed.read_text() == "half\n"
        assert not (root / ".buildr" / "out" / "broken").exists()
        assert leases(cluster) == before + 1, attempt


BIND_MOUNT = '''
task "script" "mounted" {{
  container {{
    image = "{image}"
    bind_mount {{
      source    = "data"
      target    = "/data"
      read_only = true
    }}
  }}
  script = "cat /data/note.txt > seen.txt; echo 'read {unique}'"
}}

task "script" "plain" {{
  container {{ image = "{image}" }}
  script = "echo 'plain {unique}' > plain.txt"
}}
'''


def test_a_task_with_a_bind_mount_runs_here_said_once(cluster: ReapiCluster,
                                                        tmp_path: Path) -> None:
    unique = str(uuid.uuid4())
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(BIND_MOUNT.format(image=BUSYBOX, unique=unique))
    (root / "data").mkdir()
    (root / "data" / "note.txt").write_text(f"note {unique}\n")
    before = leases(cluster)
    code, ran, events, stderr = run(root, "mounted", "plain", "-j", "2", "--remote",
                                    cluster.url, env=empty_local_cache(tmp_path / "cache"))
    assert code == 0, stderr
    assert warnings(events) == [f"runs here, not on {cluster.url}: its bind_mount of "
                                f"{root.resolve() / 'data'} is a path on this machine"]
    assert [e["task"] for e in events if e["event"] == "warning"] == ["mounted"]
    assert local_pods(events, "mounted") and not local_pods(events, "plain")
    assert (root / ".buildr" / "out" / "mounted" / "seen.txt").read_text() == f"note {unique}\n"
    assert (root / ".buildr" / "out" / "plain" / "plain.txt").read_text() == f"plain {unique}\n"
    assert leases(cluster) == before + 1  # only "plain" went there
    assert ran["mounted"]["status"] == ran["plain"]["status"] == "ok"


SLOW = '''
task "script" "slow" {{
  container {{ image = "{image}" }}
  script = "echo 'started {unique}'; sleep 8; echo 'done {unique}' > done.txt"
}}
'''


def worker_pods(pid: int) -> list[str]:
    listing = subprocess.run(["podman", "pod", "ps", "-q", "--filter", f"label={LABEL}={pid}"],
                             capture_output=True, text=True, check=True)
    return listing.stdout.split()


def test_a_worker_killed_mid_task_costs_time_not_the_run(cluster: ReapiCluster,
                                                         tmp_path: Path) -> None:
    unique = str(uuid.uuid4())
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(SLOW.format(image=BUSYBOX, unique=unique))
    env = {**empty_local_cache(tmp_path / "cache"), "BUILDR_CACHE": "on"}
    running = Running(root, "-v", "run", "slow", "--remote", cluster.url, env=env)
    busy: list[str] = []

    def a_worker_runs_it() -> bool:
        busy[:] = [name for name, worker in cluster.workers.items()
                   if worker_pods(worker.process.pid)]
        return bool(busy)

    running.wait_for(a_worker_runs_it, "a worker's pod", timeout=120)
    victim = busy[0]
    survivor = next(name for name in cluster.workers if name != victim)
    cluster.kill_worker(victim)
    try:
        result = running.finish(timeout=240)
        assert result.returncode == 0, result.stderr
        assert f"started {unique}" in result.stdout
        done = root / ".buildr" / "out" / "slow" / "done.txt"
        assert done.read_text() == f"done {unique}\n"
        # The survivor ran it whole (the sleep included) after the victim's lease expired.
        ran = [float(s) for s in re.findall(r"^[0-9a-f]{12} \S+ ok in ([0-9.]+) s$",
                                             cluster.worker_log(survivor), re.M)]
        assert any(seconds >= 8 for seconds in ran), cluster.worker_log(survivor)
    finally:
        cluster.start_worker(victim)  # the same bot id: the next test has two workers again


TWO = '''
task "script" "one" {{
  container {{ image = "{image}" }}
  script = "echo 'one {unique}'"
}}

task "script" "two" {{
  container {{ image = "{image}" }}
  script = "echo 'two {unique}'"
}}
'''


def test_a_server_that_is_down_fails_each_task_in_one_line(tmp_path: Path) -> None:
    need_image(BUSYBOX)
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(TWO.format(image=BUSYBOX,
                                                           unique=uuid.uuid4()))
    url = f"unix:{tmp_path}/nobody.sock"
    code, ran, events, stderr = run(root, "-k", "-j", "1", "one", "two", "--remote", url,
                                    env=empty_local_cache(tmp_path / "cache"))
    assert code == 1
    for task in ("one", "two"):
        assert ran[task]["status"] == "failed"
        assert ran[task]["error"].startswith(f"remote execution on {url} failed: it cannot be "
                                             "reached ("), ran[task]
    assert not local_pods(events, "one", "two"), "nothing runs here instead"
    assert "Traceback" not in stderr


STUCK = '''
task "script" "stuck" {{
  container {{ image = "{image}" }}
  timeout = "2s"
  script = "echo 'stuck {unique}'; sleep 60"
}}
'''


def test_a_remote_task_past_its_timeout_times_out_as_here(cluster: ReapiCluster,
                                                          tmp_path: Path) -> None:
    unique = str(uuid.uuid4())
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(STUCK.format(image=BUSYBOX, unique=unique))
    code, ran, events, stderr = run(root, "stuck", "--remote", cluster.url,
                                    env=empty_local_cache(tmp_path / "cache"))
    assert code == 1, stderr
    assert ran["stuck"]["status"] == "timed-out", ran["stuck"]
    assert ran["stuck"]["duration_seconds"] < 30
    assert output(events, "stuck") == [f"stuck {unique}"]
    assert not (root / ".buildr" / "out" / "stuck").exists()


def test_ctrl_c_stops_a_remote_run_at_once_and_leaves_nothing(cluster: ReapiCluster,
                                                              tmp_path: Path) -> None:
    unique = str(uuid.uuid4())
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(SLOW.format(image=BUSYBOX, unique=unique))
    env = {**empty_local_cache(tmp_path / "cache"), "BUILDR_CACHE": "on"}
    running = Running(root, "-v", "run", "slow", "--remote", cluster.url, env=env)
    running.wait_for(lambda: any(worker_pods(w.process.pid) for w in cluster.workers.values()),
                     "a worker's pod", timeout=120)
    os.kill(running.pid, signal.SIGINT)
    started = time.monotonic()
    result = running.finish(timeout=60)
    assert result.returncode == 130, result.stderr
    assert time.monotonic() - started < 10, "the run waited for the remote task"
    assert "Traceback" not in result.stderr
    assert not (root / ".buildr" / "out" / "slow").exists()
    # The worker's pod goes too (cancelled, or at the task's end at the latest).
    deadline = time.monotonic() + 60
    while any(worker_pods(w.process.pid) for w in cluster.workers.values()):
        assert time.monotonic() < deadline, "a worker's pod stayed"
        time.sleep(0.5)
