"""`buildr-podman doctor` for the Podman backend: checks this machine, with the fix for each problem.

Each check yields a Finding as soon as it is done. Checks that need a working `podman` are
skipped when it is missing; the last one runs a real task through the real executor.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from buildr_podman.archive.owned import walk_tree
from buildr_podman.doctor import Finding
from buildr_podman.model import Project
from buildr_podman.podman.podman_cli import PodmanCliError, podman, podman_json

__all__ = ["run_checks"]

MIN_PODMAN = (4, 0)
MIN_SUBIDS = 65536
DEFAULT_TEST_IMAGE = "localhost/buildr-busybox:latest"
CONTAINERS_CONF_HINT = "~/.config/containers/containers.conf"


def run_checks(project: Project | None, image: str | None) -> Iterator[Finding]:
    """Every check, in the order a broken set-up is best fixed."""
    yield from _configuration_note()
    version = _podman_version()
    yield version
    info: dict[str, Any] | None = None
    if version.status != "fail":
        result = _podman_info()
        if isinstance(result, Finding):
            yield result
        else:
            info = result
    yield _rootless(info)
    yield _subids(info)
    yield _runtime_dir()
    yield _oci_runtime(info, version.status == "fail")
    yield _resource_limits()
    yield _storage(info)
    yield _network(project)
    yield _inotify(project)
    yield _owners(project)
    if info is None:
        for check in ("API socket", "images", "agent build", "container round trip"):
            yield Finding(check, "skip", "needs a working podman (see above)")
        return
    yield _api()
    images = _images(project)
    if images is not None:
        yield images
    agent = _agent()
    yield agent
    if agent.status == "fail":
        yield Finding("container round trip", "skip", "needs the agent build")
        return
    yield _round_trip(project, image)


def _configuration_note() -> Iterator[Finding]:
    conf = os.environ.get("CONTAINERS_CONF")
    if conf:
        yield Finding("containers.conf", "ok", f"CONTAINERS_CONF={conf} replaces your "
                      "containers.conf: the checks below use it")


# -- podman itself -----------------------------------------------------------------------------

def _podman_version() -> Finding:
    binary = shutil.which("podman")
    if binary is None:
        return Finding("podman", "fail", "podman is not on PATH",
                       "install it: apt-get install podman uidmap slirp4netns runc")
    try:
        output = podman("--version", timeout=20)
    except PodmanCliError as exc:
        fix = _fix_for(str(exc), default="reinstall podman (apt-get install --reinstall podman), "
                                         "or put the real podman first on PATH")
        return Finding("podman", "fail", f"{binary} does not work: {exc}", fix)
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", output)
    if not match:
        return Finding("podman", "fail", f"{binary} printed no version ({output.strip()[:60]!r})",
                       "put the real podman first on PATH")
    version = tuple(int(part or 0) for part in match.groups())
    text = ".".join(map(str, version))
    if version[:2] < MIN_PODMAN:
        return Finding("podman", "fail", f"podman {text} at {binary} is too old",
                       f"install podman {MIN_PODMAN[0]}.{MIN_PODMAN[1]} or newer")
    return Finding("podman", "ok", f"podman {text} at {binary}")


def _podman_info() -> dict[str, Any] | Finding:
    try:
        info: dict[str, Any] = podman_json("info", timeout=60)
        return info
    except PodmanCliError as exc:
        return Finding("podman info", "fail", f"podman info fails: {exc}", _fix_for(str(exc)))


def _rootless(info: dict[str, Any] | None) -> Finding:
    if os.getuid() == 0:
        return Finding("rootless", "fail", "running as root",
                       "run buildr-podman as an ordinary user: its tasks run in rootless Podman")
    if info is None:
        return Finding("rootless", "skip", "needs podman info")
    if not info.get("host", {}).get("security", {}).get("rootless"):
        return Finding("rootless", "fail", "podman does not run rootless",
                       "unset CONTAINER_HOST/CONTAINER_CONNECTION if they point to a root "
                       "service")
    return Finding("rootless", "ok", f"rootless as uid {os.getuid()}")


def _subids(info: dict[str, Any] | None) -> Finding:
    user = _user_name()
    uids, gids = _subid_count("/etc/subuid", user), _subid_count("/etc/subgid", user)
    fix = (f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user} "
           "&& podman system migrate")
    missing = [tool for tool in ("newuidmap", "newgidmap") if shutil.which(tool) is None]
    if missing:
        return Finding("subordinate ids", "fail", f"{' and '.join(missing)} missing",
                       "apt-get install uidmap")
    if min(uids, gids) == 0:
        return Finding("subordinate ids", "fail", f"no /etc/subuid or /etc/subgid range for "
                       f"{user} ({uids} uids, {gids} gids)", fix)
    mapped = _mapped_ids(info)
    if mapped is not None and mapped <= 1:
        return Finding("subordinate ids", "fail", f"{uids} subuids are listed, but podman maps "
                       "only your own id", "podman system migrate (after changing /etc/subuid)")
    if min(uids, gids) < MIN_SUBIDS:
        return Finding("subordinate ids", "warn", f"only {uids} uids and {gids} gids: images "
                       f"with ids above that cannot be used", fix)
    return Finding("subordinate ids", "ok", f"{uids} uids and {gids} gids for {user}")


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _subid_count(path: str, user: str) -> int:
    total = 0
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(os.getuid())) and parts[2].isdigit():
            total += int(parts[2])
    return total


def _mapped_ids(info: dict[str, Any] | None) -> int | None:
    if info is None:
        return None
    uidmap = info.get("host", {}).get("idMappings", {}).get("uidmap") or []
    return sum(int(entry.get("size", 0)) for entry in uidmap) if uidmap else None


def _runtime_dir() -> Finding:
    uid = os.getuid()
    fix = (f"export XDG_RUNTIME_DIR=/run/user/{uid} (create it with: sudo install -d -m 0700 "
           f"-o {_user_name()} /run/user/{uid})")
    value = os.environ.get("XDG_RUNTIME_DIR")
    if not value:
        return Finding("XDG_RUNTIME_DIR", "fail", "not set", fix)
    try:
        info = os.stat(value)
    except OSError as exc:
        return Finding("XDG_RUNTIME_DIR", "fail", f"{value}: {exc.strerror}", fix)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        return Finding("XDG_RUNTIME_DIR", "fail", f"{value} is not a directory of yours", fix)
    if stat.S_IMODE(info.st_mode) & 0o077:
        return Finding("XDG_RUNTIME_DIR", "fail", f"{value} is mode "
                       f"{stat.S_IMODE(info.st_mode):04o}: others can reach the sockets in it",
                       f"chmod 0700 {value}")
    return Finding("XDG_RUNTIME_DIR", "ok", f"{value} (0700, yours)")


# -- runtime, storage, network, inotify ------------------------------------------------------

def cgroup_layout(mountinfo: str | None = None) -> str:
    """"unified" (cgroup v2), "hybrid" (v1 with v2 at /sys/fs/cgroup/unified) or "legacy"."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return "unknown"
    types = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 5 and right:
            types[fields[4]] = right.split()[0]
    if types.get("/sys/fs/cgroup") == "cgroup2":
        return "unified"
    if types.get("/sys/fs/cgroup/unified") == "cgroup2":
        return "hybrid"
    return "legacy" if any(kind == "cgroup" for kind in types.values()) else "unknown"


def _oci_runtime(info: dict[str, Any] | None, podman_missing: bool) -> Finding:
    layout = cgroup_layout()
    if info is None:
        if podman_missing:
            return Finding("OCI runtime", "skip", "needs podman")
        return Finding("OCI runtime", "skip", f"podman info failed (see above); cgroup layout: "
                       f"{layout}")
    runtime = info.get("host", {}).get("ociRuntime", {})
    name = runtime.get("name", "?")
    version = (runtime.get("version") or "").splitlines()[0] if runtime.get("version") else ""
    detail = f"{name} ({version or runtime.get('path', '')}) on a {layout} cgroup layout"
    if name == "crun" and layout == "hybrid":
        return Finding("OCI runtime", "fail", f"{detail}: crun refuses it (\"cgroups in hybrid "
                       'mode not supported")', _runc_fix())
    return Finding("OCI runtime", "ok", detail)


def _resource_limits() -> Finding:
    """Where task containers' pids_limit and memory hold (podman/limits.py)."""
    from buildr_podman.podman.limits import unenforced

    missing = unenforced()
    if not missing:
        return Finding("resource limits", "ok", "pids_limit and memory by cgroup v2")
    return Finding("resource limits", "warn",
                   f"{cgroup_layout()} cgroup layout, rootless: enforced are "
                   + "; ".join(missing),
                   "cgroup v2 with the pids and memory controllers delegated to your user "
                   "(systemd does this on most distributions: boot with "
                   "systemd.unified_cgroup_hierarchy=1)")


def _storage(info: dict[str, Any] | None) -> Finding:
    if info is None:
        return Finding("storage driver", "skip", "needs podman info")
    driver = info.get("store", {}).get("graphDriverName", "?")
    if driver == "vfs":
        return Finding("storage driver", "warn", "vfs: every container start copies the whole "
                       "image (about 10x slower)",
                       'put [storage] driver = "overlay" in ~/.config/containers/storage.conf, '
                       "then podman system reset --force (this deletes your images)")
    return Finding("storage driver", "ok", driver)


def _network(project: Project | None) -> Finding:
    users = sorted(name for name, task in (project.tasks.items() if project else ())
                   if task.container.network == "private")
    needed = f"modules {', '.join(users)} use network = \"private\"" if users else \
        'only needed for network = "private"'
    tun = "/dev/net/tun"
    fix = "sudo chmod 0666 /dev/net/tun (or sudo modprobe tun if it is missing)"
    status = "fail" if users else "warn"
    if not os.path.exists(tun):
        return Finding("/dev/net/tun", status, f"{tun} does not exist; {needed}", fix)
    if not os.access(tun, os.R_OK | os.W_OK):
        return Finding("/dev/net/tun", status, f"{tun} is not read-writable for you; {needed}",
                       fix)
    if shutil.which("slirp4netns") is None and shutil.which("pasta") is None:
        return Finding("/dev/net/tun", status, f"neither slirp4netns nor pasta is installed; "
                       f"{needed}", "apt-get install slirp4netns")
    return Finding("/dev/net/tun", "ok", "usable: network = \"private\" works")


def _inotify(project: Project | None) -> Finding:
    try:
        limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return Finding("inotify watches", "warn", "cannot read fs.inotify.max_user_watches")
    if project is None:
        return Finding("inotify watches", "ok", f"{limit} allowed (no repository here to "
                       "compare with)")
    from buildr_podman.jobs import default_jobs

    directories = _count_directories(project.root)
    needed = directories * default_jobs()
    detail = (f"{limit} allowed; the repository has {directories} directories, watched once "
              f"per task running at once ({default_jobs()} by default)")
    if needed > limit:
        return Finding("inotify watches", "warn", detail + ": changes are then found by a "
                       "slower rescan", f"sudo sysctl fs.inotify.max_user_watches="
                       f"{max(524288, needed * 2)} (and in /etc/sysctl.d/ to keep it)")
    return Finding("inotify watches", "ok", detail)


def _owners(project: Project | None) -> Finding:
    from buildr_podman.podman.id_mapping import explain_unmapped, unmapped_files

    if project is None:
        return Finding("file owners", "ok", "no repository here to look at")
    found, total = unmapped_files(project.root)
    if not total:
        return Finding("file owners", "ok", "every file of the repository has an owner and "
                       "group the container can map")
    detail, _, fix = explain_unmapped(found, total).rpartition(": give them to yourself")
    return Finding("file owners", "warn", detail + ' (with inputs = "mount")',
                   "give them to yourself" + fix)


def _count_directories(root: Path) -> int:
    return sum(1 for _ in walk_tree(root)) if root.is_dir() else 0


# -- API, images, agent, round trip ----------------------------------------------------------

def _api() -> Finding:
    from buildr_podman.errors import BuildrError
    from buildr_podman.podman.connection import podman_client, user_socket

    started = time.monotonic()
    try:
        with podman_client() as client:
            client.version()
    except (BuildrError, OSError) as exc:
        return Finding("API socket", "fail", f"no API socket answers and a private one cannot "
                       f"start: {exc}", "run podman system service --time=0 in a terminal "
                       "to see why; then buildr-podman doctor again")
    except Exception as exc:  # noqa: BLE001 - podman-py has its own errors for a bad service
        return Finding("API socket", "fail", f"the API does not answer: {exc}",
                       "podman system service --time=0 in a terminal shows why")
    took = time.monotonic() - started
    try:
        socket = user_socket()
        if socket.exists():
            return Finding("API socket", "ok", f"{socket} ({took:.1f} s)")
    except BuildrError:
        pass
    return Finding("API socket", "ok", f"no socket running: each run starts a private "
                   f"podman system service (this one took {took:.1f} s)")


def _images(project: Project | None) -> Finding | None:
    if project is None or not project.tasks:
        return None
    missing = []
    for name, task in sorted(project.tasks.items()):
        try:
            podman("image", "exists", task.container.image, timeout=20)
        except PodmanCliError:
            missing.append(f"{task.container.image} ({name}, {task.container.image_source})")
    count = len({task.container.image for task in project.tasks.values()})
    if missing:
        return Finding("images", "fail", f"not here: {'; '.join(missing)}",
                       "build or pull them (podman images lists what is here)")
    return Finding("images", "ok", f"every image the project uses is here ({count})")


def _agent() -> Finding:
    from buildr_podman.errors import BuildrError
    from buildr_podman.podman.agent_build import ensure_agent

    started = time.monotonic()
    try:
        bundle = ensure_agent(log=lambda message: print(f"  ... {message}", file=sys.stderr))
    except BuildrError as exc:
        return Finding("agent build", "fail", str(exc),
                       "pip install 'buildr-podman[agent-build]' and apt-get install patchelf")
    took = time.monotonic() - started
    note = f", built in {took:.0f} s" if took > 5 else ""
    return Finding("agent build", "ok", f"{bundle.path}{note}")


def _round_trip(project: Project | None, image: str | None) -> Finding:
    chosen = image or _test_image(project)
    if chosen is None:
        return Finding("container round trip", "fail", "no image to test with",
                       f"pass --image IMAGE, or build {DEFAULT_TEST_IMAGE} (scripts/setup.sh)")
    from buildr_podman.podman.round_trip import round_trip

    started = time.monotonic()
    problem = round_trip(chosen)
    took = time.monotonic() - started
    if problem:
        return Finding("container round trip", "fail", f"in {chosen}: {problem}",
                       _fix_for(problem))
    return Finding("container round trip", "ok", f"a task ran in {chosen} and its file came "
                   f"back ({took:.1f} s)")


def _test_image(project: Project | None) -> str | None:
    candidates = [DEFAULT_TEST_IMAGE]
    if project is not None:
        candidates[:0] = sorted({task.container.image for task in project.tasks.values()})
    for candidate in candidates:
        try:
            podman("image", "exists", candidate, timeout=20)
            return candidate
        except PodmanCliError:
            continue
    return None


def _runc_fix() -> str:
    conf = os.environ.get("CONTAINERS_CONF")
    where = f"the file CONTAINERS_CONF names ({conf})" if conf else CONTAINERS_CONF_HINT
    return f'install runc (apt-get install runc) and put [engine] runtime = "runc" in {where}'


def _fix_for(problem: str, default: str = "") -> str:
    """The likely fix for an error message from Podman or a run."""
    text = problem.lower()
    if "hybrid" in text or "cgroup" in text:
        return _runc_fix()
    if "oci runtime" in text or ("runtime" in text and ("not found" in text or "failed" in text)):
        return "the OCI runtime does not work: " + _runc_fix()
    if "newuidmap" in text or "subuid" in text or "uid_map" in text:
        return ("check /etc/subuid and /etc/subgid (sudo usermod --add-subuids 100000-165535 "
                "--add-subgids 100000-165535 $USER), then podman system migrate")
    if "xdg_runtime_dir" in text:
        return f"export XDG_RUNTIME_DIR=/run/user/{os.getuid()}"
    if "is not here" in text or "image not known" in text:
        return "build or pull the image (podman images lists what is here)"
    return default or "podman run --rm --network none IMAGE true shows Podman's own error"
