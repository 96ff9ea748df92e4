"""Running a graph of modules in real rootless Podman: order, parallelism, container options,
timeouts, cancellation, Ctrl-C, plugins."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import need_image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leaks")]

BUSYBOX = "localhost/buildr-busybox:latest"
GCC = "localhost/buildr-gcc:bookworm"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"


def repo(tmp_path: Path, config: str) -> Path:
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "modules.hcl").write_text(config)
    (root / "src").mkdir()
    (root / "src" / "input.txt").write_text("input\n")
    return root


def buildr(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildr_podman", *args], cwd=root,
                          capture_output=True, text=True, timeout=timeout, check=False)


GRAPH = f'''
locals {{
  image = "{BUSYBOX}"
}}

build "script" "lib" {{
  container {{ image = local.image }}
  script = "sleep 1; mkdir -p dist; echo lib-v1 > dist/lib.txt"
}}

task "script" "app" {{
  container {{
    image = local.image
    bind_mount {{
      source    = build.lib.out_dir
      target    = "/deps/lib"
      read_only = true
    }}
    environment = {{ FROM = "container", BOTH = "container" }}
  }}
  environment = {{ BOTH = "task" }}
  script = <<-EOT
    echo "app sees $(cat /deps/lib/dist/lib.txt) $FROM $BOTH"
    touch /deps/lib/dist/x 2>/dev/null && echo writable || echo read-only
    echo built > app.txt
  EOT
}}

tool "script" "side" {{
  container {{ image = local.image }}
  script = "sleep 1; echo side done"
}}
'''


def test_dependencies_first_independents_in_parallel(tmp_path: Path) -> None:
    need_image(BUSYBOX)
    root = repo(tmp_path, GRAPH)
    started = time.monotonic()
    result = buildr(root, "run", "app", "side", "-j", "2", "--output", "plain")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "app  | app sees lib-v1 container task" in result.stdout
    assert "app  | read-only" in result.stdout
    assert "side | side done" in result.stdout
    err = result.stderr
    assert err.index("buildr: lib ok") < err.index("buildr: running app")
    assert err.index("buildr: running side") < err.index("buildr: lib ok"), "side ran beside lib"
    out = root / ".buildr" / "out"
    assert (out / "lib" / "dist" / "lib.txt").read_text() == "lib-v1\n"
    assert (out / "app" / "app.txt").read_text() == "built\n"
    assert "app sees lib-v1" in (out / ".logs" / "app.log").read_text()
    assert (out / ".logs" / "side.log").read_text().splitlines()[-1].startswith(
        "# buildr: side ok in ")
    assert "  lib     ok" in err and err.splitlines()[-1].startswith("buildr: 3 ok in ")
    assert took < 60


OPTIONS = f'''
task "script" "private" {{
  container {{
    image   = "{BUSYBOX}"
    network = "private"
  }}
  script = "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort | tr '\\\\n' ' '"
}}
task "script" "none" {{
  container {{ image = "{BUSYBOX}" }}
  script = "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort | tr '\\\\n' ' '"
}}
task "script" "caps" {{
  container {{
    image = "{BUSYBOX}"
    capabilities {{
      drop = ["ALL"]
      add  = ["CHOWN"]
    }}
    tmpfs_mount {{
      target = "/scratch"
      size   = "8m"
    }}
  }}
  script = "grep CapEff /proc/self/status; grep ' /scratch ' /proc/mounts | cut -d' ' -f3,4"
}}
task "script" "privileged" {{
  container {{
    image      = "{BUSYBOX}"
    privileged = true
  }}
  script = "grep CapEff /proc/self/status"
}}
'''


def test_container_options_reach_the_container(tmp_path: Path) -> None:
    need_image(BUSYBOX)
    root = repo(tmp_path, OPTIONS)
    result = buildr(root, "run", "private", "none", "caps", "privileged", "-j", "4",
                    "--output", "json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    said = {}
    for event in events:
        if event["event"] == "output":
            said.setdefault(event["task"], []).append(event["line"])
    assert said["none"] == ["lo "]
    assert said["private"][0].split() not in ([], ["lo"]), "a network of its own, beyond lo"
    assert said["caps"][0] == "CapEff:\t0000000000000001", "only CAP_CHOWN is left"
    assert said["caps"][1].startswith("tmpfs rw,") and "size=8192k" in said["caps"][1]
    assert said["privileged"][0] != said["caps"][0]
    assert int(said["privileged"][0].split()[1], 16) > 1


def test_a_timeout_stops_the_task(tmp_path: Path) -> None:
    need_image(BUSYBOX)
    root = repo(tmp_path, f'task "script" "slow" {{\n  container {{ image = "{BUSYBOX}" }}\n'
                          '  timeout = "2s"\n  script = "echo start; sleep 60"\n}\n')
    started = time.monotonic()
    result = buildr(root, "run", "slow", "--output", "plain")
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert "start" in result.stdout
    assert "buildr: slow timed out in " in result.stderr


FAIL_FAST = f'''
task "script" "sleeper" {{
  container {{ image = "{BUSYBOX}" }}
  script = "sleep 120"
}}
task "script" "broken" {{
  container {{ image = "{BUSYBOX}" }}
  script = "sleep 2; exit 4"
}}
task "script" "after" {{
  container {{ image = "{BUSYBOX}" }}
  depends_on = ["broken"]
  script = "echo never"
}}
'''


def test_a_failure_cancels_the_rest_at_once(tmp_path: Path) -> None:
    need_image(BUSYBOX)
    root = repo(tmp_path, FAIL_FAST)
    started = time.monotonic()
    result = buildr(root, "run", "sleeper", "after", "-j", "2", "--output", "plain")
    assert time.monotonic() - started < 40, "the sleeper was stopped, not waited for"
    assert result.returncode == 1
    err = result.stderr
    assert "buildr: broken failed with exit code 4" in err
    assert "buildr: after skipped: dependency broken failed" in err
    assert "buildr: sleeper cancelled" in err


def test_keep_going_lets_independent_modules_finish(tmp_path: Path) -> None:
    need_image(BUSYBOX)
    root = repo(tmp_path, FAIL_FAST.replace("sleep 120", "sleep 3; echo slept"))
    result = buildr(root, "run", "sleeper", "after", "-j", "2", "-k", "--output", "plain")
    assert result.returncode == 1
    assert "sleeper | slept" in result.stdout
    assert "buildr: sleeper ok" in result.stderr


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_every_task_and_leaves_nothing(tmp_path: Path, presses: int) -> None:
    need_image(BUSYBOX)
    root = repo(tmp_path, FAIL_FAST.replace("sleep 2; exit 4", "echo up; sleep 120"))
    run = subprocess.Popen([sys.executable, "-m", "buildr_podman", "run", "sleeper", "broken",
                            "-j", "2", "--output", "plain"], cwd=root, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    assert run.stdout is not None
    for line in run.stdout:
        if "up" in line:
            break
    run.send_signal(signal.SIGINT)
    if presses == 2:
        time.sleep(0.1)
        run.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, err = run.communicate(timeout=60)
    assert time.monotonic() - started < 15
    assert run.returncode == 130
    assert "buildr: sleeper cancelled" in err and "buildr: broken cancelled" in err


@pytest.mark.skipif(importlib.util.find_spec("buildr_make") is None,
                    reason="the buildr-make plugin is not installed (scripts/setup.sh does)")
def test_a_plugin_module_type_builds_the_example(tmp_path: Path) -> None:
    need_image(GCC)
    root = tmp_path / "hello"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("out"))
    (root / ".buildr" / "make.hcl").write_text(
        f'build "make" "compiled" {{\n  container {{ image = "{GCC}" }}\n  targets = ["hello"]\n'
        '  variables = { CFLAGS = "-O2" }\n}\n')
    result = buildr(root, "run", "compiled", "--output", "plain")
    assert result.returncode == 0, result.stderr
    binary = root / ".buildr" / "out" / "compiled" / "hello"
    assert subprocess.run([str(binary)], capture_output=True, text=True,
                          check=True).stdout.strip() != ""
