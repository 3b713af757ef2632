"""Which candidates a proposal counts as already tried: evaluated, failed or pending, at a near learning rate, or
still training at any rate (:class:`Seen`; the default sampler rebuilds it from the study at every proposal)."""

from __future__ import annotations

import math

from autopeft.candidate import Candidate

#: two candidates that differ only by a learning-rate multiplier within this factor count as the same proposal
LR_NEAR = 1.05


class Seen:
    """Candidates already evaluated, failed or pending.  ``c in seen`` is also true for a candidate that differs
    from one of them only by a learning-rate multiplier within :data:`LR_NEAR`: a trial that costs as much as any
    other would learn next to nothing (a search at the CPU fidelity spent two of its 40 trials on lr x1.86 and
    x1.87 of one config); and at any multiplier for a config still training (``add(c, running=True)``): in real
    SST-2 searches 3 of 14 model-based collapses were "head only" proposed at another rate while it still ran."""

    def __init__(self) -> None:
        self._lrs: dict[str, list[float]] = {}
        self._running: set[str] = set()

    @staticmethod
    def _split(c: Candidate) -> tuple[str, float]:
        """The candidate's key less its learning-rate multiplier, and the multiplier: the key is canonical JSON whose
        first field, ``layers``, is a list of integers, so the first ``"lr_multiplier":`` is the top-level one."""
        k = c.key
        i = k.find('"lr_multiplier":')
        if i < 0:
            return k, 1.0
        j = i + 16
        while k[j] not in ",}":
            j += 1
        return k[:i] + k[j + (k[j] == ","):], float(k[i + 16:j])

    def add(self, c: Candidate, running: bool = False) -> None:
        k, lr = self._split(c)
        self._lrs.setdefault(k, []).append(lr)
        if running:
            self._running.add(k)

    def __contains__(self, c: object) -> bool:
        if not isinstance(c, Candidate):
            return False
        k, lr = self._split(c)
        return k in self._running or any(abs(math.log(lr / x)) < math.log(LR_NEAR) for x in self._lrs.get(k, ()))
