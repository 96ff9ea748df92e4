"""`buildr-podman worker --server URL`: run a REAPI cluster's actions in rootless Podman pods.

The worker speaks the Remote Workers (Bots) API to the scheduler at URL (BuildGrid's Bots
service) and reads and writes blobs in the CAS of the same server and instance (worker/).
One line per lease on stdout; Ctrl-C or SIGTERM hands the running leases back to the
scheduler, removes every pod and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from buildr_podman.cache.remote_config import RemoteCacheSettings, parse_remote
from buildr_podman.cache.store import DEFAULT_MAX_BYTES, Store
from buildr_podman.errors import UsageError
from buildr_podman.worker.identity import claim


def run(args: argparse.Namespace) -> int:
    try:
        target = parse_remote(args.server, Path.cwd())
    except ValueError as exc:
        raise UsageError(f"--server {args.server!r}: {exc}") from None
    settings = RemoteCacheSettings(url=args.server, target=target,
                                   instance_name=args.instance)
    identity = claim(args.name)
    try:
        return _serve(args, settings, identity.bot_id, identity.store_dir, identity.leases_dir)
    finally:
        identity.release()


def _serve(args: argparse.Namespace, settings: RemoteCacheSettings, bot_id: str,
           store_dir: Path, leases_dir: Path) -> int:
    import grpc

    from buildr_podman._protos.google.devtools.remoteworkers.v1test2 import bots_pb2_grpc
    from buildr_podman.podman.agent_build import StderrProgress, ensure_agent
    from buildr_podman.podman.connection import podman_api
    from buildr_podman.podman.leftovers import sweep_dead_runs
    from buildr_podman.worker.bot import BotSession
    from buildr_podman.worker.lease import LeaseRunner
    from buildr_podman.worker.properties import worker_properties

    stopping = threading.Event()
    progress = StderrProgress()
    agent = ensure_agent(log=progress.log, tick=progress.tick)
    store = Store(store_dir, DEFAULT_MAX_BYTES)
    store.sweep_temporary(older_than=0.0)  # nothing else writes in a worker's own store
    with podman_api() as api, grpc.insecure_channel(settings.target) as channel:
        sweeping = sweep_dead_runs(api)
        runner = LeaseRunner(api, agent, store, settings, leases_dir, bot_id, stopping)
        bot = BotSession(bots_pb2_grpc.BotsStub(channel), args.instance, bot_id, worker_properties(), args.jobs,
                         runner.run, _say, stopping, kill_lease=runner.kill)
        instance = f" instance {args.instance!r}" if args.instance else ""
        leases = "1 lease" if args.jobs == 1 else f"{args.jobs} leases"
        _say(f"worker {bot_id}: taking up to {leases} at once from {settings.url}{instance} "
             "(Ctrl-C or SIGTERM stops it)")

        def on_signal(number: int, frame: FrameType | None) -> None:
            if not stopping.is_set():
                _say("stopping: the running leases go back to the scheduler")
            bot.stop()

        previous = {n: signal.signal(n, on_signal) for n in (signal.SIGINT, signal.SIGTERM)}
        try:
            bot.serve(on_stop=_kill_running)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            sweeping.join()
            store.evict()
    _say("worker stopped")
    return 0


def _kill_running() -> None:
    """The running tasks' containers, killed: their leases end, their pods are removed."""
    from buildr_podman.podman.leftovers import kill_own_containers

    kill_own_containers()


def _say(line: str) -> None:
    print(line, flush=True)
    sys.stdout.flush()
