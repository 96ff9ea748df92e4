"""Gives the workspace and a HOME to a task that runs as another user (`user = "UID:GID"`).

The inputs are written by the agent (root in the container: the invoking user on the host),
so a task of another uid could read them but not change them, nor create a file anywhere in
them: most builds and test suites that refuse to run as root then fail with "Permission
denied". Before such a task starts, every path of the workspace (the copy-on-write layer, or
the copied volume; the baseline stays read-only and root's) is handed to that uid and gid, and
the task gets a fresh HOME of its own. Ownership is no part of what the tracker compares (mode,
size, mtime), so nothing comes back for it, and returned files are written on the host by the
host: they still belong to the invoking user.
"""

from __future__ import annotations

import errno
import os
import shutil

from buildr_podman.agent import long_paths

__all__ = ["HOME", "give_to_user"]

#: the HOME of a task that runs as another user, made anew for each task
HOME = "/.buildr/home"


def give_to_user(workspace: str, uid: int, gid: int) -> str:
    """Hands the workspace tree to uid:gid and makes a fresh, empty HOME of theirs; returns
    HOME. Raises OSError (EPERM when the container lacks the CHOWN capability). A stack, not
    os.walk (which recurses per level in Python 3.11: a deep tree raised RecursionError), and
    through long_paths (a path past PATH_MAX is handed over too)."""
    os.lchown(workspace, uid, gid)
    stack = [workspace]
    while stack:
        directory = stack.pop()
        try:
            entries = long_paths.scan(directory)
        except OSError:
            continue  # gone, or closed to the agent too: as os.walk, say nothing
        for entry in entries:
            path = f"{directory}/{entry.name}"  # not entry.path: see long_paths.scan
            is_dir = entry.is_dir(follow_symlinks=False)
            try:
                long_paths.retry_long(os.lchown, path, uid, gid)
            except OSError as exc:
                if exc.errno != errno.EROFS or not is_dir:
                    raise
                continue  # a read-only mount: the hidden out dir
            if is_dir:
                stack.append(path)
    shutil.rmtree(HOME, ignore_errors=True)
    os.makedirs(HOME, 0o700)
    os.chown(HOME, uid, gid)
    return HOME
