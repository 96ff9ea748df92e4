"""A task's input tree as a REAPI Merkle tree, hashing only files whose stat changed.

Every directory becomes a REAPI `Directory` message (files, directories and symlinks, each
sorted by name) whose digest is the SHA-256 of its bytes, so the root digest changes when any
byte, name, mode (the permission bits are in `unix_mode`) or symlink target below changes, and
two machines with the same files compute the same digest. Mtimes are left out: a checkout or a
`touch` changes no content, and tasks are judged by what they read.

Hashing 20,000 files on every run would cost seconds; `StatCache` remembers each file's digest
by its directory, name and (size, mtime, inode, ctime), the way git's index does, and persists
that between runs. A file modified within the last RACY_SECONDS is never remembered: its mtime
could still be matched by a later write of the same size within the file system's time
resolution. Building the Directory messages costs more than the walk itself for a big tree, so
each directory's digest is remembered too, by a fingerprint of its listing (names, digests,
modes, symlink targets, subdirectories' digests).

An unchanged repository costs one lstat per file and little else: the walk looks files up by
name in their directory's table (no full path is built or hashed per file), and a fingerprint
is one marshal and one BLAKE2b per directory, in C.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
import time
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.atomic_file import write_atomically

__all__ = ["Digest", "StatCache", "Tree", "TreeBuilder", "digest_of"]

RACY_SECONDS = 2.0
FORMAT = "buildr-stat-cache-2"
PRUNE_SLACK = 100  # directories
READ_SIZE = 1 << 20
PERMISSION_BITS = 0o7777

#: (SHA-256 in lowercase hex, size in bytes): a REAPI Digest
Digest = tuple[str, int]


def digest_of(data: bytes) -> Digest:
    return hashlib.sha256(data).hexdigest(), len(data)


def proto_digest(digest: Digest) -> re_pb2.Digest:
    return re_pb2.Digest(hash=digest[0], size_bytes=digest[1])


class StatCache:
    """File digests by directory, name and stat, kept in one file between runs (None: memory
    only).

    Shared by every task of a run; saved once at its end. Concurrent runs each save their own
    view whole (write to a temporary file, then rename): the last one wins, and the loser's
    entries are simply hashed again next time.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        #: directory -> name -> (size, mtime_ns, inode, ctime_ns, hash); read by TreeBuilder's
        #: hot loop
        self.files: dict[str, dict[str, tuple[int, int, int, int, str]]] = {}
        self._directories: dict[str, tuple[str, int]] = {}  # fingerprint -> digest
        #: directory -> (mtime_ns, ctime_ns, inode, digest): an unchanged directory's digest
        self._paths: dict[str, tuple[int, int, int, tuple[str, int]]] = {}
        self._dirty = False
        self.hashed = 0  #: files read this run (for tests and the benchmark)
        #: what this run looked up: beyond twice that (and PRUNE_SLACK), the rest is dropped
        self.seen_directories: set[str] = set()
        self._seen_fingerprints: set[str] = set()
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        # marshal: loads 20,000 entries several times faster than json. The file is the user's
        # own, in their cache directory; any surprise in it (another Python's format, damage)
        # only means starting afresh.
        try:
            data = marshal.loads(path.read_bytes())
            if isinstance(data, tuple) and len(data) == 4 and data[0] == FORMAT:
                files, directories, paths = data[1], data[2], data[3]
                if isinstance(files, dict) and isinstance(directories, dict) \
                        and isinstance(paths, dict):
                    self.files, self._directories, self._paths = files, directories, paths
        except (OSError, ValueError, EOFError, TypeError):
            pass

    def listing(self, directory: str) -> dict[str, tuple[int, int, int, int, str]]:
        """The remembered files of a directory, by name (marked as looked up this run)."""
        self.seen_directories.add(directory)
        return self.files.get(directory) or {}

    def forget_missing(self, directory: str, present: Container[str]) -> None:
        """Drops the remembered files of `directory` that are not among `present` (deleted
        since, or no longer files)."""
        listing = self.files.get(directory)
        if listing is not None and any(name not in present for name in listing):
            self.files[directory] = {n: v for n, v in listing.items() if n in present}
            self._dirty = True

    def file_paths(self) -> list[str]:
        """Every remembered file's path (for tests)."""
        return [os.path.join(d, n) for d, names in self.files.items() for n in names]

    def file_digest(self, directory: str, name: str, st: os.stat_result) -> Digest:
        """The digest of the file `name` in `directory`, hashed only if its stat is not the
        remembered one."""
        signature = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        self.seen_directories.add(directory)
        listing = self.files.get(directory)
        known = listing.get(name) if listing is not None else None
        if known is not None and known[:4] == signature:
            return known[4], st.st_size
        digest = _hash_file(os.path.join(directory, name))
        self.hashed += 1
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_SECONDS * 1e9:
            self.files.setdefault(directory, {})[name] = (*signature, digest[0])
            self._dirty = True
        elif known is not None and listing is not None:
            del listing[name]
            self._dirty = True
        return digest

    def directory_by_path(self, directory: str, signature: tuple[int, int, int],
                          ) -> Digest | None:
        """The remembered digest of an unchanged directory whose own stat is `signature`
        (the caller checked its files and subdirectories)."""
        known = self._paths.get(directory)
        return known[3] if known is not None and known[:3] == signature else None

    def remember_directory_path(self, directory: str, signature: tuple[int, int, int],
                                digest: Digest) -> None:
        known = self._paths.get(directory)
        if known is None or known[:3] != signature or known[3] != digest:
            self._paths[directory] = (*signature, digest)
            self._dirty = True

    def directory_digest(self, fingerprint: str) -> Digest | None:
        self._seen_fingerprints.add(fingerprint)
        return self._directories.get(fingerprint)

    def remember_directory(self, fingerprint: str, digest: Digest) -> None:
        self._seen_fingerprints.add(fingerprint)
        if self._directories.get(fingerprint) != digest:
            self._directories[fingerprint] = digest
            self._dirty = True

    def save(self) -> None:
        """Writes the cache, first dropping what this run did not look up once the file holds
        more than twice that: removed directories and directory listings of the past go, while
        the entries of tasks that did not run this time mostly stay."""
        seen = self.seen_directories
        if len(self.files) > 2 * len(seen) + PRUNE_SLACK:
            self.files = {d: v for d, v in self.files.items() if d in seen}
            self._dirty = True
        if len(self._paths) > 2 * len(seen) + PRUNE_SLACK:
            self._paths = {d: v for d, v in self._paths.items() if d in seen}
            self._dirty = True
        if len(self._directories) > 2 * len(self._seen_fingerprints) + PRUNE_SLACK:
            self._directories = {f: d for f, d in self._directories.items()
                                 if f in self._seen_fingerprints}
            self._dirty = True
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, marshal.dumps(
            (FORMAT, self.files, self._directories, self._paths)))
        self._dirty = False


def _hash_file(path: str) -> Digest:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as file:
        while chunk := file.read(READ_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass
class Tree:
    """A directory as the task sees it: files (digest, mode), symlinks, subdirectories."""

    files: dict[str, tuple[Digest, int]] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    directories: dict[str, Tree] = field(default_factory=dict)
    #: the digest, known without building the message: the host directory it was walked
    #: from is unchanged since that digest was computed (TreeBuilder)
    known: Digest | None = field(default=None, compare=False, repr=False)
    #: the host directory it was walked from and that directory's (mtime, ctime, inode), if
    #: its digest may be remembered by them; None once anything is laid over it
    source: tuple[str, tuple[int, int, int]] | None = field(default=None, compare=False,
                                                            repr=False)

    def place(self, where: str, tree: Tree) -> None:
        """Lays `tree` over the directory at `where` ("" for this one), later wins per path."""
        node = self
        for part in [p for p in where.split("/") if p]:
            node.files.pop(part, None)
            node.symlinks.pop(part, None)
            node.known = node.source = None
            node = node.directories.setdefault(part, Tree())
        node.merge(tree)

    def merge(self, other: Tree) -> None:
        if not (self.files or self.symlinks or self.directories):
            self.known, self.source = other.known, other.source  # the same content
        else:
            self.known = self.source = None
        for name, entry in other.files.items():
            self.symlinks.pop(name, None)
            self.directories.pop(name, None)
            self.files[name] = entry
        for name, target in other.symlinks.items():
            self.files.pop(name, None)
            self.directories.pop(name, None)
            self.symlinks[name] = target
        for name, subtree in other.directories.items():
            self.files.pop(name, None)
            self.symlinks.pop(name, None)
            if name in self.directories:
                self.directories[name].merge(subtree)
            else:
                self.directories[name] = subtree


class TreeBuilder:
    """Walks host directories into Trees and turns Trees into REAPI digests."""

    def __init__(self, stat_cache: StatCache) -> None:
        self.stat_cache = stat_cache

    def walk(self, directory: str, skip: Iterable[str] = ()) -> Tree:
        """The tree of a host directory, symlinks never followed; `skip` are absolute paths
        left out (the out dir inside a mapped repository). Sockets, FIFOs and devices are
        left out, as the input copy leaves them out."""
        skipped: dict[str, set[str]] = {}  # directory -> names left out there
        for path in skip:
            skipped.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
        return self._walk(directory, skipped, os.lstat(directory))

    def _walk(self, directory: str, skip: dict[str, set[str]], own: os.stat_result) -> Tree:
        # The hot loop of an unchanged repository: one lstat a file (DirEntry.stat), one
        # lookup by name in the directory's table, no hashing, no path built, no call that is
        # not needed (20,000 files: ~2 µs each beside the lstat).
        tree = Tree()
        files, symlinks, directories = tree.files, tree.symlinks, tree.directories
        cache = self.stat_cache
        remembered = cache.listing(directory)
        skipped = skip.get(directory) if skip else None
        matched = 0
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if skipped and name in skipped:
                    continue
                st = entry.stat(follow_symlinks=False)
                mode = st.st_mode
                kind = mode & 0o170000
                if kind == stat.S_IFREG:
                    known = remembered.get(name)
                    if known is not None and known[0] == st.st_size \
                            and known[1] == st.st_mtime_ns and known[2] == st.st_ino \
                            and known[3] == st.st_ctime_ns:
                        files[name] = ((known[4], st.st_size), mode & PERMISSION_BITS)
                        matched += 1
                    else:
                        files[name] = (cache.file_digest(directory, name, st),
                                       mode & PERMISSION_BITS)
                elif kind == stat.S_IFDIR:
                    directories[name] = self._walk(entry.path, skip, st)
                elif kind == stat.S_IFLNK:
                    symlinks[name] = os.readlink(entry.path)
        if len(remembered) > matched:  # maybe files deleted since: forget them
            cache.forget_missing(directory, files)
        if not skipped:
            self._know(tree, directory, own, matched == len(files))
        return tree

    def _know(self, tree: Tree, directory: str, own: os.stat_result, all_matched: bool) -> None:
        """Sets tree.known when nothing in the directory changed since its digest was
        remembered: its own (mtime, ctime, inode) say no entry was added, removed, renamed or
        re-pointed (a symlink), every file's stat matched, every subdirectory is known. Sets
        tree.source when its digest may be remembered for a later run: all its files are
        remembered (none modified within RACY_SECONDS), nor is the directory itself."""
        signature = (own.st_mtime_ns, own.st_ctime_ns, own.st_ino)
        children_known = all(sub.known is not None for sub in tree.directories.values())
        if all_matched and children_known:
            known = self.stat_cache.directory_by_path(directory, signature)
            if known is not None:
                tree.known = known
                return
        racy = time.time_ns() - max(own.st_mtime_ns, own.st_ctime_ns) <= RACY_SECONDS * 1e9
        listing = self.stat_cache.files.get(directory) or {}
        if not racy and (all_matched or all(name in listing for name in tree.files)):
            tree.source = (directory, signature)

    def digest(self, tree: Tree, blobs: dict[str, bytes] | None = None) -> Digest:
        """The tree's REAPI Directory digest; with `blobs`, every Directory message of it is
        put there by its hash (what the store keeps to explain a later miss)."""
        if blobs is None and tree.known is not None:
            return tree.known  # an unchanged directory: nothing below is looked at again
        children = {name: self.digest(sub, blobs) for name, sub in tree.directories.items()}
        fingerprint = _fingerprint(tree, children)
        known = None if blobs is not None else self.stat_cache.directory_digest(fingerprint)
        if known is None:
            data = directory_message(tree, children).SerializeToString(deterministic=True)
            known = digest_of(data)
            if blobs is not None:
                blobs[known[0]] = data
            self.stat_cache.remember_directory(fingerprint, known)
        if tree.source is not None:
            self.stat_cache.remember_directory_path(*tree.source, known)
        return known


def directory_message(tree: Tree, children: dict[str, Digest]) -> re_pb2.Directory:
    """The REAPI Directory of `tree`, given its subdirectories' digests; sorted by name as
    REAPI requires (by UTF-8 bytes: names that are not UTF-8 keep their surrogate escapes)."""
    return re_pb2.Directory(
        files=[re_pb2.FileNode(name=name, digest=proto_digest(digest),
                               is_executable=bool(mode & 0o111),
                               node_properties=_mode_property(mode))
               for name, (digest, mode) in sorted(tree.files.items())],
        directories=[re_pb2.DirectoryNode(name=name, digest=proto_digest(digest))
                     for name, digest in sorted(children.items())],
        symlinks=[re_pb2.SymlinkNode(name=name, target=target)
                  for name, target in sorted(tree.symlinks.items())])


def _mode_property(mode: int) -> re_pb2.NodeProperties:
    properties = re_pb2.NodeProperties()
    properties.unix_mode.value = mode
    return properties


def _fingerprint(tree: Tree, children: dict[str, Digest]) -> str:
    """What the directory's message is made of, hashed: equal fingerprints, equal digests.
    marshal version 2 has no back-references, so equal listings give equal bytes."""
    listing = (sorted(tree.files.items()), sorted(tree.symlinks.items()),
               sorted(children.items()))
    return hashlib.blake2b(marshal.dumps(listing, 2), digest_size=16).hexdigest()
