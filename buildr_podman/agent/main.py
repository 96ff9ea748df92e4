"""Command line of the agent: `buildr-agent --version` and `buildr-agent serve --socket PATH`."""

from __future__ import annotations

import argparse
import os
import sys

from buildr_podman import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="buildr-agent")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command")
    serve_cmd = commands.add_parser("serve", help="serve gRPC on a unix socket")
    serve_cmd.add_argument("--socket", required=True, help="path of the unix socket to create")
    args = parser.parse_args(argv)
    if args.version:
        print(f"buildr-agent {__version__}")
        return 0
    if args.command == "serve":
        from buildr_podman.agent.deferred_imports import defer_unused_modules
        from buildr_podman.agent.hardening import forbid_ptrace

        defer_unused_modules()  # before grpc is imported (~25 ms of the agent's start)
        from buildr_podman.agent.service import serve

        forbid_ptrace()  # before any request (and its secrets) can reach this process
        code = serve(args.socket)
        # The agent is PID 1 of its container, and the host removes the pod as soon as it has
        # exited: tearing down grpc's threads and the interpreter only delays that. There is
        # nothing to save but what is buffered for stdout and stderr.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    parser.print_usage(sys.stderr)
    return 2
