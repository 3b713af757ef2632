"""The executor contract and its one slot pool (as Syne Tune's ``TrialBackend``): ``submit(TrialSpec)``,
``wait() -> [TrialResult]``.

:class:`Executor` owns the queue, the dispatch to free slots, the per-trial timeout and the context manager;
a concrete executor only says how to start a trial in a slot (:meth:`Executor._launch`), how to hear back
(:meth:`Executor._poll`) and how to stop one (:meth:`Executor._kill`).  Executors import neither optuna nor
the study store: they see ``TrialSpec`` and return ``TrialResult``.
"""

from __future__ import annotations

import functools
import importlib
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from autopeft.contract import FAILED, REFERENCE, TrialResult, TrialSpec

#: the function that runs one trial, as ``module:function`` (imported where the trial runs)
DEFAULT_RUNNER = "autopeft.trial:run_trial"


@functools.lru_cache(maxsize=None)
def load_runner(path: str) -> Callable[[TrialSpec], TrialResult]:
    """The function at ``module:function``; the module's ``warm_up()``, if it has one, runs first (a worker calls this
    before it takes a trial, so what a first trial would import is not counted in its per-trial timeout).  Once per
    process: Ray Tune's trainable calls it for every trial."""
    mod, _, fn = path.partition(":")
    module = importlib.import_module(mod)
    warm_up = getattr(module, "warm_up", None)
    if callable(warm_up):
        warm_up()
    return getattr(module, fn)


@dataclass
class Running:
    """A trial in a slot: its spec, when it started (re-set when the worker acknowledges it), and whether it has."""

    spec: TrialSpec
    started: float
    acked: bool


@dataclass
class Event:
    """What a slot reported: ``started`` (the worker took the trial), a ``result``, or ``died`` with a reason."""

    handle: Any
    kind: str
    result: TrialResult | None = None
    reason: str = ""


class Executor(ABC):
    """Runs TrialSpecs; the loop submits up to ``capacity`` at a time and collects results."""

    #: whether a trial's timeout counts from the worker's acknowledgement (else from dispatch)
    acks: bool = False

    def __init__(self, capacity: int, trial_timeout: float | None = None, runner: str = DEFAULT_RUNNER) -> None:
        self.capacity = max(1, int(capacity))
        self.trial_timeout = trial_timeout
        self.runner = runner
        self._queue: deque[TrialSpec] = deque()
        self._running: dict[Any, Running] = {}
        self._done: list[TrialResult] = []

    # ------------------------------------------------------------------ what a concrete executor provides
    @abstractmethod
    def _launch(self, spec: TrialSpec) -> Any | None:
        """Start ``spec`` in a free slot; return its handle, or None if no slot can take it now."""

    @abstractmethod
    def _poll(self, handles: list[Any], timeout: float) -> list[Event]:
        """Events of these running handles, waiting up to ``timeout`` seconds for the first."""

    @abstractmethod
    def _kill(self, handle: Any) -> None:
        """Stop the trial in this slot and free the slot (its worker may be replaced)."""

    def _close(self) -> None:
        """Release every worker (after the running ones were killed)."""

    # ------------------------------------------------------------------ the pool
    def submit(self, spec: TrialSpec) -> None:
        self._queue.append(spec)
        self._dispatch()

    def cancel(self, trial_ids: set[int]) -> list[int]:
        """Stop these trials, queued or running (their slots are freed; nothing is reported for them); returns the
        ids found."""
        found = [s.trial_id for s in self._queue if s.trial_id in trial_ids]
        self._queue = deque(s for s in self._queue if s.trial_id not in trial_ids)
        for handle, run in list(self._running.items()):
            if run.spec.trial_id in trial_ids:
                del self._running[handle]
                self._kill(handle)
                found.append(run.spec.trial_id)
        self._dispatch()
        return found

    def running(self) -> int:
        return len(self._queue) + len(self._running)

    def _dispatch(self) -> None:
        while self._queue and len(self._running) < self.capacity:
            spec = self._queue[0]
            handle = self._launch(spec)
            if handle is None:
                return
            self._queue.popleft()
            self._running[handle] = Running(spec, time.monotonic(), not self.acks)

    def _fail(self, run: Running, reason: str) -> None:
        self._done.append(TrialResult(run.spec.trial_id, FAILED, wall_s=time.monotonic() - run.started, reason=reason))

    def wait(self, timeout: float | None = None) -> list[TrialResult]:
        """Results finished since the last call (blocks up to ``timeout`` seconds for at least one).  The per-trial
        timeout applies to search trials, not to measuring a study's reference point."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done and self._running:
            step = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            for ev in self._poll(list(self._running), step):
                run = self._running.get(ev.handle)
                if run is None:
                    continue
                if ev.kind == "started":
                    run.started, run.acked = time.monotonic(), True
                elif ev.kind == "result" and ev.result is not None:
                    del self._running[ev.handle]
                    self._done.append(ev.result)
                else:
                    del self._running[ev.handle]
                    self._fail(run, ev.reason)
            if self.trial_timeout is not None:
                now = time.monotonic()
                for handle, run in list(self._running.items()):
                    if run.acked and run.spec.purpose != REFERENCE and now - run.started > self.trial_timeout:
                        del self._running[handle]
                        self._kill(handle)
                        self._fail(run, f"exceeded the per-trial timeout of {self.trial_timeout:g} s")
            self._dispatch()
            if deadline is not None and time.monotonic() >= deadline:
                break
        out, self._done = self._done, []
        return out

    def run_one(self, spec: TrialSpec, timeout: float | None = None) -> TrialResult:
        """Run one spec on an idle executor and return its result (e.g. the reference point of a new study)."""
        if self.running():
            raise RuntimeError("run_one needs an idle executor")
        self.submit(spec)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got = self.wait(timeout=1.0)
            if got:
                return got[0]
            if deadline is not None and time.monotonic() > deadline:
                self.shutdown()
                raise TimeoutError(f"trial {spec.trial_id} did not finish within {timeout:g} s")

    def shutdown(self) -> None:
        """Stop workers; running trials are abandoned."""
        for handle in list(self._running):
            self._kill(handle)
        self._running.clear()
        self._queue.clear()
        self._close()

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
