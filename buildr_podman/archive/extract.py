"""Extracts an untrusted tar stream into a directory: all or nothing, never outside it.

A container's archive is untrusted data. Every member passes `check_member` (a pure policy),
every path is created under a staging directory without ever following a symlink, and only a
fully extracted archive replaces the target (a rename in the same parent). Files are written by
this process, so they belong to the user running it; ids in the archive are ignored.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from buildr_podman.archive.beneath import (
    DIRECTORY_FLAGS,
    chmod_directory_at,
    is_marked,
    lstat_at,
    make_private_directory_at,
    mark,
    open_directory_beneath,
    open_parent_beneath,
    remove_tree_at,
)
from buildr_podman.archive.owned import DISK_FULL, PERMISSION_BITS, process_umask, write_all
from buildr_podman.archive.tarstream import (
    MAX_SPARSE_MAP,
    Member,
    Readable,
    TarReader,
    sparse_map,
)
from buildr_podman.errors import ArchiveError, UnsafeArchiveMember, printable
from buildr_podman.processes import own_process_running

if TYPE_CHECKING:
    from buildr_podman.phases import Phase

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_ENTRIES", "ExtractStats", "StagedTree",
           "check_member", "extract_tar_stream", "list_tar_stream", "stage_tar_stream"]

MAX_NAME_LENGTH = 4096
MAX_COMPONENT_LENGTH = 255  # NAME_MAX of every Linux file system we write to
SHOWN_NAME_LENGTH = 120  # a message shows a longer member name shortened in the middle
DEFAULT_MAX_BYTES = 64 << 30  # a decompression bomb stops here; raise it with care
# Files, directories and symlinks of one archive: empty ones cost no bytes but an inode and
# time each, so they are counted apart (`buildr { max_return_entries }`).
DEFAULT_MAX_ENTRIES = 1_000_000
COPY_SIZE = 1 << 20
OPEN_DIRECTORIES = 16  # directory fds an extraction keeps open (_OpenDirectories)


@dataclass
class ExtractStats:
    files: int = 0
    symlinks: int = 0
    directories: int = 0
    bytes: int = 0


def check_member(member: Member) -> str | None:
    """Why this member must be refused, or None when it is safe to extract."""
    return _check(member, components(member.name))


def _check(member: Member, parts: list[str]) -> str | None:
    """check_member, given the name's components (the caller needs them too)."""
    name = member.name
    if not parts:
        return "empty name"
    if "\x00" in name or "\n" in name or "\r" in name:
        return "control character in the name"
    length = len(name.encode("utf-8", "surrogateescape"))
    if length > MAX_NAME_LENGTH:
        return f"name longer than {MAX_NAME_LENGTH} bytes"
    if length > MAX_COMPONENT_LENGTH and any(  # no component is longer than the whole name
            len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_LENGTH
            for part in parts):
        return f"a path component longer than {MAX_COMPONENT_LENGTH} bytes"
    if name.startswith("/"):
        return "absolute path"
    if ".." in parts:
        return "'..' in the path"
    if not (member.isreg() or member.isdir()):  # files and directories: no more calls
        if member.islnk():
            return "hard link (only files, directories and symlinks are returned)"
        if not member.issym():
            return "device, FIFO or other special file"
        if "\x00" in member.linkname or not member.linkname:
            return "bad symlink target"
    if member.size < 0:
        return "negative size"
    return None


def components(name: str) -> list[str]:
    """The path's components, without empty ones and "." ("./a//b/" -> ["a", "b"]).

    Plain string work: pathlib cost a fifth of the time of extracting many small files.
    """
    return [part for part in name.split("/") if part not in ("", ".")]


def list_tar_stream(fileobj: Readable) -> list[Member]:
    """The members of a tar stream, read sequentially (nothing is written)."""
    return list(TarReader(fileobj))


def extract_tar_stream(fileobj: Readable, target: Path, *,
                       max_bytes: int = DEFAULT_MAX_BYTES,
                       max_entries: int = DEFAULT_MAX_ENTRIES,
                       anchor: Path | None = None,
                       replace_unmarked: bool = True) -> ExtractStats:
    """Extracts the tar read from fileobj so that `target` holds exactly its members.

    `anchor` is the directory trusted as given (the repository root; by default target's
    parent): every directory from it down to the target is opened without following a
    symlink, so a link a task planted on the way (the out dir itself, say) is refused, never
    followed. What the archive expands to (bodies and headers) stops at max_bytes, and its
    members at max_entries. On any error the target is left as it was and the error names the
    member and the reason. The stats are counted here, from what was written.

    Every target made is marked as this tool's (beneath.mark). An existing target without
    the mark is replaced only if `replace_unmarked`: otherwise it may be a directory of the
    user's (in an out dir among the sources, say) and the extraction is refused at once.
    """
    staged = stage_tar_stream(fileobj, target, max_bytes=max_bytes, max_entries=max_entries,
                              anchor=anchor, replace_unmarked=replace_unmarked)
    staged.land(target)
    return staged.stats


class StagedTree:
    """A whole archive, extracted beside the target it was meant for, not yet in place: where
    it goes may depend on what comes after it (a task's result: its out dir, or the place of
    failed outputs). Land it, or discard it; either closes it."""

    def __init__(self, stats: ExtractStats, parent_fd: int, staging: str, target: Path,
                 anchor: Path, replace_unmarked: bool) -> None:
        self.stats = stats
        self._parent_fd = parent_fd  # the open directory the staging lies in
        self._staging = staging
        self._target = target
        self._anchor = anchor
        self._replace_unmarked = replace_unmarked

    def land(self, target: Path) -> None:
        """Puts the tree in place of `target` with renames, so that the target is never
        partial: beside where it was staged, or in another directory below the same anchor
        (reached without following a symlink, and checked, like the first)."""
        try:
            if target == self._target:
                _replace(self._parent_fd, self._staging, target.name)
            else:
                self._move_and_replace(target)
        except OSError as exc:
            remove_tree_at(self._staging, self._parent_fd)
            raise _write_error(f"putting {target} in place", exc, target.parent) from exc
        except BaseException:
            remove_tree_at(self._staging, self._parent_fd)
            raise
        finally:
            os.close(self._parent_fd)

    def _move_and_replace(self, target: Path) -> None:
        parent_fd, name = open_parent_beneath(self._anchor, target, create=True)
        try:
            _check_replaceable(parent_fd, name, target, self._replace_unmarked)
            _sweep_abandoned(parent_fd, name)
            # Onto an empty private directory of the same kind: a rename may replace one, and
            # if this process dies now, the name says whose it was and a later run sweeps it.
            moved = _scratch_dir(parent_fd, name, "staging")
            os.rename(self._staging, moved, src_dir_fd=self._parent_fd, dst_dir_fd=parent_fd)
            _replace(parent_fd, moved, name)
        finally:
            os.close(parent_fd)

    def discard(self) -> None:
        try:
            remove_tree_at(self._staging, self._parent_fd)
        finally:
            os.close(self._parent_fd)


def stage_tar_stream(fileobj: Readable, target: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                     max_entries: int = DEFAULT_MAX_ENTRIES, anchor: Path | None = None,
                     replace_unmarked: bool = True, progress: Phase | None = None) -> StagedTree:
    """Extracts the tar read from fileobj into a new, marked directory beside `target`
    (reached and checked as extract_tar_stream does): all of it, or nothing and an error that
    names the member and the reason. `progress` counts each file and symlink, and the bytes."""
    try:
        if anchor is None:  # a path the user gave (archive extract DEST): made as given
            anchor = target.parent
            anchor.mkdir(parents=True, exist_ok=True)
        parent_fd, name = open_parent_beneath(anchor, target, create=True)
    except OSError as exc:
        raise _path_error(target, exc) from exc
    try:
        _check_replaceable(parent_fd, name, target, replace_unmarked)
        try:
            _sweep_abandoned(parent_fd, name)
            staging = _scratch_dir(parent_fd, name, "staging")
        except OSError as exc:
            raise _write_error(f"making {target}", exc, target.parent) from exc
        try:
            staging_fd = os.open(staging, DIRECTORY_FLAGS, dir_fd=parent_fd)
            try:
                mark(staging_fd)
                stats = _extract_into(fileobj, staging_fd, (max_bytes, max_entries),
                                      target.parent, progress)
            finally:
                os.close(staging_fd)
        except OSError as exc:  # finishing; members' own errors name the member
            remove_tree_at(staging, parent_fd)
            raise _write_error(f"putting {target} in place", exc, target.parent) from exc
        except BaseException:
            remove_tree_at(staging, parent_fd)
            raise
    except BaseException:
        os.close(parent_fd)
        raise
    return StagedTree(stats, parent_fd, staging, target, anchor, replace_unmarked)


def _scratch_dir(parent_fd: int, name: str, kind: str) -> str:
    """A private directory beside the target, named with this process's pid, so that a later
    extraction can tell one that was abandoned (its process gone) from one in use."""
    return make_private_directory_at(f".{name}.{kind}-{os.getpid()}-", parent_fd)


def _sweep_abandoned(parent_fd: int, name: str) -> None:
    """Removes the staging and trash directories that an extraction into the target left
    behind when its process was killed (SIGKILL, the OOM killer): ours to clean, since their
    names say whose they were and that process no longer runs."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:staging|old)-(\d+)-")
    try:
        names = os.listdir(parent_fd)
    except OSError:
        return
    for entry in names:
        found = pattern.match(entry)
        if found and not own_process_running(int(found.group(1))):
            st = lstat_at(entry, parent_fd)
            if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
                remove_tree_at(entry, parent_fd)


def _sparse_start(tar: TarReader, member: Member) -> tuple[list[tuple[int, int]], memoryview]:
    """A sparse member's data segments, from the map its body starts with, and the data read
    with the map. Refused with the reason before its file is made."""
    try:
        head = _read_exactly(tar, min(member.size, MAX_SPARSE_MAP))
    except ArchiveError as exc:
        raise _refuse(member.name, "the archive ends inside its body") from exc
    segments, used = sparse_map(head, member)
    return segments, memoryview(head)[used:]


def _write_sparse(tar: TarReader, member: Member, fd: int, segments: list[tuple[int, int]],
                  pending: memoryview) -> None:
    """A sparse member: only its data segments are written, each where it belongs; the holes
    between them are left as holes (the file is given its real size at the end), so a file
    of 4 GiB of nothing costs nothing here either. `pending`: data already read."""
    assert member.sparse_size is not None
    for offset, length in segments:
        os.lseek(fd, offset, os.SEEK_SET)
        while length:
            if not pending:
                pending = memoryview(tar.read_body(min(length, COPY_SIZE)))
                if not pending:
                    raise ArchiveError("broken archive: it ends inside a member's body")
            piece = pending[:length]
            write_all(fd, piece)
            pending = pending[len(piece):]
            length -= len(piece)
    os.ftruncate(fd, member.sparse_size)


def _read_exactly(tar: TarReader, count: int) -> bytes:
    parts = []
    while count:
        chunk = tar.read_body(count)
        if not chunk:
            raise ArchiveError("broken archive: it ends inside a member's body")
        parts.append(bytes(chunk))
        count -= len(chunk)
    return b"".join(parts)


def _refuse(name: str, reason: str) -> UnsafeArchiveMember:
    """The error for a refused member, its name shortened to keep the message one short line."""
    return UnsafeArchiveMember(_cut(name), reason)  # its message shows it with repr()


def _shown_name(name: str) -> str:
    """The name for a message: controls escaped (it is the task's choice), a long one cut."""
    return printable(_cut(name))


def _cut(name: str) -> str:
    if len(name) <= SHOWN_NAME_LENGTH:
        return name
    return f"{name[:70]}...{name[-40:]} ({len(name)} characters)"


def _path_error(target: Path, exc: OSError) -> ArchiveError:
    """The way to the target could not be opened: a symlink or file on it is named."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return ArchiveError(f"cannot write {target}: {exc.filename!r} on the way there is not a "
                            "directory (a symlink or file, which is never followed); move it "
                            "away and run again")
    return _write_error(f"making {target}", exc, target.parent)


def _write_error(what: str, exc: OSError, where: Path) -> ArchiveError:
    """A one-line error for a failed write; a full disk says where and what to do."""
    if exc.errno in DISK_FULL:
        return ArchiveError(f"no space left under {where} ({exc.strerror}) while {what}: "
                            "free some space there and run again; the previous output is "
                            "unchanged")
    return ArchiveError(f"cannot write under {where} while {what}: {exc.strerror}")


def _extract_into(fileobj: Readable, root: int, limits: tuple[int, int],
                  where: Path, progress: Phase | None = None) -> ExtractStats:
    writer = _StagingWriter(root, limits, where)
    tar = TarReader(fileobj)
    try:
        for member in tar:
            writer.add(tar, member)
            if progress is not None:
                progress.advance(0 if member.isdir() else 1,
                                 member.size if member.isreg() else 0)
    finally:
        writer.close()
    writer.finish()
    return writer.stats


class _StagingWriter:
    """Creates members under root, refusing anything unsafe, then fixes directory times."""

    def __init__(self, root: int, limits: tuple[int, int], where: Path) -> None:
        self.root = root
        self.max_bytes, self.max_entries = limits
        self._entries = 0
        self.where = where  # the directory named in messages: the out dir, not the staging
        self.stats = ExtractStats()
        self._seen: set[str] = set()
        # (rel, mtime_ns, the mode to set, or None when it has its final mode already)
        self._directories: list[tuple[str, int, int | None]] = []
        self._parents = _OpenDirectories(root)
        self._umask = process_umask()
        # A new directory takes its parent's setgid bit: then mkdir's mode is not the whole
        # mode, and each directory's mode is set at the end, as the archive says.
        self._setgid_inherited = bool(os.fstat(root).st_mode & stat.S_ISGID)

    def add(self, tar: TarReader, member: Member) -> None:
        self._entries += 1
        if self._entries > self.max_entries:
            raise _refuse(member.name, f"the archive holds more than {self.max_entries} "
                                       "entries (max_return_entries)")
        if self.stats.bytes + tar.header_bytes > self.max_bytes:
            raise self._too_big(member)
        parts = components(member.name)
        reason = _check(member, parts)
        if reason:
            raise _refuse(member.name, reason)
        rel = "/".join(parts)
        if rel in self._seen:
            raise _refuse(member.name, "duplicate entry")
        self._seen.add(rel)
        parent_fd = self._parent(rel, member.name)
        try:
            self._create(tar, member, parent_fd, parts[-1], rel)
        except FileExistsError as exc:
            # An earlier member's path made this one a directory: a symlink or file here would
            # replace it (and redirect or hide what was extracted into it).
            raise _refuse(member.name, "duplicate entry (an earlier member made it a "
                                       "directory)") from exc
        except OSError as exc:
            raise _write_error(f"writing {_shown_name(rel)}", exc, self.where) from exc

    def _parent(self, rel: str, name: str) -> int:
        """An fd of the member's parent directory, created as needed."""
        try:
            return self._parents.get(rel.rpartition("/")[0], create=True)
        except OSError as exc:
            raise self._directory_error(exc, name) from exc

    def close(self) -> None:
        self._parents.close()

    def _too_big(self, member: Member) -> UnsafeArchiveMember:
        return _refuse(member.name, f"the archive expands beyond the limit of "
                                    f"{self.max_bytes} bytes (max_return_size)")

    def _directory_error(self, exc: OSError, name: str) -> ArchiveError:
        """A directory on the way to `name` could not be made or opened."""
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return _refuse(name, f"path goes through the non-directory {exc.filename!r} "
                                 "(a symlink or file)")
        return _write_error(f"making the directories of {_shown_name(name)}", exc, self.where)

    def _create(self, tar: TarReader, member: Member, parent_fd: int, name: str,
                rel: str) -> None:
        mode = member.mode & PERMISSION_BITS
        if member.isdir():
            writable = mode | 0o700  # until finish(): its members must get in
            exact = True  # its mode is now `writable`, no more and no less
            try:
                os.mkdir(name, writable, dir_fd=parent_fd)
                if self._umask is None or writable & self._umask:
                    os.chmod(name, writable, dir_fd=parent_fd)  # undo what the umask took
                else:
                    exact = not self._setgid_inherited
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                    raise UnsafeArchiveMember(member.name, "a directory replaces a file") from None
                os.chmod(name, writable, dir_fd=parent_fd)  # made earlier as a parent
            final = None if exact and writable == mode else mode
            self._directories.append((rel, member.mtime_ns, final))
            self.stats.directories += 1
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=parent_fd)
            os.utime(name, ns=(member.mtime_ns, member.mtime_ns), dir_fd=parent_fd,
                     follow_symlinks=False)
            self.stats.symlinks += 1
        else:
            self._write_file(tar, member, parent_fd, name, mode)

    def _write_file(self, tar: TarReader, member: Member, parent_fd: int,
                    name: str, mode: int) -> None:
        if self.stats.bytes + tar.header_bytes + member.size > self.max_bytes:
            raise self._too_big(member)
        sparse = None if member.sparse_size is None else _sparse_start(tar, member)
        # Created with its final mode (the staging directory is private until the end), so
        # that fchmod is needed only when the umask takes bits away: one system call less.
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode,
                     dir_fd=parent_fd)
        try:
            if sparse is None:
                left = member.size  # not a last read_body to learn the end: a call a file
                while left and (chunk := tar.read_body(COPY_SIZE)):
                    write_all(fd, chunk)
                    left -= len(chunk)
            else:
                _write_sparse(tar, member, fd, *sparse)
            if self._umask is None or mode & self._umask:
                os.fchmod(fd, mode)
            # On the fd: no second path lookup. Exact nanoseconds; atime as mtime.
            os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
        except ArchiveError as exc:
            raise _refuse(member.name, "the archive ends inside its body") from exc
        finally:
            os.close(fd)
        self.stats.files += 1
        self.stats.bytes += member.size

    def finish(self) -> None:
        """Directory modes and times last: writing into a directory moves its mtime. Deepest
        first, so that a parent that ends up read-only can still be walked through."""
        parents = _OpenDirectories(self.root)
        try:
            for rel, mtime_ns, mode in sorted(self._directories,
                                              key=lambda item: item[0].count("/"), reverse=True):
                parent, _, name = rel.rpartition("/")
                try:
                    parent_fd = parents.get(parent, create=False)
                    if mode is None:  # the usual directory: its mode is final already
                        # One system call, not four; never through a symlink.
                        os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=parent_fd,
                                 follow_symlinks=False)
                        continue
                    fd = os.open(name, DIRECTORY_FLAGS, dir_fd=parent_fd)
                except OSError as exc:
                    raise self._directory_error(exc, rel) from exc
                try:
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
        finally:
            parents.close()


class _OpenDirectories:
    """Open fds of the directories members went into lately, by path under root.

    Members come grouped by directory, and a directory's members follow it: keeping a few
    directories open saves a walk of open() calls from the root per file, and a new directory
    is reached from its parent with one. Safe: only this writer creates entries under root,
    every component is opened with O_NOFOLLOW, and a member can never replace a directory
    already made (duplicates are refused).
    """

    def __init__(self, root: int) -> None:
        self._root = root  # the caller's fd
        self._fds: OrderedDict[str, int] = OrderedDict()

    def get(self, rel: str, create: bool) -> int:
        """An fd of root/rel ("" for root itself), made first when `create`."""
        fd = self._fds.get(rel)
        if fd is not None:
            return fd
        parts = rel.split("/") if rel else []
        base = self._root
        start = 0
        for depth in range(len(parts) - 1, 0, -1):  # the deepest ancestor open already
            ancestor = "/".join(parts[:depth])
            if ancestor in self._fds:
                self._fds.move_to_end(ancestor)
                base, start = self._fds[ancestor], depth
                break
        fd = open_directory_beneath(base, parts[start:], create)
        self._fds[rel] = fd
        if len(self._fds) > OPEN_DIRECTORIES:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _check_replaceable(parent_fd: int, name: str, target: Path, replace_unmarked: bool) -> None:
    """Refuses to go on when the target exists and this tool did not make it."""
    existing = lstat_at(name, parent_fd)
    if existing is None or replace_unmarked:
        return
    if stat.S_ISDIR(existing.st_mode):
        try:
            if is_marked(name, parent_fd):
                return
            why = "buildr-podman did not make it"
        except OSError as exc:
            why = f"its marks cannot be read ({exc.strerror})"
    else:
        why = "it is not a directory"
    raise ArchiveError(f"cannot replace {target} with the task's output: {why}, so it may be "
                       "yours; move it away, or choose an out_dir of its own")


def _replace(parent_fd: int, staging: str, name: str) -> None:
    """Puts the staged tree in place of the target with renames in their parent, so that the
    target is never partial."""
    chmod_directory_at(staging, parent_fd, 0o755)
    if lstat_at(name, parent_fd) is None:
        os.rename(staging, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        return
    trash = _scratch_dir(parent_fd, name, "old")
    trash_fd = os.open(trash, DIRECTORY_FLAGS, dir_fd=parent_fd)
    try:
        os.rename(name, "old", src_dir_fd=parent_fd, dst_dir_fd=trash_fd)
    finally:
        os.close(trash_fd)
    os.rename(staging, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    remove_tree_at(trash, parent_fd)
