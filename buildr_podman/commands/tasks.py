"""`buildr-podman list` and `buildr-podman run TASK...`."""

from __future__ import annotations

import argparse

from buildr_podman.config import find_root, load_project
from buildr_podman.plugins import make_plugin_manager
from buildr_podman.reporter import TerminalReporter
from buildr_podman.runner import run_tasks, select_tasks


def run(args: argparse.Namespace) -> int:
    project = load_project(find_root(args.directory))
    if args.command == "list":
        for name, task in sorted(project.tasks.items()):
            print(f"{name}\t{task.module_type}\t{task.container.image}")
        return 0
    tasks = select_tasks(project, args.names)
    pm = make_plugin_manager(tuple(args.plugins))
    pm.register(TerminalReporter(verbose=args.verbose), name="terminal-reporter")
    outcomes = run_tasks(pm, project, tasks, args.executor)
    return 0 if all(outcome.succeeded for outcome in outcomes) else 1
