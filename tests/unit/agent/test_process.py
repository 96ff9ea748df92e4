"""The task process: what it leaves running in the background cannot keep the task going."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from buildr_podman.agent import limits, process
from buildr_podman.agent.process import DRAIN_SECONDS, TaskProcess

LIMIT_EXEC_SOURCE = Path(limits.__file__).with_name("limit_exec.c")

ENV = {"PATH": "/usr/bin:/bin"}


def run(script: str, timeout: float = 0.0) -> tuple[bytes, int, bool, float]:
    started = time.monotonic()
    process = TaskProcess(["/bin/sh", "-c", script], ENV, "/", timeout=timeout)
    output = b"".join(chunk.data for chunk in process.output())
    code = process.wait()
    return output, code, process.timed_out, time.monotonic() - started


def test_a_background_job_holding_the_output_is_stopped_after_a_drain() -> None:
    output, code, timed_out, took = run("sleep 30 & echo done")
    assert (output, code, timed_out) == (b"done\n", 0, False)
    assert took < 3 * DRAIN_SECONDS + 1


def test_what_a_background_job_says_soon_after_still_arrives() -> None:
    output, code, _, _ = run("(sleep 0.1; echo late) & echo early")
    assert (output, code) == (b"early\nlate\n", 0)


def test_a_timeout_ends_a_task_whose_daemon_escaped_its_process_group() -> None:
    """`setsid` leaves the group a timeout kills; outside a container (no PID 1 to kill
    everything) the output is abandoned instead of waited for."""
    output, code, timed_out, took = run(
        "setsid sh -c 'trap \"\" TERM; sleep 5' & trap '' TERM; echo up; sleep 30", timeout=1)
    assert output == b"up\n" and timed_out and code == 137
    assert took < 5


@pytest.fixture
def limit_exec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The bundle's buildr-limit-exec, compiled as agent_build.py compiles it."""
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler: the bundle goes without buildr-limit-exec")
    helper = tmp_path / "buildr-limit-exec"
    subprocess.run([compiler, "-O2", "-o", str(helper), str(LIMIT_EXEC_SOURCE)], check=True)
    monkeypatch.setattr(limits, "LIMIT_EXEC", str(helper))
    return str(helper)


def test_the_pids_limit_is_set_by_the_helper_and_the_agent_is_not_forked(
        limit_exec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A preexec_fn makes CPython fork the agent instead of vfork'ing it (~7 ms a task);
    # buildr-limit-exec sets the limit, soft and hard, then becomes the task, argv intact.
    started: list[dict[str, object]] = []
    real_popen = subprocess.Popen

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        started.append(kwargs)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(process.subprocess, "Popen", popen)
    script = "grep 'Max processes' /proc/self/limits; printf '<%s>' \"$0\" \"$@\""
    task = TaskProcess(["sh", "-c", script, "zero", "a b", "$HOME", ""], ENV, "/",
                       pids_limit=54321)
    output = b"".join(chunk.data for chunk in task.output()).decode()
    assert task.wait() == 0
    assert started[0]["preexec_fn"] is None
    assert output.split()[2:4] == ["54321", "54321"]  # soft and hard
    assert output.endswith("<zero><a b><$HOME><>")


@pytest.mark.parametrize("why", ["missing", "no #!", "user"])
def test_the_agent_sets_the_limit_itself_where_the_helper_cannot(
        limit_exec: str, tmp_path: Path, why: str) -> None:
    # What cannot start must fail to start as it always did; a uid change forks anyway.
    script = tmp_path / "script"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    argv = {"missing": ["no-such-program"], "no #!": [str(script)], "user": ["/bin/true"]}[why]
    identity = (os.getuid(), os.getgid()) if why == "user" else None
    started, limit_in_child = limits.pids_limited(argv, ENV, "/", 64, identity)
    assert started == argv and limit_in_child is not None
    assert limits.pids_limited(["true"], ENV, "/", 64, None) == (
        [limit_exec, "64", shutil.which("true", path=ENV["PATH"]), "true"], None)
    assert limits.pids_limited(["true"], ENV, "/", 0, None) == (["true"], None)
