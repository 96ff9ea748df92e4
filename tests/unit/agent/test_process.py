"""The task process: what it leaves running in the background cannot keep the task going."""

from __future__ import annotations

import time

from buildr_podman.agent.process import DRAIN_SECONDS, TaskProcess

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
