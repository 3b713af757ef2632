"""Simulated trials for executor and loop benchmarks: nothing is trained.

:func:`run` is a trial runner (pass ``runner="autopeft.executors.simulated:run"`` to any executor, so a Ray or
local pool is measured with trials of known length); the seconds come from the spec's fault string
``simulate:<s>`` (default 0).  Values are deterministic pseudo-values from the candidate's text, never real results.
:class:`SimulatedExecutor` runs them in this process.
"""

from __future__ import annotations

import hashlib
import json
import time

from autopeft.contract import OK, REFERENCE, TrialResult, TrialSpec
from autopeft.executors.local import InlineExecutor

RUNNER = "autopeft.executors.simulated:run"


def run(spec: TrialSpec) -> TrialResult:
    t0 = time.perf_counter()
    seconds = float(spec.fault.split(":", 1)[1]) if spec.fault and spec.fault.startswith("simulate:") else 0.0
    if spec.purpose == REFERENCE:
        return TrialResult(spec.trial_id, OK, score=0.5, memory_bytes=2000 * 2**20, metric="simulated")
    time.sleep(seconds)
    h = int(hashlib.sha256(json.dumps(spec.candidate, sort_keys=True).encode()).hexdigest()[:12], 16)
    params = 1000 + h % 1_000_000
    score = 0.6 + 0.3 * ((h >> 20) % 1000) / 1000
    memory = (100 + (h >> 30) % 900) * 2**20
    return TrialResult(spec.trial_id, OK, score=score, params=params, memory_bytes=memory,
                       wall_s=time.perf_counter() - t0, train_s=seconds, metric="simulated")


class SimulatedExecutor(InlineExecutor):
    """Simulated trials, one at a time, in this process."""

    def __init__(self, trial_timeout: float | None = None) -> None:
        super().__init__(trial_timeout, RUNNER)
