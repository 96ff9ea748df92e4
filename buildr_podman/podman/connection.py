"""A connection to the Podman API: the user's socket if one answers, else a private service.

Podman is daemonless: when no API socket answers, a `podman system service` is started on a
socket in a private directory for the length of the run and stopped afterwards, so that nothing
keeps running once buildr-podman exits.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from buildr_podman.errors import BackendError

if TYPE_CHECKING:
    import podman

__all__ = ["podman_client", "runtime_dir", "user_socket"]

SERVICE_START_TIMEOUT = 20.0
API_TIMEOUT = 120  # seconds for one API call; pulls and removals can take a while


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR, where rootless Podman and our sockets live (never world-readable)."""
    value = os.environ.get("XDG_RUNTIME_DIR")
    if not value or not os.path.isdir(value):
        raise BackendError("XDG_RUNTIME_DIR is not set to an existing directory: set it to a "
                           f"0700 directory you own, e.g. export XDG_RUNTIME_DIR=/run/user/{os.getuid()}")
    return Path(value)


def user_socket() -> Path:
    """Where rootless Podman's own API socket is when the user runs one (systemd socket unit)."""
    host = os.environ.get("CONTAINER_HOST", "")
    if host.startswith("unix://"):
        return Path(host[len("unix://"):])
    return runtime_dir() / "podman" / "podman.sock"


@contextmanager
def podman_client() -> Iterator[podman.PodmanClient]:
    """Yields a client; a service started here is stopped on exit, whatever happened."""
    existing = user_socket()
    if _answers(existing):
        yield _client(existing)
        return
    with _private_service() as sock:
        yield _client(sock)


def _client(sock: Path) -> podman.PodmanClient:
    import podman  # deferred: importing podman-py costs ~0.15 s

    return podman.PodmanClient(base_url=f"unix://{sock}", timeout=API_TIMEOUT)


@contextmanager
def _private_service() -> Iterator[Path]:
    podman_bin = shutil.which("podman")
    if podman_bin is None:
        raise BackendError("podman is not installed: install it (e.g. apt-get install podman), "
                           "then run buildr-podman doctor")
    directory = Path(tempfile.mkdtemp(prefix="buildr-podman-api-", dir=runtime_dir()))
    sock = directory / "podman.sock"
    # --time=0: no idle timeout (podman#5840: the default 5 s stops it under our feet).
    service = subprocess.Popen([podman_bin, "system", "service", "--time=0", f"unix://{sock}"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_until_answers(sock, service)
        yield sock
    finally:
        _stop(service)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_until_answers(sock: Path, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVICE_START_TIMEOUT
    while not _answers(sock):
        if service.poll() is not None:
            detail = (service.stderr.read() if service.stderr else b"").decode(errors="replace")
            last = detail.strip().splitlines()[-1] if detail.strip() else "no message"
            raise BackendError(f"podman system service exited at start ({last}): "
                               "run buildr-podman doctor")
        if time.monotonic() > deadline:
            raise BackendError(f"podman system service did not answer within "
                               f"{SERVICE_START_TIMEOUT:.0f} s: run buildr-podman doctor")
        time.sleep(0.01)


def _answers(sock: Path) -> bool:
    """Whether something accepts connections on this unix socket (cheaper than an API ping)."""
    if not sock.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(sock))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _stop(service: subprocess.Popen[bytes]) -> None:
    service.terminate()
    try:
        service.wait(timeout=10)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()
    if service.stderr:
        service.stderr.close()
