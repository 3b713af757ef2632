"""Promotion to higher fidelity (``--promote``): a ladder of trial fidelities above the study's own, and the rule that
picks which configuration goes up a rung next.

The rule is asynchronous successive halving (ASHA: a config is promoted as soon as it is among the best
``fraction`` of the configs finished at its rung, so a free worker never waits for a rung to fill), with one change
for several objectives whose costs are known: a config is ranked only against the configs of its rung that cost no
more (parameters and memory both at most its own), as the pruner ranks curves (:mod:`autopeft.pruner`).  A config on
its rung's Pareto front is first among its peers, so it is always eligible; a config that scores no better than the
study's chance level (the majority class, or the untrained model's loss) by more than :data:`PROMOTE_SE` standard
errors (:func:`chance_margin`) is never promoted.  At most
``floor(fraction x finished at rung k)`` configs leave rung k: of the eligible, the study's seeded configs first (the
methods' hand-designed baselines and ``--enqueue``'s, :data:`FIRST_SOURCES`), then the best ranked; higher rungs are
served first.

The search's ``--trials`` counts every evaluation, promoted ones too.  The study's sampler models the base rung,
which every config has (one model per rung, the lowest used for proposing); the front, ``best``, ``export`` and the
plots take each config at the highest rung it finished (:func:`autopeft.storage.complete_trials`) and say which.

``--refine-rate`` adds a learning-rate line search at the top rung (:func:`next_rate_step`): the config scoring best
there (``best``; ``front``: each config on that rung's front in turn) is tried again at the same rung with its rate
x sqrt(2) and / sqrt(2), and from whichever neighbour scores higher, on, until neither neighbour of the best does (or
the space's range ends).  Why: a config's rate is fixed when it is proposed, at the base rung, where one score per
rate cannot tell x1 from x1.41 (MRPC: the LoRA baseline at x1.41 re-trains 0.014 F1 higher at full budget); the fair
baseline protocol gives each hand-designed baseline five rates, and the search's answers get a line search of their
own at the rung that ranks best.  ``--promote-lr-scale`` (:func:`with_lr_scale`) gives the rungs their own rate
scale: at the study's scale, chosen so that short trials learn, the rung may prefer other rates than full training.

Rungs score on different scales (more rows lift a score; a rung at another rate scale may lower every score), so the
front compares a config scored at a lower rung by its score moved onto the top rung's scale (:func:`rung_offsets`:
the median change of the configs scored at both rungs).  Why: at rung rates x1 every config promoted on MRPC scored
0.029-0.036 lower at rung 1 than at rung 0, and the front, comparing scores as measured, answered IA3's budget with an
unpromoted config that re-trains 0.015 F1 below the IA3 baseline walked to x1.41 at rung 1.

Pure Python: no torch or optuna import.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import AbstractSet, Any, Callable, Iterable, Mapping, Sequence

from autopeft.errors import ConfigError

#: the share of a rung's finished configs that may go up (ASHA's 1/eta with eta = 3)
PROMOTE_FRACTION = 1.0 / 3.0
#: ``--refine-rate``: the factor between neighbouring learning rates of the line search (the fair baseline protocol's
#: grid: x0.5, x0.71, x1, x1.41, x2)
RATE_STEP = math.sqrt(2.0)
#: ``--refine-rate``'s modes: no line search, the best config's, every front config's (:func:`next_rate_step`)
REFINE_MODES = ("none", "best", "front")
#: two rates within this relative distance are one rate (the candidate rounds its multiplier to 6 digits)
RATE_TOL = 0.01

#: :func:`next_promotion`: a config goes up only if it scores more than this many standard errors of a score at chance
#: (:func:`chance_margin`) above chance.  Why: on MRPC (seed 0, 500 search rows, AUC) the quota of 6 went first to
#: configs on rung 0's front because they were the cheapest, one at AUC 0.541 (1.8 standard errors above 0.5), while
#: the IA3 baseline (0.582, one cheaper config 0.014 above it) was never promoted; at rung 1 that config scored 0.537,
#: and the answer at IA3's budget re-trained 0.022 below the IA3 baseline.  Replayed on that study's rung 0, the margin
#: promotes the IA3 baseline in its place; on every other committed promotion study it changes no promotion
#: (``python -m bench.promotion_replay``).  ``--lr-scale auto``'s flat test uses 3 (:data:`autopeft.escalation.CLEAR_SE`)
#: for another question: whether a full run learned at all
PROMOTE_SE = 2.0

#: :func:`seeded_keys`: the sources (the ``seeded_by`` of a queued trial) whose configs go up first once eligible:
#: the methods' hand-designed baselines and the user's ``--enqueue`` configs, each the answer a user would compare the
#: search's with.  Why: ranked only by peer rank and score, a baseline at rung 0 can lose its place to configs that
#: score a little higher at 600 rows (MRPC seed 1: the IA3 baseline, rung-0 AUC 0.582, eligible, behind five configs
#: at 0.59-0.66), so the search's answer under its budget is a rung-0 config never checked above it
FIRST_SOURCES = ("baseline:", "enqueue:")

#: :func:`rung_offsets`: a rung's offset is the median over at least this many configs scored at it and the rung below
MIN_PAIRS = 2

_RUNG = re.compile(r"(\d+|all)x(\d+(?:\.\d+)?)(?:@(\d+))?")


def parse_ladder(value: Any) -> list[dict[str, Any]]:
    """``--promote``'s rungs above the study's fidelity: ``"2000x1@32,allx3"`` (rows x epochs, optionally @ batch size;
    ``all``: every training row) or a list of ``{"n_train": ..., "epochs": ..., "batch_size": ...}`` mappings (the API;
    ``batch_size`` optional).  Empty for None or ``""``."""
    if value is None or value == "" or value == []:
        return []
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, dict):
            unknown = sorted(set(item) - {"n_train", "epochs", "batch_size", "lr_scale"})
            if unknown or "n_train" not in item or "epochs" not in item:
                raise ConfigError(f"--promote: each rung needs n_train and epochs (batch_size and lr_scale optional, "
                                  f"nothing else), got {item!r}")
            rows, epochs, batch, scale = item["n_train"], item["epochs"], item.get("batch_size"), item.get("lr_scale")
        else:
            m = _RUNG.fullmatch(str(item).lower())
            if m is None:
                raise ConfigError(f"--promote: {str(item)[:40]!r} is not ROWSxEPOCHS[@BATCH]; give e.g. 2000x1@32,allx3 "
                                  "(rows x epochs, optionally @ batch size, of each rung above the study's own "
                                  "fidelity; all = every training row)")
            rows = "all" if m.group(1) == "all" else int(m.group(1))
            epochs = float(m.group(2))
            batch = int(m.group(3)) if m.group(3) else None
            scale = None
        if rows != "all" and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ConfigError(f"--promote: rows must be an integer >= 1 or all, got {rows!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not 0 < epochs < math.inf:
            raise ConfigError(f"--promote: epochs must be a finite number > 0, got {epochs!r}")
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise ConfigError(f"--promote: batch size must be an integer >= 1, got {batch!r}")
        if scale is not None:
            scale = check_lr_scale(scale, "--promote: lr_scale")
        out.append({"n_train": rows, "epochs": float(epochs), **({"batch_size": batch} if batch is not None else {}),
                    **({"lr_scale": scale} if scale is not None else {})})
    return out


def check_lr_scale(value: Any, what: str = "--promote-lr-scale") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def with_lr_scale(rungs: Sequence[dict[str, Any]], scale: Any) -> list[dict[str, Any]]:
    """``--promote-lr-scale``: every rung's learning-rate scale (the study's ``--lr-scale`` is the base rung's): the
    rungs train longer than the base rung, so the rates that make a short trial learn may be too high there (MRPC:
    at the base rung's x3, the 2,000 x 2 rung ranks LoRA's x1 above x1.41; at x1, like the full budget, below)."""
    if scale is None:
        return [dict(r) for r in rungs]
    if not rungs:
        raise ConfigError("--promote-lr-scale sets the learning-rate scale of --promote's rungs; give --promote too")
    s = check_lr_scale(scale)
    return [{**r, "lr_scale": r.get("lr_scale", s)} for r in rungs]


def ladder_text(rungs: Sequence[dict[str, Any]]) -> str:
    """Rungs as ``--promote`` takes them: ``2000x2,allx3``."""
    return ",".join(f"{r['n_train']}x{float(r['epochs']):g}" + (f"@{r['batch_size']}" if r.get("batch_size") else "")
                    + (f" (lr scale {r['lr_scale']:g})" if r.get("lr_scale") else "") for r in rungs) or "(none)"


def check_fraction(fraction: Any) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"--promote-fraction must be a number between 0 and 1 (exclusive), got {fraction!r}")
    return float(fraction)


def ladder_fidelities(base: dict[str, Any], rungs: Sequence[dict[str, Any]], n_rows: int) -> list[dict[str, Any]]:
    """Every rung's fidelity, the study's own first: each rung takes the base fidelity with its rows, epochs, batch
    size and learning-rate scale if given (``all``: the ``n_rows`` training rows the task has).  Each rung must train more row-epochs than the
    one below."""
    out = [dict(base)]
    for i, r in enumerate(rungs, 1):
        rows = n_rows if r["n_train"] == "all" else int(r["n_train"])
        fid = {**base, "n_train": rows, "epochs": float(r["epochs"]),
               **({"batch_size": int(r["batch_size"])} if r.get("batch_size") else {}),
               **({"lr_scale": float(r["lr_scale"])} if r.get("lr_scale") else {})}
        below = out[-1]
        work, work_below = min(rows, n_rows) * fid["epochs"], min(int(below["n_train"]), n_rows) * float(below["epochs"])
        if work <= work_below:
            raise ConfigError(f"--promote: rung {i} ({min(rows, n_rows)} rows x {fid['epochs']:g} epochs) trains no more "
                              f"than the rung below it ({min(int(below['n_train']), n_rows)} x {float(below['epochs']):g}; "
                              f"the task has {n_rows} training rows); each rung must train more")
        out.append(fid)
    return out


@dataclass(frozen=True)
class Evaluated:
    """A config's finished evaluation at one rung: ``y`` is its objective vector made to maximise
    (:func:`autopeft.pareto.to_max`: score first, then the negated log costs)."""

    number: int
    key: str
    rung: int
    y: tuple[float, ...]
    #: the config's learning-rate multiplier and its key without it (configs of one ``group`` differ only in rate)
    lr: float = 1.0
    group: str = ""


def peer_rank(e: Evaluated, rung: Sequence[Evaluated]) -> float:
    """The share of ``e``'s cost peers (configs of its rung costing no more in every cost) that score better: 0 for a
    config on its rung's front."""
    peers = [p for p in rung if all(pc >= ec for pc, ec in zip(p.y[1:], e.y[1:]))]
    better = sum(p.y[0] > e.y[0] for p in peers)
    return better / max(len(peers), 1)


def chance_margin(n_eval: int, metric_is_loss: bool = False) -> float:
    """How far above chance a config must score to go up a rung: :data:`PROMOTE_SE` binomial standard errors at 0.5 on
    the ``n_eval`` search rows (``0.5 / sqrt(n_eval)``, as ``--lr-scale auto``'s flat test, :mod:`autopeft.escalation`:
    a rough standard error for a score in [0, 1]; an AUC's at chance is 0.58 / sqrt(n) with MRPC's 68/32 classes);
    0 for a loss (a causal LM's), whose scale has no such bound."""
    if metric_is_loss or n_eval < 1:
        return 0.0
    return PROMOTE_SE * 0.5 / math.sqrt(n_eval)


def seeded_keys(sources: Iterable[tuple[str, str | None]]) -> set[str]:
    """The keys, of ``(key, seeded_by)`` pairs, whose source is one of :data:`FIRST_SOURCES` (a promotion keeps its
    config's key, so the set covers every rung)."""
    return {key for key, source in sources if (source or "").startswith(FIRST_SOURCES)}


def next_promotion(done: Sequence[Evaluated], held: set[tuple[str, int]], n_rungs: int, chance: float,
                   fraction: float = PROMOTE_FRACTION, margin: float = 0.0,
                   first: AbstractSet[str] = frozenset()) -> tuple[Evaluated, int] | None:
    """The config to promote now and the rung it goes to, or None.

    ``done``: the study's finished evaluations (any rung); ``held``: (key, rung) pairs the study already holds at
    a rung, running or finished (so a config is never trained twice at one rung); ``chance``: the score, made to
    maximise, that a config must beat by more than ``margin`` (:func:`chance_margin`) to go up; ``first``: keys of
    configs that go up ahead of the others once eligible (the study's seeded configs: the methods' hand-designed
    baselines and ``--enqueue``'s; see :func:`seeded_keys`).  Eligibility and the quota are the same for every config;
    only the order differs."""
    for k in range(n_rungs - 2, -1, -1):
        rung = {e.key: e for e in sorted((e for e in done if e.rung == k), key=lambda e: e.number)}
        at_k = list(rung.values())
        quota = math.floor(fraction * len(at_k) + 1e-9)
        if quota < 1 or sum((e.key, k + 1) in held for e in at_k) >= quota:
            continue
        ranked = sorted((e.key not in first, peer_rank(e, at_k), -e.y[0], e.number, e) for e in at_k
                        if (e.key, k + 1) not in held and e.y[0] > chance + margin + 1e-9)
        for _, rank, _, _, e in ranked:
            if rank < fraction:
                return e, k + 1
    return None


def next_rate_step(done: Sequence[Evaluated], held_rates: Mapping[tuple[str, int], Sequence[float]], rung: int,
                   chance: float, fits: Callable[[Evaluated, float], bool], mode: str = "best",
                   step: float = RATE_STEP) -> tuple[Evaluated, float] | None:
    """``--refine-rate``: the config to evaluate again at ``rung`` with another learning-rate multiplier, and that
    multiplier; None when the line search has nothing to do now.

    Each config's group (the config without its rate) is represented by its best-scoring rate at ``rung``.  ``mode``
    ``best``: the group scoring best there (above ``chance``; ties: the earlier trial) is walked; ``front``: every group
    on that rung's Pareto front (scores and costs), best score first (each is the answer to some budget, as each
    hand-designed baseline gets its own rate search).  A walk tries the group's best rate x ``step``, then /
    ``step``, if ``fits(config, rate)`` (a point of the search space); a rate is skipped if the group holds it at
    ``rung`` already (``held_rates[(group, rung)]``: the multipliers running, queued or finished there).  Since only a
    group's best rate is stepped from, each walk goes uphill and stops where both neighbours of its best score lower.
    The step down waits until the step up has scored (lower): while it runs, this group takes no step and the next
    front group, or the sampler, gets the worker; if it scores higher the step down is never needed (MRPC: the two
    steps down that ran beside steps up that won were 2 of the 9 steps of one search, and IA3's walk ran out of budget
    one step short of its peak)."""
    if mode not in REFINE_MODES or mode == "none":
        raise ConfigError(f"--refine-rate must be one of {', '.join(REFINE_MODES)}, got {mode!r}")
    heads: dict[str, Evaluated] = {}
    for e in sorted((e for e in done if e.rung == rung and e.y[0] > chance + 1e-9), key=lambda e: (-e.y[0], e.number)):
        heads.setdefault(e.group, e)
    order = list(heads.values())  # best score first
    if mode == "best":
        order = order[:1]
    else:
        order = [e for e in order if not any(all(a >= b for a, b in zip(o.y, e.y)) and o.y != e.y for o in order)]
    for best in order:
        scored = [e.lr for e in done if e.rung == rung and e.group == best.group]
        tried = list(held_rates.get((best.group, rung), ())) + scored
        up, down = _neighbours(best.lr, step)
        for lr in (up, down):
            if not fits(best, lr):
                continue
            if _among(lr, tried):
                if lr == up and not _among(up, scored):
                    break  # the step up is running: if it scores higher, the walk goes on from it, never down
                continue
            return best, lr
    return None


def _among(lr: float, rates: Sequence[float]) -> bool:
    """Whether ``lr`` is one of ``rates`` (within :data:`RATE_TOL`)."""
    return any(abs(math.log(lr / t)) < RATE_TOL for t in rates if t > 0)


def rung_offsets(done: Sequence[Evaluated], min_pairs: int = MIN_PAIRS) -> list[float]:
    """``offsets[k]``: how far a config's score (made to maximise) moves from rung ``k - 1`` to rung ``k``, the median
    over the configs evaluated at both (a promotion keeps its config's key; a ``--refine-rate`` step is a config of its
    own); 0 for rung 0 and for a rung with fewer than ``min_pairs`` such configs (compared as scored).  A config's score
    on the top rung's scale is its score plus the offsets above its rung (:func:`on_top_rung`): an additive model of
    fidelity, fitted on the promoted configs, which are the better ones (their change may differ from the others')."""
    at: dict[int, dict[str, float]] = {}
    for e in sorted(done, key=lambda e: e.number):
        at.setdefault(e.rung, {})[e.key] = e.y[0]
    out = [0.0]
    for k in range(1, max(at, default=0) + 1):
        above = at.get(k, {})
        diffs = [above[key] - y for key, y in at.get(k - 1, {}).items() if key in above]
        out.append(float(statistics.median(diffs)) if len(diffs) >= max(1, min_pairs) else 0.0)
    return out


def on_top_rung(score: float, rung: int, offsets: Sequence[float]) -> float:
    """A score (made to maximise) scored at ``rung``, moved onto the top rung's scale by :func:`rung_offsets`."""
    return score + float(sum(offsets[rung + 1:]))


def _neighbours(lr: float, step: float) -> tuple[float, float]:
    """``lr`` x ``step`` and / ``step``; from a rate on the grid of powers of ``step`` (x1, x1.41421, ...), the grid's
    exact neighbours (x1.41421 x sqrt(2) is 1.99999 once rounded, x2 on the grid: the fair baseline protocol's
    rate, so the two are one config)."""
    k = math.log(lr) / math.log(step)
    if abs(k - round(k)) < 1e-3:
        return step ** (round(k) + 1), step ** (round(k) - 1)
    return lr * step, lr / step
