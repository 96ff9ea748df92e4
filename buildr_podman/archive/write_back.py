"""Applies a task's changes to the repository itself (`write_back = true`), deletions included.

The archive has already been extracted and checked into a staging directory, so the repository
is touched only after the whole archive proved good. Paths are mapped from the workspace back
to the repository through the task's input mapping; every repository path is reached without
following a symlink, so neither a staged entry nor a reported deletion can leave the repository.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from buildr_podman.archive.beneath import (
    DIRECTORY_FLAGS,
    chmod_directory_at,
    lstat_at,
    make_private_directory_at,
    open_directory_beneath,
    open_parent_beneath,
    remove_tree_at,
)
from buildr_podman.archive.owned import write_all
from buildr_podman.errors import ArchiveError, printable

if TYPE_CHECKING:
    from buildr_podman.phases import Phase

__all__ = ["WriteBackConflict", "WriteBackStats", "apply_changes", "is_protected",
           "laid_over_by_layers", "repository_path", "write_back"]


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


def laid_over_by_layers(deleted: Iterable[str], layers: Sequence[Path], root: Path,
                        mapping: Sequence[tuple[str, str]]) -> list[str]:
    """The deleted workspace paths whose repository entry the task never saw: an
    `inputs_from` layer laid a file or symlink there (or above it), or a directory where the
    repository holds something else (agent/layers.py). Deleting them in the repository would
    delete the user's file in place of the dependency's output the task deleted."""
    return [rel for rel in deleted if any(_hidden_by(layer, rel, root, mapping)
                                          for layer in layers)]


def _hidden_by(layer: Path, rel: str, root: Path, mapping: Sequence[tuple[str, str]]) -> bool:
    parts = PurePosixPath(rel).parts
    if not parts or any(part in ("..", "/") for part in parts):
        return False  # write_back refuses it anyway (_checked)
    for depth in range(1, len(parts) + 1):
        try:
            st = os.lstat(layer.joinpath(*parts[:depth]))
        except OSError:
            return False  # this layer has nothing there
        if not stat.S_ISDIR(st.st_mode):
            return True  # a file or symlink of the layer at the path or above it
    target = repository_path(rel, mapping)
    try:
        return target is not None and not stat.S_ISDIR(os.lstat(root / target).st_mode)
    except OSError:
        return False  # the repository has nothing there: nothing to spare


def is_protected(target: str, protected: Sequence[str]) -> bool:
    """Whether writing or deleting the repository path `target` would touch one of the
    protected directories: one of them, inside one, or a directory that holds one."""
    return any(target == p or target.startswith(p + "/") or p.startswith(target + "/")
               for p in protected)


def apply_changes(staged: Path | int, root: Path, mapping: Sequence[tuple[str, str]],
                  deleted: Iterable[str], protected: Sequence[str] = (),
                  started_ns: int | None = None,
                  progress: Phase | None = None) -> WriteBackStats:
    """Moves every staged entry into the repository at `root`, then removes deleted paths:
    all of it or, on any failure, nothing (what was replaced is put back). `staged` is the
    extracted output, a path trusted as given or an open directory's fd (the caller's);
    nothing is written or deleted at a `protected` repository path (is_protected).

    With `started_ns` (time.time_ns() before the task started), every repository path that
    would be replaced or deleted is first compared with what the task started from: one
    changed since then (its ctime is later: an edit the user saved while the task ran, or
    another task's write-back) is a conflict, and nothing is applied (WriteBackConflict).
    `progress` counts the paths written and deleted, of a total known once planned.
    """
    stats = WriteBackStats()
    deletions = sorted((_checked(rel) for rel in deleted), key=lambda p: -p.count("/"))
    staged_fd = os.dup(staged) if isinstance(staged, int) else os.open(
        staged, os.O_RDONLY | os.O_DIRECTORY)
    try:
        directories, entries = _staged_tree(staged_fd)
        plan = _plan(directories, entries, deletions, mapping, protected, stats)
        _check(root, plan, started_ns)
        if progress is not None:
            progress.total = len(plan.puts) + len(plan.deletions)
        with _Journal(root) as journal:
            made = _make_directories(plan.directories, root, journal)
            for rel, target in plan.puts:
                _put(staged_fd, rel, root, target, journal)
                stats.written += 1
                if progress is not None:
                    progress.advance()
            _finish_directories(root, made)
            for target in plan.deletions:  # deepest first: contents before their directory
                if _remove(root, target, journal):
                    stats.deleted += 1
                if progress is not None:
                    progress.advance()
    finally:
        os.close(staged_fd)
    return stats


class WriteBackConflict(ArchiveError):
    """Repository paths the task would change were changed while it ran; nothing was applied."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        shown = ", ".join(repr(path) for path in paths[:5])
        more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
        super().__init__(f"not written back: {len(paths)} paths changed in the repository while "
                         f"the task ran ({shown}{more}); nothing was applied")


@dataclass
class _Plan:
    directories: list[tuple[str, os.stat_result]]  #: (repository path, staged stat), parents first
    puts: list[tuple[str, str]]  #: (staged path, repository path)
    deletions: list[str]  #: repository paths, deepest first


def _plan(directories: list[tuple[str, os.stat_result]], entries: list[str],
          deletions: list[str], mapping: Sequence[tuple[str, str]],
          protected: Sequence[str], stats: WriteBackStats) -> _Plan:
    """What would be applied, mapped to repository paths; what lies outside every mapping or
    at a protected path is left out and named in stats."""
    plan = _Plan([], [], [])
    for source, st in directories:
        target = repository_path(source, mapping)
        # In a protected directory: what the task put in it is named (entries); a directory
        # holding one is there already.
        if target is not None and not is_protected(target, protected):
            plan.directories.append((target, st))
    for rel in entries:
        target = repository_path(rel, mapping)
        if target is None:
            stats.skipped.append(rel)
        elif is_protected(target, protected):
            stats.protected.append(target)
        else:
            plan.puts.append((rel, target))
    for rel in deletions:
        target = repository_path(rel, mapping)
        if target is None:
            continue
        if is_protected(target, protected):
            stats.protected.append(target)
        else:
            plan.deletions.append(target)
    return plan


def _check(root: Path, plan: _Plan, started_ns: int | None) -> None:
    """Everything checked before anything changes: no path on the way is a symlink or a file
    where a directory must be, and nothing to be replaced or deleted changed since the task
    started. Raises ArchiveError (WriteBackConflict for changes)."""
    changed: list[str] = []
    made = {t for t, _ in plan.directories}
    for target in [t for t, _ in plan.directories] + [t for _, t in plan.puts]:
        _check_way(root, target, made)
    if started_ns is None:
        return
    # A directory the task made where the repository has one leaves it as it is: only one
    # that replaces a file or symlink replaces anything.
    for target in made:
        if _changed_since(root, target, started_ns, keeps_directory=True):
            changed.append(target)
    for target in [t for _, t in plan.puts] + plan.deletions:
        if _changed_since(root, target, started_ns):
            changed.append(target)
    if changed:
        raise WriteBackConflict(sorted(changed))


def _check_way(root: Path, target: str, made: set[str]) -> None:
    """The existing directories on the way to target are directories, never symlinks (what
    is missing will be made, and so will a directory the task put in place of a file or
    symlink: `made`)."""
    parts = PurePosixPath(target).parts[:-1]
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for depth, part in enumerate(parts, 1):
            if "/".join(parts[:depth]) in made:
                return  # the task's own directory replaces whatever is there
            try:
                next_fd = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ArchiveError(f"cannot write back {printable(target)}: {part!r} in the "
                                       "repository is not a directory (a symlink or file); move "
                                       "it away and run again; nothing was applied") from exc
                raise ArchiveError(f"cannot write back {printable(target)}: "
                                   f"{exc.strerror}; nothing was applied") from exc
            os.close(fd)
            fd = next_fd
    finally:
        os.close(fd)


def _changed_since(root: Path, target: str, started_ns: int,
                   keeps_directory: bool = False) -> bool:
    """Whether the repository entry at target (a whole tree, for a directory) changed after
    started_ns. ctime, not mtime: no tool sets it back, and every write, rename, chmod and
    new or removed entry of a directory moves it. Its clock lags real time by a tick at most,
    so an edit within that tick of the start can go unseen; none is ever seen that was not."""
    try:
        parent_fd = open_directory_beneath(root, PurePosixPath(target).parts[:-1], create=False)
    except OSError:
        return False  # not there, or not reachable: _check_way or the apply says so
    try:
        name = PurePosixPath(target).name
        st = lstat_at(name, parent_fd)
        if st is None or (keeps_directory and stat.S_ISDIR(st.st_mode)):
            return False
        if st.st_ctime_ns > started_ns:
            return True
        return stat.S_ISDIR(st.st_mode) and _tree_changed_since(name, parent_fd, started_ns)
    finally:
        os.close(parent_fd)


def _tree_changed_since(name: str, parent_fd: int, started_ns: int) -> bool:
    """Whether anything below the directory `name` changed after started_ns."""
    try:
        fd = os.open(name, DIRECTORY_FLAGS, dir_fd=parent_fd)
    except OSError:
        return False
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if st.st_ctime_ns > started_ns:
                    return True
                if stat.S_ISDIR(st.st_mode) and _tree_changed_since(entry.name, fd, started_ns):
                    return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


class _Journal:
    """What applying changed in the repository, to put it back if a later step fails: what
    was replaced or deleted is moved aside into a private directory in .buildr/ (never
    removed until everything succeeded), and what was made is listed to be removed."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._buildr_fd: int | None = None
        self._aside: str | None = None  # the private directory's name in .buildr/
        self._steps: list[tuple[str, str, str]] = []  # (kind, repository path, aside name)

    def __enter__(self) -> _Journal:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: object) -> None:
        try:
            if error is not None:
                self._undo()
                if isinstance(error, ArchiveError) and not isinstance(error, WriteBackConflict):
                    error.args = (f"{error.args[0]}; the repository is as it was",)
        finally:
            if self._buildr_fd is not None:
                if self._aside is not None:
                    remove_tree_at(self._aside, self._buildr_fd)
                os.close(self._buildr_fd)

    def made(self, target: str) -> None:
        """target did not exist and was made (a directory, or a file moved in)."""
        self._steps.append(("made", target, ""))

    def move_aside(self, parent_fd: int, name: str, target: str) -> None:
        """Moves the entry target (name in parent_fd) out of the way, to be put back on undo."""
        aside_fd = self._aside_fd()
        try:
            kept = str(len(self._steps))
            os.rename(name, kept, src_dir_fd=parent_fd, dst_dir_fd=aside_fd)
        finally:
            os.close(aside_fd)
        self._steps.append(("aside", target, kept))

    def _aside_fd(self) -> int:
        if self._buildr_fd is None:
            self._buildr_fd = open_directory_beneath(self._root, (".buildr",), create=True)
        if self._aside is None:
            self._aside = make_private_directory_at(f".write-back-{os.getpid()}-",
                                                    self._buildr_fd)
        return os.open(self._aside, DIRECTORY_FLAGS, dir_fd=self._buildr_fd)

    def _undo(self) -> None:
        """Latest first: what was made goes, what was moved aside comes back. Best effort:
        a step that cannot be undone leaves its entry in the private directory."""
        for kind, target, kept in reversed(self._steps):
            try:
                parent_fd = open_directory_beneath(self._root, PurePosixPath(target).parts[:-1],
                                                   create=False)
            except OSError:
                continue
            name = PurePosixPath(target).name
            try:
                if kind == "made":
                    remove_tree_at(name, parent_fd)
                else:
                    aside_fd = self._aside_fd()
                    try:
                        remove_tree_at(name, parent_fd)
                        os.rename(kept, name, src_dir_fd=aside_fd, dst_dir_fd=parent_fd)
                    finally:
                        os.close(aside_fd)
            except OSError:
                continue
            finally:
                os.close(parent_fd)


def write_back(root: Path, mapping: Sequence[tuple[str, str]], output_dir: Path,
               deleted: Iterable[str], protected: Sequence[str] = (),
               started_ns: int | None = None, progress: Phase | None = None) -> WriteBackStats:
    """Applies a finished task's returned files (extracted in output_dir, below root) and
    deletions to the repository at root, all or nothing (apply_changes); output_dir is
    emptied and removed once applied, and kept when nothing was. The output is reached from
    root without following a symlink."""
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
            stats = apply_changes(staged_fd, root, mapping, deleted, protected, started_ns,
                                  progress)
        except ArchiveError as exc:
            exc.args = (f"{exc.args[0]}; the task's changes are in {output_dir}",)
            raise
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
                      journal: _Journal) -> list[tuple[str, os.stat_result]]:
    """Makes the staged directories that the repository lacks, parents first and writable
    until _finish_directories gives them their modes and times (a read-only one could not
    receive its files otherwise). The repository lacks only what the task made, and those
    came back with their own mode and mtime, read before anything moves. Returns the
    repository path and the staged stat of each directory made."""
    made = []
    for target, st in directories:
        parent_fd = _open_parent(root, target, journal)
        try:
            if _make_directory(PurePosixPath(target).name, parent_fd, target, journal):
                made.append((target, st))
        except OSError as exc:
            raise ArchiveError(f"cannot write back {printable(target)}: {exc.strerror}") from exc
        finally:
            os.close(parent_fd)
    return made


def _make_directory(name: str, parent_fd: int, target: str, journal: _Journal) -> bool:
    """Makes the directory (0700 for now); whether it was made. A directory the repository has
    stays as it is. A file or symlink there is what the task replaced by this directory: it
    is moved aside, as _put does with a directory replaced by a file (never followed)."""
    existing = lstat_at(name, parent_fd)
    if existing is not None:
        if stat.S_ISDIR(existing.st_mode):
            return False
        journal.move_aside(parent_fd, name, target)
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    journal.made(target)
    return True


def _finish_directories(root: Path, made: list[tuple[str, os.stat_result]]) -> None:
    """The staged mode and mtime of each directory made, deepest first: writing into a
    directory moves its mtime, and a read-only parent must still be walked through."""
    for target, st in sorted(made, key=lambda item: -item[0].count("/")):
        try:
            _finish_directory(root, target, st)
        except OSError as exc:
            raise ArchiveError(f"cannot write back {printable(target)}: {exc.strerror}") from exc


def _finish_directory(root: Path, target: str, st: os.stat_result) -> None:
    fd = open_directory_beneath(root, PurePosixPath(target).parts, create=False)
    try:
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        os.utime(fd, ns=(st.st_mtime_ns, st.st_mtime_ns))
    finally:
        os.close(fd)


def _put(staged_fd: int, rel: str, root: Path, target: str, journal: _Journal) -> None:
    """Moves the staged entry rel to the repository path target (a file or symlink replaces
    what is there, which is moved aside; an empty directory is made unless one is there)."""
    parent_fd = _open_parent(root, target, journal)
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
                    journal.made(target)
                return
            if existing is not None:  # a file, or a directory the task replaced by a file
                journal.move_aside(parent_fd, name, target)
            _move(source, source_fd, st, name, parent_fd)
            journal.made(target)
        finally:
            os.close(source_fd)
    except OSError as exc:
        raise ArchiveError(f"cannot write back {printable(target)}: {exc.strerror}") from exc
    finally:
        os.close(parent_fd)


def _remove(root: Path, rel: str, journal: _Journal) -> bool:
    """Deletes the repository path rel (moved aside until all succeeded); a directory only
    when empty: something new lives there otherwise."""
    try:
        parent_fd = open_directory_beneath(root, PurePosixPath(rel).parts[:-1], create=False)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            # Its directory is gone, or is no directory now (the task replaced it by a file,
            # written back just before): the path is gone with it. Never through a symlink.
            return False
        raise ArchiveError(f"cannot delete {printable(rel)} in the repository: "
                           f"{exc.strerror}") from exc
    name = PurePosixPath(rel).name
    try:
        existing = lstat_at(name, parent_fd)
        if existing is None:
            return False
        if stat.S_ISDIR(existing.st_mode) and _has_entries(name, parent_fd):
            return False  # something new lives there now; keep it
        journal.move_aside(parent_fd, name, rel)
        return True
    except OSError as exc:
        raise ArchiveError(f"cannot delete {printable(rel)} in the repository: "
                           f"{exc.strerror}") from exc
    finally:
        os.close(parent_fd)


def _has_entries(name: str, parent_fd: int) -> bool:
    fd = os.open(name, DIRECTORY_FLAGS, dir_fd=parent_fd)
    try:
        with os.scandir(fd) as entries:
            return any(True for _ in entries)
    finally:
        os.close(fd)


def _open_parent(root: Path, rel: str, journal: _Journal) -> int:
    """An fd of rel's parent under root, its missing directories made (and journaled), never
    through a symlink."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    done: list[str] = []
    try:
        for part in PurePosixPath(rel).parts[:-1]:
            done.append(part)
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                journal.made("/".join(done))
            except FileExistsError:
                pass
            next_fd = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ArchiveError(f"cannot write back {printable(rel)}: {exc.filename!r} in the "
                               "repository is not a directory (a symlink or file); move it "
                               "away and run again") from exc
        raise ArchiveError(f"cannot write back {printable(rel)}: {exc.strerror}") from exc
    return fd


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
