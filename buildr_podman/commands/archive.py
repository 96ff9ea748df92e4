"""`buildr-podman archive list|extract FILE.tar.s2`: the host's own safe extraction, by hand."""

from __future__ import annotations

import argparse
from pathlib import Path

from buildr_podman.archive.extract import extract_tar_stream, list_tar_stream
from buildr_podman.archive.tarstream import Member
from buildr_podman.errors import ArchiveError
from buildr_podman.s2 import S2Reader


def run(args: argparse.Namespace) -> int:
    if args.archive_command == "extract":
        _check_destination(args.dest)
    try:
        source = open(args.file, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ArchiveError(f"cannot open {args.file}: {exc.strerror}") from exc
    with source, S2Reader(source) as reader:
        if args.archive_command == "list":
            for member in list_tar_stream(reader):
                print(_describe(member))
            return 0
        stats = extract_tar_stream(reader, args.dest)
    print(f"{stats.files} files, {stats.symlinks} symlinks, {stats.directories} directories "
          f"({stats.bytes} bytes) in {args.dest}")
    return 0


def _check_destination(dest: Path) -> None:
    """The extraction replaces its target whole (as a task's out dir is): by hand, a DEST that
    already holds something would be lost, so only a new or empty directory is accepted."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ArchiveError(f"{dest} exists and is not a directory: name a new directory")
    try:
        holds = dest.is_dir() and any(dest.iterdir())
    except OSError as exc:
        raise ArchiveError(f"cannot look into {dest}: {exc.strerror}") from exc
    why = "is not empty" if holds else "is the current directory" if (
        dest.resolve() == Path.cwd().resolve()) else None
    if why:
        raise ArchiveError(f"{dest} {why}: the extraction replaces its target whole, so name "
                           "a new or empty directory")


def _describe(member: Member) -> str:
    kind = "d" if member.isdir() else "l" if member.issym() else "-" if member.isreg() else "?"
    line = f"{kind}{member.mode & 0o7777:04o} {member.size:>12} {member.name}"
    return f"{line} -> {member.linkname}" if member.issym() else line
