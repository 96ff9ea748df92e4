"""Shared fixtures: the leak check every integration test ends with.

A leak is something of the project whose owner is gone: a labelled pod, container or volume
whose host process (the label's value) has exited, a `podman system service` orphaned by its run, or a
socket directory nobody serves. Runs still in progress (another test session, a benchmark on
the same machine) own what they hold and are not counted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildr_podman.podman.connection import socket_accepts

LABEL = "io.buildr-podman"
SETTLE_SECONDS = 3.0  # Podman's own clean-up of a removed container may still be finishing


def podman_available() -> bool:
    return shutil.which("podman") is not None and bool(os.environ.get("XDG_RUNTIME_DIR"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _orphaned_pods_and_containers() -> list[str]:
    found = []
    for kind, argv in (
            # `podman pod ps` lists every pod; it has no -a (an error in Podman 4.3).
            ("pod", ["podman", "pod", "ps", "--filter", f"label={LABEL}",
                     "--format", f'{{{{.Name}}}} {{{{index .Labels "{LABEL}"}}}}']),
            ("container", ["podman", "ps", "-a", "--filter", f"label={LABEL}",
                           "--format", f'{{{{.Names}}}} {{{{index .Labels "{LABEL}"}}}}'])):
        listing = subprocess.run(argv, capture_output=True, text=True, check=False)
        for line in listing.stdout.splitlines():
            name, _, owner = line.partition(" ")
            if not (owner.strip().isdigit() and _alive(int(owner))):
                found.append(f"{kind} {name}")
    return found


def _orphaned_volumes() -> list[str]:
    listing = subprocess.run(["podman", "volume", "ls", "--filter", f"label={LABEL}", "--format",
                              f'{{{{.Name}}}} {{{{index .Labels "{LABEL}"}}}}'],
                             capture_output=True, text=True, check=False)
    found = []
    for line in listing.stdout.splitlines():
        name, _, owner = line.partition(" ")
        if not (owner.strip().isdigit() and _alive(int(owner))):
            found.append(f"volume {name}")
    return found


def _orphaned_services() -> list[str]:
    services = subprocess.run(["pgrep", "-u", str(os.getuid()), "-f", "podman system service"],
                              capture_output=True, text=True, check=False)
    found = []
    for pid in services.stdout.split():
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if parent == 1 or not _alive(parent):
            found.append(f"api service pid {pid}")
    return found


def _unserved_socket_dirs() -> list[str]:
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    found = []
    for directory in runtime.glob("buildr-*"):
        if not any(socket_accepts(sock) for sock in directory.glob("*.sock")):
            found.append(f"socket dir {directory}")
    return found


def leftovers() -> list[str]:
    """Pods, containers, volumes, API services and socket directories of the project nobody
    owns."""
    return (_orphaned_pods_and_containers() + _orphaned_volumes() + _orphaned_services()
            + _unserved_socket_dirs())


@pytest.fixture(autouse=True, scope="session")
def _task_cache_off() -> Iterator[None]:
    """Tests run their tasks: the task cache is off (BUILDR_CACHE=off, inherited by every run
    they start) except where a test turns it on (tests/integration/test_task_cache.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BUILDR_CACHE", "off")
        yield


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if it leaves any pod, container, volume, API service or socket behind."""
    if not podman_available():
        pytest.skip("needs rootless podman and XDG_RUNTIME_DIR (run scripts/test)")
    before = set(leftovers())
    yield
    deadline = time.monotonic() + SETTLE_SECONDS
    while (left := set(leftovers()) - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"leaked: {sorted(left)}"
