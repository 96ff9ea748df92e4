"""`buildr-podman clean`: remove pods, containers, volumes, sockets and agent builds that runs
left behind."""

from __future__ import annotations

import argparse
import shutil

from buildr_podman.config import find_root
from buildr_podman.errors import ConfigError
from buildr_podman.hcl_cache import cache_dir
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
    if args.cache:
        from buildr_podman.cache.task_cache import default_store

        store = default_store()
        freed = store.clear()
        print(f"emptied the task cache {store.root} ({freed} bytes)")
        said += 1
        said += _remove_cache_volumes()
    if args.all and _remove_parse_cache():
        print(f"removed the parsed configuration cache {cache_dir()}")
        said += 1
    if not said:
        print("nothing to clean")
    return 0


def _remove_cache_volumes() -> int:
    """The tasks' cache_volume volumes (Podman's): one line for all of them."""
    from buildr_podman.podman.cache_volumes import remove_cache_volumes
    from buildr_podman.podman.podman_cli import PodmanCliError

    try:
        names = remove_cache_volumes()
    except PodmanCliError as exc:
        print(f"cache volumes not removed: {exc}")
        return 1
    if names:
        print(f"removed {len(names)} cache volumes (cache_volume)")
    return 1 if names else 0


def _remove_parse_cache() -> bool:
    if not cache_dir().is_dir():
        return False
    shutil.rmtree(cache_dir(), ignore_errors=True)
    return True
