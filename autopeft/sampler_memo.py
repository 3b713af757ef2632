"""What the default sampler computes about a config once and reuses on every ask: a past trial's candidate (decoded
from its params), and a candidate's flat encoding, exact parameter count, cost-model features and collapse-model
features.  Each is a pure function of the trial's params or of the candidate (the space and the model are fixed for a
sampler), so reusing it changes no proposal; it only saves the time (at 1,000 trials, decoding and encoding every past
trial again took longer than the GP).

Values of the study's trials are kept from ask to ask; those of an ask's candidate pool only until the next ask.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from autopeft.candidate import Candidate
from autopeft.cost_model import _features
from autopeft.errors import AutoPeftError
from autopeft.space import BoundSpace


class _Entry:
    __slots__ = ("x", "params", "feats", "collapse")

    def __init__(self) -> None:
        self.x: np.ndarray | None = None
        self.params: int | None = None
        self.feats: list[float] | None = None
        self.collapse: list[float] | None = None


class SamplerMemo:
    """Per-trial and per-candidate values for one sampler (its space and its parameter counter)."""

    def __init__(self, space: BoundSpace, count_params: Callable[[Candidate], float]) -> None:
        self.space = space
        self.count_params = count_params
        #: (study name, trial number) -> (the trial's params, its candidate or None when they form none)
        self._trials: dict[tuple[str, int], tuple[dict[str, Any], Candidate | None]] = {}
        self._entries: dict[str, _Entry] = {}

    def __getstate__(self) -> dict[str, Any]:  # pickled without its values (a sampler travels to Ray workers)
        return {"space": self.space, "count_params": self.count_params}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["space"], state["count_params"])  # type: ignore[misc]

    def candidate(self, study_name: str, number: int, params: dict[str, Any]) -> Candidate | None:
        """The candidate a trial's params form (those outside the space ignored), or None if they form none."""
        hit = self._trials.get((study_name, number))
        if hit is not None and hit[0] == params:
            return hit[1]
        names = self.space.by_name
        mine = {k: v for k, v in params.items() if k in names}
        cand = None
        if mine:
            try:
                cand = self.space.candidate_from_params(mine)
            except AutoPeftError:
                cand = None
        self._trials[(study_name, number)] = (dict(params), cand)
        return cand

    def keep_only(self, cands: list[Candidate]) -> None:
        """Forget every candidate's values but these (the study's trials), at the start of an ask."""
        self._entries = {c.key: e for c in cands if (e := self._entries.get(c.key)) is not None}

    def _entry(self, c: Candidate) -> _Entry:
        e = self._entries.get(c.key)
        if e is None:
            e = self._entries[c.key] = _Entry()
        return e

    def params(self, c: Candidate) -> int:
        e = self._entry(c)
        if e.params is None:
            e.params = int(self.count_params(c))
        return e.params

    def encode(self, c: Candidate) -> np.ndarray:
        e = self._entry(c)
        if e.x is None:
            e.x = self.space.encode(c)
        return e.x

    def encode_all(self, cands: list[Candidate]) -> np.ndarray:
        return np.stack([self.encode(c) for c in cands]) if cands else np.zeros((0, self.space.size))

    def features(self, c: Candidate) -> list[float]:
        """The known-cost model's features (:func:`autopeft.cost_model._features`)."""
        e = self._entry(c)
        if e.feats is None:
            e.feats = _features(c, self.space.num_layers, self.params(c))
        return e.feats

    def collapse_features(self, c: Candidate) -> list[float]:
        """The collapse model's features (:func:`autopeft.collapse_model.features`)."""
        from autopeft import collapse_model

        e = self._entry(c)
        if e.collapse is None:
            e.collapse = collapse_model.features(self.features(c), self.params(c), c)
        return e.collapse
