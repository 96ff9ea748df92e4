"""A real REAPI cluster for remote execution's tests: PostgreSQL, BuildGrid (Execution, Bots,
ActionCache, CAS, ByteStream) on a unix socket, and `buildr-podman worker` processes.

    with ReapiCluster(workers=2, jobs=1, keepalive=10) as cluster:
        cluster.url                    "unix:/tmp/buildr-cluster-.../bgd.sock": for
                                       `run --remote`, `remote { execution = ... }`, --server
        cluster.workers                {"w1": Worker, "w2": Worker}, started and serving
        cluster.start_worker("w3", jobs=2)     another one, or w1 again after a stop or kill
                                       (the same bot id); returns when it serves
        cluster.kill_worker("w1")      SIGKILL, as a crash; its pods are removed
        cluster.stop_worker("w2")      SIGTERM; returns its exit code (0 expected)
        cluster.worker_log("w1")       what it printed (one line per lease)
        cluster.upload(blob, ...)      blobs into the CAS; their digests
        cluster.execute(digest)        an Execute call, to its end: the ExecuteResponse
        cluster.action_result(digest)  what the ActionCache holds, or None

The database is a private cluster: initdb by the test user into the cluster's directory,
listening on a unix socket there only (listen_addresses = ''), with fsync off. BuildGrid's
server takes up to 200 calls at once (`thread-pool-size`: its default, 5 a core, is 10 here,
and every Execute stream and every worker's long poll holds one: a client running 20 tasks at
once would be answered RESOURCE_EXHAUSTED). Its scheduler is set for tests: no assignment
jitter (it adds up to 1 s to every action), a bot-session keepalive of KEEPALIVE_SECONDS (a
killed worker's leases go to another after that), and every platform property buildr-podman sends or a worker understands declared
(BuildGrid refuses an Action with any other): MATCH_KEYS must be equal on the Action and the
worker, the rest are wildcard keys. SERVER_CONFIG is that configuration, for the README too.

Leaving the block stops the workers (SIGTERM, then SIGKILL), removes any pod they left
(`buildr-podman clean`), stops BuildGrid and PostgreSQL and removes the directory.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
import pytest
from reapi_server import START_SECONDS, bgd

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2_grpc as re_grpc,
)
from buildr_podman.worker.properties import MATCH_KEYS, UNDERSTOOD

KEEPALIVE_SECONDS = 10  #: a worker calls at least every bot.POLL_SECONDS (5 s)
WORKER_START_SECONDS = 120.0  #: the first start may build the agent
STOP_SECONDS = 60.0
DATABASE = "buildgrid"
DB_USER = "buildr"

SERVER_CONFIG = """\
thread-pool-size: 200
server:
  - !channel
    address: "{address}"
    insecure-mode: true
authorization:
  method: none
connections:
  - !sql-connection &sql
    connection-string: "{database}"
    pool-size: 10
    max-overflow: 10
storages:
  - !lru-storage &cas
    size: 1024M
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 4096
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    bot-session-keepalive-timeout: {keepalive}
    session-expiry-timer-interval: 1
    poll-interval: 0.1
    property-set: !dynamic-property-set
      match-property-keys: [{match_keys}]
      wildcard-property-keys: [{wildcard_keys}]
    assigners:
      - !priority-age-assigner
        interval: 0.1
        jitter-factor: 0.0
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
      - !execution
        scheduler: *scheduler
      - !bots
        scheduler: *scheduler
"""


def server_config(address: str, database: str, keepalive: int = KEEPALIVE_SECONDS) -> str:
    """BuildGrid's configuration for buildr-podman's clients and workers."""
    wildcard = [name for name in UNDERSTOOD if name not in MATCH_KEYS]
    return SERVER_CONFIG.format(address=address, database=database, keepalive=keepalive,
                                match_keys=", ".join(f'"{k}"' for k in MATCH_KEYS),
                                wildcard_keys=", ".join(f'"{k}"' for k in wildcard))


def postgres_bin(program: str) -> str:
    """Debian's PostgreSQL server programs (not on PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        pytest.fail(f"PostgreSQL's {program} is not in /usr/lib/postgresql/*/bin: "
                    "scripts/test installs Debian's postgresql package")
    return found[-1]


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class ReapiCluster:
    def __init__(self, workers: int = 2, jobs: int = 1,
                 keepalive: int = KEEPALIVE_SECONDS) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="buildr-cluster-"))  # short: sockets
        self.socket = self.directory / "bgd.sock"
        self.pgdata = self.directory / "pg"
        self.initial_workers = workers
        self.jobs = jobs
        self.keepalive = keepalive
        self.workers: dict[str, Worker] = {}
        self.bgd: subprocess.Popen[bytes] | None = None
        self.bgd_log = self.directory / "bgd.log"
        self._postgres_started = False

    @property
    def url(self) -> str:
        return f"unix:{self.socket}"

    @property
    def database(self) -> str:
        return f"postgresql+psycopg2://{DB_USER}@/{DATABASE}?host={self.directory}"

    # -- the whole cluster ------------------------------------------------------------------

    def __enter__(self) -> ReapiCluster:
        try:
            self._start_postgres()
            self._start_buildgrid()
            for number in range(1, self.initial_workers + 1):
                self.start_worker(f"w{number}", self.jobs)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        try:
            for name in list(self.workers):
                self.stop_worker(name)
            _clean_pods()
        finally:
            if self.bgd is not None:
                _terminate(self.bgd)
            if self._postgres_started:
                subprocess.run([postgres_bin("pg_ctl"), "-D", str(self.pgdata), "-m",
                                "immediate", "-w", "stop"], capture_output=True, check=False)
            shutil.rmtree(self.directory, ignore_errors=True)

    def _start_postgres(self) -> None:
        _run([postgres_bin("initdb"), "-D", str(self.pgdata), "-U", DB_USER, "-A", "trust",
              "-E", "UTF8", "--no-sync"], "initdb")
        options = (f"-c listen_addresses='' -c unix_socket_directories='{self.directory}' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        _run([postgres_bin("pg_ctl"), "-D", str(self.pgdata), "-l",
              str(self.directory / "pg.log"), "-o", options, "-w", "start"], "pg_ctl start")
        self._postgres_started = True
        _run([postgres_bin("createdb"), "-h", str(self.directory), "-U", DB_USER, DATABASE],
             "createdb")
        _run([bgd(), "migrate", "apply", self.database], "bgd migrate apply")

    def _start_buildgrid(self) -> None:
        config = self.directory / "bgd.yml"
        config.write_text(server_config(self.url, self.database, self.keepalive))
        with open(self.bgd_log, "wb") as log:
            self.bgd = subprocess.Popen([bgd(), "server", "start", str(config)], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.bgd.poll() is not None:
                pytest.fail(f"bgd exited with {self.bgd.returncode}: {self._tail(self.bgd_log)}")
            if self.socket.exists() and self._answers():
                return
            time.sleep(0.2)
        pytest.fail(f"bgd did not serve within {START_SECONDS:g} s: {self._tail(self.bgd_log)}")

    def _answers(self) -> bool:
        with grpc.insecure_channel(self.url) as channel:
            try:
                re_grpc.CapabilitiesStub(channel).GetCapabilities(
                    re_pb2.GetCapabilitiesRequest(), timeout=2)
            except grpc.RpcError:
                return False
        return True

    # -- workers ----------------------------------------------------------------------------

    def worker_name(self, name: str) -> str:
        """The worker's --name: NAME and this cluster's own tag, so that two clusters (a
        module's and a test's) never claim the same name; the same for a restart."""
        return f"{name}-{self.directory.name.rsplit('-', 1)[-1]}"

    def start_worker(self, name: str, jobs: int = 1, *extra: str) -> Worker:
        """A `buildr-podman worker` (--name worker_name(NAME): a restart under the same NAME
        has the same bot id), once it says it takes leases."""
        log = self.directory / f"worker-{name}.log"
        started = log.read_text(errors="replace").count("taking up to") if log.exists() else 0
        with open(log, "ab") as sink:  # a restart's lines follow the earlier ones
            process = subprocess.Popen(
                [sys.executable, "-m", "buildr_podman", "worker", "--server", self.url,
                 "--name", self.worker_name(name), "--jobs", str(jobs), *extra],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        worker = Worker(name, process, log)
        self.workers[name] = worker
        deadline = time.monotonic() + WORKER_START_SECONDS
        while log.read_text(errors="replace").count("taking up to") == started:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker {name} did not start: {self._tail(log)}")
            time.sleep(0.1)
        return worker

    def stop_worker(self, name: str) -> int:
        """SIGTERM; its exit code (SIGKILL after STOP_SECONDS: then -9)."""
        worker = self.workers.pop(name)
        return _terminate(worker.process, STOP_SECONDS)

    def kill_worker(self, name: str) -> None:
        """SIGKILL, as a machine that dies; the pods it left are removed (as `clean` does)."""
        worker = self.workers.pop(name)
        worker.process.kill()
        worker.process.wait()
        _clean_pods()

    def worker_log(self, name: str) -> str:
        return (self.directory / f"worker-{name}.log").read_text(errors="replace")

    # -- talking to the server --------------------------------------------------------------

    def upload(self, *blobs: bytes) -> list[re_pb2.Digest]:
        digests = [re_pb2.Digest(hash=hashlib.sha256(b).hexdigest(), size_bytes=len(b))
                   for b in blobs]
        with grpc.insecure_channel(self.url) as channel:
            response = re_grpc.ContentAddressableStorageStub(channel).BatchUpdateBlobs(
                re_pb2.BatchUpdateBlobsRequest(requests=[
                    re_pb2.BatchUpdateBlobsRequest.Request(digest=d, data=b)
                    for d, b in zip(digests, blobs, strict=True)]), timeout=30)
        assert all(r.status.code == 0 for r in response.responses), response
        return digests

    def read(self, digest: re_pb2.Digest) -> bytes:
        with grpc.insecure_channel(self.url) as channel:
            response = re_grpc.ContentAddressableStorageStub(channel).BatchReadBlobs(
                re_pb2.BatchReadBlobsRequest(digests=[digest]), timeout=30)
        (found,) = response.responses
        assert found.status.code == 0, found.status
        return found.data

    def execute(self, action: re_pb2.Digest, skip_cache_lookup: bool = False,
                timeout: float = 300.0) -> re_pb2.ExecuteResponse:
        """An Execute call followed to its last Operation; its ExecuteResponse."""
        with grpc.insecure_channel(self.url) as channel:
            stream = re_grpc.ExecutionStub(channel).Execute(
                re_pb2.ExecuteRequest(action_digest=action, skip_cache_lookup=skip_cache_lookup),
                timeout=timeout)
            for operation in stream:
                if operation.done:
                    assert operation.HasField("response"), operation
                    response = re_pb2.ExecuteResponse()
                    assert operation.response.Unpack(response)
                    return response
        raise AssertionError("the Execute stream ended without a done Operation")

    def action_result(self, action: re_pb2.Digest) -> re_pb2.ActionResult | None:
        with grpc.insecure_channel(self.url) as channel:
            try:
                return re_grpc.ActionCacheStub(channel).GetActionResult(
                    re_pb2.GetActionResultRequest(action_digest=action), timeout=10)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                raise

    @staticmethod
    def _tail(path: Path) -> str:
        try:
            return path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            stdin=subprocess.DEVNULL, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}): {result.stderr[-2000:]}"
                    f"{result.stdout[-1000:]}")


def _terminate(process: subprocess.Popen[bytes], seconds: float = 10.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _clean_pods() -> None:
    """Pods of dead processes (a killed worker's): `buildr-podman clean` removes them."""
    subprocess.run([sys.executable, "-m", "buildr_podman", "clean"], capture_output=True,
                   check=False, stdin=subprocess.DEVNULL, timeout=300, env=dict(os.environ))
