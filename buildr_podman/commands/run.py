"""`buildr-podman run NAME...`: the named modules and their dependencies, in parallel up to -j."""

from __future__ import annotations

import argparse

from buildr_podman.commands.common import load
from buildr_podman.output import make_reporter
from buildr_podman.runner import run_tasks, select_tasks


def run(args: argparse.Namespace) -> int:
    pm, project = load(args)
    tasks = select_tasks(project, args.names)
    reporter = make_reporter(args.output, verbose=args.verbose)
    pm.register(reporter, name="reporter")
    try:
        report = run_tasks(pm, project, tasks, args.executor, jobs=args.jobs,
                           keep_going=args.keep_going, use_cache=args.cache)
    finally:
        close = getattr(reporter, "close", None)
        if close is not None:
            close()  # a live display must give the terminal back, whatever happened
    return report.exit_code
