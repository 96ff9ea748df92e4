"""Whether a process that left its pid behind (in a pod label, a directory name) still runs."""

from __future__ import annotations

import os

__all__ = ["own_process_running"]


def own_process_running(pid: int) -> bool:
    """Whether `pid` is a live process of this user. Another user's process cannot be the one
    that left the pid (the pid was reused since), so it counts as gone."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
