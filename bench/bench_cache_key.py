"""Benchmark of the task cache's key: re-keying an unchanged repository of N files.

    python bench/bench_cache_key.py [--files 20000] [--rounds 5]

Makes a repository of N small files in N/20 directories, keys a task over it once with an
empty stat cache (every file hashed), saves the stat cache, then keys it again `rounds`
times, each time in a fresh StatCache loaded from disk as a new run would (the load is in the
time). Prints the medians, beside a bare walk that only lstats every entry (the floor). The target (issue 17): well under 0.1 s for 20,000 files.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from buildr_podman.cache.key import action_key  # noqa: E402
from buildr_podman.cache.tree import StatCache, TreeBuilder  # noqa: E402
from buildr_podman.model import ContainerSpec, Project, Task  # noqa: E402


def _bare_walk(directory: str) -> None:
    """The floor: what any stat-based check (git status) pays, one lstat an entry."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.stat(follow_symlinks=False) and entry.is_dir(follow_symlinks=False):
                _bare_walk(entry.path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-key-") as directory:
        root = Path(directory) / "repo"
        for index in range(args.files):
            sub = root / f"d{index // 20:05d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"f{index:06d}.txt").write_text(f"file {index}\n" * 20)
        project = Project(root=root, out_dir=root / ".buildr" / "out")
        task = Task(name="t", module_type="script", container=ContainerSpec(image="i"),
                    script="true")
        stats = Path(directory) / "stat.json"
        time.sleep(2.1)  # past tree.RACY_SECONDS, as a repository at rest is
        started = time.perf_counter()
        cache = StatCache(stats)
        first = action_key(project, task, "sha256:x", TreeBuilder(cache), {})
        cache.save()
        cold = time.perf_counter() - started
        timings, floor = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            _bare_walk(str(root))
            floor.append(time.perf_counter() - started)
            started = time.perf_counter()
            cache = StatCache(stats)
            key = action_key(project, task, "sha256:x", TreeBuilder(cache), {})
            timings.append(time.perf_counter() - started)
            assert key.digest == first.digest and cache.hashed == 0
    print(f"{args.files} files: first key (every file hashed) {cold * 1000:.0f} ms; "
          f"unchanged re-key, stat cache loaded from disk: median "
          f"{statistics.median(timings) * 1000:.1f} ms (min {min(timings) * 1000:.1f}); "
          f"a bare walk lstat-ing every file: median {statistics.median(floor) * 1000:.1f} ms "
          f"(min {min(floor) * 1000:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
