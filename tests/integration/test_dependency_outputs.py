"""Tasks that feed each other: every run shows a task this run's outputs of its dependencies,
through `${task.X.out_dir}` from any working_dir, and laid over its inputs by `inputs_from`,
whichever pod runs it and whatever earlier runs left. Each chain runs three times in a row
(most bugs of reuse show on the second run) in both input modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_faults import buildr, need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

IMAGE = "localhost/buildr-busybox:latest"


def chain(inputs: str) -> str:
    container = f'  container {{\n    image  = "{IMAGE}"\n    inputs = "{inputs}"\n  }}\n'
    return f'''
task "script" "producer" {{
{container}  script = <<-EOT
    mkdir -p gen
    cat /proc/sys/kernel/random/uuid > gen/stamp.txt
    echo producer > shared.txt
    echo producer > src/input.txt
  EOT
}}

task "script" "second" {{
{container}  script = "mkdir -p gen; echo second > gen/second.txt; echo second > shared.txt"
}}

# Two consumers with the same settings and dependencies share a warm pod.
task "script" "consumer" {{
{container}  working_dir = "src"
  script      = "cat ${{task.producer.out_dir}}/gen/stamp.txt > seen.txt"
}}

task "script" "consumer2" {{
{container}  working_dir = "src"
  script      = "cat ${{task.producer.out_dir}}/gen/stamp.txt > seen2.txt"
}}

task "script" "layered" {{
{container}  inputs_from = ["producer", task.second]
  script      = <<-EOT
    cat gen/stamp.txt shared.txt src/input.txt > layered.txt
    ls gen >> layered.txt
    echo changed > gen/second.txt
    touch ${{task.producer.out_dir}}/x 2>/dev/null && echo writable >> layered.txt || true
  EOT
}}
'''


def tree(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("inputs", ["mount", "copy"])
def test_every_run_sees_this_runs_dependency_outputs(tmp_path: Path, inputs: str) -> None:
    need_image(IMAGE)
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(chain(inputs))
    (root / "src").mkdir()
    (root / "src" / "input.txt").write_text("repository\n")
    out = root / ".buildr" / "out"
    stamps = set()
    for attempt in range(3):
        # One at a time: then producer and second, and consumer and consumer2, share pods.
        result = buildr(root, "-v", "run", "-j", "1", "consumer", "consumer2", "layered",
                        "--output", "json")
        assert result.returncode == 0, (attempt, result.stderr)
        stamp = (out / "producer" / "gen" / "stamp.txt").read_text()
        stamps.add(stamp)
        assert tree(out / "consumer") == {"src/seen.txt": stamp}, attempt
        assert tree(out / "consumer2") == {"src/seen2.txt": stamp}, attempt
        # Later layers win; files laid in come back only when the task changed them.
        assert tree(out / "layered") == {
            "layered.txt": f"{stamp}second\nproducer\nsecond.txt\nstamp.txt\n",
            "gen/second.txt": "changed\n"}, attempt
        events = [json.loads(line) for line in result.stdout.splitlines()]
        pods = [e["message"] for e in events if e["event"] == "log"
                and e["message"].startswith("pod ")]
        assert sum("reused" in message for message in pods) == 2, pods
    assert len(stamps) == 3, "the producer wrote a new stamp each run"
    assert (root / "src" / "input.txt").read_text() == "repository\n"
