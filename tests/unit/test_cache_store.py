"""The local task cache's store: whole entries or none, verified on read, bounded by LRU."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildr_podman._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildr_podman.cache.store import CHANGES, CorruptEntry, Store, output_file
from buildr_podman.cache.tree import digest_of, proto_digest

KEY = "ab" * 32


def put_entry(store: Store, key: str = KEY, changes: bytes = b"tar bytes",
              stdout: bytes = b"hello\n") -> None:
    result = re_pb2.ActionResult(exit_code=0,
                                 output_files=[output_file(CHANGES, store.put_blob(changes))],
                                 stdout_digest=proto_digest(store.put_blob(stdout)))
    store.put_result(key, result)


def test_a_stored_entry_reads_back_with_its_blobs(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.get(KEY) is None
    put_entry(store)
    entry = store.get(KEY)
    assert entry is not None
    try:
        assert entry.read(CHANGES) == b"tar bytes"
        assert entry.read("stdout") == b"hello\n"
        assert entry.read("stderr") == b""
    finally:
        entry.close()
    assert (tmp_path / "ac" / KEY).is_file()
    changes = digest_of(b"tar bytes")[0]
    assert (tmp_path / "cas" / changes[:2] / changes).read_bytes() == b"tar bytes"


def test_a_damaged_blob_is_a_miss_with_a_reason_and_the_entry_goes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put_entry(store)
    changes = digest_of(b"tar bytes")[0]
    (tmp_path / "cas" / changes[:2] / changes).write_bytes(b"tar bytez")
    with pytest.raises(CorruptEntry, match="does not match its digest"):
        store.get(KEY)
    assert store.get(KEY) is None


def test_a_damaged_action_result_is_a_miss_with_a_reason(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put_entry(store)
    (tmp_path / "ac" / KEY).write_bytes(b"\xff\xff\xff")
    with pytest.raises(CorruptEntry, match="cannot be read"):
        store.get(KEY)
    assert store.get(KEY) is None


def test_an_entry_whose_blob_was_evicted_is_a_plain_miss(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put_entry(store)
    changes = digest_of(b"tar bytes")[0]
    (tmp_path / "cas" / changes[:2] / changes).unlink()
    assert store.get(KEY) is None


def test_a_blob_stays_readable_once_verified_even_if_evicted(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put_entry(store)
    entry = store.get(KEY)
    assert entry is not None
    store.clear()
    assert entry.read(CHANGES) == b"tar bytes"
    entry.close()


def test_the_least_recently_used_entries_are_evicted_beyond_the_bound(tmp_path: Path) -> None:
    store = Store(tmp_path, max_bytes=10_000)
    for index in range(6):
        put_entry(store, key=f"{index:064x}", changes=bytes([index]) * 2000)
        old = time.time() - 1000 + index  # entry 0 the oldest
        for path in (tmp_path / "ac").iterdir():
            if path.name == f"{index:064x}":
                os.utime(path, (old, old))
        blob = digest_of(bytes([index]) * 2000)[0]
        os.utime(tmp_path / "cas" / blob[:2] / blob, (old, old))
    assert store.stats().bytes <= 10_000
    assert store.get(f"{5:064x}") is not None  # the newest stays
    assert store.get(f"{0:064x}") is None  # the oldest went


def count_walks(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    walks: list[int] = []
    walk = store._stored  # noqa: SLF001 - what a walk of the whole store is

    def counted() -> Iterator[tuple[Path, os.stat_result]]:
        walks.append(1)
        return walk()

    monkeypatch.setattr(store, "_stored", counted)
    return walks


def test_storing_under_the_bound_walks_the_store_once_not_per_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    walks = count_walks(store, monkeypatch)
    for index in range(5):
        put_entry(store, key=f"{index:064x}", changes=bytes([index]) * 100)
    assert len(walks) == 1  # the first entry: no usage known yet
    # What the store says it holds is what a walk finds: every byte stored was added.
    assert (tmp_path / "usage").read_text().split()[0] == str(store.stats().bytes)


def test_the_usage_is_walked_again_when_a_day_old_or_damaged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    put_entry(store)
    walks = count_walks(store, monkeypatch)
    usage = tmp_path / "usage"
    usage.write_text(f"1 {time.time() - 25 * 3600:.0f}\n")  # counted a day ago, and wrong
    put_entry(store, key="cd" * 32, changes=b"other")
    assert len(walks) == 1
    assert usage.read_text().split()[0] == str(store.stats().bytes)  # corrected
    usage.write_text("garbage")
    put_entry(store, key="ef" * 32, changes=b"third")
    assert len(walks) == 3  # the stats() above, and this one
    assert usage.read_text().split()[0] == str(store.stats().bytes)


def test_entries_stored_from_many_threads_all_count(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put_entry(store)  # the first walk
    threads = [threading.Thread(target=lambda worker=worker: [
        put_entry(store, key=f"{worker:02x}{index:062x}", changes=f"{worker} {index}".encode())
        for index in range(10)]) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (tmp_path / "usage").read_text().split()[0] == str(store.stats().bytes)


def test_the_bound_holds_when_the_usage_is_low(tmp_path: Path) -> None:
    # Another run's addition lost (two runs storing at once): the day's walk still evicts.
    store = Store(tmp_path, max_bytes=10_000)
    for index in range(6):
        put_entry(store, key=f"{index:064x}", changes=bytes([index]) * 2000)
        (tmp_path / "usage").write_text(f"0 {time.time():.0f}\n")
    assert store.stats().bytes > 10_000  # the usage said there was room
    (tmp_path / "usage").write_text(f"0 {time.time() - 25 * 3600:.0f}\n")
    put_entry(store, key="cd" * 32, changes=b"one more")
    assert store.stats().bytes <= 10_000


def test_a_hit_makes_an_entry_recent(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put_entry(store)
    path = tmp_path / "ac" / KEY
    os.utime(path, (1, 1))
    entry = store.get(KEY)
    assert entry is not None
    entry.close()
    assert path.stat().st_mtime > time.time() - 60


def test_clear_empties_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    put_entry(store)
    store.set_ref("project", "task", KEY)
    assert store.clear() > 0
    assert store.stats().entries == 0 and store.stats().bytes == 0
    assert store.ref("project", "task") is None


def _store_many(root: str, worker: int) -> None:
    store = Store(Path(root))
    for index in range(30):
        put_entry(store, key=f"{index:064x}", changes=b"same content for every worker" * 100)
        entry = store.get(f"{(index + worker) % 30:064x}")
        if entry is not None:
            assert entry.read(CHANGES) == b"same content for every worker" * 100
            entry.close()


def test_concurrent_writers_and_readers_never_see_a_half_entry(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_store_many, args=(str(tmp_path), n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert Store(tmp_path).stats().entries == 30
    assert not list((tmp_path / "tmp").iterdir())


def test_a_write_killed_midway_leaves_no_entry(tmp_path: Path) -> None:
    """What a kill leaves: blobs and a temporary file, never an ActionResult without blobs."""
    store = Store(tmp_path)
    store.put_blob(b"tar bytes")
    (store.temporary_file()).write_bytes(b"half an action result")
    assert store.get(KEY) is None
    old = time.time() - 7200
    for path in (tmp_path / "tmp").iterdir():
        os.utime(path, (old, old))
    store.sweep_temporary()
    assert not list((tmp_path / "tmp").iterdir())


def test_the_runs_hit_rates_are_kept_and_trimmed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for index in range(250):
        store.log_run({"hits": index, "misses": 1, "uncacheable": 0})
    runs = store.runs(1000)
    assert 100 <= len(runs) <= 201
    assert runs[-1]["hits"] == 249
    assert [r["hits"] for r in store.runs(3)] == [247, 248, 249]
