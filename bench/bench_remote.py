"""Benchmark of remote execution: a remote no-op task beside the local cold no-op, and the
throughput of 50 small independent tasks over two workers.

    python bench/bench_remote.py [--rounds 5] [--tasks 50] [--no-local-batch]

Run it as the rootless Podman user with BuildGrid's venv (`scripts/bench remote` does the
set-up). It starts the test cluster (tests/integration/reapi_cluster.py: PostgreSQL, BuildGrid
with Execution and Bots, two `buildr-podman worker`s, one lease at a time each) on this
machine, and times whole processes, alternately within each round, the order flipped every
other round, all with `--no-cache` (every task runs; the Execute call skips the server's
cache too):
  1. `buildr-podman run noop --remote URL` against `buildr-podman run noop` (the local cold
     no-op of bench_executor.py's case 1): the overhead of sending a task away and landing
     its result (upload of what is missing, Execute, queueing, the worker's own cold no-op,
     fetching the result);
  2. `buildr-podman run -j TASKS t0 ... t49 --remote URL`, tasks that each write one file:
     tasks per second over the two workers; beside it the same run here with `-j 2` (two at
     once, as two workers), unless --no-local-batch.
The workers run on this machine: they share its cores with BuildGrid and the client, so the
figures say what the protocol and the scheduler cost, not what more machines would bring.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from reapi_cluster import ReapiCluster  # noqa: E402 - the tests' cluster, found above

IMAGE = "localhost/buildr-busybox:latest"


def timed(argv: list[str], cwd: Path, tasks: int) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                            env={**os.environ, "BUILDR_CACHE": "on"})
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.strip()[-600:]}")
    finished = [json.loads(line) for line in result.stdout.splitlines()
                if '"task_finished"' in line]
    assert len(finished) == tasks and not any(e["cached"] for e in finished), \
        "every task must run"
    return elapsed


def project(root: Path, tasks: int) -> Path:
    (root / ".buildr").mkdir(parents=True)
    (root / "input.txt").write_text(f"{uuid.uuid4()}\n")
    blocks = [f'task "script" "noop" {{\n  container {{ image = "{IMAGE}" }}\n'
              '  script = "true"\n}\n']
    blocks += [f'task "script" "t{n}" {{\n  container {{ image = "{IMAGE}" }}\n'
               f'  script = "echo {n} > out.txt"\n}}\n' for n in range(tasks)]
    (root / ".buildr" / "tasks.hcl").write_text("\n".join(blocks))
    return root


def alternate(cases: dict[str, list[str]], root: Path, tasks: int, rounds: int,
              ) -> dict[str, list[float]]:
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            times[name].append(timed(cases[name], root, tasks))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--no-local-batch", dest="local_batch", action="store_false")
    args = parser.parse_args()
    run = [sys.executable, "-m", "buildr_podman", "run", "--output", "json", "--no-cache"]
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as directory, \
            ReapiCluster(workers=2, jobs=1) as cluster:
        root = project(Path(directory) / "repo", args.tasks)
        remote = ["--remote", cluster.url]
        names = [f"t{n}" for n in range(args.tasks)]
        timed([*run, "noop", *remote], root, 1)  # untimed: the first of each warms up
        timed([*run, "noop"], root, 1)
        noop = alternate({"remote": [*run, "noop", *remote], "local": [*run, "noop"]},
                         root, 1, args.rounds)
        batch_cases = {"remote": [*run, "-j", str(args.tasks), *names, *remote]}
        if args.local_batch:
            batch_cases["local"] = [*run, "-j", "2", *names]
        batch = alternate(batch_cases, root, args.tasks, max(1, args.rounds // 2))
    load = os.getloadavg()
    remote_noop, local_noop = statistics.median(noop["remote"]), statistics.median(noop["local"])
    print(f"no-op task, whole process, median of {args.rounds}: remote {remote_noop:.2f} s, "
          f"local cold {local_noop:.2f} s; remote overhead {remote_noop - local_noop:+.2f} s "
          f"(ratio {remote_noop / local_noop:.2f})")
    for name, times in batch.items():
        median = statistics.median(times)
        how = "over two workers" if name == "remote" else "here, -j 2"
        print(f"{args.tasks} small tasks {how}: median {median:.2f} s of {len(times)} "
              f"({args.tasks / median:.1f} tasks/s)")
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
