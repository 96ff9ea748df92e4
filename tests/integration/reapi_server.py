"""A real REAPI server for the remote cache's tests: BuildGrid (`bgd`, in a venv of its own)
on a unix socket, with an ActionCache in memory and a CAS in memory or, to tamper with a blob
as a damaged server would serve it, on disk. No database, no network port.

    with BuildGrid(cas_on_disk=False) as server:
        server.url             "unix:/tmp/buildr-reapi-.../reapi.sock", for `remote = ...`
        server.blob_file(h)    where a blob is (cas_on_disk only)

Leaving the block stops the server (SIGTERM, then SIGKILL) and removes its directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import grpc
import pytest

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2_grpc as re_grpc,
)

START_SECONDS = 60.0  # bgd imports a lot; on a busy 2-core machine it can take 10 s and more

CONFIG = """\
server:
  - !channel
    address: "unix:{socket}"
    insecure-mode: true
authorization:
  method: none
storages:
  - {storage_kind} &cas
    {storage_setting}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 1024
    allow-updates: {updates}
    cache-failed-actions: false
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"""


def bgd() -> str:
    """BuildGrid's server command: $BUILDR_BGD (scripts/test points it into the venv that
    scripts/setup.sh makes for BuildGrid alone, tests/reapi-server-requirements.txt), else a
    `bgd` beside this Python."""
    found = Path(os.environ.get("BUILDR_BGD") or Path(sys.executable).parent / "bgd")
    if not found.exists():
        pytest.fail(f"bgd (BuildGrid) is not at {found}: scripts/test installs it into a venv "
                    "of its own; or set BUILDR_BGD to a bgd from "
                    "`pip install -r tests/reapi-server-requirements.txt`")
    return str(found)


class BuildGrid:
    def __init__(self, cas_on_disk: bool = False, allow_updates: bool = True) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="buildr-reapi-"))  # short: a socket path
        self.socket = self.directory / "reapi.sock"
        self.cas_dir = self.directory / "cas"
        kind, setting = (("!disk-storage", f'path: "{self.cas_dir}"') if cas_on_disk
                         else ("!lru-storage", "size: 512M"))
        self.config = self.directory / "bgd.yml"
        self.config.write_text(CONFIG.format(socket=self.socket, storage_kind=kind,
                                             storage_setting=setting,
                                             updates=str(allow_updates).lower()))
        self.log = self.directory / "bgd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix:{self.socket}"

    def blob_file(self, blob_hash: str) -> Path:
        return self.cas_dir / "cas" / "objects" / blob_hash[:2] / blob_hash[2:]

    def __enter__(self) -> BuildGrid:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([bgd(), "server", "start", str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _wait_until_serving(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"bgd exited with {self.process.returncode}: "
                            f"{self.log.read_text(errors='replace')[-2000:]}")
            if self.socket.exists() and self.answers():
                return
            time.sleep(0.2)
        pytest.fail(f"bgd did not serve within {START_SECONDS:g} s: "
                    f"{self.log.read_text(errors='replace')[-2000:]}")

    def answers(self) -> bool:
        with grpc.insecure_channel(self.url) as channel:
            try:
                re_grpc.CapabilitiesStub(channel).GetCapabilities(
                    re_pb2.GetCapabilitiesRequest(), timeout=2)
            except grpc.RpcError:
                return False
        return True

    def action_result(self, action_hash: str, size: int) -> re_pb2.ActionResult | None:
        """What the server's ActionCache holds for an action, or None."""
        with grpc.insecure_channel(self.url) as channel:
            try:
                return re_grpc.ActionCacheStub(channel).GetActionResult(
                    re_pb2.GetActionResultRequest(
                        action_digest=re_pb2.Digest(hash=action_hash, size_bytes=size)),
                    timeout=10)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
