"""Plugin loading: built-ins, installed distributions (entry points), -p modules, and errors."""

from __future__ import annotations

import shutil
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from buildr_podman import installed_memo, plugins
from buildr_podman.cache_root import cache_root
from buildr_podman.errors import PluginError
from buildr_podman.plugins import executors, make_plugin_manager, module_types


def install(site: Path, dist: str, module: str, source: str) -> None:
    """A distribution as pip leaves it: the module, and a dist-info naming its entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[buildr]\n{module} = {module}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("buildr_test_")]:
        del sys.modules[name]


TYPE_PLUGIN = '''
from buildr_podman.hookspecs import hookimpl
from buildr_podman.moduletype import ModuleType

@hookimpl
def buildr_module_types():
    return [ModuleType(name="echo", category="tool", summary="echoes",
                       attributes={"text": "string"}, defaults={"text": "hi"},
                       expand=lambda spec: "echo " + spec["text"])]
'''


def test_built_ins_and_the_podman_entry_point_are_loaded() -> None:
    pm = make_plugin_manager()
    names = [name for name, _ in pm.list_name_plugin()]
    assert names[:2] == ["script", "podman-maintenance"]
    assert "podman" in names
    assert list(executors(pm)) == ["podman"]
    assert ("task", "script") in module_types(pm) and ("package", "script") in module_types(pm)


def test_an_installed_distribution_is_loaded_by_its_entry_point(site: Path) -> None:
    install(site, "buildr-test-echo", "buildr_test_echo", TYPE_PLUGIN)
    pm = make_plugin_manager(distributions=True)
    assert pm.get_plugin("buildr_test_echo") is not None
    dists = {dist.project_name: dist.version for _, dist in pm.list_plugin_distinfo()}
    assert dists["buildr-test-echo"] == "1.2.3"
    assert module_types(pm)[("tool", "echo")].defaults == {"text": "hi"}


def test_a_module_named_with_p_is_loaded(site: Path) -> None:
    (site / "buildr_test_p.py").write_text(TYPE_PLUGIN)
    pm = make_plugin_manager(("buildr_test_p",))
    assert ("tool", "echo") in module_types(pm)


@pytest.mark.parametrize(("source", "message"), [
    (("from buildr_podman.hookspecs import hookimpl\n@hookimpl\ndef buildr_task_strated(task):"
     "\n    pass\n"), r"implements an unknown hook"),
    ("raise RuntimeError('broken at import')\n",
     r"cannot import plugin module 'buildr_test_bad' given with -p: RuntimeError: broken"),
])
def test_a_broken_p_module_is_a_plugin_error(site: Path, source: str, message: str) -> None:
    (site / "buildr_test_bad.py").write_text(source)
    with pytest.raises(PluginError, match=message):
        make_plugin_manager(("buildr_test_bad",))


def test_a_missing_p_module_says_so() -> None:
    with pytest.raises(PluginError, match=r"cannot import plugin module 'no_such_mod' given "
                                          r"with -p"):
        make_plugin_manager(("no_such_mod",))


def test_a_broken_installed_plugin_is_named(site: Path) -> None:
    install(site, "buildr-test-broken", "buildr_test_broken", "import no_such_dependency\n")
    with pytest.raises(PluginError, match=r"entry-point group 'buildr' failed to load: No "
                                          r"module named 'no_such_dependency'; uninstall or fix"):
        make_plugin_manager()


def test_two_plugins_with_one_type_conflict(site: Path) -> None:
    (site / "buildr_test_p.py").write_text(TYPE_PLUGIN)
    (site / "buildr_test_q.py").write_text(TYPE_PLUGIN)
    pm = make_plugin_manager(("buildr_test_p", "buildr_test_q"))
    with pytest.raises(PluginError, match=r'two plugins provide tool type "echo"'):
        module_types(pm)


def test_a_module_type_is_checked_when_made() -> None:
    from buildr_podman.moduletype import ModuleType

    with pytest.raises(PluginError, match=r"category 'stage'; it must be one of task, build"):
        ModuleType(name="x", category="stage", summary="", attributes={}, expand=str)
    with pytest.raises(PluginError, match=r"kind 'int'; it must be one of string, number"):
        ModuleType(name="x", category="task", summary="", attributes={"n": "int"}, expand=str)
    with pytest.raises(PluginError, match=r"gives defaults or requires m, which are not"):
        ModuleType(name="x", category="task", summary="", attributes={}, defaults={"m": 1},
                   expand=str)


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sys.path directory counts as settled, however recently it changed (a fresh
    clone's test run creates some), so that a memo is written (installed_memo.py)."""
    monkeypatch.setattr(installed_memo, "SETTLE_SECONDS", float("-inf"))


@pytest.mark.usefixtures("settled")
def test_installed_plugins_are_remembered_until_a_sys_path_directory_changes(
        site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(site, "buildr-test-echo", "buildr_test_echo", TYPE_PLUGIN)
    # Its first import would write site/__pycache__, a change of site as an install is.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    asked: list[int] = []
    real_lines = plugins._entry_point_lines
    monkeypatch.setattr(plugins, "_entry_point_lines", lambda: asked.append(1) or real_lines())
    assert make_plugin_manager().get_plugin("buildr_test_echo") is not None
    assert make_plugin_manager().get_plugin("buildr_test_echo") is not None
    assert len(asked) == 1  # the second from the memo: importlib.metadata not asked
    shutil.rmtree(site / "buildr_test_echo-1.2.3.dist-info")  # uninstalled: site's mtime moves
    assert make_plugin_manager().get_plugin("buildr_test_echo") is None
    assert len(asked) == 2


@pytest.mark.usefixtures("settled")
def test_a_remembered_plugin_that_no_longer_loads_is_looked_up_again() -> None:
    signature, _ = installed_memo.sys_path_signature()
    memo = cache_root() / plugins.ENTRY_POINTS_MEMO
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(f"{signature}\nghost=buildr_test_ghost\n")  # its module went by hand
    pm = make_plugin_manager()
    assert pm.get_plugin("ghost") is None and pm.get_plugin("podman") is not None
    assert "ghost" not in memo.read_text() and "podman=" in memo.read_text()


@pytest.mark.parametrize(("value", "loaded"), [
    ("buildr_podman.plugins", plugins),
    ("buildr_podman.plugins:make_plugin_manager", make_plugin_manager),
    ("buildr_podman : plugins.make_plugin_manager [extra] ", make_plugin_manager),
])
def test_an_entry_point_value_names_what_importlib_metadata_would_load(
        value: str, loaded: object) -> None:
    assert plugins._load_entry_point(value) is loaded
    assert EntryPoint("x", value, "buildr").load() is loaded
