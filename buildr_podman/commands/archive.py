"""`buildr-podman archive list|extract FILE.tar.s2`: the host's own safe extraction, by hand."""

from __future__ import annotations

import argparse

from buildr_podman.archive.extract import extract_tar_stream, list_tar_stream
from buildr_podman.archive.tarstream import Member
from buildr_podman.errors import ArchiveError
from buildr_podman.s2 import S2Reader


def run(args: argparse.Namespace) -> int:
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


def _describe(member: Member) -> str:
    kind = "d" if member.isdir() else "l" if member.issym() else "-" if member.isreg() else "?"
    line = f"{kind}{member.mode & 0o7777:04o} {member.size:>12} {member.name}"
    return f"{line} -> {member.linkname}" if member.issym() else line
