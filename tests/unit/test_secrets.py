"""`secret_environment`: read from the configuration, never shown by the host.

The run goes through the real runner, the real reporters (plain, JSON) and the task log, with a
fake executor that prints the secret in every way a task could: split across chunks, in its
notes and in its error.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from test_runner import FakeExecutor, Recorder, project_of

from buildr_podman.config import load_project
from buildr_podman.errors import BuildrError, ConfigError
from buildr_podman.model import Task, TaskOutcome
from buildr_podman.output.jsonl import JsonReporter
from buildr_podman.output.plain import PlainReporter
from buildr_podman.plugins import make_plugin_manager
from buildr_podman.runner import run_tasks, select_tasks
from buildr_podman.secrets import MASK, Redactor, redact, secret_values

SECRET = "s3cr3t-T0ken"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / ".buildr").mkdir(exist_ok=True)
    (tmp_path / ".buildr" / "tasks.hcl").write_text(text)
    return tmp_path


def test_secret_environment_comes_from_the_configuration_and_env(tmp_path: Path) -> None:
    root = write(tmp_path, 'task "script" "t" {\n  container { image = "i" }\n'
                           '  environment = { PLAIN = "p" }\n'
                           '  secret_environment = { TOKEN = env("CI_TOKEN"), PIN = "1234" }\n'
                           '  script = "true"\n}\n')
    task = load_project(root, environ={"CI_TOKEN": SECRET}).tasks["t"]
    assert dict(task.secret_environment) == {"TOKEN": SECRET, "PIN": "1234"}
    assert dict(task.environment) == {"PLAIN": "p"}
    assert SECRET not in repr(task), "a Task's repr (tracebacks, debug prints) hides the values"


def test_a_name_both_plain_and_secret_is_a_configuration_error(tmp_path: Path) -> None:
    root = write(tmp_path, 'task "script" "t" {\n  container { image = "i" }\n'
                           '  environment = { TOKEN = "a" }\n'
                           f'  secret_environment = {{ TOKEN = "{SECRET}" }}\n'
                           '  script = "true"\n}\n')
    with pytest.raises(ConfigError, match="both environment and secret_environment") as info:
        load_project(root)
    assert SECRET not in str(info.value)


def test_a_missing_secret_variable_names_the_variable_not_a_value(tmp_path: Path) -> None:
    root = write(tmp_path, 'task "script" "t" {\n  container { image = "i" }\n'
                           '  secret_environment = { TOKEN = env("NOT_SET_HERE") }\n'
                           '  script = "true"\n}\n')
    project = load_project(root, environ={})  # an error once "t" is to run
    assert "NOT_SET_HERE is not set" in project.unavailable["t"]
    with pytest.raises(ConfigError, match="NOT_SET_HERE"):
        select_tasks(project, ["t"])


def test_redact_masks_every_value_longest_first() -> None:
    values = secret_values(Task(name="t", module_type="script", container=None,  # type: ignore[arg-type]
                                script="", secret_environment=(("A", "abc"), ("B", "abcdef"),
                                                               ("EMPTY", ""))))
    assert values == ("abcdef", "abc")
    assert redact("x abcdef y abc z", values) == f"x {MASK} y {MASK} z"


@pytest.mark.parametrize("split", range(1, len(SECRET) + 3))
def test_a_value_split_across_chunks_is_still_masked(split: int) -> None:
    data = f"token={SECRET}\nnext {SECRET[:4]} line".encode()
    redactor = Redactor((SECRET,))
    shown = b"".join(redactor.feed(data[i:i + split]) for i in range(0, len(data), split))
    shown += redactor.flush()
    assert shown == f"token={MASK}\nnext {SECRET[:4]} line".encode()


def test_output_without_a_possible_value_is_not_held_back() -> None:
    redactor = Redactor((SECRET,))
    assert redactor.feed(b"plain line\n") == b"plain line\n"
    assert redactor.feed(b"ends with s3c") == b"ends with "
    assert redactor.flush() == b"s3c"


def leaky(task: Task, observer: Any, executor: FakeExecutor) -> TaskOutcome:
    """A task that shows its secret everywhere it can, split across chunks too."""
    line = f"the token is {SECRET}\n".encode()
    for i in range(0, len(line), 5):
        observer.output(task, "stdout", line[i:i + 5])
    observer.output(task, "stderr", f"stderr {SECRET}".encode())  # no newline: the tail
    observer.log(task, f"agent note {SECRET}")
    raise BuildrError(f"the agent stopped mid-task: env had {SECRET}")


def test_no_hook_log_file_or_report_ever_sees_a_secret(tmp_path: Path) -> None:
    project = project_of(tmp_path, {"t": []},
                         t={"secret_environment": (("TOKEN", SECRET),)})
    executor = FakeExecutor(project, {"t": leaky})
    pm = make_plugin_manager()
    pm.register(Recorder(executor), name="recorder")
    out, err, events = io.BytesIO(), io.StringIO(), io.StringIO()
    pm.register(PlainReporter(verbose=True, out=out, err=err), name="plain")
    pm.register(JsonReporter(verbose=True, out=events), name="json")
    report = run_tasks(pm, project, [project.tasks["t"]], "fake")
    assert report.exit_code == 1
    log = project.log_path("t").read_text()
    shown = {"stdout": out.getvalue().decode(), "stderr": err.getvalue(), "json": events.getvalue(),
             "log": log, "error": report.outcomes[0].error}
    for where, text in shown.items():
        assert SECRET not in text, f"the secret leaked into {where}"
    assert f"the token is {MASK}\n" in shown["stdout"]
    assert f"stderr {MASK}" in log and f"agent note {MASK}" in log
    assert report.outcomes[0].error == f"the agent stopped mid-task: env had {MASK}"
    finished = [json.loads(line) for line in events.getvalue().splitlines()
                if '"task_finished"' in line]
    assert finished[0]["error"].endswith(MASK)
