"""The warm pod pool's logic, with stand-in pods (the real ones are in the integration tests)."""

from __future__ import annotations

import threading

import pytest

from buildr_podman.model import ContainerSpec, Task
from buildr_podman.podman.warm_pods import MAX_IDLE, PodPool, container_key, pool_key, reusable


class FakePod:
    def __init__(self, key: str) -> None:
        self.key = key
        self.tasks_run = 0
        self.closed = False

    def close(self) -> None:
        self.closed = True


def task(image: str = "img", user: str | None = None, env: tuple = (), secrets: tuple = (),
         privileged: bool = False, cap_add: tuple = ()) -> Task:
    return Task(name="t", module_type="script",
                container=ContainerSpec(image=image, user=user, environment=env,
                                        privileged=privileged, cap_add=cap_add),
                script="true", secret_environment=secrets)


def test_tasks_differing_only_in_user_share_a_container() -> None:
    assert container_key(task(user="1000")) == container_key(task(user=None))
    assert container_key(task(image="a")) != container_key(task(image="b"))
    assert container_key(task(env=(("A", "1"),))) != container_key(task())


def test_a_pod_given_back_is_taken_again_for_the_same_settings() -> None:
    started = []
    pool = PodPool(lambda t, outputs, phases: started.append(FakePod(pool_key(t, outputs)))
                   or started[-1])
    first = pool.take(task())
    pool.give_back(first)
    assert pool.take(task()) is first
    assert pool.take(task(image="other")) is not first
    assert len(started) == 2


def test_idle_pods_beyond_the_limit_are_closed_oldest_first() -> None:
    pool = PodPool(lambda t, outputs, phases: FakePod(pool_key(t, outputs)))
    pods = [pool.take(task(image=f"i{n}")) for n in range(MAX_IDLE + 1)]
    for pod in pods:
        pool.give_back(pod)
    assert pods[0].closed and not any(p.closed for p in pods[1:])
    pool.close()
    assert all(p.closed for p in pods)


def test_a_pod_given_back_after_close_is_closed() -> None:
    pool = PodPool(lambda t, outputs, phases: FakePod(pool_key(t, outputs)))
    pod = pool.take(task())
    pool.close()
    pool.give_back(pod)
    assert pod.closed


def test_a_pod_passes_only_to_a_task_of_the_same_identity() -> None:
    """A task may have changed its container's root file system: another user, or a task
    with other secrets, gets a pod of its own."""
    assert pool_key(task()) == pool_key(task())
    assert pool_key(task(user="1000")) != pool_key(task())
    assert pool_key(task(secrets=(("T", "a"),))) != pool_key(task())
    assert pool_key(task(secrets=(("T", "a"),))) != pool_key(task(secrets=(("T", "b"),)))
    assert pool_key(task(secrets=(("T", "a"),))) == pool_key(task(secrets=(("T", "a"),)))
    assert "hunter2-value" not in pool_key(task(secrets=(("T", "hunter2-value"),)))
    pool = PodPool(lambda t, outputs, phases: FakePod(pool_key(t, outputs)))
    planted = pool.take(task())
    pool.give_back(planted)
    assert pool.take(task(secrets=(("T", "a"),))) is not planted


def test_a_task_that_could_take_over_its_agent_gives_no_pod_back() -> None:
    assert reusable(task()) and reusable(task(cap_add=("NET_ADMIN",)))
    assert not reusable(task(privileged=True))
    for capability in ("SYS_ADMIN", "SYS_PTRACE", "ALL"):
        assert not reusable(task(cap_add=(capability,)))


def test_a_pod_started_ahead_is_the_one_its_task_takes() -> None:
    started: list[FakePod] = []
    pool = PodPool(lambda t, outputs, phases: started.append(FakePod(pool_key(t, outputs)))
                   or started[-1])
    start = pool.prestart(task())
    assert start is not None and pool.prestart(task()) is None  # reserved once
    start()
    assert pool.take(task()) is started[0] and len(started) == 1
    assert pool.take(task()) is started[1]  # claimed once: the next task starts its own


def test_a_task_of_other_settings_does_not_take_a_pod_started_ahead() -> None:
    started: list[FakePod] = []
    pool = PodPool(lambda t, outputs, phases: started.append(FakePod(pool_key(t, outputs)))
                   or started[-1])
    start = pool.prestart(task())
    assert start is not None
    start()
    assert pool.take(task(image="other")) is started[1]
    pool.close()
    assert started[0].closed  # never claimed: closed with the pool


def test_a_failed_start_ahead_is_the_error_of_the_task_that_claims_it() -> None:
    def fail(t: Task, outputs: object, phases: object) -> FakePod:
        raise RuntimeError("image not here")

    pool = PodPool(fail)  # type: ignore[arg-type]
    start = pool.prestart(task())
    assert start is not None
    start()
    with pytest.raises(RuntimeError, match="image not here"):
        pool.take(task())


class SlowStart:
    """A pod start that is under way (`entered`) until `release` is set."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.started: list[FakePod] = []

    def __call__(self, t: Task, outputs: object, phases: object) -> FakePod:
        self.entered.set()
        self.release.wait(5)
        self.started.append(FakePod(pool_key(t)))
        return self.started[-1]

    def ahead(self, pool: PodPool) -> threading.Thread:
        """Starts a pod for task() ahead, in a thread; returns once it is under way."""
        start = pool.prestart(task())
        assert start is not None
        starter = threading.Thread(target=start)
        starter.start()
        assert self.entered.wait(5)
        return starter


def test_a_task_that_looks_before_the_start_ahead_ended_waits_for_that_pod() -> None:
    slow = SlowStart()
    pool = PodPool(slow)  # type: ignore[arg-type]
    starter = slow.ahead(pool)
    threading.Timer(0.05, slow.release.set).start()
    assert pool.take(task()) is slow.started[0] and len(slow.started) == 1
    starter.join(5)


def test_a_start_ahead_that_ends_after_the_pool_closed_closes_its_pod() -> None:
    slow = SlowStart()
    pool = PodPool(slow)  # type: ignore[arg-type]
    starter = slow.ahead(pool)  # under way when the pool closes
    pool.close()
    slow.release.set()
    starter.join(5)
    assert slow.started and slow.started[0].closed
