"""Reading .buildr/*.hcl: the contract's attributes, and one clear located error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildr_podman.config import find_root, load_project
from buildr_podman.errors import ConfigError

GOOD = '''
buildr {
  out_dir = "build/out"
}

task "script" "hello" {
  container {
    image = "localhost/example:latest"
    user  = "1000:1000"
  }
  input_mapping = { "src" = "src" }
  environment   = { GREETING = "hi" }
  shell         = "/bin/bash"
  script        = "make && ./hello > greeting.txt"
  working_dir   = "src"
}

task "script" "lines" {
  container { image = "img" }
  inline = ["make", "./hello > greeting.txt"]
}
'''


def write(tmp_path: Path, text: str, name: str = "tasks.hcl") -> Path:
    (tmp_path / ".buildr").mkdir(exist_ok=True)
    (tmp_path / ".buildr" / name).write_text(text)
    return tmp_path


def test_reads_every_attribute_of_the_contract(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, GOOD))
    assert project.out_dir == tmp_path / "build/out"
    hello = project.tasks["hello"]
    assert hello.container.image == "localhost/example:latest"
    assert hello.container.user == "1000:1000"
    assert hello.input_mapping == (("src", "src"),)
    assert hello.environment == (("GREETING", "hi"),)
    assert hello.argv() == ["/bin/bash", "-c", "make && ./hello > greeting.txt"]
    assert hello.container_working_dir() == "/workspace/src"
    lines = project.tasks["lines"]
    assert lines.argv() == ["/bin/sh", "-c", "set -e\nmake\n./hello > greeting.txt"]
    assert lines.container_working_dir() == "/workspace"
    assert project.tasks["hello"].source == ".buildr/tasks.hcl:6"


def test_heredoc_scripts_keep_their_text(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, '''
task "script" "h" {
  container { image = "i" }
  script = <<-EOT
    echo "quoted \\n kept"
      indented
  EOT
}
'''))
    assert project.tasks["h"].script == 'echo "quoted \\n kept"\n  indented\n'


def test_every_hcl_file_is_read_and_the_default_out_dir_applies(tmp_path: Path) -> None:
    write(tmp_path, 'task "script" "a" {\n  container { image = "i" }\n  script = "true"\n}\n')
    write(tmp_path, 'task "script" "b" {\n  container { image = "i" }\n  script = "true"\n}\n',
          "more.hcl")
    project = load_project(tmp_path)
    assert sorted(project.tasks) == ["a", "b"]
    assert project.out_dir == tmp_path / ".buildr/out"


def test_the_root_is_the_nearest_directory_holding_buildr(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_root(deep) == tmp_path.resolve()


def test_no_buildr_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no \.buildr/ folder .*-C DIR"):
        find_root(tmp_path)


@pytest.mark.parametrize(("text", "expected"), [
    ('task "script" "x" {\n  container { image = "i" }\n  scirpt = "true"\n}\n',
     r'tasks\.hcl:3:3: unknown attribute "scirpt" in task "x" \(did you mean "script"\?\)'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = = "true"\n}\n',
     r"tasks\.hcl:3:\d+: HCL syntax error: unexpected '='"),
    ('task "script" "x" {\n  script = "true"\n}\n',
     r'tasks\.hcl:1:\d+: task "x" needs exactly one container'),
    ('task "script" "x" {\n  container { image = "i" }\n}\n',
     r'task "x" needs either script = "\.\.\." or inline'),
    ('task "script" "x" {\n  container {\n    image = "i"\n    user = "bob"\n  }\n'
     '  script = "true"\n}\n', r'tasks\.hcl:4:\d+: task "x": container user must be'),
    ('task "scirpt" "x" {\n  container { image = "i" }\n  script = "true"\n}\n',
     r'unknown task type "scirpt" \(did you mean "script"\?\)'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "true"\n'
     '  input_mapping = { "../etc" = "etc" }\n}\n', r"input_mapping .* relative paths"),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "true"\n'
     '  working_dir = "/abs"\n}\n', r"working_dir must be relative"),
    ('buildr {\n  out_dir = "/tmp/out"\n}\n', r'tasks\.hcl:2:\d+: out_dir must be a path relative'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "true"\n}\n'
     'task "script" "x" {\n  container { image = "i" }\n  script = "true"\n}\n',
     r'task "x" is defined twice'),
    ('tsak "script" "x" {\n}\n', r'unknown block or attribute "tsak" \(did you mean "task"\?\)'),
])
def test_mistakes_are_one_located_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_project(write(tmp_path, text))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(".buildr/tasks.hcl")
