"""What a study runs again next, read from its stored trials: the study-facing side of :mod:`autopeft.promotion`
(which is pure Python and sees only :class:`~autopeft.promotion.Evaluated` records).  The session builds the rule
once per search; the proposer calls it with the study's trials and the (candidate, rung) pairs it holds."""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from autopeft.candidate import Candidate, structure_key
from autopeft.storage import A, current_level, rung_of, study_level

Rule = Callable[[Any, set[tuple[str, int]]], Any]


def study_rule(study: Any, bound: Any, ladder: Sequence[dict[str, Any]], objectives: Sequence[str], chance: float,
               n_eval: int, fraction: float, refine_rate: str, n_startup: int) -> Rule | None:
    """The rule for a study: ``--promote``'s next promotion (:func:`~autopeft.promotion.next_promotion`) as (trial,
    rung, None), else ``--refine-rate``'s next step (:func:`~autopeft.promotion.next_rate_step`, at the top rung
    once ``n_startup`` configs finished at the base rung) as (trial, rung, multiplier); None when neither is asked
    for.  ``ladder``: the rungs' fidelities above the study's own; ``chance``: the study's chance score."""
    from optuna.trial import TrialState

    from autopeft.pareto import to_max
    from autopeft.promotion import Evaluated, chance_margin, next_promotion, next_rate_step, seeded_keys  # bound per search

    refine = refine_rate != "none"
    if not ladder and not refine:
        return None
    n_rungs, top = len(ladder) + 1, len(ladder)
    margin = chance_margin(int(n_eval), objectives[0] != "score")

    def fits(e: Any, lr: float) -> bool:
        return bool(bound.contains(Candidate.from_dict(json.loads(e.key)).with_lr(lr)))

    def rule(trials: Any, held: set[tuple[str, int]]) -> Any:
        trials = current_level(trials, study_level(study))
        done = {t.number: t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
                and t.user_attrs.get(A.CANDIDATE_KEY)}
        evals = [Evaluated(n, t.user_attrs[A.CANDIDATE_KEY], rung_of(t), tuple(to_max(objectives, t.values)),
                           float(t.user_attrs[A.CANDIDATE].get("lr_multiplier", 1.0)),
                           structure_key(t.user_attrs[A.CANDIDATE])) for n, t in done.items()]
        chosen = None
        if ladder:
            first = seeded_keys((t.user_attrs.get(A.CANDIDATE_KEY, ""), t.user_attrs.get(A.SEEDED_BY)) for t in trials)
            chosen = next_promotion(evals, held, n_rungs, chance, fraction, margin, first)
        if chosen is not None:
            return done[chosen[0].number], chosen[1], None
        if not refine or sum(e.rung == 0 for e in evals) < n_startup:
            return None
        rates: dict[tuple[str, int], list[float]] = {}
        for key, rung in held:
            d = json.loads(key)
            rates.setdefault((structure_key(d), rung), []).append(float(d.get("lr_multiplier", 1.0)))
        step = next_rate_step(evals, rates, top, chance, fits, refine_rate)
        return None if step is None else (done[step[0].number], top, step[1])

    return rule


__all__ = ["Rule", "study_rule"]
