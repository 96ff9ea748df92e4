"""Shared fixtures: the leak check every integration test ends with."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

LABEL = "io.buildr-podman"


def podman_available() -> bool:
    return shutil.which("podman") is not None and bool(os.environ.get("XDG_RUNTIME_DIR"))


def leftovers() -> list[str]:
    """Pods, containers, API services and sockets of the project that still exist."""
    found = []
    for kind in ("pod", "container"):
        listing = subprocess.run(
            # `podman pod ps` lists every pod; it has no -a (an error in Podman 4.3).
            ["podman", "pod", "ps", "--filter", f"label={LABEL}", "--format", "{{.Name}}"]
            if kind == "pod" else
            ["podman", "ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}"],
            capture_output=True, text=True, check=False)
        found += [f"{kind} {name}" for name in listing.stdout.split()]
    services = subprocess.run(["pgrep", "-u", str(os.getuid()), "-f", "podman system service"],
                              capture_output=True, text=True, check=False)
    found += [f"api service pid {pid}" for pid in services.stdout.split()]
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    found += [f"socket dir {p}" for p in runtime.glob("buildr-*")]
    return found


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if it leaves any pod, container, API service or socket behind."""
    if not podman_available():
        pytest.skip("needs rootless podman and XDG_RUNTIME_DIR (run scripts/test)")
    before = set(leftovers())
    yield
    left = set(leftovers()) - before
    assert not left, f"leaked: {sorted(left)}"
