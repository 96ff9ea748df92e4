"""The `buildr-podman` command line: parses arguments, runs a command, maps errors to exit codes.

Start-up stays lean: each command's module (and rich, podman, grpc) is imported only when
that command runs.
"""

from __future__ import annotations

import argparse
import atexit
import enum
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from buildr_podman import __version__
from buildr_podman.errors import BuildrError
from buildr_podman.jobs import default_jobs

__all__ = ["ExitCode", "build_parser", "command", "main"]

OUTPUT_MODES = ("auto", "rich", "plain", "json")  # kept here: importing output/ costs time
EPILOG = """\
examples:
  buildr-podman list                      the modules of this repository
  buildr-podman run hello                 run hello (and what it depends on)
  buildr-podman run -j 4 -k test lint     up to 4 at once, keep going past failures
  buildr-podman run --output json app     one JSON event per line, for tools
  buildr-podman doctor                    check this machine, with a fix for each problem
  buildr-podman clean                     remove pods, sockets and builds left behind
  buildr-podman plugins script            what the "script" module type takes
  buildr-podman worker --server unix:S    run a REAPI cluster's actions here (Bots API)

global options (-C, -v, -p) may also come after the command: buildr-podman run -v hello

exit codes: 0 ok, 1 a task failed, 2 usage or configuration error, 3 this machine cannot run
tasks (Podman, the agent, a plugin: buildr-podman doctor says why), 130 interrupted
"""


class ExitCode(enum.IntEnum):
    """The exit codes; each BuildrError class carries its own (errors.py has the table)."""

    OK = 0  #: every task succeeded
    TASK_FAILED = 1  #: a task failed (also: an archive command met a broken archive)
    USAGE = 2  #: bad arguments or configuration (UsageError, ConfigError)
    ENVIRONMENT = 3  #: Podman, the agent or a plugin cannot work here (EnvironmentProblem)
    INTERRUPTED = 130  #: Ctrl-C (128 + SIGINT)
    TERMINATED = 143  #: SIGTERM (128 + SIGTERM)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _add_global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """-C, -v and -p, before the command or after it. After it they default to nothing at all
    (SUPPRESS), so that a command's parser never resets what was given before the command."""
    def default(value: object) -> object:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument("-C", dest="directory", type=Path, default=default(Path.cwd()),
                        help="start looking for .buildr/ in DIR instead of the current directory")
    parser.add_argument("-v", "--verbose", action="store_true", default=default(False),
                        help="say more")
    parser.add_argument("-p", dest="plugins_after" if after_command else "plugins",
                        action="append", default=default([]), metavar="MODULE",
                        help="load a plugin module (repeatable), to try one out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buildr-podman", description="Run build tasks in rootless Podman pods.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"buildr-podman {__version__}")
    _add_global_options(parser, after_command=False)
    after = argparse.ArgumentParser(add_help=False)
    _add_global_options(after, after_command=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Every command accepts the global options too (parents=[after]).
    commands.add_parser("list", parents=[after],
                        help="list the modules (tasks, builds, tools, packages)")
    _add_run(commands, after)
    plugins = commands.add_parser("plugins", parents=[after],
                                  help="list loaded plugins, module types, executors")
    plugins.add_argument("type", nargs="?", metavar="TYPE",
                         help="show one module type: its attributes, defaults and examples")
    doctor = commands.add_parser("doctor", parents=[after],
                                 help="check this machine and say how to fix problems")
    doctor.add_argument("--image", help="test container image (default: one the project uses, "
                                        "or localhost/buildr-busybox:latest)")
    clean = commands.add_parser("clean", parents=[after],
                                help="remove pods, sockets and agent builds left behind")
    clean.add_argument("--all", action="store_true",
                       help="also what running buildr-podman processes use, the current "
                            "agent build (rebuilt on the next run) and parsed configuration")
    clean.add_argument("--cache", action="store_true",
                       help="also empty the task cache (every task runs again)")
    commands.add_parser("cache", parents=[after],
                        help="show the task cache: entries, size, bound")
    _add_archive(commands, after)
    _add_worker(commands, after)
    return parser


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             after: argparse.ArgumentParser) -> None:
    run = commands.add_parser("run", parents=[after],
                              help="run modules, their dependencies first")
    run.add_argument("names", nargs="*", metavar="NAME",
                     help="modules to run (none: those of buildr { default = [...] })")
    run.add_argument("-j", "--jobs", type=_positive, default=default_jobs(), metavar="N",
                     help="run up to N modules at once (default: the number of cores, "
                          f"{default_jobs()} here)")
    run.add_argument("-k", "--keep-going", action="store_true",
                     help="after a failure, still run what does not depend on it")
    run.add_argument("--output", choices=OUTPUT_MODES, default="auto",
                     help="auto (rich on a terminal, else plain), rich, plain (logs and CI), "
                          "json (one event per line)")
    run.add_argument("--executor", default="podman", help="executor backend (default: podman)")
    run.add_argument("--no-cache", dest="cache", action="store_false",
                     help="run every task, even those the task cache holds (a success is "
                          "still stored)")
    run.add_argument("--remote", metavar="URL",
                     help="run the tasks on this REAPI server's workers, grpc://HOST:PORT or "
                          "unix:PATH (overrides buildr { remote { execution } }; the "
                          "instance_name stays the configured one)")


def _add_archive(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                 after: argparse.ArgumentParser) -> None:
    archive = commands.add_parser("archive", help="inspect or extract a .tar.s2 archive")
    archive_commands = archive.add_subparsers(dest="archive_command", metavar="ACTION",
                                              required=True)
    archive_list = archive_commands.add_parser("list", parents=[after], help="list the members")
    archive_list.add_argument("file", type=Path)
    archive_extract = archive_commands.add_parser("extract", parents=[after],
                                                  help="extract safely into DEST")
    archive_extract.add_argument("file", type=Path)
    archive_extract.add_argument("dest", type=Path)


def _add_worker(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                after: argparse.ArgumentParser) -> None:
    worker = commands.add_parser(
        "worker", parents=[after],
        help="run a REAPI cluster's actions (Remote Workers API) in rootless pods")
    worker.add_argument("--server", required=True, metavar="URL",
                        help="the scheduler and its CAS: grpc://HOST:PORT or unix:PATH")
    worker.add_argument("--instance", default="", metavar="NAME",
                        help="the REAPI instance name (default: the server's default, \"\")")
    worker.add_argument("-j", "--jobs", type=_positive, default=1, metavar="N",
                        help="run up to N leases at once (default: 1)")
    worker.add_argument("--name", metavar="NAME",
                        help="this worker's name on this machine, part of its stable bot id "
                             "(default: the first of 1, 2, ... no running worker holds)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    args.plugins += getattr(args, "plugins_after", [])
    try:
        return _dispatch(args)
    except BuildrError as exc:  # the one place an error becomes an exit code: its class's
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `buildr-podman list | head`: the reader left. Point stdout at /dev/null so that the
        # interpreter's final flush does not complain about the pipe too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.TASK_FAILED
    except Exception as exc:  # a bug of ours: still one line, the traceback only with -v
        if args.verbose:
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback "
               "and report it)")
        return ExitCode.TASK_FAILED


def command() -> NoReturn:
    """The `buildr-podman` program: main(), then a quick exit.

    By the time main() returns, every command has closed what it opened (pods, the API
    service, sockets: context managers). Tearing down the interpreter's modules afterwards
    still costs ~50 ms with grpc and podman-py loaded, a tenth of a no-op run: so the output
    is flushed, atexit handlers run (plugins may rely on them), and the process ends without
    the teardown.
    """
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # `buildr-podman list | head`: the reader left; nothing to say
        pass
    sys.stderr.flush()
    atexit._run_exitfuncs()  # the only way to run them without the rest of a normal exit
    os._exit(code)


COMMANDS = {
    "archive": "buildr_podman.commands.archive",
    "cache": "buildr_podman.commands.cache",
    "plugins": "buildr_podman.commands.plugins",
    "doctor": "buildr_podman.commands.doctor",
    "clean": "buildr_podman.commands.clean",
    "list": "buildr_podman.commands.listing",
    "run": "buildr_podman.commands.run",
    "worker": "buildr_podman.commands.worker",
}


def _dispatch(args: argparse.Namespace) -> int:
    import importlib

    return int(importlib.import_module(COMMANDS[args.command]).run(args))


def _error(message: str) -> None:
    print(f"buildr-podman: error: {message}", file=sys.stderr)
