"""`buildr-podman plugins`: what is loaded, and which executors it provides."""

from __future__ import annotations

import argparse

from buildr_podman.plugins import executors, make_plugin_manager


def run(args: argparse.Namespace) -> int:
    pm = make_plugin_manager(tuple(args.plugins))
    for name, plugin in pm.list_name_plugin():
        print(f"plugin {name}: {getattr(plugin, '__name__', type(plugin).__name__)}")
    for name in sorted(executors(pm)):
        print(f"executor {name}")
    return 0
