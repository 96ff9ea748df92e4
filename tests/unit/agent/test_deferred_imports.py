"""The agent's deferred imports: grpc serves, and the agent runs a task, without asyncio and
grpc.aio ever loading; whatever asks for them gets them whole. Each case runs in a fresh
interpreter: this one has imported them long ago."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LOADED = ("print(sorted(m for m in ('asyncio.base_events', 'grpc.aio._call', "
          "'google.protobuf.internal.python_message', 'google.protobuf.text_format') "
          "if type(sys.modules.get(m)).__name__ == 'module'))")

SERVE_AND_RUN = f"""
import sys, threading
from concurrent import futures
from buildr_podman.agent.deferred_imports import defer_unused_modules

print(defer_unused_modules())
import grpc
from buildr_podman.agent.service import AgentService, add_agent_service
from buildr_podman.podman.agent_client import AgentClient, OutputChunk, RunSpec

server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
add_agent_service(AgentService(threading.Event()), server)
server.add_insecure_port("unix:" + sys.argv[1])
server.start()
client = AgentClient(sys.argv[1])
client.wait_ready(10, lambda: True)
client.hello()
spec = RunSpec(task_name="t", argv=["sh", "-c", "echo made > out.txt; echo said"],
               working_dir=sys.argv[2], workspace=sys.argv[2])
events = list(client.run(spec))
print(b"".join(e.data for e in events if isinstance(e, OutputChunk)).decode().strip())
client.close()
server.stop(grace=None).wait()
{LOADED}
"""

USE_THEM = f"""
import sys
from buildr_podman.agent.deferred_imports import defer_unused_modules

defer_unused_modules()
import grpc
import asyncio
{LOADED}
print(asyncio.run(asyncio.sleep(0, result="ran")), grpc.aio.insecure_channel.__name__)
print(type(sys.modules["asyncio"]).__name__, sys.modules["grpc.aio"] is grpc.aio)
{LOADED}
"""


def python(script: str, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_agent_serves_and_runs_a_task_without_loading_them(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    deferred, said, loaded = python(SERVE_AND_RUN, str(tmp_path / "agent.sock"),
                                    str(workspace))
    assert deferred == ("['asyncio', 'grpc.aio', 'google.protobuf.internal.python_message', "
                        "'google.protobuf.text_format']")
    assert said == "said"
    assert (workspace / "out.txt").read_text() == "made\n"
    assert loaded == "[]"


def test_whatever_uses_them_gets_them_whole() -> None:
    assert python(USE_THEM) == ["[]", "ran insecure_channel", "module True",
                                "['asyncio.base_events', 'grpc.aio._call']"]
