"""The command line in-process, with a local executor plugin given by -p: commands, output
modes, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from buildr_podman.cli import main

LOCAL_EXECUTOR = '''
"""An executor for tests: runs the task's shell on this machine, in its out dir."""
import os
import subprocess
from contextlib import contextmanager

from buildr_podman.hookspecs import hookimpl
from buildr_podman.model import TaskOutcome


class Session:
    def __init__(self, project):
        self.project = project

    def run_task(self, task, observer):
        out = self.project.out_dir / task.name
        out.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(task.argv(), cwd=out, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        for line in proc.stdout:
            observer.output(task, "stdout", line)
        return TaskOutcome(task=task.name, exit_code=proc.wait(), output_dir=out,
                           files_returned=len(list(out.iterdir())))


class Local:
    name = "local"

    @contextmanager
    def open_session(self, project):
        yield Session(project)


class Unavailable:
    """An executor whose machine cannot run anything, as Podman without subuids."""
    name = "unavailable"

    @contextmanager
    def open_session(self, project):
        from buildr_podman.errors import BackendError
        raise BackendError("podman cannot start here")
        yield


@hookimpl
def buildr_executors():
    return [Local(), Unavailable()]
'''

CONFIG = '''
build "script" "lib" {
  container { image = "i" }
  script = "echo building lib; echo x > lib.txt"
}
task "script" "app" {
  container { image = "i" }
  depends_on = ["lib"]
  script = "echo app uses ${build.lib.out_dir}"
}
task "script" "broken" {
  container { image = "i" }
  script = "echo about to fail; exit 3"
}
'''


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "buildr_test_local.py").write_text(LOCAL_EXECUTOR)
    monkeypatch.syspath_prepend(str(plugins))
    root = tmp_path / "repo"
    (root / ".buildr").mkdir(parents=True)
    (root / ".buildr" / "tasks.hcl").write_text(CONFIG)
    return root


def cli(repo: Path, *args: str) -> int:
    return main(["-C", str(repo), "-p", "buildr_test_local", *args])


def test_list_shows_modules_with_category_and_dependencies(repo: Path, capsys) -> None:
    assert cli(repo, "list") == 0
    assert capsys.readouterr().out.splitlines() == [
        "app\tscript\ti\ttask\tlib", "broken\tscript\ti\ttask\t-", "lib\tscript\ti\tbuild\t-"]


def test_list_marks_what_cannot_run_and_run_says_what_to_pass(repo: Path, capsys) -> None:
    with (repo / ".buildr" / "tasks.hcl").open("a") as config:
        config.write('task "script" "later" {\n  container { image = env("BUILDR_TEST_NO") }\n'
                     '  script = "t"\n}\n')
    assert cli(repo, "list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[2] == ("later\tcannot run: .buildr/tasks.hcl:16:23: image: environment "
                         "variable BUILDR_TEST_NO is not set: export it, or give a default: "
                         'env("BUILDR_TEST_NO", "value")')
    assert len(listed) == 4
    assert cli(repo, "run", "app", "--executor", "local", "--output", "plain") == 0
    capsys.readouterr()
    assert cli(repo, "run", "--executor", "local") == 2
    assert capsys.readouterr().err.startswith("buildr-podman: error: name the modules to run: "
                                              "buildr-podman run NAME... (modules: app, broken, "
                                              "later, lib), or set buildr { default")


def test_run_plain_runs_dependencies_first_and_keeps_logs(repo: Path, capsys) -> None:
    assert cli(repo, "run", "app", "--executor", "local", "--output", "plain", "-j", "1") == 0
    captured = capsys.readouterr()
    assert captured.out == "building lib\napp uses /.buildr/out/lib\n", "-j 1: no prefixes"
    err = captured.err.splitlines()
    assert err[0] == "buildr: running lib in i"
    assert err[-1].startswith("buildr: 2 ok in ")
    assert "  lib     ok      " in captured.err
    assert "building lib" in (repo / ".buildr/out/.logs/lib.log").read_text()


def test_parallel_lines_get_a_prefix(repo: Path, capsys) -> None:
    assert cli(repo, "run", "app", "--executor", "local", "--output", "plain", "-j", "2") == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["lib | building lib", "app | app uses /.buildr/out/lib"]


def test_a_failure_exits_1_and_says_why_last(repo: Path, capsys) -> None:
    code = cli(repo, "run", "broken", "app", "-k", "--executor", "local", "--output", "plain")
    captured = capsys.readouterr()
    assert code == 1
    assert "broken | about to fail" in captured.out
    assert "buildr: broken failed with exit code 3 in " in captured.err
    assert captured.err.splitlines()[-1].startswith("buildr: 2 ok, 1 failed in ")


def test_json_output_is_one_event_per_line(repo: Path, capsys) -> None:
    assert cli(repo, "run", "app", "--executor", "local", "--output", "json") == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert {"task_started", "output", "files_returned", "task_finished"} <= set(kinds)
    lines = [e["line"] for e in events if e["event"] == "output"]
    assert lines == ["building lib", "app uses /.buildr/out/lib"]
    assert events[-1]["exit_code"] == 0
    assert [o["status"] for o in events[-1]["outcomes"]] == ["ok", "ok"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (("run", "ap"), 2, r"no task named 'ap' \(did you mean 'app'\?\)"),
    (("run", "app", "--executor", "nope"), 2, (r"no executor named 'nope' \(available: local, "
                                               r"podman, unavailable\)")),
    (("run", "app", "-j", "0"), 2, r"argument -j/--jobs: must be 1 or more"),
    (("plugins", "nope"), 2, r"no module type named 'nope' is loaded"),
    (("run", "app", "--executor", "unavailable"), 3, r"^buildr-podman: error: podman cannot "),
    (("run", "app", "--remote", "http://grid:80"), 2,
     r"^buildr-podman: error: --remote http://grid:80: the scheme 'http' is not supported: "
     r'write "grpc://HOST:PORT" or "unix:PATH"'),
])
def test_mistakes_are_one_line_with_an_exit_code(repo: Path, capsys, args: tuple[str, ...],
                                                  code: int, message: str) -> None:
    try:
        assert cli(repo, *args) == code
    except SystemExit as exit_:  # argparse's own errors
        assert exit_.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(message, err[-1]), err


def test_a_type_of_a_separate_plugin_says_how_to_install_it(
        repo: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from buildr_podman import moduletype

    monkeypatch.setitem(moduletype.SEPARATE_DISTRIBUTIONS, "gradle", "buildr-gradle")
    assert cli(repo, "plugins", "gradle") == 2
    assert capsys.readouterr().err.endswith(
        "); it comes with the plugin buildr-gradle: pip install buildr-gradle\n")
    (repo / ".buildr" / "more.hcl").write_text('task "gradle" "g" {\n}\n')
    assert cli(repo, "list") == 2
    assert capsys.readouterr().err.endswith(": pip install buildr-gradle\n")


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_come_before_or_after_the_command(repo: Path, capsys,
                                                         where: str) -> None:
    options = ["-C", str(repo), "-p", "buildr_test_local", "-v"]
    command = ["run", "app", "--executor", "local", "--output", "plain", "-j", "1"]
    argv = options + command if where == "before" else command + options
    assert main(argv) == 0
    assert "buildr: app: changes found by" in capsys.readouterr().err, "-v was taken"


def test_a_config_error_exits_2_naming_the_place(repo: Path, capsys) -> None:
    (repo / ".buildr" / "tasks.hcl").write_text('task "script" "x" {\n  container { image = '
                                                '"i" }\n  scirpt = "t"\n}\n')
    assert cli(repo, "list") == 2
    assert capsys.readouterr().err == ('buildr-podman: error: .buildr/tasks.hcl:3:3: unknown '
                                       'attribute "scirpt" in task "x" (did you mean "script"?)\n')


def test_plugins_lists_plugins_types_and_executors(repo: Path, capsys) -> None:
    assert cli(repo, "plugins") == 0
    out = capsys.readouterr().out
    assert "buildr_test_local (-p or registered by code)" in out
    assert "podman               buildr_podman.podman.executor.PodmanExecutor [podman]" in out
    assert 'task "script"' in out and 'package "script"' in out
    assert cli(repo, "plugins", "script") == 0
    shown = capsys.readouterr().out
    assert "inline           list(string)" in shown and 'task "script" "hello" {' in shown


def test_start_up_imports_no_heavy_library() -> None:
    code = textwrap.dedent('''
        import sys
        from buildr_podman.cli import build_parser
        build_parser()
        heavy = {"rich", "podman", "grpc", "hcl2", "lark", "pluggy", "requests"}
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_the_program_flushes_runs_atexit_and_keeps_the_exit_code(repo: Path) -> None:
    """`command()` ends with os._exit: nothing printed may be lost, atexit handlers still run,
    and the exit code is main()'s, for success and for a failed task alike."""
    plugins = str(repo.parent / "plugins")
    code = textwrap.dedent('''
        import atexit, sys
        atexit.register(lambda: print("atexit ran", file=sys.stderr))
        sys.argv = ["buildr-podman", *sys.argv[1:]]
        from buildr_podman.cli import command
        command()
    ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([plugins, *sys.path])}
    base = [sys.executable, "-c", code, "-C", str(repo), "-p", "buildr_test_local"]
    listed = subprocess.run([*base, "list"], capture_output=True, text=True, env=env,
                            check=False)
    assert (listed.returncode, len(listed.stdout.splitlines())) == (0, 3)
    assert listed.stderr == "atexit ran\n"
    failed = subprocess.run([*base, "run", "broken", "--executor", "local", "--output", "plain"],
                            capture_output=True, text=True, env=env, check=False)
    assert failed.returncode == 1
    assert "about to fail" in failed.stdout and "broken failed" in failed.stderr
