"""Tasks that feed each other: every run shows a task this run's outputs of its dependencies,
through `${task.X.out_dir}` from any working_dir, and laid over its inputs by `inputs_from`,
whichever pod runs it and whatever earlier runs left. Each chain runs three times in a row
(most bugs of reuse show on the second run) in both input modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_faults import buildr, need_image, tree

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


APART = f'''
buildr {{
  out_dir = "OUT_DIR"
}}
task "script" "a" {{
  container {{
    image  = "{IMAGE}"
    inputs = "INPUTS"
  }}
  script = "ls -A .buildr; ls -A .buildr/out 2>/dev/null | wc -l; echo a > a.txt"
}}
task "script" "a.log" {{
  container {{
    image  = "{IMAGE}"
    inputs = "INPUTS"
  }}
  script = "echo a.log > a.log.txt"
}}
task "script" "junit.xml" {{
  container {{
    image  = "{IMAGE}"
    inputs = "INPUTS"
  }}
  inputs_from = ["a"]
  script = "echo junit >> a.txt"
}}
'''


@pytest.mark.parametrize(("inputs", "outside"), [("mount", False), ("copy", True)])
def test_outputs_are_no_inputs_and_no_task_name_collides(tmp_path: Path, inputs: str,
                                                         outside: bool) -> None:
    """The out dir, in the repository or outside it, is never part of a task's inputs, and
    logs and reports do not collide with tasks named like them."""
    need_image(IMAGE)
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    out = tmp_path / "outputs" if outside else root / ".buildr" / "out"
    (root / ".buildr" / "tasks.hcl").write_text(
        APART.replace("OUT_DIR", str(out)).replace("INPUTS", inputs))
    for attempt in range(3):
        result = buildr(root, "run", "-j", "1", "a", "a.log", "junit.xml", "--output",
                        "plain")
        assert result.returncode == 0, (attempt, result.stderr)
        shown = ["tasks.hcl", "0"] if outside else ["out", "tasks.hcl", "0"]
        assert result.stdout.splitlines()[:len(shown)] == shown, (attempt, result.stdout)
        assert tree(out / "a") == {"a.txt": "a\n"}
        assert tree(out / "a.log") == {"a.log.txt": "a.log\n"}
        assert tree(out / "junit.xml") == {"a.txt": "a\njunit\n"}
        for name in ("a", "a.log", "junit.xml"):
            assert (out / ".logs" / f"{name}.log").read_text().splitlines()[-1].startswith(
                f"# buildr: {name} ok in "), name


KEEPER = f'''
task "script" "t" {{
  container {{ image = "{IMAGE}" }}
  timeout = "3s"
  script  = <<-EOT
    if [ -f src/hang ]; then echo slow > slow.txt; sleep 30; fi
    if [ -f src/fail ]; then echo partial > partial.txt; exit 3; fi
    echo good > good.txt
  EOT
}}
task "script" "after" {{
  container {{ image = "{IMAGE}" }}
  inputs_from = ["t"]
  script = "ls > seen.txt"
}}
'''


def test_a_failed_run_keeps_the_last_good_output_and_puts_its_own_beside_it(
        tmp_path: Path) -> None:
    need_image(IMAGE)
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(KEEPER)
    (root / "src").mkdir()
    out = root / ".buildr" / "out"
    assert buildr(root, "run", "t").returncode == 0
    for attempt, cause in enumerate(["fail", "fail", "hang"]):
        (root / "src" / cause).touch()
        result = buildr(root, "run", "t", "--output", "json")
        (root / "src" / cause).unlink()
        assert result.returncode == 1, (attempt, result.stderr)
        assert tree(out / "t") == {"good.txt": "good\n"}, "the last good output stays"
        failed = {"slow.txt": "slow\n"} if cause == "hang" else {"partial.txt": "partial\n"}
        assert tree(out / ".failed" / "t") == failed, attempt
        finished = [json.loads(line) for line in result.stdout.splitlines()][-1]["outcomes"][0]
        assert finished["output_dir"] == str(out / ".failed" / "t")
        assert finished["status"] == ("timed-out" if cause == "hang" else "failed")
    plain = buildr(root, "run", "t", "--output", "plain")
    assert plain.returncode == 0 and tree(out / "t") == {"good.txt": "good\n"}
    assert not (out / ".failed" / "t").exists(), "a stale failure does not stay beside it"
    (root / "src" / "fail").touch()
    plain = buildr(root, "run", "-k", "after", "--output", "plain")
    assert plain.returncode == 1
    assert ".failed/t" in plain.stderr, "the summary says where the failed output is"
