"""The pure parts of the Podman doctor: cgroup layout, runtime dir, sub-ids, fixes, network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildr_podman.model import ContainerSpec, Project, Task
from buildr_podman.podman import checks

HYBRID = """\
25 1 0:23 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/cpu rw,nosuid shared:11 - cgroup cgroup rw,cpu
"""
UNIFIED = "25 1 0:23 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n"
LEGACY = HYBRID.splitlines()[0] + "\n" + HYBRID.splitlines()[2] + "\n"


@pytest.mark.parametrize(("mountinfo", "layout"), [
    (HYBRID, "hybrid"), (UNIFIED, "unified"), (LEGACY, "legacy"), ("", "unknown")])
def test_cgroup_layouts(mountinfo: str, layout: str) -> None:
    assert checks.cgroup_layout(mountinfo) == layout


def test_crun_on_a_hybrid_layout_fails_with_the_runc_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "cgroup_layout", lambda: "hybrid")
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    info = {"host": {"ociRuntime": {"name": "crun", "version": "crun version 1.8.1\nx"}}}
    finding = checks._oci_runtime(info, podman_missing=False)
    assert finding.status == "fail"
    assert finding.fix.startswith('install runc (apt-get install runc) and put [engine] '
                                  'runtime = "runc" in ~/.config/containers/containers.conf')
    info["host"]["ociRuntime"]["name"] = "runc"
    assert checks._oci_runtime(info, podman_missing=False).status == "ok"


def test_the_runtime_dir_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    tmp_path.chmod(0o700)
    assert checks._runtime_dir().status == "ok"
    tmp_path.chmod(0o755)
    finding = checks._runtime_dir()
    assert (finding.status, finding.fix) == ("fail", f"chmod 0700 {tmp_path}")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    finding = checks._runtime_dir()
    assert finding.status == "fail" and finding.fix.startswith("export XDG_RUNTIME_DIR=/run/user/")


def test_sub_ids_are_counted_by_name_or_uid(tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text(f"other:100000:65536\nme:165536:1000\n{os.getuid()}:200000:64536\n")
    assert checks._subid_count(str(subuid), "me") == 65536
    assert checks._subid_count(str(tmp_path / "missing"), "me") == 0


@pytest.mark.parametrize(("problem", "fix"), [
    ("crun: cgroups in hybrid mode not supported: OCI runtime error", "install runc"),
    ("Error: default OCI runtime \"crun\" not found", "the OCI runtime does not work"),
    ("cannot set up namespace using newuidmap", "check /etc/subuid"),
    ("image 'x' of task 't' is not here", "build or pull the image"),
    ("something else", "podman run --rm --network none IMAGE true"),
])
def test_fixes_follow_the_message(problem: str, fix: str) -> None:
    assert checks._fix_for(problem).startswith(fix)


def test_tun_is_required_only_when_a_module_uses_a_private_network(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks.os.path, "exists", lambda path: False)
    assert checks._network(None).status == "warn"
    private = Task(name="web", module_type="script", script="true",
                   container=ContainerSpec(image="i", network="private"))
    project = Project(root=tmp_path, out_dir=tmp_path / "out", tasks={"web": private})
    finding = checks._network(project)
    assert finding.status == "fail" and "modules web use network" in finding.detail
    assert finding.fix.startswith("sudo chmod 0666 /dev/net/tun")
