"""`buildr-podman cache`: what the local task cache holds, where, its bound, and the remote."""

from __future__ import annotations

import argparse

from buildr_podman.cache.task_cache import default_store
from buildr_podman.commands.common import load
from buildr_podman.errors import ConfigError

RUNS_SHOWN = 10


def run(args: argparse.Namespace) -> int:
    try:
        _, project = load(args)
    except ConfigError:
        project = None  # outside a repository: the default bound
    store = default_store(project)
    stats = store.stats()
    print(f"task cache: {store.root}")
    print(f"  entries: {stats.entries}")
    print(f"  size:    {_size(stats.bytes)} of {_size(store.max_bytes)} "
          "(least recently used evicted beyond; buildr { cache { max_size } })")
    runs = store.runs(RUNS_SHOWN)
    if runs:
        hits = sum(int(r.get("hits", 0)) for r in runs)
        looked = hits + sum(int(r.get("misses", 0)) for r in runs)
        rate = f"{100 * hits / looked:.0f}% of {looked} cacheable tasks" if looked else "n/a"
        uncacheable = sum(int(r.get("uncacheable", 0)) for r in runs)
        remote = sum(int(r.get("remote_hits", 0)) for r in runs)
        print(f"  hit rate of the last {len(runs)} runs: {rate}"
              + (f", {remote} of the hits from the remote cache" if remote else "")
              + (f" ({uncacheable} tasks not cacheable)" if uncacheable else ""))
    if project is not None and project.cache_remote is not None:
        settings = project.cache_remote
        print(f"  remote:  {settings.url}" + (f" instance {settings.instance_name!r}"
                                               if settings.instance_name else "")
              + (", uploads successes" if settings.upload else ", read only (upload = false)"))
    print("  empty it with: buildr-podman clean --cache")
    return 0


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)
