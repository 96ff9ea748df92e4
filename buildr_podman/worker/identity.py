"""Who a worker is: its name on this machine, its stable bot id, and its own directory.

The bot id is `buildr-podman@HOST/NAME`. Kept stable across restarts, it lets the scheduler
give a restarted worker's leases out again at once (a new session under the same id closes
the old one). NAME is --name, else the first of 1, 2, 3, ... that no running worker of this
user holds: a worker holds its name with a lock on `<cache>/worker/NAME.lock` for as long as
it runs, so two workers never share an id, and the one restarted first takes the first free
name again.

`<cache>/worker/NAME/` holds the worker's store (blobs of inputs and results, kept between
leases: cache/store.py, bounded) and `leases/`, where each lease's inputs are materialised
(removed after the lease, and anything left by a killed worker on the next start).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from buildr_podman.archive.owned import remove_tree
from buildr_podman.cache_root import cache_root
from buildr_podman.errors import UsageError

__all__ = ["WorkerIdentity", "claim"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_AUTOMATIC = 64


@dataclass
class WorkerIdentity:
    name: str
    bot_id: str
    directory: Path
    lock_fd: int

    @property
    def store_dir(self) -> Path:
        return self.directory / "store"

    @property
    def leases_dir(self) -> Path:
        return self.directory / "leases"

    def release(self) -> None:
        os.close(self.lock_fd)


def claim(name: str | None, root: Path | None = None) -> WorkerIdentity:
    """Takes `name` (UsageError if a running worker holds it, or it is no name), or the first
    free automatic one; makes the worker's directories, its leases directory emptied."""
    base = (root or cache_root()) / "worker"
    base.mkdir(parents=True, exist_ok=True)
    if name is not None:
        if not NAME.match(name):
            raise UsageError(f"--name {name!r}: use letters, digits, '.', '_' and '-' "
                             "(up to 64), starting with a letter or digit")
        fd = _lock(base / f"{name}.lock")
        if fd is None:
            raise UsageError(f"another worker named {name!r} runs on this machine for this "
                             "user: give this one another --name")
        return _identity(base, name, fd)
    for number in range(1, MAX_AUTOMATIC + 1):
        fd = _lock(base / f"{number}.lock")
        if fd is not None:
            return _identity(base, str(number), fd)
    raise UsageError(f"{MAX_AUTOMATIC} workers already run here for this user: stop one, or "
                     "give this one a --name")


def _lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _identity(base: Path, name: str, fd: int) -> WorkerIdentity:
    identity = WorkerIdentity(name, f"buildr-podman@{socket.gethostname()}/{name}",
                              base / name, fd)
    identity.directory.mkdir(mode=0o700, exist_ok=True)
    remove_tree(identity.leases_dir)  # a killed worker's, materialised for leases long gone
    identity.leases_dir.mkdir(mode=0o700)
    return identity
