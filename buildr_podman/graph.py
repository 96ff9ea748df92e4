"""The module graph: dependency closure, cycle check, and a run plan that hands out ready modules.

Pure bookkeeping with no I/O and no threads: the runner asks the plan which modules may start,
and tells it how each one ended. Dependencies run first; a failure skips what depends on it and,
unless the plan keeps going, stops everything that has not started; a tolerated failure
(`continue_on_error`) lets its dependents run.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence

__all__ = ["Plan", "State", "find_cycle", "in_dependency_order"]

Deps = Mapping[str, Sequence[str]]


def find_cycle(deps: Deps) -> list[str] | None:
    """A dependency cycle as [a, b, ..., a], or None; checks names in the mapping's order."""
    done: set[str] = set()
    for start in deps:
        if start in done:
            continue
        # Iterative depth-first search: a long chain must not hit the recursion limit.
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(deps.get(start, ()))]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif child in on_path:
                return path[path.index(child):] + [child]
            elif child not in done:
                path.append(child)
                on_path.add(child)
                stack.append(iter(deps.get(child, ())))
    return None


def in_dependency_order(deps: Deps, targets: Sequence[str]) -> list[str]:
    """The targets and everything they depend on, each after its dependencies.

    The graph must be acyclic (see find_cycle). Ties keep the order of `targets` and of each
    module's `depends_on`, so a plan is the same from run to run.
    """
    order: list[str] = []
    seen: set[str] = set()
    for target in targets:
        stack = [(target, iter(deps.get(target, ())))]
        if target in seen:
            continue
        seen.add(target)
        while stack:
            name, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                order.append(name)
            elif child not in seen:
                seen.add(child)
                stack.append((child, iter(deps.get(child, ()))))
    return order


class State(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class Plan:
    """The modules of one run and where each one stands."""

    def __init__(self, deps: Deps, targets: Sequence[str], *, tolerated: Collection[str] = (),
                 keep_going: bool = False) -> None:
        self.order = in_dependency_order(deps, targets)
        self._deps = {name: tuple(deps.get(name, ())) for name in self.order}
        self._tolerated = set(tolerated)
        self._keep_going = keep_going
        self.state = {name: State.PENDING for name in self.order}
        self.reasons: dict[str, str] = {}  #: why a module was skipped
        self.stopping = False  #: a failure or Ctrl-C stops the run: start nothing more

    def ready(self) -> list[str]:
        """Pending modules whose dependencies all ended well (or failed, tolerated)."""
        if self.stopping:
            return []
        return [name for name in self.order if self.state[name] is State.PENDING
                and all(self._satisfied(dep) for dep in self._deps[name])]

    def running(self) -> list[str]:
        return [name for name in self.order if self.state[name] is State.RUNNING]

    def start(self, name: str) -> None:
        if self.state[name] is not State.PENDING:
            raise ValueError(f"{name} is {self.state[name].value}, not pending")
        self.state[name] = State.RUNNING

    def finish(self, name: str, succeeded: bool) -> list[str]:
        """Records how a running module ended; returns the modules this skips."""
        if self.state[name] is not State.RUNNING:
            raise ValueError(f"{name} is {self.state[name].value}, not running")
        self.state[name] = State.SUCCEEDED if succeeded else State.FAILED
        if succeeded or name in self._tolerated:
            return []
        skipped = self._skip(self._dependents(name), f"dependency {name} failed")
        if not self._keep_going:
            skipped += self.stop(f"cancelled: {name} failed")
        return skipped

    def stop(self, reason: str) -> list[str]:
        """Starts nothing more; every pending module is skipped for `reason`."""
        self.stopping = True
        return self._skip([n for n in self.order if self.state[n] is State.PENDING], reason)

    @property
    def finished(self) -> bool:
        """Nothing runs and nothing more can start."""
        return not self.running() and not self.ready()

    def _satisfied(self, dep: str) -> bool:
        state = self.state[dep]
        return state is State.SUCCEEDED or (state is State.FAILED and dep in self._tolerated)

    def _dependents(self, name: str) -> list[str]:
        found: set[str] = {name}
        for candidate in self.order:  # dependencies come first, so one pass finds them all
            if any(dep in found for dep in self._deps[candidate]):
                found.add(candidate)
        found.discard(name)
        return [n for n in self.order if n in found]

    def _skip(self, names: Sequence[str], reason: str) -> list[str]:
        skipped = []
        for name in names:
            if self.state[name] is State.PENDING:
                self.state[name] = State.SKIPPED
                self.reasons[name] = reason
                skipped.append(name)
        return skipped
