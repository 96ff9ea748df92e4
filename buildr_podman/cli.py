"""The `buildr-podman` command line: parses arguments, runs a command, maps errors to exit codes."""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Sequence
from pathlib import Path

from buildr_podman import __version__
from buildr_podman.errors import BuildrError, ConfigError

__all__ = ["ExitCode", "main"]


class ExitCode(enum.IntEnum):
    OK = 0  #: every task succeeded
    TASK_FAILED = 1  #: a task failed, or the backend could not run it
    USAGE = 2  #: bad arguments or configuration
    INTERRUPTED = 130  #: Ctrl-C


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buildr-podman", description="Run build tasks in rootless Podman pods.")
    parser.add_argument("--version", action="version", version=f"buildr-podman {__version__}")
    parser.add_argument("-C", dest="directory", type=Path, default=Path.cwd(),
                        help="start looking for .buildr/ in DIR instead of the current directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="say more")
    parser.add_argument("-p", dest="plugins", action="append", default=[], metavar="MODULE",
                        help="load a plugin module (repeatable)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("list", help="list the tasks")
    run = commands.add_parser("run", help="run tasks")
    run.add_argument("names", nargs="+", metavar="TASK")
    run.add_argument("--executor", default="podman", help="executor backend (default: podman)")
    commands.add_parser("plugins", help="list loaded plugins and their executors")
    archive = commands.add_parser("archive", help="inspect or extract a .tar.s2 archive")
    archive_commands = archive.add_subparsers(dest="archive_command", metavar="ACTION",
                                              required=True)
    archive_list = archive_commands.add_parser("list", help="list the members")
    archive_list.add_argument("file", type=Path)
    archive_extract = archive_commands.add_parser("extract", help="extract safely into DEST")
    archive_extract.add_argument("file", type=Path)
    archive_extract.add_argument("dest", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        return _dispatch(args)
    except ConfigError as exc:
        _error(str(exc))
        return ExitCode.USAGE
    except BuildrError as exc:
        _error(str(exc))
        return ExitCode.TASK_FAILED
    except KeyboardInterrupt:
        _error("interrupted")
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a bug of ours: still one line, the traceback only with -v
        if args.verbose:
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback "
               "and report it)")
        return ExitCode.TASK_FAILED


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "archive":
        from buildr_podman.commands import archive

        return archive.run(args)
    if args.command == "plugins":
        from buildr_podman.commands import plugins

        return plugins.run(args)
    from buildr_podman.commands import tasks

    return tasks.run(args)


def _error(message: str) -> None:
    print(f"buildr-podman: error: {message}", file=sys.stderr)
