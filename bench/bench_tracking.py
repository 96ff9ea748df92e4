"""Change-tracking benchmark (issue 4): watch set-up, tracking overhead, and beyond the limit.

Run as the rootless user (scripts/bench does it), from the repository root:

    python bench/bench_tracking.py [--rounds 3] [--quick]

1. Watch set-up on a workspace of 10,000 directories and 100,000 files, measured by the agent
   inside the container (target: <= 0.5 s).
2. A task writing 50,000 small files in new nested directories: the time the task measures
   itself with tracking (set-up and resolve added) against the same script in a plain
   `podman run` with the same copy-on-write workspace, alternately (target: <= +10 %).
3. More directories than the watch limit (forced with BUILDR_AGENT_MAX_WATCHES=1000): the
   result must still be exact, through the rescan.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

IMAGE = "localhost/buildr-busybox:latest"
# busybox date has no %N: /proc/uptime gives centiseconds, enough for a task of seconds.
WRITE_SCRIPT = ('s=$(cut -d" " -f1 /proc/uptime); i=0; while [ $i -lt {files} ]; do '
                'd=gen/a$((i / 1000))/b$((i / 100)); [ -d $d ] || mkdir -p $d; '
                'echo $i > $d/f$i; i=$((i + 1)); done; '
                'echo "TASK_SPAN=$s $(cut -d" " -f1 /proc/uptime)"')


def make_workspace(root: Path, dirs: int, files_per_dir: int) -> None:
    (root / ".buildr").mkdir(parents=True)
    for d in range(dirs):
        directory = root / "tree" / f"d{d // 100}" / f"e{d % 100}"
        directory.mkdir(parents=True)
        for f in range(files_per_dir):
            (directory / f"f{f}.c").write_bytes(b"int x;\n")


def write_task(root: Path, name: str, script: str) -> None:
    (root / ".buildr" / f"{name}.hcl").write_text(
        f'task "script" "{name}" {{\n  container {{\n    image = "{IMAGE}"\n  }}\n'
        f"  script = <<-EOT\n{script}\n  EOT\n}}\n")


def run_buildr(root: Path, name: str, **env: str) -> tuple[dict, str]:
    """Runs one task; returns its task_finished JSON event and its stdout text."""
    proc = subprocess.run([sys.executable, "-m", "buildr_podman", "run", "--output", "json",
                           name], cwd=root, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **env}, check=False)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    finished = next((e for e in events if e.get("event") == "task_finished"), None)
    if proc.returncode != 0 or finished is None:
        raise SystemExit(f"buildr-podman failed ({proc.returncode}): "
                         f"{proc.stderr.strip() or proc.stdout[-600:]}")
    output = "".join(e.get("line", "") + "\n" for e in events if e.get("event") == "output")
    return finished, output


def plain_run_seconds(root: Path, script: str) -> float:
    """The same script in a plain container with the same copy-on-write workspace."""
    proc = subprocess.run(["podman", "run", "--rm", "--network", "none", "-v",
                           f"{root}:/workspace:O", "-w", "/workspace", IMAGE, "sh", "-c", script],
                          capture_output=True, text=True, timeout=900, check=True)
    return task_seconds(proc.stdout)


def task_seconds(output: str) -> float:
    """What the task measured of itself."""
    for line in output.splitlines():
        if "TASK_SPAN=" in line:
            start, end = map(float, line.split("TASK_SPAN=")[1].split())
            return end - start
    raise SystemExit(f"the task printed no TASK_SPAN: {output[-300:]}")


def bench_setup(work: Path, rounds: int, dirs: int) -> dict:
    root = work / "big"
    make_workspace(root, dirs, 10)
    write_task(root, "noop", "true")
    samples = []
    for _ in range(rounds):
        finished, _ = run_buildr(root, "noop")
        samples.append(finished["tracking_setup_seconds"])
    return {"case": f"watch set-up, {dirs} dirs / {dirs * 10} files",
            "median_s": statistics.median(samples),
            "watched": finished["watched_directories"], "target": "<= 0.5 s",
            "pass": statistics.median(samples) <= 0.5}


def bench_overhead(work: Path, rounds: int, files: int) -> dict:
    root = work / "writes"
    make_workspace(root, 10, 1)
    script = WRITE_SCRIPT.format(files=files)
    write_task(root, "writes", script)
    ours, plain = [], []
    for _ in range(rounds):
        finished, output = run_buildr(root, "writes")
        if finished["files_returned"] != files:
            raise SystemExit(f"only {finished['files_returned']} of {files} files came back")
        ours.append(task_seconds(output) + finished["tracking_setup_seconds"]
                    + finished["tracking_resolve_seconds"])
        plain.append(plain_run_seconds(root, script))
    ratio = statistics.median(ours) / statistics.median(plain)
    return {"case": f"{files} files in new nested dirs: tracked vs plain", "ours_s":
            statistics.median(ours), "plain_s": statistics.median(plain),
            "overhead": f"{(ratio - 1) * 100:+.1f} %", "target": "<= +10 %",
            "pass": ratio <= 1.10}


def bench_beyond_limit(work: Path, dirs: int) -> dict:
    root = work / "big"
    script = "for d in tree/d*/e1 tree/d*/e7; do echo changed > $d/f3.c; done"
    write_task(root, "beyond", script)
    finished, _ = run_buildr(root, "beyond", BUILDR_AGENT_MAX_WATCHES="1000")
    expected = 2 * (dirs // 100)
    exact = finished["files_returned"] == expected
    return {"case": f"{dirs} dirs with a limit of 1000 watches", "tracking": finished["tracking"],
            "returned": finished["files_returned"], "expected": expected, "pass": exact}


def main() -> int:
    # Every round must run its task: the task cache would serve the second one (issue 17).
    os.environ["BUILDR_CACHE"] = "off"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller trees, 2 rounds")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    dirs, files = (1_000, 5_000) if args.quick else (10_000, 50_000)
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        work = Path(tmp)
        results = [bench_setup(work, rounds, dirs), bench_overhead(work, rounds, files),
                   bench_beyond_limit(work, dirs)]
    for result in results:
        verdict = "PASS" if result.pop("pass") else "FAIL"
        print(f"{verdict}  " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
