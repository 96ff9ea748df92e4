"""The built agent bundle runs, mounted read-only, in a glibc image and in a libc-less image."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from buildr_podman import __version__
from buildr_podman.agent.limits import LIMIT_EXEC_NAME
from buildr_podman.podman.agent_build import AGENT_MOUNT, AgentBundle, ensure_agent

pytestmark = pytest.mark.integration

# scripts/setup.sh builds these; the variables let a developer point at images of their own.
GCC_IMAGE = os.environ.get("BUILDR_GCC_IMAGE", "localhost/buildr-gcc:bookworm")
BUSYBOX_IMAGE = os.environ.get("BUILDR_BUSYBOX_IMAGE", "localhost/buildr-busybox:latest")
EXPECTED = f"buildr-agent {__version__}"


@pytest.fixture(scope="session")
def podman() -> str:
    found = shutil.which("podman")
    if not found:
        pytest.skip("podman is not installed")
    if os.geteuid() == 0:
        pytest.skip("needs rootless Podman: run as an unprivileged user (scripts/test does)")
    return found


@pytest.fixture(scope="session")
def agent_bundle() -> AgentBundle:
    # The real default cache: the first run builds (~10 s), later runs reuse it.
    return ensure_agent()


def _require_image(podman: str, image: str) -> None:
    if subprocess.run([podman, "image", "exists", image], check=False).returncode != 0:
        pytest.skip(f"image {image} is missing: run scripts/setup.sh")


def _run(podman: str, bundle: AgentBundle, image: str, *argv: str,
         options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    _require_image(podman, image)
    return subprocess.run(
        [podman, "run", "--rm", "--network", "none", "-v", f"{bundle.path}:{AGENT_MOUNT}:ro",
         *options, image, *argv],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.mark.parametrize("image", [GCC_IMAGE, BUSYBOX_IMAGE], ids=["glibc", "no-libc"])
def test_agent_prints_its_version(podman: str, agent_bundle: AgentBundle, image: str) -> None:
    result = _run(podman, agent_bundle, image, *agent_bundle.command, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == EXPECTED


@pytest.mark.parametrize("image", [GCC_IMAGE, BUSYBOX_IMAGE], ids=["glibc", "no-libc"])
def test_agent_runs_as_a_non_root_user(podman: str, agent_bundle: AgentBundle, image: str) -> None:
    result = _run(podman, agent_bundle, image, *agent_bundle.command, "--version",
                  options=("--user", "1000:1000"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == EXPECTED


def test_the_mount_is_read_only_and_suffices(podman: str, agent_bundle: AgentBundle) -> None:
    agent = " ".join(agent_bundle.command)
    script = f"{agent} --version && ! touch {AGENT_MOUNT}/probe 2>/dev/null && echo read-only"
    result = _run(podman, agent_bundle, BUSYBOX_IMAGE, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == [EXPECTED, "read-only"]
    assert not (agent_bundle.path / "probe").exists()


def test_bundle_is_world_readable(agent_bundle: AgentBundle) -> None:
    # Any container uid maps to "others" on the host; each file must be readable by them.
    unreadable = [p for p in [agent_bundle.path, *agent_bundle.path.rglob("*")]
                  if not p.is_symlink() and not p.stat().st_mode & 0o004]
    assert unreadable == []
    assert agent_bundle.path.joinpath("buildr-agent").stat().st_mode & 0o001


def test_bundle_carries_its_own_loader(agent_bundle: AgentBundle) -> None:
    sys_dir = agent_bundle.path / "_sys"
    assert {"ld-linux-x86-64.so.2", "libc.so.6"} <= {p.name for p in sys_dir.iterdir()}
    # patchelf set the bootloader's PT_INTERP to the bundled loader's in-container path.
    executable = (agent_bundle.path / "buildr-agent").read_bytes()
    assert f"{AGENT_MOUNT}/_sys/ld-linux-x86-64.so.2\0".encode() in executable


def test_bundle_starts_without_pyinstallers_hooks_for_inspect_and_multiprocessing(
        agent_bundle: AgentBundle) -> None:
    # agent_rthooks/ stands in for them (~20 ms of every agent's start-up); the executable
    # carries the names of the run-time hooks it runs before the agent's first line.
    executable = (agent_bundle.path / "buildr-agent").read_bytes()
    assert b"skip_inspect_patch" in executable and b"skip_multiprocessing_patch" in executable
    assert b"pyi_rth_inspect" not in executable and b"pyi_rth_multiprocessing" not in executable
    assert b"pyi_rth_pkgutil" in executable  # PyInstaller's other hooks stay


def test_the_bundles_python_modules_are_stored_not_deflated(agent_bundle: AgentBundle) -> None:
    # Inflating the modules it imports was a tenth of the agent's start-up CPU (~15 ms of every
    # cold run): stored (zlib level 0), an entry is no smaller than the module it holds.
    from PyInstaller.archive.readers import CArchiveReader

    modules = CArchiveReader(str(agent_bundle.path / "buildr-agent")).open_embedded_archive(
        "PYZ.pyz")
    sizes = [(length, len(modules.extract(name, raw=True)))
             for name, (_, _, length) in modules.toc.items() if length]
    assert len(sizes) > 100  # grpc, protobuf, the agent: all of them
    assert all(stored >= module for stored, module in sizes)


def test_the_bundle_leaves_out_what_the_agent_only_tries(agent_bundle: AgentBundle) -> None:
    # asyncio (which grpc's core imports) tries `ssl` at once; loading it and OpenSSL was ~13 ms
    # of each agent's start-up, for a gRPC server on a unix socket. shutil tries bz2 and lzma.
    # Every test that runs a task shows that the agent serves and packs without them.
    from PyInstaller.archive.readers import CArchiveReader

    modules = CArchiveReader(str(agent_bundle.path / "buildr-agent")).open_embedded_archive(
        "PYZ.pyz")
    assert {"asyncio", "shutil"} <= set(modules.toc)
    assert not {"ssl", "bz2", "lzma"} & set(modules.toc)
    extensions = [p.name for p in (agent_bundle.path / "_internal").rglob("*.so*")]
    assert not [name for name in extensions if name.startswith(("_ssl.", "_bz2.", "_lzma."))]


def test_the_bundle_carries_the_compiled_tar_writer_when_it_is_built(
        agent_bundle: AgentBundle) -> None:
    # Small files are written as tar members in C (agent/_tarpack.c): without it the agent
    # still works (with the Python writer), but returns many small files more slowly.
    from buildr_podman.agent import tarwriter

    if tarwriter._compiled is None:
        pytest.skip("the compiled tar writer was not built here")
    extensions = {p.name.split(".")[0]
                  for p in (agent_bundle.path / "_internal" / "buildr_podman").rglob("*.so")}
    assert {"_tarpack", "_s2block"} <= extensions


@pytest.mark.parametrize("image", [GCC_IMAGE, BUSYBOX_IMAGE], ids=["glibc", "no-libc"])
def test_the_bundles_pids_limit_helper_runs_on_any_image(podman: str, agent_bundle: AgentBundle,
                                                         image: str) -> None:
    # buildr-limit-exec (agent/limits.py) is compiled with the bundle where a C compiler is
    # at hand, as on the project's machines, and runs on the bundle's own C library.
    helper = f"{AGENT_MOUNT}/{LIMIT_EXEC_NAME}"
    result = _run(podman, agent_bundle, image, helper, "77", "/bin/sh", "sh", "-c",
                  "grep 'Max processes' /proc/self/limits")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[2:4] == ["77", "77"]  # soft and hard
