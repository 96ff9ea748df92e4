"""The local task cache: REAPI's layout in a directory, bounded, safe to share and to kill.

    <root>/ac/<action hash>           a serialized REAPI ActionResult (the value of a key)
    <root>/cas/<2 hex>/<hash>         blobs by SHA-256: change-set archives, output, the
                                      Action, Command and Directory messages of each key
    <root>/refs/<project>/<task>      the last key stored for a task (to explain a miss)
    <root>/tmp/                       files being written

Every file is written under tmp/ and renamed into place, blobs before the ActionResult that
names them, so a kill at any moment leaves either no entry or a whole one, and concurrent
runs storing the same key each rename a whole file over the other's. Reading verifies every
blob against its digest and keeps it open: a damaged entry is a miss with a warning, never a
wrong output, and an eviction by another run cannot pull a blob away mid-extraction.

Least recently used first: a hit touches the entry and its blobs; storing evicts the oldest
files until the store is under its bound again. An entry whose blob was evicted is a miss.

Knowing whether the store is over its bound takes a walk that stats every file: ~0.45 s for
30,000 files (10,000 entries), on every task that ran. So <root>/usage keeps the bytes the
last walk counted, and each entry stored adds what it wrote: the walk happens only when that
sum passes the bound, or when the count is a day old. Two runs storing at the same moment may
each miss the other's addition: the sum runs low by that much until the next walk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from google.protobuf.message import DecodeError

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.atomic_file import write_atomically
from buildr_podman.cache.tree import Digest, digest_of, proto_digest

__all__ = ["DEFAULT_MAX_BYTES", "CorruptEntry", "Entry", "Store", "StoreStats"]

DEFAULT_MAX_BYTES = 10 << 30
RUNS_KEPT = 100  # runs.log lines kept (for `buildr-podman cache`)
EVICT_TO = 0.9  # eviction stops at this share of the bound: not one eviction every store
USAGE = "usage"  # <root>/usage: "<bytes> <time of the walk that counted them>"
RECOUNT_SECONDS = 24 * 3600  # the usage is walked again at least this often
READ_SIZE = 1 << 20
#: the OutputFile paths of a buildr-podman ActionResult
CHANGES, DELETED, OUTCOME = "buildr/changes.tar", "buildr/deleted-paths", "buildr/outcome.json"


class CorruptEntry(Exception):
    """A stored entry does not match its digests; the message says which part."""


@dataclass
class Entry:
    """A verified hit: the ActionResult and its blobs, open for reading (close() them)."""

    result: re_pb2.ActionResult
    blobs: dict[str, BinaryIO] = field(default_factory=dict)

    def blob(self, path: str) -> BinaryIO | None:
        """The open blob of an output file, at its start; None if the result has none."""
        file = self.blobs.get(path)
        if file is not None:
            file.seek(0)
        return file

    def read(self, path: str) -> bytes:
        file = self.blob(path)
        return file.read() if file is not None else b""

    def close(self) -> None:
        for file in self.blobs.values():
            file.close()
        self.blobs.clear()


@dataclass
class StoreStats:
    entries: int
    bytes: int


class Store:
    """One directory of the cache (cache_root()/task-cache by default), bounded to max_bytes."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._written = 0  # bytes stored since the last put_result added them to the usage
        self._usage_lock = threading.Lock()

    # -- paths -------------------------------------------------------------------------------

    def _ac(self, action_hash: str) -> Path:
        return self.root / "ac" / action_hash

    def _cas(self, blob_hash: str) -> Path:
        return self.root / "cas" / blob_hash[:2] / blob_hash

    def _ref(self, project: str, task: str) -> Path:
        return self.root / "refs" / project / task

    # -- writing -----------------------------------------------------------------------------

    def put_blob(self, data: bytes) -> Digest:
        digest = digest_of(data)
        self._count_written(self._put_file(self._cas(digest[0]), data))
        return digest

    def put_blob_file(self, path: Path) -> Digest:
        """Stores the file at path (its content, moved in: the caller's temporary file)."""
        sha = hashlib.sha256()
        size = 0
        with open(path, "rb") as file:
            while chunk := file.read(READ_SIZE):
                sha.update(chunk)
                size += len(chunk)
        target = self._cas(sha.hexdigest())
        if target.exists():
            _touch(target)
            path.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            self._count_written(size)
        return sha.hexdigest(), size

    def put_result(self, action_hash: str, result: re_pb2.ActionResult) -> None:
        """Stores the value of a key: last, once every blob it names is in place."""
        self._count_written(self._put_file(
            self._ac(action_hash), result.SerializeToString(deterministic=True), replace=True))
        self._keep_bound()

    def set_ref(self, project: str, task: str, action_hash: str) -> None:
        self._put_file(self._ref(project, task), action_hash.encode(), replace=True)

    def ref(self, project: str, task: str) -> str | None:
        try:
            return self._ref(project, task).read_text().strip() or None
        except OSError:
            return None

    def temporary_file(self) -> Path:
        """A new empty file on the store's file system, for a blob being built."""
        directory = self.root / "tmp"
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix="blob-")
        os.close(fd)
        return Path(name)

    def _put_file(self, target: Path, data: bytes, replace: bool = False) -> int:
        """Writes target whole (or only touches it when it exists and not `replace`); the
        bytes written."""
        if not replace and target.exists():
            _touch(target)
            return 0
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary_dir = self.root / "tmp"
        temporary_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(target, data, temporary_dir=temporary_dir)  # tmp/: swept if killed
        return len(data)

    # -- reading -----------------------------------------------------------------------------

    def get(self, action_hash: str) -> Entry | None:
        """The verified entry of a key, or None on a miss. Raises CorruptEntry (after removing
        the entry) when what is stored does not match its digests."""
        path = self._ac(action_hash)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            result = re_pb2.ActionResult.FromString(data)
        except DecodeError as exc:
            self._drop(path)
            raise CorruptEntry(f"entry {action_hash[:12]} cannot be read ({exc})") from exc
        try:
            entry = self.open(result)
        except FileNotFoundError:
            self._drop(path)  # a blob was evicted: the entry is gone too
            return None
        except CorruptEntry as exc:
            self._drop(path)
            raise CorruptEntry(f"entry {action_hash[:12]}: {exc}") from exc
        _touch(path)
        return entry

    def open(self, result: re_pb2.ActionResult) -> Entry:
        """`result` with its blobs, verified and open: a stored entry, or a remote execution's
        result (a failure is never stored under its key). Raises FileNotFoundError (a blob is
        not here), CorruptEntry."""
        entry = Entry(result)
        try:
            for output in result.output_files:
                entry.blobs[output.path] = self._open_verified(output.digest)
            for name, digest in (("stdout", result.stdout_digest),
                                 ("stderr", result.stderr_digest)):
                if digest.hash:
                    entry.blobs[name] = self._open_verified(digest)
        except BaseException:
            entry.close()
            raise
        return entry

    def has_blob(self, blob_hash: str) -> bool:
        """Whether the blob is here (unverified: get() verifies it before a hit uses it)."""
        return self._cas(blob_hash).exists()

    def blob_path(self, blob_hash: str) -> Path:
        """Where a blob is (to send it elsewhere); it may be gone, as eviction goes."""
        return self._cas(blob_hash)

    def get_blob(self, blob_hash: str) -> bytes | None:
        """A blob's bytes if it is here and intact (for explaining a miss), else None."""
        try:
            data = self._cas(blob_hash).read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == blob_hash else None

    def _open_verified(self, digest: re_pb2.Digest) -> BinaryIO:
        path = self._cas(digest.hash)
        file = open(path, "rb")  # handed to the Entry, which closes it
        try:
            sha = hashlib.sha256()
            size = 0
            while chunk := file.read(READ_SIZE):
                sha.update(chunk)
                size += len(chunk)
            if sha.hexdigest() != digest.hash or size != digest.size_bytes:
                raise CorruptEntry(f"blob {digest.hash[:12]} does not match its digest")
        except BaseException:
            file.close()
            raise
        _touch(path)
        return file

    def _drop(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()

    # -- size --------------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        entries = sum(1 for _ in self._files("ac"))
        size = sum(st.st_size for _, st in self._stored())
        return StoreStats(entries, size)

    def evict(self) -> int:
        """Removes the least recently used files until the store is under EVICT_TO of its
        bound (a walk of the whole store); returns how many. Another run evicting at the same
        time only makes some unlinks find nothing."""
        with self._usage_lock:
            self._written = 0  # the walk counts what was written
            return self._walk_and_evict()

    def _walk_and_evict(self) -> int:
        counted_at = time.time()
        files = sorted(self._stored(), key=lambda item: item[1].st_mtime_ns)
        total = sum(st.st_size for _, st in files)
        removed = 0
        if total > self.max_bytes:
            for path, st in files:
                if total <= self.max_bytes * EVICT_TO:
                    break
                self._drop(path)
                total -= st.st_size
                removed += 1
        self._write_usage(total, counted_at)
        return removed

    def _keep_bound(self) -> None:
        """Adds what was stored since the last call to the usage; walks the store (evict)
        only when the sum may be past the bound, or was last counted long ago."""
        with self._usage_lock:  # the run's worker threads store at once: no addition lost
            written, self._written = self._written, 0
            usage = self._read_usage()
            if usage is not None:
                total, counted_at = usage[0] + written, usage[1]
                if total <= self.max_bytes and abs(time.time() - counted_at) < RECOUNT_SECONDS:
                    self._write_usage(total, counted_at)
                    return
            self._walk_and_evict()

    def _count_written(self, size: int) -> None:
        with self._usage_lock:
            self._written += size

    def _read_usage(self) -> tuple[int, float] | None:
        """(bytes, when they were counted) as last written; None if missing or damaged."""
        try:
            total, counted_at = (self.root / USAGE).read_text().split()
            return int(total), float(counted_at)
        except (OSError, ValueError):
            return None

    def _write_usage(self, total: int, counted_at: float) -> None:
        with contextlib.suppress(OSError):  # a usage not written is counted by the next walk
            self._put_file(self.root / USAGE, f"{total} {int(counted_at)}\n".encode(),
                           replace=True)

    def clear(self) -> int:
        """Empties the store; returns the bytes it held."""
        freed = 0
        for path, st in list(self._stored()):
            self._drop(path)
            freed += st.st_size
        for name in ("runs.log", USAGE):
            with contextlib.suppress(OSError):
                (self.root / name).unlink()
        for name in ("refs", "tmp"):
            for directory, _, files in os.walk(self.root / name, topdown=False):
                for file in files:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(directory, file))
        return freed

    def _stored(self) -> Iterator[tuple[Path, os.stat_result]]:
        for kind in ("ac", "cas"):
            for path in self._files(kind):
                with contextlib.suppress(FileNotFoundError):
                    yield path, path.stat()

    def _files(self, kind: str) -> Iterator[Path]:
        for directory, _, files in os.walk(self.root / kind):
            for name in files:
                yield Path(directory, name)

    # -- the runs' hit rates -----------------------------------------------------------------

    def log_run(self, counts: dict[str, int]) -> None:
        """Appends one run's lookups to runs.log (one short line: one append is atomic);
        keeps the last RUNS_KEPT lines once it grows past twice that."""
        path = self.root / "runs.log"
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": round(time.time()), **counts}) + "\n"
        with open(path, "a", encoding="utf-8") as file:
            file.write(line)
        lines = self.runs(2 * RUNS_KEPT + 1)
        if len(lines) > 2 * RUNS_KEPT:
            self._put_file(path, "".join(json.dumps(r) + "\n" for r in lines[-RUNS_KEPT:])
                           .encode(), replace=True)

    def runs(self, last: int = 10) -> list[dict[str, int]]:
        """The lookups of the last runs, oldest first (damaged lines skipped)."""
        try:
            text = (self.root / "runs.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines()[-last:]:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found

    # -- housekeeping ------------------------------------------------------------------------

    def sweep_temporary(self, older_than: float = 3600.0) -> None:
        """Removes what killed runs left in tmp/ (an hour old: a live run's file is newer)."""
        now = time.time()
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root / "tmp") as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > older_than:
                        os.unlink(entry.path)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def output_file(path: str, digest: Digest) -> re_pb2.OutputFile:
    return re_pb2.OutputFile(path=path, digest=proto_digest(digest))
