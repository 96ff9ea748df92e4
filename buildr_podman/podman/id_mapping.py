"""Files of the repository whose owner or group the rootless user namespace cannot map.

Rootless Podman maps the user's own uid and gid and their subordinate ranges (/etc/subuid,
/etc/subgid) into the container; any other owner (root, another user) shows as `nobody`. The
copy-on-write overlay of inputs = "mount" cannot copy such a file up: the task's first write to
it fails with EOVERFLOW, which a shell prints as "Value too large for defined data type". These
are found by `doctor`, and named when a task with mounted inputs fails.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from buildr_podman.archive.owned import walk_tree

__all__ = ["Unmapped", "explain_unmapped", "mapped_ids", "unmapped_files"]

MAX_NAMED = 5
SKIPPED = (".buildr", ".git")  # the tool's own outputs, and a repository's history


@dataclass(frozen=True)
class Unmapped:
    rel: str
    uid: int
    gid: int


def mapped_ids(path: str, own: int, user: str) -> list[range]:
    """The ids the user namespace maps: one's own, and the ranges /etc/sub{u,g}id gives."""
    ranges = [range(own, own + 1)]
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ranges
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(os.getuid())) \
                and parts[1].isdigit() and parts[2].isdigit():
            ranges.append(range(int(parts[1]), int(parts[1]) + int(parts[2])))
    return ranges


def unmapped_files(root: Path, limit: int = MAX_NAMED,
                   mapped: tuple[list[range], list[range]] | None = None
                   ) -> tuple[list[Unmapped], int]:
    """Up to `limit` paths under root (not .buildr/ or .git/) whose owner or group is not
    mapped (by `mapped`: uids and gids; the user's by default), and how many in all."""
    uids, gids = mapped or _users_mapping()
    found: list[Unmapped] = []
    total = 0
    for directory, dirnames, filenames in walk_tree(root):
        if directory == str(root):
            dirnames[:] = [name for name in dirnames if name not in SKIPPED]
        for name in (*dirnames, *filenames):
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not (any(st.st_uid in ids for ids in uids)
                    and any(st.st_gid in ids for ids in gids)):
                total += 1
                if len(found) < limit:
                    found.append(Unmapped(os.path.relpath(path, root), st.st_uid, st.st_gid))
    return found, total


def _users_mapping() -> tuple[list[range], list[range]]:
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return (mapped_ids("/etc/subuid", os.getuid(), user),
            mapped_ids("/etc/subgid", os.getgid(), user))


def explain_unmapped(found: list[Unmapped], total: int) -> str:
    """One line: which files, why a task fails on them, and what to do."""
    named = ", ".join(f"{item.rel} (uid {item.uid}, gid {item.gid})" for item in found)
    more = f" and {total - len(found)} more" if total > len(found) else ""
    return (f"{total} file(s) of the repository have an owner or group that rootless Podman "
            f"cannot map into the container: {named}{more}; a task that writes one fails "
            '("Value too large for defined data type"): give them to yourself (sudo chown -R '
            f'{os.getuid()}:{os.getgid()} PATH), or use container {{ inputs = "copy" }}')
