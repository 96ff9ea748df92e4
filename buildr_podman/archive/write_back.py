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

from buildr_podman.archive.beneath import open_directory_beneath
from buildr_podman.archive.owned import open_up_directories, remove_tree
from buildr_podman.errors import ArchiveError

__all__ = ["WriteBackStats", "apply_changes", "repository_path", "write_back"]


@dataclass
class WriteBackStats:
    written: int = 0
    deleted: int = 0
    skipped: list[str] = field(default_factory=list)  #: workspace paths with no repo location


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


def apply_changes(staged: Path, root: Path, mapping: Sequence[tuple[str, str]],
                  deleted: Iterable[str]) -> WriteBackStats:
    """Moves every staged entry into the repository at `root`, then removes deleted paths."""
    stats = WriteBackStats()
    deletions = sorted((_checked(rel) for rel in deleted), key=lambda p: -p.count("/"))
    made = _make_directories(staged, root, mapping)
    for rel in _staged_entries(staged):
        target = repository_path(rel, mapping)
        if target is None:
            stats.skipped.append(rel)
            continue
        _put(staged / rel, root, target)
        stats.written += 1
    _finish_directories(root, made)
    for rel in deletions:  # deepest first: contents before their directory
        target = repository_path(rel, mapping)
        if target is not None and _remove(root, target):
            stats.deleted += 1
    return stats


def write_back(root: Path, mapping: Sequence[tuple[str, str]], output_dir: Path,
               deleted: Iterable[str]) -> WriteBackStats:
    """Applies a finished task's returned files (extracted in output_dir) and deletions to the
    repository at root; output_dir is emptied and removed."""
    stats = apply_changes(output_dir, root, mapping, deleted)
    remove_tree(output_dir)
    return stats


def _staged_entries(staged: Path) -> list[str]:
    """Files, symlinks and empty directories under staged, relative to it."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(staged):
        base = Path(dirpath)
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            entries.append(str((base / name).relative_to(staged)))
        if not dirnames and not filenames and base != staged:
            entries.append(str(base.relative_to(staged)))
    return sorted(entries)


def _make_directories(staged: Path, root: Path,
                      mapping: Sequence[tuple[str, str]]) -> list[tuple[str, os.stat_result]]:
    """Makes the staged directories that the repository lacks, parents first and writable
    until _finish_directories gives them their modes and times (a read-only one could not
    receive its files otherwise). The repository lacks only what the task made, and those
    came back with their own mode and mtime, read before anything moves. Every staged
    directory is opened up to its owner on the way: whatever mode the task gave it (read-only,
    or none), its entries must be listed and moved out. Returns the repository path and the
    staged stat of each directory made."""
    made = []
    for source, st in open_up_directories(staged):
        target = repository_path(str(source.relative_to(staged)), mapping)
        if target is None:
            continue
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
    existing = _lstat(name, parent_fd)
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


def _put(source: Path, root: Path, rel: str) -> None:
    parent_fd = _open_parent(root, rel)
    name = PurePosixPath(rel).name
    try:
        existing = _lstat(name, parent_fd)
        if source.is_dir() and not source.is_symlink():
            if existing is None:
                os.mkdir(name, stat.S_IMODE(source.stat().st_mode), dir_fd=parent_fd)
            return
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            shutil.rmtree(name, dir_fd=parent_fd)  # the task replaced a directory by a file
        _move(source, name, parent_fd)
    except OSError as exc:
        raise ArchiveError(f"cannot write back {rel}: {exc.strerror}") from exc
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
        existing = _lstat(name, parent_fd)
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


def _move(source: Path, name: str, parent_fd: int) -> None:
    """Renames source into place (atomic for readers); copies when the out dir lies on
    another filesystem than the repository."""
    try:
        os.rename(source, name, dst_dir_fd=parent_fd)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    temporary = f".{name}.buildr-tmp"
    if source.is_symlink():
        os.symlink(os.readlink(source), temporary, dir_fd=parent_fd)
    else:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600,
                     dir_fd=parent_fd)
        with os.fdopen(fd, "wb") as out, open(source, "rb") as data:
            shutil.copyfileobj(data, out)
            os.fchmod(out.fileno(), stat.S_IMODE(source.stat().st_mode))
        st = source.stat()
        os.utime(temporary, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=parent_fd)
    os.rename(temporary, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    os.unlink(source)


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _checked(rel: str) -> str:
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or ".." in path.parts or "\x00" in rel:
        raise ArchiveError(f"the agent reported an unsafe deleted path {rel!r}; nothing was "
                           "deleted for it")
    return str(path)


def _join(source: str, rel: str) -> str:
    return str(PurePosixPath(source.strip("/") or ".", rel)) if rel else source.strip("/")
