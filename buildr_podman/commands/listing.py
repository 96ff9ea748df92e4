"""`buildr-podman list`: the modules, one per line: name, type, image, category, dependencies;
or name and why it cannot run."""

from __future__ import annotations

import argparse

from buildr_podman.commands.common import load


def run(args: argparse.Namespace) -> int:
    _, project = load(args)
    for name in sorted({*project.tasks, *project.unavailable}):
        task = project.tasks.get(name)
        if task is None:  # its configuration needs what is not there: say why, list the rest
            print(f"{name}\tcannot run: {project.unavailable[name]}")
            continue
        depends = ", ".join(task.depends_on) or "-"
        print(f"{name}\t{task.module_type}\t{task.container.image}\t{task.category}\t{depends}")
    return 0
