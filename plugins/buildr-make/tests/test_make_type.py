"""The make module type: its expansion, its errors, and loading it as an installed plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from buildr_make import ALL_CORES, expand_make

from buildr_podman.config import load_project
from buildr_podman.errors import ConfigError
from buildr_podman.moduletype import ModuleSpecError
from buildr_podman.plugins import make_plugin_manager, module_types


def test_defaults_run_make_with_one_job_per_core() -> None:
    assert expand_make({"targets": [], "jobs": 0, "variables": {}}) == \
        f"exec make -j {ALL_CORES}\n"


def test_every_attribute_becomes_a_quoted_word() -> None:
    script = expand_make({"targets": ["all", "it's"], "directory": "src dir", "jobs": 4,
                          "makefile": "GNUmakefile", "variables": {"CFLAGS": "-O2 -g"},
                          "keep_going": True})
    assert script == ("exec make -j 4 -k -C 'src dir' -f GNUmakefile 'CFLAGS=-O2 -g' all "
                      "'it'\"'\"'s'\n")


@pytest.mark.parametrize(("spec", "attribute"), [
    ({"jobs": -1}, "jobs"),
    ({"jobs": 1.5}, "jobs"),
    ({"jobs": 1, "targets": ["--eval=x"]}, "targets"),
    ({"jobs": 1, "variables": {"NOT A NAME": "x"}}, "variables"),
    ({"jobs": 1, "directory": "-C"}, "directory"),
])
def test_nonsense_is_refused_naming_the_attribute(spec: dict, attribute: str) -> None:
    with pytest.raises(ModuleSpecError) as info:
        expand_make(spec)
    assert info.value.attribute == attribute


def test_the_installed_distribution_is_found_by_its_entry_point() -> None:
    pm = make_plugin_manager(distributions=True)  # as `buildr-podman plugins` makes it
    assert pm.get_plugin("make") is not None
    assert any(dist.project_name == "buildr-make" for _, dist in pm.list_plugin_distinfo())
    types = module_types(pm)
    assert ("task", "make") in types and ("build", "make") in types


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / ".buildr").mkdir()
    (tmp_path / ".buildr" / "build.hcl").write_text(text)
    return tmp_path


def test_a_make_block_reads_into_a_task(tmp_path: Path) -> None:
    root = write(tmp_path, 'build "make" "hello" {\n  container { image = "i" }\n'
                           '  targets = ["hello"]\n  jobs = 2\n}\n')
    project = load_project(root, module_types(make_plugin_manager()))
    task = project.tasks["hello"]
    assert (task.category, task.module_type) == ("build", "make")
    assert task.argv() == ["/bin/sh", "-c", "exec make -j 2 hello\n"]
    assert task.spec["targets"] == ["hello"]


def test_a_wrong_attribute_is_a_located_config_error(tmp_path: Path) -> None:
    root = write(tmp_path, 'task "make" "x" {\n  container { image = "i" }\n'
                           '  jobs = -2\n}\n')
    with pytest.raises(ConfigError, match=r"build\.hcl:3:10: task \"x\": jobs must be a whole"):
        load_project(root, module_types(make_plugin_manager()))


def test_buildr_podman_plugins_lists_the_type() -> None:
    listed = subprocess.run([sys.executable, "-m", "buildr_podman", "plugins"],
                            capture_output=True, text=True, check=True)
    assert 'task "make"' in listed.stdout and "buildr-make 0.1.0" in listed.stdout
    shown = subprocess.run([sys.executable, "-m", "buildr_podman", "plugins", "make"],
                           capture_output=True, text=True, check=True)
    assert "targets" in shown.stdout and 'task "make" "hello"' in shown.stdout
