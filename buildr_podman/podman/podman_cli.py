"""The `podman` command line, for housekeeping and diagnosis only (tasks go through the API).

The command line needs no API service, works while a run's service is busy, and gives the
same answers and error messages a user would see typing the command.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

__all__ = ["PodmanCliError", "podman", "podman_json"]

TIMEOUT = 60.0


class PodmanCliError(Exception):
    """`podman ...` could not be run, or exited non-zero; the message is its last error line."""


def podman(*args: str, timeout: float = TIMEOUT) -> str:
    """Runs `podman ARGS` and returns its stdout."""
    binary = shutil.which("podman")
    if binary is None:
        raise PodmanCliError("podman is not on PATH")
    try:
        result = subprocess.run([binary, *args], capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PodmanCliError(f"podman {args[0]} failed: {exc}") from exc
    if result.returncode != 0:
        raise PodmanCliError(last_error_line(result.stderr or result.stdout)
                             or f"podman {' '.join(args)} exited with status {result.returncode}")
    return result.stdout


def podman_json(*args: str, timeout: float = TIMEOUT) -> Any:
    """Runs `podman ARGS --format json` and parses what it printed."""
    output = podman(*args, "--format", "json", timeout=timeout)
    try:
        return json.loads(output or "null")
    except json.JSONDecodeError as exc:
        raise PodmanCliError(f"podman {args[0]} printed something that is not JSON: "
                             f"{output[:80]!r}") from exc


def last_error_line(text: str) -> str:
    """The most telling line of Podman's stderr: its last `Error:` line, else the last one."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:") or "level=error" in line]
    return (errors or lines or [""])[-1]
