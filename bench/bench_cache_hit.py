"""Benchmark of a run whose every task is a task-cache hit, beside a bare `podman run`.

    python bench/bench_cache_hit.py [--rounds 7] [--files 100]

Run it as the rootless Podman user (`scripts/bench cache_hit` does the set-up). A project with
one task that writes `--files` files is run once (a miss that stores the entry), then
`buildr-podman run hit` (a hit: the image id asked of Podman, the key, the entry verified and
landed, no pod) and `podman run --rm --network none IMAGE true` alternate, the order flipped
every round; each is timed as a whole process. Prints the medians. The target (issue 17): the
hit costs no more than the bare `podman run`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

IMAGE = "localhost/buildr-busybox:latest"


def timed(argv: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                            env={**os.environ, "BUILDR_CACHE": "on"})
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.strip()[-400:]}")
    return elapsed, result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--files", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hit-") as directory:
        root = Path(directory)
        (root / ".buildr").mkdir()
        (root / "input.txt").write_text(f"{uuid.uuid4()}\n")  # a key no earlier run stored
        (root / ".buildr" / "tasks.hcl").write_text(f'''
task "script" "hit" {{
  container {{ image = "{IMAGE}" }}
  script = "mkdir -p gen; for i in $(seq {args.files}); do cat input.txt > gen/$i; done"
}}
''')
        ours = [sys.executable, "-m", "buildr_podman", "run", "--output", "json", "hit"]
        bare = ["podman", "run", "--rm", "--network", "none", IMAGE, "true"]
        timed(ours, root)  # the miss that stores the entry
        hits, runs = [], []
        for round_number in range(args.rounds):
            pair = [(ours, hits), (bare, runs)]
            for argv, times in pair if round_number % 2 == 0 else pair[::-1]:
                elapsed, stdout = timed(argv, root)
                if argv is ours:
                    finished = [json.loads(line) for line in stdout.splitlines()
                                if '"task_finished"' in line]
                    assert finished and finished[0]["cached"], "the run was not a hit"
                times.append(elapsed)
    hit, run = statistics.median(hits), statistics.median(runs)
    print(f"all-hit run of 1 task ({args.files} files landed): median {hit * 1000:.0f} ms; "
          f"podman run --rm IMAGE true: median {run * 1000:.0f} ms; ratio {hit / run:.2f} "
          f"({'met' if hit <= run else 'missed'}: target <= 1)")
    return 0 if hit <= run else 1


if __name__ == "__main__":
    sys.exit(main())
