"""Faults in real rootless Podman: each ends with the right exit code and one clear line, leaves
no pod, container, socket or API service, keeps earlier outputs, and a later run just works.

Every repository here has two tasks: `keeper`, whose output must survive whatever happens to
the other, and `victim`, which misbehaves as FAULT_MODE (read through env()) says, and does
nothing special without it, so that the same task can show the later run working.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from buildr_podman.cli import ExitCode

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

BUSYBOX = "localhost/buildr-busybox:latest"
LABEL = "io.buildr-podman"
MANY_FILES = 30_000  # enough that the host is still extracting when the agent is killed
#: what the out dir holds beside the modules' outputs: logs, reports, failed outputs
OUR_DIRECTORIES = (".logs", ".reports", ".failed")

VICTIM_SCRIPT = f"""\
echo "made in $MODE mode" > result.txt
case "$MODE" in
  sleep) echo up; sleep 60 ;;
  nap) echo up; sleep 4 ;;
  many) mkdir many; i=0; while [ $i -lt {MANY_FILES} ]; do echo $i > many/f$i; i=$((i+1)); done
        echo made ;;
  big) head -c 8000000 /dev/urandom > big.bin ;;
  daemon) setsid sh -c 'trap "" TERM; sleep 300' & trap '' TERM; echo up; sleep 300 ;;
esac"""


def hcl_task(name: str, script: str, *, image: str = BUSYBOX, extra: str = "") -> str:
    return (f'task "script" "{name}" {{\n  container {{ image = "{image}" }}\n{extra}'
            f"  script = <<-EOT\n{script}\n  EOT\n}}\n")


def make_repo(tmp_path: Path, *tasks: str, buildr_block: str = "") -> Path:
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "input.txt").write_text("input\n")
    keeper = hcl_task("keeper", "echo kept > keep.txt")
    victim = hcl_task("victim", VICTIM_SCRIPT,
                      extra='  environment = { MODE = env("FAULT_MODE", "calm") }\n')
    (root / ".buildr" / "tasks.hcl").write_text("\n".join([buildr_block, keeper, victim,
                                                           *tasks]))
    return root


def tree(directory: Path) -> dict[str, str]:
    """The text of every file under `directory`, by relative path: one comparison per tree."""
    return {str(p.relative_to(directory)): p.read_text()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def need_image(image: str = BUSYBOX) -> None:
    if subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0:
        pytest.skip(f"image {image} is missing: run scripts/setup.sh")


def buildr(root: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildr_podman", *args], cwd=root,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False)


class Running:
    """A run in the background; its output lines are collected as they come."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "buildr_podman", *args, "--output", "plain"], cwd=root,
            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.pid = self.process.pid
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._collect, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.process.stdout, self.stdout),
                                             (self.process.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(pipe: object, lines: list[str]) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            lines.append(line)  # noqa: PERF402 - appended live, while the test looks

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.finish(timeout=30)
                pytest.fail(f"never saw {what}; stderr: {''.join(self.stderr)[-2000:]}")
            time.sleep(0.02)

    def wait_for_line(self, text: str, timeout: float = 120) -> None:
        self.wait_for(lambda: any(text in line for line in self.stdout), repr(text), timeout)

    def finish(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return subprocess.CompletedProcess(self.process.args, code, "".join(self.stdout),
                                           "".join(self.stderr))


def containers_of(pid: int) -> list[str]:
    listing = subprocess.run(["podman", "ps", "-a", "-q", "--filter", f"label={LABEL}={pid}"],
                             capture_output=True, text=True, check=True)
    return listing.stdout.split()


def container_pid(container: str) -> int:
    """The host pid of the container's PID 1; 0 while it is created but not yet started."""
    state = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", container],
                           capture_output=True, text=True, check=False)
    return int(state.stdout.strip() or 0) if state.returncode == 0 else 0


def agent_pid(run: Running) -> int:
    """The host pid of the agent (PID 1 of the run's only container). Waits until it has
    started: a pid of 0 given to os.kill would signal the test's own process group."""
    found: list[int] = []

    def started() -> bool:
        containers = containers_of(run.pid)
        found[:] = [pid for pid in map(container_pid, containers[:1]) if pid > 1]
        return bool(found)

    run.wait_for(started, "the task's container running")
    return found[0]


def api_service_of(run: Running) -> int | None:
    """The `podman system service` this run started, if it started one."""
    found = subprocess.run(["pgrep", "-P", str(run.pid), "-f", "podman system service"],
                           capture_output=True, text=True, check=False)
    pids = found.stdout.split()
    return int(pids[0]) if pids else None


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory` with its bytes and mtime."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def outputs(root: Path) -> dict[str, dict[str, tuple[bytes, int]]]:
    out = root / ".buildr" / "out"
    return {name: snapshot(out / name) for name in ("keeper", "victim")}


def prepare(root: Path) -> dict[str, dict[str, tuple[bytes, int]]]:
    """Both tasks ran once, calmly: the outputs a fault must not touch."""
    result = buildr(root, "run", "keeper", "victim", "-j", "2", "--output", "plain")
    assert result.returncode == 0, result.stderr
    return outputs(root)


def error_line(result: subprocess.CompletedProcess[str], task: str) -> str:
    """The one line that says why `task` failed; there is no traceback anywhere."""
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines()
             if line.startswith((f"buildr: {task} ", "buildr-podman: error"))]
    assert lines, result.stderr
    return lines[-1]


def fault(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[
        subprocess.CompletedProcess[str], int]:
    """A whole run that is expected to fail, and the pid its pods were labelled with."""
    run = Running(root, "run", *args, env=env)
    return run.finish(), run.pid


def failed_run_line(run: Running) -> str:
    """Waits for the run, which must exit 1, and gives the line that says why the victim
    failed."""
    result = run.finish()
    assert result.returncode == 1
    return error_line(result, "victim")


def assert_clean_after(root: Path, run_pid: int, before: dict[str, dict[str, tuple[bytes, int]]],
                       unchanged: tuple[str, ...] = ("keeper", "victim")) -> None:
    """Nothing of the failed run remains, earlier outputs are as they were, and the same tasks
    run again at once, without any clean-up."""
    assert containers_of(run_pid) == []
    pods = subprocess.run(["podman", "pod", "ps", "-q", "--filter", f"label={LABEL}={run_pid}"],
                          capture_output=True, text=True, check=True)
    assert pods.stdout.split() == []
    out = root / ".buildr" / "out"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")
                and p.name not in OUR_DIRECTORIES], "staging left behind"
    now = outputs(root)
    assert {name: now[name] for name in unchanged} == {name: before[name] for name in unchanged}
    again = buildr(root, "run", "victim", "keeper", "--output", "plain")
    assert again.returncode == 0, again.stderr
    assert (out / "victim" / "result.txt").read_text() == "made in calm mode\n"


# -- the agent, the container and the API service -----------------------------------------


def test_the_agent_killed_mid_task(tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path)
    before = prepare(root)
    run = Running(root, "run", "victim", env={"FAULT_MODE": "sleep"})
    run.wait_for_line("up")
    os.kill(agent_pid(run), signal.SIGKILL)
    line = failed_run_line(run)
    assert "victim failed" in line and "the agent stopped mid-task" in line
    assert_clean_after(root, run.pid, before)


def test_the_agent_killed_mid_archive(tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path)
    before = prepare(root)
    out = root / ".buildr" / "out"
    run = Running(root, "run", "victim", env={"FAULT_MODE": "many"})
    pid = agent_pid(run)
    run.wait_for(lambda: any(out.glob(".victim.staging-*/many/f1*")), "extraction under way")
    os.kill(pid, signal.SIGKILL)
    line = failed_run_line(run)
    assert "victim failed" in line and "the agent stopped mid-task" in line
    assert_clean_after(root, run.pid, before)


def test_the_container_removed_from_outside(tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path)
    before = prepare(root)
    run = Running(root, "run", "victim", env={"FAULT_MODE": "sleep"})
    run.wait_for_line("up")
    subprocess.run(["podman", "rm", "-f", "-t", "0", *containers_of(run.pid)],
                   capture_output=True, check=True)
    assert "the agent stopped mid-task" in failed_run_line(run)
    assert_clean_after(root, run.pid, before)


def test_the_podman_api_service_dies_mid_run(tmp_path: Path) -> None:
    """Containers outlive the API service (conmon keeps them); the run starts a new service on
    the same socket when it next needs one, says so, and removes its pods as usual."""
    need_image()
    root = make_repo(tmp_path)
    before = prepare(root)
    run = Running(root, "run", "victim", env={"FAULT_MODE": "nap"})
    run.wait_for_line("up")
    service = api_service_of(run)
    if service is None:
        run.finish()
        pytest.skip("the user's own Podman socket answers: the run started no API service")
    command = Path(f"/proc/{service}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    os.killpg(service, signal.SIGKILL)  # its own session: the service and anything it forked
    result = run.finish()
    assert result.returncode == 0, result.stderr
    same_socket = subprocess.run(["pgrep", "-f", command.strip()], capture_output=True,
                                 text=True, check=False)
    assert same_socket.stdout == "", "the service started again was not stopped"
    assert "Traceback" not in result.stderr
    warning = [line for line in result.stderr.splitlines() if "API service" in line]
    assert len(warning) == 1 and f"(pid {service})" in warning[0]
    assert warning[0].endswith("during the run; starting a new one")
    victim = root / ".buildr" / "out" / "victim" / "result.txt"
    assert victim.read_text() == "made in nap mode\n"
    assert_clean_after(root, run.pid, before, unchanged=("keeper",))


# -- the host's own signals, and the task's limits ------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_host_mid_task(tmp_path: Path, signum: int, code: int) -> None:
    need_image()
    root = make_repo(tmp_path)
    before = prepare(root)
    run = Running(root, "run", "victim", env={"FAULT_MODE": "sleep"})
    run.wait_for_line("up")
    started = time.monotonic()
    run.process.send_signal(signum)
    result = run.finish(timeout=60)
    assert time.monotonic() - started < 15
    assert result.returncode == code
    assert "buildr: victim cancelled" in error_line(result, "victim")
    assert_clean_after(root, run.pid, before)


def test_a_timeout_stops_the_task_and_what_it_left_in_the_background(tmp_path: Path) -> None:
    """The task ignores SIGTERM and leaves a `setsid` daemon holding its output open: the
    group kill after the grace ends the task, the agent kills the rest of the container."""
    need_image()
    root = make_repo(tmp_path, hcl_task("slowpoke", VICTIM_SCRIPT,
                                        extra='  timeout = "2s"\n  environment = '
                                              '{ MODE = "daemon" }\n'))
    before = prepare(root)
    started = time.monotonic()
    result, pid = fault(root, "slowpoke")
    assert time.monotonic() - started < 30, "the daemon kept the task running"
    assert result.returncode == 1
    assert "buildr: slowpoke timed out in " in error_line(result, "slowpoke")
    # What it made before the limit still comes back, for inspection, beside the good output.
    slowpoke = root / ".buildr" / "out" / ".failed" / "slowpoke" / "result.txt"
    assert slowpoke.read_text() == "made in daemon mode\n"
    assert_clean_after(root, pid, before)


DISK_FULL_RUN = """
import json, os, subprocess, sys
from pathlib import Path
out = Path("out")
def run(name, mode="calm"):
    done = subprocess.run([sys.executable, "-m", "buildr_podman", "run", name, "--output",
                           "plain"], capture_output=True, text=True,
                          env={**os.environ, "FAULT_MODE": mode})
    return [done.returncode, done.stderr]
def files():
    return {str(p.relative_to(out)): p.read_bytes().hex() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix not in (".log", ".xml")}
first = run("keeper")
before = files()
full = run("victim", "big")
print(json.dumps({"first": first, "full": full, "before": before, "after": files(),
                  "hidden": [p.name for p in out.iterdir() if ".staging-" in p.name]}))
"""


def test_the_disk_under_the_out_dir_fills_up(tmp_path: Path) -> None:
    """A real full file system: a 4 MiB tmpfs on the out dir, mounted in a mount namespace of
    `podman unshare` (an unprivileged user may mount tmpfs there; no root needed). The run
    inside it needs 8 MB for its archive. The tmpfs goes away with the namespace."""
    need_image()
    root = make_repo(tmp_path, buildr_block='buildr {\n  out_dir = "out"\n}\n')
    (root / "out").mkdir()
    (root / "disk_full.py").write_text(DISK_FULL_RUN)
    done = subprocess.run(
        ["podman", "unshare", "sh", "-c",
         'mount -t tmpfs -o size=4m tmpfs out && exec "$0" disk_full.py', sys.executable],
        cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said["first"][0] == 0, said["first"][1]
    code, stderr = said["full"]
    assert code == 1
    assert "Traceback" not in stderr
    line = [x for x in stderr.splitlines() if x.startswith("buildr: victim failed")][-1]
    assert f"no space left under {root / 'out'} (No space left on device)" in line
    assert "free some space there and run again" in line
    assert said["after"] == said["before"] and "keeper/keep.txt" in said["before"]
    assert said["hidden"] == [], "the staging directory was not removed"
    assert not any((root / "out").iterdir()), "the tmpfs held everything"
    later = buildr(root, "run", "victim", "keeper", "--output", "plain")
    assert later.returncode == 0, later.stderr


# -- what the image lacks --------------------------------------------------------------------


def test_the_image_does_not_exist(tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path, hcl_task("ghost", "true", image="localhost/buildr-no-such:1"))
    before = prepare(root)
    result, pid = fault(root, "ghost")
    assert result.returncode == 1
    line = error_line(result, "ghost")
    assert "image 'localhost/buildr-no-such:1' of task 'ghost'" in line
    assert "is not here: build or pull it" in line
    assert_clean_after(root, pid, before)


def test_a_mistyped_image_gets_the_nearest_name(tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path, hcl_task("typo", "true", image="localhost/buildr-busybx:latest"))
    result, _ = fault(root, "typo")
    assert result.returncode == 1
    assert ("is not here (did you mean 'localhost/buildr-busybox:latest'?): build or pull it"
            in error_line(result, "typo"))


def test_the_agent_cannot_start_in_the_container(tmp_path: Path) -> None:
    """A damaged agent bundle (its libpython gone, as after a half-finished copy or a disk
    error) in a cache of its own: refused, as it differs from its digest; and one built that
    way (its digest matching): the agent dies before it listens, and the message carries its
    last words. The real cache is not touched."""
    need_image()
    from buildr_podman.podman.agent_build import bundle_digest, ensure_agent

    bundle = ensure_agent()
    cache = tmp_path / "cache"
    damaged = cache / "buildr-podman" / "agent" / bundle.path.name
    shutil.copytree(bundle.path, damaged, symlinks=True)
    digest = damaged.with_name(damaged.name + ".sha256")
    shutil.copy(bundle.path.with_name(bundle.path.name + ".sha256"), digest)
    for library in (damaged / "_internal").glob("libpython*"):
        library.unlink()
    root = make_repo(tmp_path)
    before = prepare(root)
    refused = buildr(root, "run", "victim", env={"XDG_CACHE_HOME": str(cache)})
    assert refused.returncode == 3  # this machine cannot run tasks until it is removed
    assert f"the cached agent {damaged} was changed after it was built" in refused.stderr
    digest.write_text(bundle_digest(damaged) + "\n")
    result, pid = fault(root, "victim", env={"XDG_CACHE_HOME": str(cache)})
    assert result.returncode == 1
    line = error_line(result, "victim")
    assert "the agent exited before it listened" in line
    assert "buildr-podman clean --all rebuilds it" in line
    assert "libpython" in line, "the agent's own error is part of the message"
    assert_clean_after(root, pid, before)


def test_the_tasks_shell_is_missing(tmp_path: Path) -> None:
    need_image()
    root = make_repo(tmp_path, hcl_task("bashful", "echo hi", extra='  shell = "/bin/bash"\n'))
    before = prepare(root)
    result, pid = fault(root, "bashful")
    assert result.returncode == 1
    line = error_line(result, "bashful")
    assert "the shell '/bin/bash' is not in the image" in line
    assert 'set shell to a program the image has, like "/bin/sh"' in line
    assert_clean_after(root, pid, before)


def test_a_configuration_error_stops_the_api_service_started_before_reading_it(
        tmp_path: Path) -> None:
    """`run --no-cache` starts the Podman API service before it reads the configuration
    (commands/run.py): a run that then cannot start stops it, as every run does (no_leaks)."""
    need_image()
    root = make_repo(tmp_path)
    (root / ".buildr" / "broken.hcl").write_text('task "script" "half" {\n')
    result = buildr(root, "run", "--no-cache", "keeper")
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "broken.hcl" in result.stderr
