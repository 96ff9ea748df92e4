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


def test_input_mapping_paths_get_one_spelling(tmp_path: Path) -> None:
    # write_back and the mounts compare them as text: "./src/" must be "src" for both.
    project = load_project(write(tmp_path, (
        'task "script" "x" {\n  container { image = "i" }\n  script = "true"\n'
        '  input_mapping = { "./src/" = "./code//lib/", "" = "." }\n}\n')))
    assert project.tasks["x"].input_mapping == (("src", "code/lib"), (".", "."))


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
    (('task "script" "x" {\n  container {\n    image = "i"\n    user = "bob"\n  }\n'
     '  script = "true"\n}\n'), r'tasks\.hcl:4:\d+: task "x": container user must be'),
    ('task "scirpt" "x" {\n  container { image = "i" }\n  script = "true"\n}\n',
     r'unknown task type "scirpt" \(did you mean "script"\?\)'),
    (('task "script" "x" {\n  container { image = "i" }\n  script = "true"\n'
     '  input_mapping = { "../etc" = "etc" }\n}\n'), r"input_mapping .* relative paths"),
    (('task "script" "x" {\n  container { image = "i" }\n  script = "true"\n'
     '  input_mapping = { "a" = "in", "b" = "./in/" }\n}\n'),
     r'tasks\.hcl:4:\d+: input_mapping: "a" and "b" both go to "\./in/": give each its own'),
    (('task "script" "x" {\n  container { image = "i" }\n  script = "true"\n'
     '  working_dir = "/abs"\n}\n'), r"working_dir must be relative"),
    ('buildr {\n  out_dir = "."\n}\n', r':2:\d+: out_dir "\." is the repository root: tasks\' '
                                      r'outputs replace whole directories there'),
    ('buildr {\n  out_dir = "./"\n}\n', r'out_dir "\./" is the repository root'),
    ('buildr {\n  out_dir = ".git"\n}\n', r'out_dir "\.git" lies inside \.git'),
    ('buildr {\n  out_dir = ".git/hooks/x"\n}\n', r'lies inside \.git'),
    ('buildr {\n  out_dir = ".buildr"\n}\n', r'holds the configuration \(\.buildr/\*\.hcl\)'),
    ('buildr {\n  max_return_entries = "many"\n}\n',
     r':2:\d+: max_return_entries must be a whole number of at least 1'),
    ('buildr {\n  cache {\n    max_size = "lots"\n  }\n}\n',
     r'tasks\.hcl:3:\d+: max_size must be a size with an optional unit, like "10g"'),
    ('buildr {\n  cache {\n    max_sise = "1g"\n  }\n}\n',
     r'tasks\.hcl:3:\d+: unknown attribute "max_sise" in cache block \(did you mean "max_size"'),
    ('buildr {\n  cash {\n  }\n}\n', r'unknown block "cash" in buildr block'),
    ('buildr {\n  cache {\n    remote = "http://cache:80"\n  }\n}\n',
     r'tasks\.hcl:3:\d+: remote: the scheme \'http\' is not supported: write "grpc://HOST:PORT" '
     r'or "unix:PATH"'),
    ('buildr {\n  cache {\n    remote = "cache.example:80"\n  }\n}\n',
     r'tasks\.hcl:3:\d+: remote: the scheme \'cache.example\' is not supported'),
    ('buildr {\n  cache {\n    remote = "grpc://cache"\n  }\n}\n',
     r'tasks\.hcl:3:\d+: remote: \'grpc://cache\' has no HOST:PORT after grpc://'),
    ('buildr {\n  cache {\n    remote = "grpc://cache:99999"\n  }\n}\n',
     r'tasks\.hcl:3:\d+: remote: .* has no HOST:PORT'),
    ('buildr {\n  cache {\n    remote = "unix:"\n  }\n}\n',
     r'tasks\.hcl:3:\d+: remote: unix: needs the socket\'s path'),
    ('buildr {\n  cache {\n    remote = true\n  }\n}\n', r'tasks\.hcl:3:\d+: remote must be a'),
    ('buildr {\n  cache {\n    remote = "unix:/s"\n    upload = "yes"\n  }\n}\n',
     r'tasks\.hcl:4:\d+: upload must be true or false'),
    ('buildr {\n  cache {\n    upload = true\n  }\n}\n',
     r'tasks\.hcl:3:\d+: upload needs remote = "grpc://HOST:PORT" or "unix:PATH"'),
    ('buildr {\n  remote {\n    execution = "http://grid:80"\n  }\n}\n',
     r'tasks\.hcl:3:\d+: execution: the scheme \'http\' is not supported: write '
     r'"grpc://HOST:PORT" or "unix:PATH"'),
    ('buildr {\n  remote {\n    execution = "grpc://grid"\n  }\n}\n',
     r'tasks\.hcl:3:\d+: execution: \'grpc://grid\' has no HOST:PORT after grpc://'),
    ('buildr {\n  remote {\n    execution = 8980\n  }\n}\n',
     r'tasks\.hcl:3:\d+: execution must be a'),
    ('buildr {\n  remote {\n    instance_name = "main"\n  }\n}\n',
     r'tasks\.hcl:2:\d+: the remote block needs execution = "grpc://HOST:PORT" or "unix:PATH"'),
    ('buildr {\n  remote {\n    executon = "grpc://grid:80"\n  }\n}\n',
     r'tasks\.hcl:3:\d+: unknown attribute "executon" in remote block \(did you mean '
     r'"execution"'),
    ('buildr {\n  remote {\n    execution = "unix:/s"\n  }\n  remote {\n    execution = '
     '"unix:/t"\n  }\n}\n', r'tasks\.hcl:5:\d+: a second remote block \(first at .*:2\)'),
    ('buildr {\n  out_dir = ".."\n}\n', r'tasks\.hcl:2:\d+: out_dir "\.\." would hold the repository'),
    ('buildr {\n  out_dir = "/"\n}\n', r'tasks\.hcl:2:\d+: out_dir "/" would hold the repository'),
    ('buildr {\n  out_dir = ""\n}\n', r'tasks\.hcl:2:\d+: out_dir must be a directory'),
    (('task "script" "x" {\n  container { image = "i" }\n  script = "true"\n}\n'
     'task "script" "x" {\n  container { image = "i" }\n  script = "true"\n}\n'),
     r'task "x" is defined twice'),
    ('tsak "script" "x" {\n}\n', r'unknown block or attribute "tsak" \(did you mean "task"\?\)'),
    ('task "script" "-x" {\n  container { image = "i" }\n  script = "true"\n}\n',
     r'tasks\.hcl:1:15: task name "-x" must start with a letter or digit and hold only'),
])
def test_mistakes_are_one_located_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_project(write(tmp_path, text))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(".buildr/tasks.hcl")


# -- modules of every category, the attributes beyond the script's, variables ---------------

FULL = '''
locals {
  image = "localhost/buildr-busybox:latest"
  flags = { CFLAGS = "-O2" }
}

build "script" "lib" {
  container { image = local.image }
  script = "make lib"
}

task "script" "test" {
  container {
    image      = local.image
    user       = "1000"
    network    = "private"
    inputs     = "copy"
    privileged = false
    environment = { LANG = "C.UTF-8" }
    capabilities {
      add  = ["net_admin", "CAP_SYS_PTRACE"]
      drop = ["ALL"]
    }
    bind_mount {
      source    = build.lib.out_dir
      target    = "/deps/lib"
      read_only = true
    }
    bind_mount {
      source = "src"
      target = "/src"
    }
    tmpfs_mount {
      target = "/scratch"
      size   = "64m"
    }
  }
  environment       = local.flags
  depends_on        = [tool.fmt, "lib"]
  timeout           = "1h30m"
  write_back        = true
  continue_on_error = true
  script            = "make test HOME=$${HOME} from=${env("BUILDR_TEST_FROM", "nowhere")}"
}

tool "script" "fmt" {
  container { image = local.image }
  inline = ["fmt"]
}

package "script" "deb" {
  container { image = "${local.image}" }
  script = "echo ${package.deb2.out_dir}/x"
}

package "script" "deb2" {
  container { image = local.image }
  script = "true"
}
'''


def test_every_category_attribute_and_variable(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    project = load_project(write(tmp_path, FULL), environ={"BUILDR_TEST_FROM": "env"})
    assert {name: t.category for name, t in project.tasks.items()} == {
        "lib": "build", "test": "task", "fmt": "tool", "deb": "package", "deb2": "package"}
    test = project.tasks["test"]
    spec = test.container
    assert (spec.image, spec.user, spec.network, spec.inputs, spec.privileged) == (
        "localhost/buildr-busybox:latest", "1000", "private", "copy", False)
    assert project.tasks["lib"].container.inputs == "mount"
    assert spec.environment == (("LANG", "C.UTF-8"),)
    assert (spec.cap_add, spec.cap_drop) == (("NET_ADMIN", "SYS_PTRACE"), ("ALL",))
    assert [(m.source, m.target, m.read_only) for m in spec.bind_mounts] == [
        (tmp_path / ".buildr/out/lib", "/deps/lib", True), (tmp_path / "src", "/src", False)]
    assert [(m.target, m.size) for m in spec.tmpfs_mounts] == [("/scratch", "64m")]
    assert spec.image_source == ".buildr/tasks.hcl:14:18"
    assert test.environment == (("CFLAGS", "-O2"),)
    # The out dir reference adds lib; it is named already, so it appears once.
    assert test.depends_on == ("fmt", "lib")
    assert test.timeout_seconds == 5400
    assert test.write_back and test.continue_on_error
    assert test.script == "make test HOME=${HOME} from=env"
    assert project.tasks["deb"].script == "echo /.buildr/out/deb2/x"
    assert project.tasks["deb"].depends_on == ("deb2",), "an out dir reference is a dependency"
    assert project.tasks["fmt"].timeout_seconds is None and not project.tasks["fmt"].write_back


def test_env_defaults_and_the_out_dir_setting(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, '''
buildr {
  out_dir = env("BUILDR_TEST_OUT", "build/out")
}
task "script" "a" {
  container { image = "i" }
  script = "echo ${task.b.out_dir}"
}
task "script" "b" {
  container { image = "i" }
  script = "true"
}
'''), environ={})
    assert project.out_dir == tmp_path / "build/out"
    # In the container, wherever the out dir is on the host.
    assert project.tasks["a"].script == "echo /.buildr/out/b"
    assert project.log_path("a") == tmp_path / "build/out/.logs/a.log"


@pytest.mark.parametrize(("text", "expected"), [
    # unknown attributes, with the nearest valid name
    ('task "script" "x" {\n  container {\n    imag = "i"\n  }\n  script = "t"\n}\n',
     r':3:5: unknown attribute "imag" in container block \(did you mean "image"\?\)'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n  dependson = []\n}\n',
     r':4:3: unknown attribute "dependson" in task "x" \(did you mean "depends_on"\?\)'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    bind_mounts {\n    }\n  }\n'
     '  script = "t"\n}\n'),
     r':4:5: unknown block "bind_mounts" in container block \(did you mean "bind_mount"\?\)'),
    ('task "script" "x" {\n  container = { image = "i" }\n  script = "t"\n}\n',
     r':2:3: container is a block in the task "x": write container \{ \.\.\. \} without "="'),
    ('buildr {\n  outdir = "o"\n}\n',
     r':2:3: unknown attribute "outdir" in buildr block \(did you mean "out_dir"\?\)'),
    # wrong types
    ('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n  timeout = 90\n}\n',
     r':4:13: timeout must be a duration like "90s", "10m" or "1h30m", not 90'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n  write_back = "yes"\n}\n',
     r':4:16: write_back must be true or false, not "yes"'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = ["t"]\n}\n',
     r':3:12: script must be a string, like "text", not a list'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n  depends_on = "y"\n}\n',
     r':4:16: depends_on must be a list of module names'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    privileged = 1\n  }\n'
     '  script = "t"\n}\n'), r':4:18: privileged must be true or false, not 1'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    network = "host"\n  }\n'
     '  script = "t"\n}\n'), r':4:15: network must be "none" \(the default\) or "private"'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    inputs = "cpy"\n  }\n'
     '  script = "t"\n}\n'), r':4:14: inputs must be "mount" .* not "cpy" \(did you mean "copy"\?\)'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    capabilities {\n'
     '      add = ["NET_ADMN"]\n    }\n  }\n  script = "t"\n}\n'),
     r':5:14: unknown capability "NET_ADMN" \(did you mean "NET_ADMIN"\?\)'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    tmpfs_mount {\n'
     '      target = "/t"\n      size = "lots"\n    }\n  }\n  script = "t"\n}\n'),
     r':6:14: tmpfs_mount size must be bytes with an optional unit'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    tmpfs_mount {\n'
     '      target = "/workspace/tmp"\n    }\n  }\n  script = "t"\n}\n'),
     r':5:16: tmpfs_mount target "/workspace/tmp" is taken'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    tmpfs_mount {\n'
     '      target = "/t"\n      size = "0"\n    }\n  }\n  script = "t"\n}\n'),
     r':6:14: tmpfs_mount size "0" would be no limit at all'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    tmpfs_mount {\n'
     '      target = "/t"\n      size = "0m"\n    }\n  }\n  script = "t"\n}\n'),
     r':6:14: tmpfs_mount size "0m" would be no limit at all'),
    # environment names that no process can be given
    ('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n'
     '  environment = { "A=B" = "1" }\n}\n',
     r""":4:\d+: environment: 'A=B' cannot be an environment variable name \(it holds "="\)"""),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n'
     '  secret_environment = { "A\\nB" = "1" }\n}\n',
     r":4:\d+: secret_environment: 'A\\nB' cannot be .* \(it holds a newline\)"),
    ('task "script" "x" {\n  container {\n    image = "i"\n    environment = { "" = "1" }\n'
     '  }\n  script = "t"\n}\n',
     r":4:\d+: environment: '' cannot be an environment variable name \(it is empty\)"),
    ('task "script" "x" {\n  container {\n    image = "Local/Tool:1"\n  }\n  script = "t"\n}\n',
     r""":3:13: task "x": image 'Local/Tool:1' is not a name Podman accepts"""),
    # nesting deeper than the parser (and everything after it) can recurse
    ('locals {\n  a = ' + '[' * 3000 + '1' + ']' * 3000 + '\n}\n',
     r':2:106: nested more than 100 levels deep: flatten it'),
    ('locals {\n  a = "' + '[' * 3000 + '"\n  # ' + '{' * 3000 + '\n}\n'
     'task "script" "x" {\n  container { image = "i" }\n  script = <<-EOT\n'
     + '(' * 3000 + '\n  EOT\n  timeout = 1\n}\n',
     r':10:13: timeout must be a duration'),  # in strings, comments and heredocs: no nesting
    # unknown modules, cycles, duplicates
    (('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n'
     '  depends_on = ["yy"]\n}\ntask "script" "y" {\n  container { image = "i" }\n'
     '  script = "t"\n}\n'),
     r':4:17: task "x" depends on "yy", which is not a module \(did you mean "y"\?\)'),
    (('task "script" "a" {\n  container { image = "i" }\n  script = "t"\n'
     '  depends_on = ["b"]\n}\nbuild "script" "b" {\n  container { image = "i" }\n'
     '  script = "${task.a.out_dir}"\n}\n'), r':4:18: dependency cycle: a -> b -> a'),
    (('task "script" "a" {\n  container { image = "i" }\n  script = "t"\n'
     '  depends_on = ["a"]\n}\n'), r':4:18: dependency cycle: a -> a'),
    (('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n}\n'
     'tool "script" "x" {\n  container { image = "i" }\n  script = "t"\n}\n'),
     r':5:15: the name "x" is used twice \(first by task "x" at \.buildr/tasks\.hcl:1\)'),
    ('locals {\n  a = "1"\n}\nlocals {\n  a = "2"\n}\n',
     r':5:3: local "a" is defined twice \(first at \.buildr/tasks\.hcl:2\)'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n  script = "u"\n}\n',
     r':4:3: attribute "script" is set twice \(first on line 3\)'),
    # image and mounts
    ('task "script" "x" {\n  container {\n    user = "1"\n  }\n  script = "t"\n}\n',
     r':2:3: task "x": container needs image = "NAME:TAG"'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    bind_mount {\n'
     '      source = "no/such/dir"\n      target = "/d"\n    }\n  }\n  script = "t"\n}\n'),
     r':5:16: bind_mount source "no/such/dir" does not exist \(.*no/such/dir\): create it'),
    (('task "script" "x" {\n  container {\n    image = "i"\n    bind_mount {\n'
     '      source = "."\n    }\n  }\n  script = "t"\n}\n'),
     r':4:5: task "x": bind_mount needs target = "\.\.\."'),
    # variables
    ('buildr {\n  default = ["nope"]\n}\n', r':2:14: default names "nope", which is not a module'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "echo $${A} ${HOME}"\n}\n',
     r':3:24: script: unknown reference "HOME": use env\("NAME"\)'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = lower("T")\n}\n',
     r':3:12: script: unknown function "lower"'),
    ('task "script" "x" {\n  container { image = local.img }\n  script = "t"\n}\n',
     r':2:23: image: no local value named "img"'),
    (('locals {\n  a = local.b\n  b = "${local.a}!"\n}\ntask "script" "x" {\n'
     '  container { image = local.a }\n  script = "t"\n}\n'),
     r':3:8: local\.b: local values refer to each other in a loop: a -> b -> a'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "${build.x.out_dir}"\n}\n',
     r':3:13: script: module "x" is a task, not a build: write task\.x\.out_dir'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "${task.y.out_dir}"\n}\n',
     r':3:13: script: "task\.y\.out_dir" refers to no module named "y"'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "%{ if true }t%{ endif }"\n}\n',
     r':3:13: script: template directives'),
    # inputs_from
    ('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n  inputs_from = "y"\n}\n',
     r':4:17: inputs_from must be a list of module names'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n  inputs_from = ["yy"]\n}\n',
     r':4:18: task "x" depends on "yy", which is not a module'),
    ('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n  inputs_from = [task.x]\n}\n',
     r':1:1: task "x" refers to its own out dir'),
    (('task "script" "x" {\n  container { image = "i" }\n  script = "t"\n'
      '  inputs_from = ["y", task.y]\n}\ntask "script" "y" {\n  container { image = "i" }\n'
      '  script = "t"\n}\n'), r':4:.*: inputs_from names "y" twice'),
])
def test_more_mistakes_are_one_located_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_project(write(tmp_path, text), environ={})
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(".buildr/tasks.hcl:")


def test_module_types_come_from_plugins(tmp_path: Path) -> None:
    from buildr_podman.moduletype import ModuleSpecError, ModuleType

    def expand(spec: dict) -> str:
        if spec["count"] < 1:
            raise ModuleSpecError("count must be 1 or more", "count")
        return "echo hi\n" * spec["count"]

    twice = ModuleType(name="twice", category="tool", summary="says hi", expand=expand,
                       attributes={"count": "number"}, defaults={"count": 2})
    types = {twice.key: twice}
    root = write(tmp_path, 'tool "twice" "a" {\n  container { image = "i" }\n}\n'
                           'tool "twice" "b" {\n  container { image = "i" }\n  count = 0\n}\n')
    with pytest.raises(ConfigError, match=r':6:11: tool "b": count must be 1 or more'):
        load_project(root, types)
    (root / ".buildr" / "tasks.hcl").write_text('tool "twice" "a" {\n  container { image = "i" }'
                                                '\n}\ntask "script" "c" {}\n')
    with pytest.raises(ConfigError, match=r':4:6: unknown task type "script"; known task types: '
                                          r'none \(a plugin may provide more'):
        load_project(root, types)
    (root / ".buildr" / "tasks.hcl").write_text('tool "twice" "a" {\n  container { image = "i" }'
                                                '\n  count = "3"\n}\n')
    with pytest.raises(ConfigError, match=r':3:11: count must be a number, like 4, not "3"'):
        load_project(root, types)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1h30m", 5400), ("500ms", 0.5), ("1.5h", 5400),
    ("90", None), ("", None), ("10 m", None), ("1d", None),
])
def test_durations(text: str, seconds: float | None) -> None:
    from buildr_podman.config import parse_duration

    assert parse_duration(text) == seconds


def test_inputs_from_and_out_dir_references_are_dependencies_whose_outputs_are_shown(
        tmp_path: Path) -> None:
    write(tmp_path, '''
task "script" "configure" {
  container { image = "i" }
  script = "t"
}
build "script" "lib" {
  container { image = "i" }
  script = "t"
}
task "script" "host" {
  container {
    image = "i"
    bind_mount {
      source = task.configure.out_dir
      target = "/configured"
    }
  }
  script = "t"
}
task "script" "test" {
  container { image = "i" }
  inputs_from = [build.lib, "configure"]
  working_dir = "src"
  script = "ls ${task.configure.out_dir}"
}
''')
    project = load_project(tmp_path)
    test = project.tasks["test"]
    assert test.inputs_from == ("lib", "configure")  # in the order given: later wins
    assert set(test.depends_on) == {"lib", "configure"}
    assert test.outputs_used == ("configure", "lib")
    assert test.script == "ls /.buildr/out/configure"  # absolute: any working_dir
    # A bind_mount source is a host path: the out dir there.
    host = project.tasks["host"]
    assert host.container.bind_mounts[0].source == tmp_path / ".buildr/out/configure"
    assert host.depends_on == ("configure",)


def test_the_cache_bound_is_read_from_the_buildr_block(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, 'buildr {\n  cache {\n    max_size = "3g"\n  }\n}\n'))
    assert project.cache_max_bytes == 3 << 30
    (tmp_path / "other").mkdir()
    assert load_project(write(tmp_path / "other", "")).cache_max_bytes is None


def test_the_remote_cache_is_read_from_the_cache_block(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILDR_TEST_UPLOAD", "true")
    project = load_project(write(tmp_path, """
buildr {
  cache {
    remote = "grpc://127.0.0.1:8980"
    upload = env("BUILDR_TEST_UPLOAD", "false")
    instance_name = "main"
  }
}
"""))
    remote = project.cache_remote
    assert remote is not None
    assert (remote.url, remote.target, remote.upload, remote.instance_name) \
        == ("grpc://127.0.0.1:8980", "127.0.0.1:8980", True, "main")
    (tmp_path / "other").mkdir()
    unix = load_project(write(tmp_path / "other", 'buildr {\n  cache {\n    remote = '
                              '"unix:run/reapi.sock"\n  }\n}\n')).cache_remote
    assert unix is not None and not unix.upload
    assert unix.target == f"unix:{tmp_path / 'other' / 'run/reapi.sock'}"  # from the root
    assert load_project(write(tmp_path / "other", "")).cache_remote is None


def test_remote_execution_is_read_from_the_remote_block(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, """
buildr {
  remote {
    execution = "grpc://127.0.0.1:50051"
    instance_name = "main"
  }
}
"""))
    remote = project.remote_execution
    assert remote is not None
    assert (remote.url, remote.target, remote.instance_name) \
        == ("grpc://127.0.0.1:50051", "127.0.0.1:50051", "main")
    assert project.cache_remote is None  # executing there is not caching there
    (tmp_path / "other").mkdir()
    unix = load_project(write(tmp_path / "other", 'buildr {\n  remote {\n    execution = '
                              '"unix:run/grid.sock"\n  }\n}\n')).remote_execution
    assert unix is not None and unix.instance_name == ""
    assert unix.target == f"unix:{tmp_path / 'other' / 'run/grid.sock'}"  # from the root
    assert load_project(write(tmp_path / "other", "")).remote_execution is None


def test_cache_and_cache_secrets_are_read_from_a_module(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, """
task "script" "deploy" {
  container { image = "i" }
  script = "true"
  cache  = false
}
task "script" "signed" {
  container { image = "i" }
  script = "true"
  cache_secrets = true
}
"""))
    assert not project.tasks["deploy"].cache and not project.tasks["deploy"].cache_secrets
    assert project.tasks["signed"].cache and project.tasks["signed"].cache_secrets


def test_cache_volumes_are_read_from_the_container_block(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, """
task "script" "cc" {
  container {
    image = "i"
    cache_volume { target = "/root/.ccache" }
    cache_volume { target = "/var/cache/apt/" }
  }
  script = "true"
}
"""))
    assert project.tasks["cc"].container.cache_volumes == ("/root/.ccache", "/var/cache/apt")


@pytest.mark.parametrize("block, expected", [
    ('cache_volume { }', r'cache_volume needs target = "/path"'),
    ('cache_volume { target = "rel" }', r"cache_volume target must be an absolute path"),
    ('cache_volume { target = "/workspace/x" }', r'cache_volume target "/workspace/x" is taken'),
    ('cache_volume { target = "/c" }\n    tmpfs_mount { target = "/c" }',
     r'two mounts have target "/c"'),
])
def test_cache_volume_mistakes_are_one_located_line(tmp_path: Path, block: str,
                                                     expected: str) -> None:
    text = f'task "script" "x" {{\n  container {{\n    image = "i"\n    {block}\n  }}\n' \
        '  script = "true"\n}\n'
    with pytest.raises(ConfigError, match=expected):
        load_project(write(tmp_path, text))


def test_the_out_dir_may_lie_outside_the_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    task = 'task "script" "x" {\n  container { image = "i" }\n  script = "t"\n}\n'
    write(root, 'buildr {\n  out_dir = "../outputs"\n}\n' + task)
    assert load_project(root).out_dir.resolve() == tmp_path / "outputs"
    write(root, f'buildr {{\n  out_dir = "{tmp_path}/elsewhere"\n}}\n' + task)
    assert load_project(root).out_dir == tmp_path / "elsewhere"


def test_an_unset_variable_sets_its_module_aside_and_only_it(tmp_path: Path) -> None:
    from buildr_podman.runner import select_tasks

    write(tmp_path, '''
buildr {
  default = ["ok"]
}
task "script" "needs" {
  container { image = env("BUILDR_TEST_UNSET") }
  script = "t"
}
task "script" "after" {
  container { image = "i" }
  depends_on = ["needs"]
  script = "t"
}
task "script" "ok" {
  container { image = "i" }
  script = "t"
}
''')
    project = load_project(tmp_path, environ={})
    assert sorted(project.tasks) == ["after", "ok"]
    assert project.unavailable["needs"] == (
        '.buildr/tasks.hcl:6:23: image: environment variable BUILDR_TEST_UNSET is not set: '
        'export it, or give a default: env("BUILDR_TEST_UNSET", "value")')
    assert [t.name for t in select_tasks(project, [])] == ["ok"]  # buildr { default }
    with pytest.raises(ConfigError, match=r"^needs cannot run \(needed by after\): .*:6:23: "):
        select_tasks(project, ["after"])
    with pytest.raises(ConfigError, match=r"^needs cannot run: .*BUILDR_TEST_UNSET is not set"):
        select_tasks(project, ["ok", "needs"])
    project = load_project(tmp_path, environ={"BUILDR_TEST_UNSET": "img"})
    assert not project.unavailable and project.tasks["needs"].container.image == "img"
