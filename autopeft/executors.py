"""Executors run trials; they see only plain TrialSpec -> TrialResult (as Syne Tune's TrialBackend).

- :class:`InlineExecutor`: in the driver's own process, one trial at a time (debugging, tests).
- :class:`LocalExecutor`: one long-lived worker process per slot (spawned; one torch thread each by
  default), so base model and data load once per worker.  A worker that dies or overruns its
  per-trial timeout is killed and replaced, and its trial is reported failed.  Workers die with
  the driver (``PR_SET_PDEATHSIG``), so a killed search leaves no orphan training.
- ``autopeft.ray_executor.RayExecutor``: trials on a Ray cluster.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from autopeft.trial import FAILED, TrialResult, TrialSpec, run_trial


class Executor(ABC):
    """Runs TrialSpecs; the driver submits up to ``capacity`` at a time and collects results."""

    capacity: int = 1

    @abstractmethod
    def submit(self, spec: TrialSpec) -> None: ...

    @abstractmethod
    def wait(self, timeout: float | None = None) -> list[TrialResult]:
        """Results finished since the last call (blocks up to ``timeout`` for at least one)."""

    @abstractmethod
    def running(self) -> int: ...

    def shutdown(self) -> None:
        """Stop workers; running trials are abandoned."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


class InlineExecutor(Executor):
    """Runs each trial synchronously in this process (capacity 1)."""

    def __init__(self) -> None:
        self.capacity = 1
        self._queue: list[TrialSpec] = []

    def submit(self, spec: TrialSpec) -> None:
        self._queue.append(spec)

    def running(self) -> int:
        return len(self._queue)

    def wait(self, timeout: float | None = None) -> list[TrialResult]:
        out = [run_trial(s) for s in self._queue]
        self._queue.clear()
        return out


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn: Connection, threads: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    from autopeft._quiet import quiet

    quiet()
    import torch

    torch.set_num_threads(max(1, threads))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        try:
            conn.send({"started": msg.get("trial_id")})  # the per-trial timeout runs from here
        except (BrokenPipeError, OSError):
            return
        res = run_trial(TrialSpec(**msg))
        try:
            conn.send(res.to_dict())
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Slot:
    proc: Any
    conn: Connection
    spec: TrialSpec | None = None
    started: float = 0.0
    acked: bool = False


class LocalExecutor(Executor):
    """``workers`` worker processes on this machine, one trial each at a time."""

    def __init__(self, workers: int | None = None, threads_per_trial: int = 1, trial_timeout: float | None = None) -> None:
        self.capacity = max(1, workers or os.cpu_count() or 1)
        self.threads = threads_per_trial
        self.trial_timeout = trial_timeout
        self._ctx = mp.get_context("spawn")
        self._slots: list[_Slot] = []
        self._queue: list[TrialSpec] = []
        self._done: list[TrialResult] = []

    def _spawn(self) -> _Slot:
        parent, child = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(target=_worker_main, args=(child, self.threads), daemon=True)
        p.start()
        child.close()
        return _Slot(p, parent)

    def _kill(self, slot: _Slot) -> None:
        try:
            slot.proc.kill()
            slot.proc.join(5)
        except (OSError, ValueError):
            pass
        slot.conn.close()

    def submit(self, spec: TrialSpec) -> None:
        self._queue.append(spec)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue:
            free = next((s for s in self._slots if s.spec is None), None)
            if free is None:
                if len(self._slots) >= self.capacity:
                    return
                free = self._spawn()
                self._slots.append(free)
            spec = self._queue.pop(0)
            spec.threads = spec.threads or self.threads
            try:
                free.conn.send(spec.to_dict())
            except (BrokenPipeError, OSError):
                self._replace(free)
                self._queue.insert(0, spec)
                continue
            free.spec, free.started, free.acked = spec, time.monotonic(), False

    def _replace(self, slot: _Slot) -> None:
        self._kill(slot)
        self._slots.remove(slot)

    def running(self) -> int:
        return len(self._queue) + sum(s.spec is not None for s in self._slots)

    def wait(self, timeout: float | None = None) -> list[TrialResult]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            busy = [s for s in self._slots if s.spec is not None]
            if not busy:
                break
            step = 1.0
            if deadline is not None:
                step = min(step, max(0.0, deadline - time.monotonic()))
            ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=step)
            now = time.monotonic()
            for s in busy:
                if s.conn in ready:
                    try:
                        msg = s.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if isinstance(msg, dict) and "started" in msg:
                        s.started, s.acked = now, True
                        continue
                    res = TrialResult.from_dict(msg) if isinstance(msg, dict) else None
                    if res is not None:
                        self._done.append(res)
                        s.spec = None
                        continue
                if s.proc.sentinel in ready or not s.proc.is_alive():
                    s.proc.join(2.0)  # the sentinel fires as the child exits, a moment before it can be reaped
                    code = s.proc.exitcode
                    self._done.append(TrialResult(s.spec.trial_id, FAILED, wall_s=now - s.started,
                                                  reason=f"worker process died (exit code {code})"))
                    self._replace(s)
                elif self.trial_timeout is not None and s.acked and now - s.started > self.trial_timeout:
                    self._done.append(TrialResult(s.spec.trial_id, FAILED, wall_s=now - s.started,
                                                  reason=f"exceeded the per-trial timeout of {self.trial_timeout:g} s"))
                    self._replace(s)
            self._dispatch()
            if deadline is not None and time.monotonic() >= deadline:
                break
        out, self._done = self._done, []
        return out

    def shutdown(self) -> None:
        for s in self._slots:
            try:
                if s.spec is None:
                    s.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for s in self._slots:
            s.proc.join(0.5 if s.spec is None else 0)
            if s.proc.is_alive():
                self._kill(s)
        self._slots.clear()
        self._queue.clear()


def make_executor(name: str, workers: int | None, trial_timeout: float | None = None, **kw: Any) -> Executor:
    """``local``, ``inline`` or ``ray`` (``ray-tune`` runs through :func:`autopeft.ray_executor.run_with_ray`)."""
    from autopeft.errors import ConfigError

    if name == "inline":
        return InlineExecutor()
    if name == "local":
        return LocalExecutor(workers, trial_timeout=trial_timeout)
    if kw and name != "ray":
        kw = {}
    if name == "ray":
        from autopeft.ray_executor import RayExecutor

        return RayExecutor(workers=workers, trial_timeout=trial_timeout, **kw)  # type: ignore[return-value]
    raise ConfigError(f"unknown executor {name!r}; choose local, ray, ray-tune or inline")
