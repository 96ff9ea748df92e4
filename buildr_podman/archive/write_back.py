"""Applies a task's changes to the repository itself (`write_back = true`), deletions included.

The archive has already been extracted and checked into a staging directory, so the repository
is touched only after the whole archive proved good. Paths are mapped from the workspace back
to the repository through the task's input mapping; every repository path is reached without
following a symlink, so neither a staged entry nor a reported deletion can leave the repository.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from buildr_podman.archive.beneath import (
    DIRECTORY_FLAGS,
    chmod_directory_at,
    lstat_at,
    open_directory_beneath,
    open_parent_beneath,
    remove_tree_at,
)
from buildr_podman.archive.owned import write_all
from buildr_podman.errors import ArchiveError

__all__ = ["WriteBackStats", "apply_changes", "is_protected", "repository_path", "write_back"]


@dataclass
class WriteBackStats:
    written: int = 0
    deleted: int = 0
    skipped: list[str] = field(default_factory=list)  #: workspace paths with no repo location
    #: repository paths dropped because they lie in .buildr/ or the out dir (or hold them)
    protected: list[str] = field(default_factory=list)


def repository_path(rel: str, mapping: Sequence[tuple[str, str]]) -> str | None:
    """The repository-relative path of a workspace-relative path, or None when it lies
    outside every mapped directory. An empty mapping means the whole repository."""
    for source, target in sorted(mapping or (("", ""),), key=lambda m: -len(m[1])):
        target = target.strip("/")
        if target in ("", "."):
            return _join(source, rel)
        if rel == target or rel.startswith(target + "/"):
            return _join(source, rel[len(target):].lstrip("/"))
    return None


def is_protected(target: str, protected: Sequence[str]) -> bool:
    """Whether writing or deleting the repository path `target` would touch one of the
    protected directories: one of them, inside one, or a directory that holds one."""
    return any(target == p or target.startswith(p + "/") or p.startswith(target + "/")
               for p in protected)


def apply_changes(staged: Path | int, root: Path, mapping: Sequence[tuple[str, str]],
                  deleted: Iterable[str], protected: Sequence[str] = ()) -> WriteBackStats:
    """Moves every staged entry into the repository at `root`, then removes deleted paths.
    `staged` is the extracted output, a path trusted as given or an open directory's fd (the
    caller's); nothing is written or deleted at a `protected` repository path (is_protected)."""
    stats = WriteBackStats()
    deletions = sorted((_checked(rel) for rel in deleted), key=lambda p: -p.count("/"))
    staged_fd = os.dup(staged) if isinstance(staged, int) else os.open(
        staged, os.O_RDONLY | os.O_DIRECTORY)
    try:
        directories, entries = _staged_tree(staged_fd)
        made = _make_directories(directories, root, mapping, protected)
        for rel in entries:
            target = repository_path(rel, mapping)
            if target is None:
                stats.skipped.append(rel)
                continue
            if is_protected(target, protected):
                stats.protected.append(target)
                continue
            _put(staged_fd, rel, root, target)
            stats.written += 1
    finally:
        os.close(staged_fd)
    _finish_directories(root, made)
    for rel in deletions:  # deepest first: contents before their directory
        target = repository_path(rel, mapping)
        if target is None:
            continue
        if is_protected(target, protected):
            stats.protected.append(target)
        elif _remove(root, target):
            stats.deleted += 1
    return stats


def write_back(root: Path, mapping: Sequence[tuple[str, str]], output_dir: Path,
               deleted: Iterable[str], protected: Sequence[str] = ()) -> WriteBackStats:
    """Applies a finished task's returned files (extracted in output_dir, below root) and
    deletions to the repository at root; output_dir is emptied and removed. The output is
    reached from root without following a symlink."""
    try:
        parent_fd, name = open_parent_beneath(root, output_dir, create=False)
    except OSError as exc:
        raise ArchiveError(f"cannot write back from {output_dir}: {exc.strerror}") from exc
    try:
        try:
            staged_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            raise ArchiveError(f"cannot write back from {output_dir}: {exc.strerror}") from exc
        try:
            stats = apply_changes(staged_fd, root, mapping, deleted, protected)
        finally:
            os.close(staged_fd)
        remove_tree_at(name, parent_fd)
    finally:
        os.close(parent_fd)
    return stats


def _staged_tree(staged_fd: int) -> tuple[list[tuple[str, os.stat_result]], list[str]]:
    """(every staged directory with its stat from before it was opened up to its owner,
    parents first; the files, symlinks and empty directories), paths relative to the staged
    root. Each directory is opened up (rwx for its owner) before it is listed: whatever mode
    the task gave it, its entries must be listed and moved out. Walked by fds, never through
    a symlink."""
    directories: list[tuple[str, os.stat_result]] = []
    entries: list[str] = []
    pending = [""]
    while pending:
        rel = pending.pop()
        fd = open_directory_beneath(staged_fd, rel.split("/") if rel else (), create=False)
        try:
            with os.scandir(fd) as listing:
                listed = sorted((entry.name, entry.stat(follow_symlinks=False))
                                for entry in listing)
            for name, st in listed:
                child = f"{rel}/{name}" if rel else name
                if stat.S_ISDIR(st.st_mode):
                    chmod_directory_at(name, fd, stat.S_IMODE(st.st_mode) | 0o700)
                    directories.append((child, st))
                    pending.append(child)
                else:
                    entries.append(child)
        finally:
            os.close(fd)
        if rel and not listed:
            entries.append(rel)
    directories.sort(key=lambda item: item[0].split("/"))
    return directories, sorted(entries)


def _make_directories(directories: list[tuple[str, os.stat_result]], root: Path,
                      mapping: Sequence[tuple[str, str]],
                      protected: Sequence[str]) -> list[tuple[str, os.stat_result]]:
    """Makes the staged directories that the repository lacks, parents first and writable
    until _finish_directories gives them their modes and times (a read-only one could not
    receive its files otherwise). The repository lacks only what the task made, and those
    came back with their own mode and mtime, read before anything moves. Returns the
    repository path and the staged stat of each directory made."""
    made = []
    for source, st in directories:
        target = repository_path(source, mapping)
        if target is None:
            continue
        if is_protected(target, protected):
            continue  # what the task put in it is named (entries); one holding them is there
        parent_fd = _open_parent(root, target)
        try:
            if _make_directory(PurePosixPath(target).name, parent_fd):
                made.append((target, st))
        except OSError as exc:
            raise ArchiveError(f"cannot write back {target}: {exc.strerror}") from exc
        finally:
            os.close(parent_fd)
    return made


def _make_directory(name: str, parent_fd: int) -> bool:
    """Makes the directory (0700 for now); whether it was made. A directory the repository has
    stays as it is. A file or symlink there is what the task replaced by this directory: it
    goes, as _put replaces a directory by a file (the symlink is removed, never followed)."""
    existing = lstat_at(name, parent_fd)
    if existing is not None:
        if stat.S_ISDIR(existing.st_mode):
            return False
        os.unlink(name, dir_fd=parent_fd)
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    return True


def _finish_directories(root: Path, made: list[tuple[str, os.stat_result]]) -> None:
    """The staged mode and mtime of each directory made, deepest first: writing into a
    directory moves its mtime, and a read-only parent must still be walked through."""
    for target, st in sorted(made, key=lambda item: -item[0].count("/")):
        fd = open_directory_beneath(root, PurePosixPath(target).parts, create=False)
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            os.utime(fd, ns=(st.st_mtime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)


def _put(staged_fd: int, rel: str, root: Path, target: str) -> None:
    """Moves the staged entry rel to the repository path target (a file or symlink replaces
    what is there; an empty directory is made unless one is there)."""
    parent_fd = _open_parent(root, target)
    name = PurePosixPath(target).name
    source_parts = rel.split("/")
    try:
        source_fd = open_directory_beneath(staged_fd, source_parts[:-1], create=False)
        try:
            source = source_parts[-1]
            st = os.stat(source, dir_fd=source_fd, follow_symlinks=False)
            existing = lstat_at(name, parent_fd)
            if stat.S_ISDIR(st.st_mode):
                if existing is None:
                    os.mkdir(name, stat.S_IMODE(st.st_mode), dir_fd=parent_fd)
                return
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                shutil.rmtree(name, dir_fd=parent_fd)  # the task replaced a directory by a file
            _move(source, source_fd, st, name, parent_fd)
        finally:
            os.close(source_fd)
    except OSError as exc:
        raise ArchiveError(f"cannot write back {target}: {exc.strerror}") from exc
    finally:
        os.close(parent_fd)


def _remove(root: Path, rel: str) -> bool:
    try:
        parent_fd = open_directory_beneath(root, PurePosixPath(rel).parts[:-1], create=False)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            # Its directory is gone, or is no directory now (the task replaced it by a file,
            # written back just before): the path is gone with it. Never through a symlink.
            return False
        raise ArchiveError(f"cannot delete {rel} in the repository: {exc.strerror}") from exc
    name = PurePosixPath(rel).name
    try:
        existing = lstat_at(name, parent_fd)
        if existing is None:
            return False
        if stat.S_ISDIR(existing.st_mode):
            try:
                os.rmdir(name, dir_fd=parent_fd)
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    return False  # something new lives there now; keep it
                raise
        else:
            os.unlink(name, dir_fd=parent_fd)
        return True
    except OSError as exc:
        raise ArchiveError(f"cannot delete {rel} in the repository: {exc.strerror}") from exc
    finally:
        os.close(parent_fd)


def _open_parent(root: Path, rel: str) -> int:
    """An fd of rel's parent under root, made as needed, never through a symlink."""
    try:
        return open_directory_beneath(root, PurePosixPath(rel).parts[:-1], create=True)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ArchiveError(f"cannot write back {rel}: {exc.filename!r} in the repository "
                               "is not a directory (a symlink or file); move it away and run "
                               "again") from exc
        raise ArchiveError(f"cannot write back {rel}: {exc.strerror}") from exc


def _move(source: str, source_fd: int, st: os.stat_result, name: str, parent_fd: int) -> None:
    """Renames the staged source into place (atomic for readers); copies when the out dir lies
    on another filesystem than the repository."""
    try:
        os.rename(source, name, src_dir_fd=source_fd, dst_dir_fd=parent_fd)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    temporary = f".{name}.buildr-tmp"
    remove_tree_at(temporary, parent_fd)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source, dir_fd=source_fd), temporary, dir_fd=parent_fd)
    else:
        data = os.open(source, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=source_fd)
        try:
            out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                          0o600, dir_fd=parent_fd)
            try:
                while chunk := os.read(data, 1 << 20):
                    write_all(out, chunk)
                os.fchmod(out, stat.S_IMODE(st.st_mode))
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(out)
        finally:
            os.close(data)
    os.rename(temporary, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    os.unlink(source, dir_fd=source_fd)


def _checked(rel: str) -> str:
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or ".." in path.parts or "\x00" in rel:
        raise ArchiveError(f"the agent reported an unsafe deleted path {rel!r}; nothing was "
                           "deleted for it")
    return str(path)


def _join(source: str, rel: str) -> str:
    return str(PurePosixPath(source.strip("/") or ".", rel)) if rel else source.strip("/")
