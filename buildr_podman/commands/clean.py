"""`buildr-podman clean`: remove pods, containers, sockets and agent builds that runs left behind."""

from __future__ import annotations

import argparse

from buildr_podman.config import find_root
from buildr_podman.errors import ConfigError
from buildr_podman.plugins import make_plugin_manager


def run(args: argparse.Namespace) -> int:
    pm = make_plugin_manager(tuple(args.plugins))
    try:
        root = find_root(args.directory)
    except ConfigError:
        root = None  # leftovers are found by label, not by repository
    said = 0
    for provided in pm.hook.buildr_clean(everything=args.all, root=root):
        for line in provided or ():
            print(line, flush=True)
            said += 1
    if not said:
        print("nothing to clean")
    return 0
