"""Finds exactly what a task changed in the workspace: inotify events, checked against a snapshot.

Only directories that existed before the task are watched. A directory created (or moved in)
during the task is new as a whole, so it is marked dirty and scanned once when the task ends
instead of being watched: no race with files created in it before a watch could exist, and no
watch is spent on it. Anything that makes the events incomplete (queue overflow, watch limit,
a lost watch) marks the affected subtree dirty too, and a dirty subtree is compared against the
snapshot taken before the task. The result is the same either way; `ChangeSet.tracking` says
which path was taken and why (watchdog#654 is the bug this avoids: overflow silently lost).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import inotify_simple
from inotify_simple import flags

from buildr_podman.agent import long_paths
from buildr_podman.agent.access import ACCESS
from buildr_podman.agent.snapshot import (
    Baseline,
    BeforeState,
    Entry,
    Snapshot,
    changed,
    entry_of,
    walk,
    walk_directories,
    walk_kinds,
)

__all__ = ["ChangeResolution", "ChangeSet", "ChangeTracker", "TrackerLimits"]

# inotify_simple finds libc with ctypes.util.find_library("c"), which runs `ldconfig -p` in a
# child process: a fork of the threaded agent and ~8 ms of every task. The C library this
# process already has is the one it wants.
if inotify_simple._libc is None:  # noqa: SLF001 - its lazily set module global, set first
    inotify_simple._libc = ctypes.CDLL(None, use_errno=True)  # noqa: SLF001

WATCH_MASK = (flags.CREATE | flags.MODIFY | flags.CLOSE_WRITE | flags.ATTRIB | flags.MOVED_FROM
              | flags.MOVED_TO | flags.DELETE | flags.DELETE_SELF | flags.MOVE_SELF
              | flags.DONT_FOLLOW | flags.EXCL_UNLINK | flags.ONLYDIR)
COALESCE_SECONDS = 0.005
DIR_STRUCTURE = flags.CREATE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE
# What a task may return: a new one of these always comes back (devices, FIFOs, sockets never).
RETURNED_KINDS = frozenset((stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK))
# Events that say a file's bytes may differ: it was written, or another file took its name.
# Such a file is compared by content whatever its size and mtime (`touch -r`, `cp -p`, `tar x`
# and `rsync -t` put the old mtime back on new bytes).
WRITTEN = flags.MODIFY | flags.CLOSE_WRITE | flags.CREATE | flags.MOVED_TO


@dataclass
class ChangeSet:
    """The outcome of tracking: paths relative to the workspace."""

    #: files, symlinks, and directories that are new or whose mode changed
    returned: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  #: existed before, gone now
    tracking: str = "inotify"  #: "inotify", or "rescan: <why>"
    watched_directories: int = 0
    setup_seconds: float = 0.0
    resolve_seconds: float = 0.0


class ChangeResolution:
    """The change set, found while it is iterated: each returned path comes as soon as it is
    known, so that the packer starts sending while later directories are still being scanned
    (20,000 new files take ~0.15 s to resolve). `finish()` completes the change set, also
    after an iteration that stopped early, and returns it; the time spent resolving, not the
    time the consumer took between paths, is its resolve_seconds."""

    def __init__(self, paths: Iterator[str], changes: ChangeSet, seconds: float) -> None:
        self._paths = paths
        self._changes = changes
        self._seconds = seconds

    def __iter__(self) -> ChangeResolution:
        return self

    def __next__(self) -> str:
        started = time.monotonic()
        try:
            return next(self._paths)
        finally:
            self._seconds += time.monotonic() - started

    def finish(self) -> ChangeSet:
        for _ in self:
            pass
        self._changes.returned.sort()
        self._changes.deleted.sort()
        self._changes.resolve_seconds = self._seconds
        return self._changes


@dataclass(frozen=True)
class TrackerLimits:
    """Knobs that let tests force the safety nets in a real container.

    max_watches: behave as if the kernel's watch limit were reached after this many watches.
    reader_delay: seconds the reader waits before its first read, so that a burst of events
    overflows the kernel queue for real.
    """

    max_watches: int | None = None
    reader_delay: float = 0.0

    @classmethod
    def from_environment(cls, env: dict[str, str] | os._Environ[str]) -> TrackerLimits:
        watches = env.get("BUILDR_AGENT_MAX_WATCHES")
        return cls(max_watches=int(watches) if watches else None,
                   reader_delay=float(env.get("BUILDR_AGENT_READER_DELAY", "0") or 0))


class ChangeTracker:
    """Watches a workspace from `start()` to `stop()` and then says what changed."""

    def __init__(self, root: str, baseline: str | list[str] | None = None,
                 limits: TrackerLimits | None = None) -> None:
        self.root = os.path.abspath(root)
        self.limits = limits or TrackerLimits()
        # With a baseline (the original inputs, read-only) nothing needs reading up front and a
        # rewrite with the same bytes is told from a change; without one, a snapshot is taken.
        self._before: BeforeState = Baseline(baseline) if baseline else Snapshot({})
        self._inotify = inotify_simple.INotify()
        self._paths: dict[int, str] = {}  # watch descriptor -> directory relative to root
        self._touched: set[str] = set()
        self._written: set[str] = set()  # touched files whose bytes may have changed
        self._dirty: set[str] = set()
        self._reasons: list[str] = []
        self._setup_seconds = 0.0
        self._stopping = threading.Event()
        # Writing to this pipe wakes the reader at once on stop(); a poll timeout would make
        # every task wait for it.
        self._wake_read, self._wake_write = os.pipe()
        self._reader = threading.Thread(target=self._drain, name="inotify-reader", daemon=True)

    def start(self) -> None:
        """Watches every directory of the tree (and snapshots it when there is no baseline),
        before the task starts."""
        started = time.monotonic()
        self._watch("")
        if isinstance(self._before, Snapshot):
            for rel, entry in walk(self.root):
                self._before.entries[rel] = entry
                if entry.is_dir:
                    self._watch(rel)
        else:
            for rel in walk_directories(self.root):
                self._watch(rel)
        # Directories closed to the agent (see access.py) were opened up to be listed and
        # watched: the task finds them as they were (a watch, once added, stays).
        ACCESS.restore()
        # A dedicated reader drains the kernel queue so that bursts do not overflow it.
        self._reader.start()
        self._setup_seconds = time.monotonic() - started

    def stop(self) -> ChangeSet:
        """Stops watching, releases every watch, and resolves the change set."""
        return self.stop_resolving().finish()

    def stop_resolving(self) -> ChangeResolution:
        """Stops watching and releases every watch; the change set is then found as the
        returned resolution is iterated (see ChangeResolution)."""
        started = time.monotonic()
        self._stopping.set()
        os.write(self._wake_write, b"x")
        self._reader.join()
        os.close(self._wake_read)
        os.close(self._wake_write)
        self._read_events(timeout_ms=0)  # whatever arrived after the reader's last read
        watched = len(self._paths)
        self._inotify.close()
        tracking = "inotify" if not self._reasons else "rescan: " + "; ".join(self._reasons)
        changes = ChangeSet(tracking=tracking, watched_directories=watched,
                            setup_seconds=self._setup_seconds)
        return ChangeResolution(self._resolve_into(changes), changes,
                                time.monotonic() - started)

    # -- watching ----------------------------------------------------------------------------

    def _watch(self, rel_dir: str) -> None:
        if self.limits.max_watches is not None and len(self._paths) >= self.limits.max_watches:
            self._mark_dirty(rel_dir, "the inotify watch limit was reached")
            return
        path = os.path.join(self.root, rel_dir)
        try:
            try:
                wd = long_paths.retry_long(self._inotify.add_watch, path, WATCH_MASK)
            except PermissionError:
                if not ACCESS.open_path(path):
                    raise
                wd = long_paths.retry_long(self._inotify.add_watch, path, WATCH_MASK)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._mark_dirty(rel_dir, "the inotify watch limit was reached")
            elif exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                self._mark_dirty(rel_dir, f"a watch could not be added ({exc.strerror})")
            return
        self._paths[wd] = rel_dir

    def _drain(self) -> None:
        self._stopping.wait(self.limits.reader_delay)
        poller = select.poll()
        poller.register(self._inotify.fileno(), select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while not self._stopping.is_set():
            if any(fd == self._inotify.fileno() for fd, _ in poller.poll()):
                # Let a burst gather first: the kernel merges an event identical to the last
                # one still queued (each write() of a big file is an IN_MODIFY), so one read
                # then handles a few instead of thousands. Far below what fills the queue.
                self._stopping.wait(COALESCE_SECONDS)
                self._read_events(timeout_ms=0)

    def _read_events(self, timeout_ms: int) -> None:
        try:
            events = self._inotify.read(timeout=timeout_ms)
        except OSError as exc:
            self._mark_dirty("", f"reading inotify failed ({exc.strerror})")
            return
        for event in events:
            self._on_event(event)

    def _on_event(self, event: inotify_simple.Event) -> None:
        if event.mask & flags.Q_OVERFLOW:
            self._mark_dirty("", "the inotify queue overflowed")
            return
        parent = self._paths.get(event.wd)
        if parent is None:
            return
        if event.mask & flags.IGNORED:
            self._on_watch_lost(event.wd, parent)
            return
        if event.mask & (flags.DELETE_SELF | flags.MOVE_SELF):
            return  # the parent's DELETE / MOVED_FROM event covers it
        # An event about the watched directory itself (a chmod) has no name: it is the
        # directory's path, never "dir/".
        rel = f"{parent}/{event.name}" if parent and event.name else parent or event.name
        if not rel:
            return  # the workspace itself (a chmod of it): its mode is no output
        if event.mask & flags.ISDIR and event.mask & DIR_STRUCTURE:
            # A new or moved directory is compared as a whole when the task ends.
            self._dirty.add(rel)
        else:
            self._touched.add(rel)
            if event.mask & WRITTEN:
                self._written.add(rel)

    def _on_watch_lost(self, wd: int, rel_dir: str) -> None:
        del self._paths[wd]
        if long_paths.is_directory(os.path.join(self.root, rel_dir)) \
                and not self._stopping.is_set():
            # The directory still exists but its watch is gone: events may be missing.
            self._mark_dirty(rel_dir, "a watch was lost")

    def _mark_dirty(self, rel_dir: str, reason: str) -> None:
        self._dirty.add(rel_dir)
        if reason not in self._reasons:
            self._reasons.append(reason)

    # -- resolving ---------------------------------------------------------------------------

    def _resolve_into(self, changes: ChangeSet) -> Iterator[str]:
        """Fills changes.returned and .deleted, yielding each returned path as it is found.
        Dirty subtrees do not overlap (outermost only), and touched paths inside them are left
        to their scan, so each path is classified once."""
        dirty = set(_outermost(self._dirty))
        for rel in sorted(dirty):
            if rel and self._before.get(rel) is None:
                yield from self._new_tree(rel, changes)
            else:
                yield from self._classify(self._scan_dirty(rel), changes)
        touched = {rel: self._entry_now(rel)
                   for rel in self._touched if not _inside_any(rel, dirty)}
        yield from self._classify(touched, changes)

    def _entry_now(self, rel: str) -> Entry | None:
        path = os.path.join(self.root, rel)
        try:
            return entry_of(path)
        except PermissionError as exc:
            ACCESS.problem(path, exc)
            return None  # unknown: _classify says nothing about it

    def _classify(self, current: dict[str, Entry | None], changes: ChangeSet) -> Iterator[str]:
        for rel, now in sorted(current.items()):
            before = self._before.get(rel)
            if now is None:
                if before is not None and not ACCESS.unknown(rel):
                    changes.deleted.append(rel)
            elif self._returns(rel, before, now):
                changes.returned.append(rel)
                yield rel

    def _new_tree(self, rel_dir: str, changes: ChangeSet) -> Iterator[str]:
        """A dirty directory that did not exist before (the usual one: made by the task). Every
        path below it is new too, so a path's type alone decides whether it comes back, and
        nothing is looked up in the baseline or compared; and each path is yielded as the walk
        finds it (see walk_kinds). 20,000 new files resolve in ~70 ms instead of ~100, in the
        thread that packs them, the first of them at once."""
        now = entry_of(os.path.join(self.root, rel_dir))
        if now is not None and stat.S_IFMT(now.mode) in RETURNED_KINDS:
            changes.returned.append(rel_dir)
            yield rel_dir
        for rel, kind in walk_kinds(self.root, rel_dir):
            if kind in RETURNED_KINDS:
                changes.returned.append(rel)
                yield rel

    def _scan_dirty(self, rel_dir: str) -> dict[str, Entry | None]:
        """Every path below rel_dir that exists now or existed before (None = gone)."""
        found: dict[str, Entry | None] = dict.fromkeys(self._before.under(rel_dir))
        found.update(walk(self.root, rel_dir))
        if rel_dir:
            found[rel_dir] = entry_of(os.path.join(self.root, rel_dir))
        return found

    def _returns(self, rel: str, before: Entry | None, now: Entry) -> bool:
        if stat.S_ISDIR(now.mode):
            # A directory the task made, or whose mode it changed, comes back, empty or not:
            # its files would imply it, but not its mode or mtime. Its contents are judged on
            # their own; changed() ignores a directory's mtime, which any new entry moves.
            return changed(before, now)
        if not (stat.S_ISREG(now.mode) or stat.S_ISLNK(now.mode)):
            return False
        path = os.path.join(self.root, rel)
        return changed(before, now, lambda: self._before.same_content(rel, path),
                       written=rel in self._written)


def _outermost(paths: set[str]) -> list[str]:
    """The paths not inside another one of them ("" contains everything)."""
    if "" in paths:
        return [""]
    return sorted(path for path in paths if not _inside_any(path, paths, strictly=True))


def _inside_any(rel: str, dirs: set[str] | list[str], strictly: bool = False) -> bool:
    """Whether rel is one of dirs (unless strictly) or lies below one of them."""
    if "" in dirs or (not strictly and rel in dirs):
        return True
    parts = rel.split("/")
    return any("/".join(parts[:i]) in dirs for i in range(1, len(parts)))
