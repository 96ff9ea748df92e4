"""The module graph: cycles, dependency order, and the plan's ready sets through a run."""

from __future__ import annotations

import pytest

from buildr_podman.graph import Plan, State, find_cycle, in_dependency_order

#      lib <- app <- deploy
#      lib <- test
#      docs (independent)
DEPS = {"lib": [], "app": ["lib"], "test": ["lib"], "deploy": ["app", "test"], "docs": []}


def test_cycles_are_found_and_printed_in_order() -> None:
    assert find_cycle(DEPS) is None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"x": ["a"], "a": ["b"], "b": ["a"]}) == ["a", "b", "a"]


def test_a_long_chain_does_not_hit_the_recursion_limit() -> None:
    chain = {f"m{i}": [f"m{i + 1}"] for i in range(5000)}
    chain["m5000"] = ["m0"]
    assert len(find_cycle(chain) or []) == 5002
    chain["m5000"] = []
    assert in_dependency_order(chain, ["m0"])[0] == "m5000"


def test_dependencies_come_first_and_only_what_is_needed() -> None:
    assert in_dependency_order(DEPS, ["deploy"]) == ["lib", "app", "test", "deploy"]
    assert in_dependency_order(DEPS, ["test", "docs"]) == ["lib", "test", "docs"]
    assert in_dependency_order(DEPS, ["app", "app", "lib"]) == ["lib", "app"]


def run_all(plan: Plan, fail: set[str] = frozenset(), jobs: int = 99) -> list[list[str]]:
    """Drives the plan like the runner: start what is ready (up to jobs), then finish all."""
    waves = []
    while not plan.finished:
        wave = plan.ready()[:jobs]
        for name in wave:
            plan.start(name)
        waves.append(wave)
        for name in wave:
            plan.finish(name, name not in fail)
    return waves


def test_independent_modules_are_ready_together() -> None:
    plan = Plan(DEPS, ["deploy", "docs"])
    assert run_all(plan) == [["lib", "docs"], ["app", "test"], ["deploy"]]
    assert all(state is State.SUCCEEDED for state in plan.state.values())


def test_jobs_limit_what_runs_at_once() -> None:
    assert run_all(Plan(DEPS, ["deploy", "docs"]), jobs=1) == [
        ["lib"], ["app"], ["test"], ["deploy"], ["docs"]]


def test_a_failure_skips_dependents_and_cancels_the_rest() -> None:
    plan = Plan(DEPS, ["deploy", "docs"])
    plan.start("lib")
    plan.start("docs")
    assert plan.finish("lib", False) == ["app", "test", "deploy"]
    assert plan.stopping and plan.ready() == []
    assert plan.reasons["app"] == "dependency lib failed"
    plan.finish("docs", True)
    assert plan.finished


def test_without_keep_going_pending_independents_are_cancelled() -> None:
    plan = Plan(DEPS, ["deploy", "docs"])
    plan.start("lib")
    assert plan.finish("lib", False) == ["app", "test", "deploy", "docs"]
    assert plan.reasons["docs"] == "cancelled: lib failed"


def test_keep_going_runs_what_does_not_depend_on_the_failure() -> None:
    plan = Plan(DEPS, ["deploy", "docs"], keep_going=True)
    waves = run_all(plan, fail={"test"})
    assert waves == [["lib", "docs"], ["app", "test"]]
    assert plan.state["deploy"] is State.SKIPPED
    assert plan.reasons["deploy"] == "dependency test failed"
    assert plan.state["app"] is State.SUCCEEDED


def test_continue_on_error_lets_dependents_run() -> None:
    plan = Plan(DEPS, ["deploy"], tolerated={"test"})
    run_all(plan, fail={"test"})
    assert plan.state["test"] is State.FAILED
    assert plan.state["deploy"] is State.SUCCEEDED
    assert not plan.stopping


def test_stop_skips_everything_pending() -> None:
    plan = Plan(DEPS, ["deploy"])
    plan.start("lib")
    assert plan.stop("cancelled: interrupted") == ["app", "test", "deploy"]
    assert plan.ready() == [] and not plan.finished
    plan.finish("lib", True)
    assert plan.finished and plan.ready() == []


def test_states_are_checked() -> None:
    plan = Plan(DEPS, ["lib"])
    with pytest.raises(ValueError, match="not running"):
        plan.finish("lib", True)
    plan.start("lib")
    with pytest.raises(ValueError, match="not pending"):
        plan.start("lib")
