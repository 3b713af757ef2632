"""Multi-objective early stopping: cost-aware successive halving on learning curves.

Optuna's pruners compare one objective and ``Trial.report`` raises for multi-objective studies; syne-tune's MOASHA
ranks trials by non-dominated sorting of the *reported* objectives.  Here two of the three objectives (trainable
parameters, training memory) are known before a trial trains, so a trial is only compared with trials that cost no
more: at each rung (a fraction of its training steps) it goes on if its search-split score is within the best
``1/eta`` of the scores that its **cost peers** (trials with no more parameters and no more memory, 10 % slack)
had at the same rung.  A trial that ends on the Pareto front must beat every cheaper trial's final score, so one
that is behind most of them midway is the one to stop; a trial with few cheaper peers (the cheap corner, or early in
the search) is never stopped.

The decision is taken inside the trial (executors see only :class:`~autopeft.contract.TrialSpec` ->
:class:`~autopeft.contract.TrialResult`): the driver puts the peers' rung scores into the spec's ``prune`` field when
it submits the trial (known params filter them there); the worker, which measures the trial's memory before training,
filters by memory and decides at each rung with :func:`decide`.  The rung scores are recorded as the trial's learning
curve (Optuna intermediate values, shown in the dashboard, and the ``curve`` attribute).

``--curve-points N`` scores the search split at N evenly spaced points of training (``k/N``, the last being the
final score) without stopping anything: the learning curve alone (for the dashboard and the tabular benchmark's
curves).  With the pruner on, the curve's points and the pruner's rungs are scored together and the pruner decides at
its own rungs only (the spec's ``cuts``).

Nothing here imports torch: the trial calls :func:`decide`, the driver :func:`prune_spec`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from autopeft.errors import ConfigError

#: pruner names: ``none`` (every trial trains to the end) and cost-aware successive halving
PRUNERS = ("none", "cost-sh")
#: fractions of a trial's training steps at which it is scored and may be stopped
RUNGS = (0.25, 0.5)
#: keep the best 1/ETA of a rung's cost peers
ETA = 3.0
#: a rung stops nothing until this many cost peers have a score there
MIN_PEERS = 5
#: slack when comparing costs: a peer with up to 10 % more params or memory still counts as "no more expensive"
COST_SLACK = 0.10
#: rows of the search split scored at a rung (the first of its rows; the final score uses all of them)
RUNG_EVAL_ROWS = 200
#: ``--curve-points``: 0 (no curve) or from 2 to this many points
MAX_CURVE_POINTS = 20


def check_pruner(name: str) -> str:
    if name not in PRUNERS:
        raise ConfigError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
    return name


def check_curve_points(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not (n == 0 or 2 <= n <= MAX_CURVE_POINTS):
        raise ConfigError(f"--curve-points must be 0 (no learning curve) or an integer from 2 to {MAX_CURVE_POINTS}, "
                          f"got {n!r}")
    return n


def curve_fractions(n: int) -> tuple[float, ...]:
    """The fractions of training scored for ``--curve-points n`` before the end (whose score is the final one)."""
    return tuple(round(k / n, 6) for k in range(1, n)) if n else ()


def curve_of(trial: Any) -> list[list[float]]:
    """A stored trial's learning curve: ``[[fraction, step, score], ...]`` (the ``curve`` user attribute)."""
    from autopeft.storage import A

    c = trial.user_attrs.get(A.CURVE)
    return [list(p) for p in c] if isinstance(c, list) else []


def prune_spec(name: str, params: int, trials: Iterable[Any], direction: str, n_eval: int,
               curve_points: int = 0) -> dict[str, Any] | None:
    """The ``prune`` field of a trial's spec: the points scored (``rungs``: the pruner's rungs and the curve's points),
    the indices of those the pruner decides at (``cuts``), and the scores there of the stored trials that have no more
    than ``params`` (+ slack) trainable parameters.  ``trials``: the study's finished trials (complete or stopped
    early; others carry no full curve).  None when nothing is scored before the end."""
    from autopeft.storage import A

    own = RUNGS if name != "none" else ()
    rungs = sorted({round(r, 6) for r in own} | set(curve_fractions(curve_points)))
    if not rungs:
        return None
    spec: dict[str, Any] = {"rungs": rungs, "cuts": [i for i, r in enumerate(rungs) if r in own], "eta": ETA,
                            "min_peers": MIN_PEERS, "slack": COST_SLACK, "direction": direction,
                            "n_eval": min(RUNG_EVAL_ROWS, n_eval), "peers": []}
    if name == "none":
        return spec
    peers = []
    for t in trials:
        p = t.user_attrs.get(A.PARAMS)
        mem = t.user_attrs.get(A.MEMORY_MIB)
        curve = curve_of(t)
        if not curve or p is None or mem is None or p > params * (1 + COST_SLACK):
            continue
        by_rung = {round(f, 6): s for f, _, s in curve}
        peers.append([int(p), float(mem), [by_rung.get(r) for r in rungs]])
    spec["peers"] = peers
    return spec


def cut(prune: dict[str, Any], rung: int, memory_mib: float) -> tuple[float, int] | None:
    """The score a trial with ``memory_mib`` must reach at ``rung`` to go on, and its number of peers; None when
    fewer than ``min_peers`` cost peers have a score there."""
    slack = 1 + prune["slack"]
    scores = sorted(s[rung] for _, m, s in prune["peers"]
                    if m <= memory_mib * slack and rung < len(s) and s[rung] is not None and math.isfinite(s[rung]))
    if len(scores) < prune["min_peers"]:
        return None
    keep = max(1, int(math.floor(len(scores) / prune["eta"])))
    if prune["direction"] == "maximize":
        return scores[-keep], len(scores)
    return scores[keep - 1], len(scores)


def decide(prune: dict[str, Any], rung: int, score: float, memory_mib: float, metric: str) -> str | None:
    """None to go on; otherwise why the trial stops at ``rung`` (a one-line reason).  A point of the learning curve
    that is not one of the pruner's rungs (not in ``cuts``) never stops a trial."""
    if rung not in prune.get("cuts", range(len(prune["rungs"]))):
        return None
    c = cut(prune, rung, memory_mib)
    if c is None:
        return None
    value, n = c
    behind = score < value if prune["direction"] == "maximize" else score > value
    if not behind:
        return None
    return (f"stopped early at {100 * prune['rungs'][rung]:.0f}% of training: {metric} {score:.4f} is behind the best "
            f"1/{prune['eta']:g} of the {n} trials with no more params and memory at that point ({value:.4f})")


def rung_steps(total_steps: int, rungs: Sequence[float]) -> dict[int, int]:
    """Training step -> rung index (a rung past the last step is dropped; two rungs never share a step)."""
    out: dict[int, int] = {}
    for i, f in enumerate(rungs):
        s = max(1, int(math.ceil(f * total_steps)))
        if s < total_steps and s not in out:
            out[s] = i
    return out


__all__ = ["PRUNERS", "RUNGS", "ETA", "MIN_PEERS", "COST_SLACK", "RUNG_EVAL_ROWS", "MAX_CURVE_POINTS", "check_pruner",
           "check_curve_points", "curve_fractions", "curve_of",
           "prune_spec", "cut", "decide", "rung_steps"]
