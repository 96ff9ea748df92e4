"""A connection to the Podman API: the user's socket if one answers, else a private service.

Podman is daemonless: when no API socket answers, a `podman system service` is started on a
socket in a private directory for the length of the run and stopped afterwards, so that nothing
keeps running once buildr-podman exits, not even when buildr-podman is killed with SIGKILL: the
kernel then sends the service SIGTERM (see _spawn_outliving_no_one). If that service dies
during the run (killed, or the OOM
killer), the next API call that cannot connect starts it again on the same socket and retries:
containers run on without it (conmon keeps them), so the run can still remove its pods.
"""

from __future__ import annotations

import ctypes
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from buildr_podman.errors import BackendError

if TYPE_CHECKING:
    import podman

__all__ = ["PodmanApi", "api_service_started_early", "early_api", "podman_api", "podman_client",
           "runtime_dir", "socket_accepts", "user_socket"]

T = TypeVar("T")
SERVICE_START_TIMEOUT = 20.0
MAX_RESTARTS = 3  # a service that keeps dying is a broken installation, not a fault to ride out
API_TIMEOUT = 120  # seconds for one API call; pulls and removals can take a while


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR, where rootless Podman and our sockets live (never world-readable)."""
    value = os.environ.get("XDG_RUNTIME_DIR")
    if not value or not os.path.isdir(value):
        raise BackendError("XDG_RUNTIME_DIR is not set to an existing directory: set it to a "
                           f"0700 directory you own, e.g. export XDG_RUNTIME_DIR=/run/user/{os.getuid()}")
    return Path(value)


def user_socket() -> Path:
    """Where rootless Podman's own API socket is when the user runs one (systemd socket unit)."""
    host = os.environ.get("CONTAINER_HOST", "")
    if host.startswith("unix://"):
        return Path(host[len("unix://"):])
    return runtime_dir() / "podman" / "podman.sock"


class PodmanApi:
    """A run's connection to Podman: `libpod`, the standard library's HTTP, for everything on
    a run's path (libpod.py says why); `client`, podman-py's, made on first use for the rest
    (`doctor`, the hint of a missing image's nearest name)."""

    def __init__(self, sock: Path, service: _Service | None = None) -> None:
        from buildr_podman.podman.libpod import Libpod

        self.libpod = Libpod(sock, API_TIMEOUT, service.revive if service else None)
        self._service = service
        self._lock = threading.Lock()
        self._client: podman.PodmanClient | None = None

    def wait_until_answers(self) -> None:
        """For an API whose private service was started without waiting (early_api)."""
        if self._service is not None:
            self._service.wait_until_answers()

    @property
    def client(self) -> podman.PodmanClient:
        with self._lock:
            if self._client is None:
                self._client = _client(self.libpod.sock)
                if self._service is not None:
                    _retry_after_restart(self._client, self._service)
            return self._client


@contextmanager
def podman_api() -> Iterator[PodmanApi]:
    """Yields the run's connection; a service started here is stopped on exit, whatever
    happened."""
    existing = user_socket()
    if socket_accepts(existing):
        yield PodmanApi(existing)
        return
    early = _early_service()
    if early is not None:  # its starter stops it
        early.wait_until_answers()
        yield PodmanApi(early.sock, early)
        return
    with _private_service() as service:
        yield PodmanApi(service.sock, service)


@contextmanager
def podman_client() -> Iterator[podman.PodmanClient]:
    """Yields podman-py's client (for what is not on a task's path: `doctor`)."""
    with podman_api() as api:
        yield api.client


def _client(sock: Path) -> podman.PodmanClient:
    import podman  # deferred: importing podman-py costs ~0.15 s

    return podman.PodmanClient(base_url=f"unix://{sock}", timeout=API_TIMEOUT)


class _Service:
    """A private `podman system service` for one run, started again if it dies mid-run."""

    def __init__(self, podman_bin: str, sock: Path, wait: bool = True) -> None:
        self.sock = sock
        self.restarts = 0
        self._podman = podman_bin
        self._lock = threading.Lock()  # worker threads may all find it dead at once
        self._process = self._spawn(wait)

    def _spawn(self, wait: bool = True) -> subprocess.Popen[bytes]:
        # --time=0: no idle timeout (podman#5840: the default 5 s stops it under our feet).
        process = _spawn_outliving_no_one(
            [self._podman, "system", "service", "--time=0", f"unix://{self.sock}"])
        if wait:
            self._wait_until_answers(process)
        return process

    def wait_until_answers(self) -> None:
        """For a service started without waiting (api_service_started_early)."""
        with self._lock:
            self._wait_until_answers(self._process)

    def _wait_until_answers(self, process: subprocess.Popen[bytes]) -> None:
        try:
            _wait_until_answers(self.sock, process)
        except BaseException:
            _stop(process)
            raise

    def revive(self) -> bool:
        """Starts the service again if it has died; whether a retry is worth it."""
        with self._lock:
            if self._process.poll() is None:
                return False  # alive: the failure was something else
            if self.restarts >= MAX_RESTARTS:
                return False
            self.restarts += 1
            _stop(self._process)  # reaps it and closes its stderr pipe
            print(f"buildr-podman: warning: the Podman API service (pid {self._process.pid}) "
                  f"exited with {self._process.returncode} during the run; starting a new one",
                  file=sys.stderr)
            try:
                self._process = self._spawn()
            except BackendError:
                return False
            return True

    def stop(self) -> None:
        with self._lock:
            _stop(self._process)


@contextmanager
def api_service_started_early() -> Iterator[None]:
    """Starts the private API service now, without waiting for it, for this process's
    podman_api() to use: a run that will start pods at once (`run --no-cache`) has it
    answering by the time its configuration is read, instead of ~30 ms after (the cold
    no-op of issue 18). Stopped on exit, whether a run used it or not (a configuration
    error, a remote run). Nothing is started when the user's own socket answers; and
    nothing is said here of what would stop a service (no podman, no XDG_RUNTIME_DIR):
    podman_api() says it."""
    # One service per process, as one run per process.
    global _started_early, _early_user_socket  # noqa: PLW0603
    with ExitStack() as stack:
        user: Path | None = None
        service: _Service | None = None
        try:
            user = user_socket()
            if not socket_accepts(user):
                user, service = None, stack.enter_context(_private_service(wait=False))
        except BackendError:
            user = None
        with _early_lock:
            _started_early, _early_user_socket = service, user
        try:
            yield
        finally:
            with _early_lock:
                _started_early = _early_user_socket = None


def early_api() -> PodmanApi | None:
    """Inside api_service_started_early: the API the run will use (the service started there,
    which may not answer yet: see PodmanApi.wait_until_answers, or the user's own socket);
    None outside it, or with neither. For what a run asks Podman before its session opens
    (the task cache's image ids: ~3 ms here, where a `podman` process costs ~60 ms of CPU on
    a 2-core machine busy starting the run)."""
    with _early_lock:
        service, user = _started_early, _early_user_socket
    if service is not None:
        return PodmanApi(service.sock, service)
    return PodmanApi(user) if user is not None else None


_early_lock = threading.Lock()
_started_early: _Service | None = None
_early_user_socket: Path | None = None  # the user's socket, when it answered instead


def _early_service() -> _Service | None:
    with _early_lock:
        return _started_early


@contextmanager
def _private_service(wait: bool = True) -> Iterator[_Service]:
    podman_bin = shutil.which("podman")
    if podman_bin is None:
        raise BackendError("podman is not installed: install it (e.g. apt-get install podman), "
                           "then run buildr-podman doctor")
    # The pid in the name: the next run removes the directory if this one dies unable to.
    directory = Path(tempfile.mkdtemp(prefix=f"buildr-podman-api-{os.getpid()}-",
                                      dir=runtime_dir()))
    try:
        service = _Service(podman_bin, directory / "podman.sock", wait)
        try:
            yield service
        finally:
            service.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _retry_after_restart(client: podman.PodmanClient, service: _Service) -> None:
    """Makes every API call that fails to reach a dead service revive it and retry once."""
    import requests

    session = client.api  # podman-py's APIClient is a requests.Session
    send = session.request

    def request(*args: object, **kwargs: object) -> requests.Response:
        try:
            return send(*args, **kwargs)  # type: ignore[arg-type]
        except requests.ConnectionError:
            if not service.revive():
                raise
            return send(*args, **kwargs)  # type: ignore[arg-type]

    session.request = request  # type: ignore[method-assign]


def _wait_until_answers(sock: Path, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVICE_START_TIMEOUT
    while not socket_accepts(sock):
        if service.poll() is not None:
            detail = (service.stderr.read() if service.stderr else b"").decode(errors="replace")
            last = detail.strip().splitlines()[-1] if detail.strip() else "no message"
            raise BackendError(f"podman system service exited at start ({last}): "
                               "run buildr-podman doctor")
        if time.monotonic() > deadline:
            raise BackendError(f"podman system service did not answer within "
                               f"{SERVICE_START_TIMEOUT:.0f} s: run buildr-podman doctor")
        time.sleep(0.01)


def socket_accepts(sock: Path | str) -> bool:
    """Whether something accepts connections on this unix socket (cheaper than an API ping)."""
    if not os.path.exists(sock):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(sock))
        return True
    except OSError:
        return False
    finally:
        probe.close()


PR_SET_PDEATHSIG = 1


def _spawn_outliving_no_one(argv: list[str]) -> subprocess.Popen[bytes]:
    """Starts argv so that it gets SIGTERM when this process dies, however it dies: with
    --time=0 a service orphaned by a SIGKILL ran forever. The kernel's parent-death signal
    fires when the *thread* that forked the child ends, and a service is also started again
    from whichever worker thread finds it dead (revive), so every spawn happens in one thread
    that lives as long as the process."""
    # In the child, between fork and exec, only one foreign call: libc is loaded here, in the
    # parent, so that nothing is imported there that a lock held at fork could block.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    die_with_parent = partial(prctl, PR_SET_PDEATHSIG, int(signal.SIGTERM))
    return _SPAWNER.run(lambda: subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=die_with_parent))  # noqa: PLW1509 - see above


class _Spawner:
    """One daemon thread, started on first use, that runs what it is given and waits for more
    until the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None

    def run(self, job: Callable[[], T]) -> T:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="service-spawner",
                                                daemon=True)
                self._thread.start()
        done: Future[T] = Future()
        self._jobs.put((job, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                done.set_result(job())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)


_SPAWNER = _Spawner()


def _stop(service: subprocess.Popen[bytes]) -> None:
    service.terminate()
    try:
        service.wait(timeout=10)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()
    if service.stderr:
        service.stderr.close()
