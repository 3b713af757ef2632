"""Trials in long-lived worker processes on this machine (``--executor local``), and in the caller's own
process (``--executor inline``).

Local workers are spawned, one torch thread each by default, so base model and data load once per worker.
A worker that dies or overruns its per-trial timeout is killed and replaced, and its trial is reported failed.
Workers are started as ``python -m autopeft.executors.local`` processes talking over a socket pair, not through
``multiprocessing``'s spawn, which re-imports the user's ``__main__`` script in every worker: ``autopeft.search()``
then works from a plain script with no ``if __name__ == "__main__"`` guard, from Jupyter and from any module.
Workers die with the driver: the parent-death signal is armed before the worker imports anything heavy, and a
worker whose driver died before it was armed exits at once, so a killed driver leaves none behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from autopeft.contract import TrialResult, TrialSpec
from autopeft.executors.base import DEFAULT_RUNNER, Event, Executor, load_runner


class InlineExecutor(Executor):
    """Runs each trial synchronously in this process (capacity 1; debugging, tests)."""

    def __init__(self, trial_timeout: float | None = None, runner: str = DEFAULT_RUNNER) -> None:
        super().__init__(1, trial_timeout, runner)
        self._fn = load_runner(runner)
        self._ready: dict[int, TrialSpec] = {}
        self._next = 0

    def _launch(self, spec: TrialSpec) -> Any | None:
        self._next += 1
        self._ready[self._next] = spec
        return self._next

    def _poll(self, handles: list[Any], timeout: float) -> list[Event]:
        return [Event(h, "result", self._fn(self._ready.pop(h))) for h in handles if h in self._ready]

    def _kill(self, handle: Any) -> None:
        self._ready.pop(handle, None)


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn: Connection, threads: int, runner: str, parent: int) -> None:
    _die_with_parent()  # armed again here: cheap, and the entry point may not have
    if os.getppid() != parent:  # the driver died before the signal was armed
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    from autopeft._quiet import quiet

    quiet()
    import torch

    torch.set_num_threads(max(1, threads))
    run = load_runner(runner)
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
        res = run(TrialSpec(**msg))
        try:
            conn.send(res.to_dict())
        except (BrokenPipeError, OSError):
            return


@dataclass(eq=False)
class _Slot:
    proc: Any
    conn: Connection
    busy: bool = False


class LocalExecutor(Executor):
    """``workers`` worker processes on this machine, one trial each at a time."""

    acks = True

    def __init__(self, workers: int | None = None, trial_timeout: float | None = None, threads_per_trial: int = 1,
                 runner: str = DEFAULT_RUNNER) -> None:
        super().__init__(workers or os.cpu_count() or 1, trial_timeout, runner)
        self.threads = threads_per_trial
        self._slots: list[_Slot] = []

    def _spawn(self) -> _Slot:
        mine, theirs = socket.socketpair()
        try:
            p = subprocess.Popen([sys.executable, "-m", "autopeft.executors.local", str(theirs.fileno()), str(self.threads),
                                  self.runner, str(os.getpid())], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                 close_fds=True)
        finally:
            theirs.close()
        return _Slot(p, Connection(mine.detach()))

    def _launch(self, spec: TrialSpec) -> Any | None:
        for _ in range(3):
            slot = next((s for s in self._slots if not s.busy), None)
            if slot is None:
                if len(self._slots) >= self.capacity:
                    return None
                slot = self._spawn()
                self._slots.append(slot)
            spec.threads = spec.threads or self.threads
            try:
                slot.conn.send(spec.to_dict())
            except (BrokenPipeError, OSError):
                self._drop(slot)
                continue
            slot.busy = True
            return slot
        return None

    def _poll(self, handles: list[Any], timeout: float) -> list[Event]:
        ready = wait([s.conn for s in handles], timeout=timeout)  # a dead worker's socket reads as end-of-file
        events = []
        for s in handles:
            if s.conn in ready:
                try:
                    msg = s.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if isinstance(msg, dict) and "started" in msg:
                    events.append(Event(s, "started"))
                    continue
                if isinstance(msg, dict):
                    s.busy = False
                    events.append(Event(s, "result", TrialResult.from_dict(msg)))
                    continue
            if s.conn in ready or s.proc.poll() is not None:
                try:
                    code = s.proc.wait(5.0)
                except subprocess.TimeoutExpired:
                    code = None
                events.append(Event(s, "died", reason=f"worker process died (exit code {code})"))
                self._drop(s)
        return events

    def _drop(self, slot: _Slot) -> None:
        try:
            slot.proc.kill()
            slot.proc.wait(5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        slot.conn.close()
        if slot in self._slots:
            self._slots.remove(slot)

    def _kill(self, handle: Any) -> None:
        self._drop(handle)

    def _close(self) -> None:
        for s in self._slots:
            try:
                s.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for s in list(self._slots):
            try:
                s.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
            self._drop(s)
        self._slots.clear()


if __name__ == "__main__":  # a worker: python -m autopeft.executors.local FD THREADS RUNNER PARENT_PID
    _die_with_parent()
    _worker_main(Connection(int(sys.argv[1])), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
