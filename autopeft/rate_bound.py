"""Whether a study's best trial ran at a bound of the space's learning-rate range while the rate still helped there.

A searched rate is drawn from the space's ``training`` range (``lr_multiplier`` or ``learning_rate``). When the
best-scoring trial sits at the range's top (or bottom) and the same config scored worse at a rate further from that
bound, the best rate may lie outside the range: the search cannot say what a higher (lower) rate would do. Measured
case (BENCHMARKS.md, "The learning-rate range on an LLM"): on SmolLM2-135M / GSM8K every model-proposed trial of
``mixed`` (range x0.5-x2) ran at x2, and two of the four hand-designed baselines scored better at x8 than at x2 (LoRA
r=8 also after training at 4x the budget, 0.10 lower loss), so the LoRA baseline the search was compared with had
been tuned only as far as the range went. A pointer, not a verdict: the best config itself may do worse beyond.
The evidence must clear the noise of the search rows (the answer rule's margin,
:meth:`autopeft.result.SearchResult.margins`): on the committed classification cases a twin within it said nothing
about rates beyond (BENCHMARKS.md, "The warning needs more than the noise").

Why our own check and not a library's: Optuna's samplers clip to a distribution's bounds and say nothing of it; the
check needs the space's training block and each config's structure (its candidate without the rate), which are ours.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

#: how close (relative) a rate must be to a bound to count as at it: the candidate rounds rates to 6 digits, and the
#: sampler's proposals land on the bound itself when clipped
AT_BOUND = 0.01


def rate_range(space_def: Any) -> tuple[str, float, float] | None:
    """(key, low, high) of the space's searched rate, or None when the rate is fixed (or the space unreadable)."""
    from autopeft.space import SearchSpace

    try:
        space = SearchSpace.from_dict(space_def, "the study's space")
    except Exception:  # a study from another version: no check rather than a failure while reading results
        return None
    for key, p in space.training.items():
        if p.kind in ("float", "int"):
            return key, float(p.low), float(p.high)
        if p.kind == "ord" and len(p.choices) > 1:
            return key, float(min(p.choices)), float(max(p.choices))
    return None


def _rate(key: str, cand: dict[str, Any]) -> float:
    """The trial's value of the space's rate dimension (a multiplier, or the learning rate it sets)."""
    from autopeft.candidate import Candidate
    from autopeft.methods import base_learning_rate

    mult = float(cand.get("lr_multiplier", 1.0))
    if key == "lr_multiplier":
        return mult
    return mult * base_learning_rate(Candidate.from_dict(cand).methods)


def _shown(key: str, v: float) -> str:
    return f"x{v:.3g}" if key == "lr_multiplier" else f"{v:.3g}"


def at_bound(space_def: Any, trials: Sequence[Any], scores: Sequence[float], structures: Sequence[str],
             margins: Sequence[float] | None = None) -> dict[str, Any] | None:
    """Where the best of ``trials`` (by ``scores``, made to maximise, one per trial) ran at a bound of the space's
    rate range and the trial of the same structure (``structures``: the config without its rate) at the nearest rate
    further from that bound scored lower, by more than the best's ``margins`` entry (the noise of the search rows, as
    the answer rule's :meth:`autopeft.result.SearchResult.margins`; None: any amount): ``best`` and ``other`` (indices into
    ``trials``), the range (``key``, ``low``, ``high``), ``side`` (1: the top, -1: the bottom), the ``rates`` of all
    trials, the ``margin``; None otherwise (no searched rate, best inside the range, or no evidence beyond the noise
    that the rate still helped at the bound)."""
    found = rate_range(space_def)
    if found is None or not trials:
        return None
    key, low, high = found
    rates = [_rate(key, t.user_attrs.get("candidate") or {}) for t in trials]
    best = max(range(len(trials)), key=lambda i: (scores[i], -trials[i].number))
    v, margin = rates[best], float(margins[best]) if margins is not None else 0.0
    for bound, side in ((high, 1), (low, -1)):
        if abs(math.log(v / bound)) > AT_BOUND:
            continue
        twins = [i for i in range(len(trials)) if structures[i] == structures[best] and i != best
                 and side * math.log(rates[i] / v) < -AT_BOUND]
        if not twins:
            return None
        other = max(twins, key=lambda i: (side * rates[i], -scores[i]))  # the nearest rate below (above) the bound
        if not scores[other] < scores[best] - margin:  # the score still rising at the bound, beyond the noise
            return None
        return {"best": best, "other": other, "key": key, "low": low, "high": high, "bound": bound, "side": side,
                "rates": rates, "margin": margin}
    return None


def rate_bound_notice(space_def: Any, trials: Sequence[Any], scores: Sequence[float], structures: Sequence[str],
                      metric: str, margins: Sequence[float] | None = None) -> str | None:
    """The warning for :func:`at_bound`'s case, in ``metric``'s own sense (a loss: lower is better); None without it."""
    f = at_bound(space_def, trials, scores, structures, margins)
    if f is None:
        return None
    key, rates, best, other = f["key"], f["rates"], f["best"], f["other"]
    word, top = ("higher", "top") if f["side"] > 0 else ("lower", "bottom")
    sign = -1.0 if metric == "loss" else 1.0
    there = sum(abs(math.log(r / f["bound"])) <= AT_BOUND for r in rates)
    return (f"the best trial ({trials[best].number}, {metric} {sign * scores[best]:.4g}) ran at learning rate "
            f"{_shown(key, rates[best])}, the {top} of the space's training.{key} range [{f['low']:g}, {f['high']:g}] "
            f"({there} of the {len(trials)} complete trials ran there), and the same config scored {metric} "
            f"{sign * scores[other]:.4g} at {_shown(key, rates[other])}"
            + (f", worse by more than the search rows' noise ({f['margin']:.2g})" if f["margin"] > 0 else "")
            + f": a {word} rate may score better; search again "
            f"with a space whose range goes {word} (a copy of the space file with training.{key} widened, --space "
            f"FILE)" + (f" or a {word} --lr-scale" if key == "lr_multiplier" else ""))


__all__ = ["AT_BOUND", "at_bound", "rate_bound_notice", "rate_range"]
