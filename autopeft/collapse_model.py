"""The sampler's collapse model: which configs learn at the study's fidelity, and which stay at the majority class.

At a low-cost fidelity many configs never move off the majority class (too few parameters, too sparse, too low a
learning rate).  Their scores tell the score GP little about their neighbours, and cheap ones add a wide slice of
hypervolume whenever the GP is unsure, so model-based steps kept buying them (issue 17: 18-20 of 32 model-based
trials in real SST-2 searches).  As soon as one trial collapsed and one learned, a logistic regression (scikit-learn)
on a few exact features of a config, its classes weighted to balance, predicts P(learns); :class:`autopeft.sampler.CostAwareEHVISampler` skips proposals
it gives less than :data:`P_LEARN` and weighs the acquisition of the others by P(learns)^:data:`LEARN_WEIGHT`, choosing
among the candidates within :data:`LEARN_BAND` of the best expected gain.  The score GP still learns from every trial (taking collapsed trials away from the GP was tried and
rejected: BENCHMARKS.md).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from autopeft.candidate import Candidate, structure_key

#: a trial "collapsed" when its score is within this share of the chance-to-perfect gap of chance (the benchmarks' rule)
MARGIN = 0.02
#: the model is fitted once at least this many trials collapsed and as many learned.  1, with the classes weighted to
#: balance: at 3 (the first version) a real SST-2 search whose start-up design had one collapsed trial ran 6 more
#: collapsed model-based trials before the model existed (BENCHMARKS.md "Collapse")
MIN_EACH = 1
#: proposals the model gives a lower probability of learning are skipped
P_LEARN = 0.5
#: the acquisition of the others is multiplied by P(learns) to this power, within :data:`LEARN_BAND` (0: off).  With
#: the score at chance a trial adds no hypervolume, so EHVI x P(learns) approximates the expected gain of a config that
#: learns with probability P (approximates: the score GP's posterior stands for the score given that it learns, though
#: the GP also learns from the collapsed trials); the power sharpens a regression fitted on a dozen trials.  Alone, 10
#: halved the collapsed trials (six real SST-2 searches: 10 of 180 model-proposed trials, Optuna's GPSampler 21, 25
#: without) but moved the search to larger configs and cost hypervolume: the README's main command (3 seeds, mean
#: 0.520 against 0.585) and SST-2 at 40 trials (0.914 against 0.955).  Within the band (the default since session 23):
#: 12 of 180 collapsed, SST-2's mean hypervolume at 40 trials 0.954, the README's 0.616 (higher on 3 seeds of 3, one by
#: 0.002); MRPC, four real seeds: mean 0.579 against 0.534 (higher on seeds 0-1, a little lower on 2-3)
#: (BENCHMARKS.md "The weight within a band of the best gain"); on ten SST-2 seeds (session 26) 23 of 300 collapsed
#: against GPSampler's 37 (0.62x; seeds resampled, 90 % of the ratios in 0.47-0.80x), half of them proposed before the
#: study had seen any collapse; a search sets its own with ``--learn-weight K``
LEARN_WEIGHT = 10.0
#: with a weight, P(learns) counts as min(1, P / LEARN_CAP): configs the model gives at least LEARN_CAP weigh alike, so
#: the weight damps only the uncertain ones (1: no cap).  Tried in session 21 (BENCHMARKS.md)
LEARN_CAP = 1.0
#: with a weight, it chooses only among the candidates whose unweighted EHVI is at least this share of the best among
#: the candidates the collapse model keeps (within any memory budget; 0: among all): it trades a likely collapse for a near-equal gain but cannot drag the search far from the best gain
#: (without it the weight took the README's search to LoRA r=64 everywhere).  0.5, the middle of the three replayed
#: (0.25 / 0.5 / 0.8 on the SST-2 pool: 5.7 / 6.6 / 7.3 collapsed after the start-up, 8.7 without a weight)
LEARN_BAND = 0.5
#: whether the weight also applies while another study's trials inform the score model (``--warm-start``'s prior, the
#: first :data:`autopeft.sampler_prior.PRIOR_UNTIL` trials).  Off (since session 24): the prior already says which
#: configs learn; with the weight, real SST-2 searches warm-started from MRPC reached the cold default's 40-trial
#: hypervolume on 2 seeds of 4 (23, 28 trials), without it on 3 (22, 25, 26), HV@40 mean 1.035 against 0.990; the
#: collapse model still skips configs it expects to collapse (BENCHMARKS.md "Warm start ... session 24").  Held-out
#: seeds 4-5 (session 25) did not confirm it (on: 20 and 10 trials, off: never and 11); over six seeds the two are
#: level (median 25.5 trials both), so it stays off rather than flip on noise
LEARN_WITH_PRIOR = False
#: a structure (a config but for its learning-rate multiplier) that collapsed at multiplier m is not proposed again at
#: a multiplier up to this factor above m: at a short fidelity a lower rate learns less, and the space's range (0.5-2)
#: leaves little above.  Real SST-2 searches proposed "head only" three times in a row at x1.88, x1.58, x1.98, each
#: at the majority class, because the regression reads a high rate as a reason to learn.
RETRY_FACTOR = 1.25


def resume_settings(stored: tuple[float | None, float | None] | None, given: float | None, resumed: bool,
                    name: str) -> tuple[float, float, str | None]:
    """The weight and band a search goes on with, and a note for the user: a study keeps its stored (weight, band)
    (``stored``; None: a study that predates them; a null weight: created with another sampler); ``given``
    (``--learn-weight``) changes the weight."""
    sw, sb = stored if stored is not None else (None, None)
    w = float(given) if given is not None else float(sw) if sw is not None else LEARN_WEIGHT
    b = float(sb) if sw is not None and sb is not None else LEARN_BAND
    note = None
    if resumed and stored is None:
        note = (f"study {name!r} was created before autopeft stored its learn weight: it goes on with learn weight "
                f"{w:g} (band {b:g}); before 2026-12-05 the default was 0 (pass --learn-weight 0 to keep that)")
    elif resumed and sw is not None and w != float(sw):
        note = f"study {name!r} was run with learn weight {float(sw):g}; it goes on with {w:g}"
    return w, b, note


def collapsed_rates(cands: Sequence[Candidate], scores: Sequence[float], chance: float, gap: float) -> dict[str, float]:
    """Each structure that collapsed (score within :data:`MARGIN` x ``gap`` of ``chance``) -> the highest learning-rate
    multiplier it collapsed at."""
    out: dict[str, float] = {}
    for c, s in zip(cands, scores):
        if s <= chance + MARGIN * gap:
            k = structure_key(c.to_dict())
            out[k] = max(out.get(k, 0.0), c.lr_multiplier)
    return out


def retries_collapse(cand: Candidate, collapsed: dict[str, float]) -> bool:
    """True when ``cand``'s structure collapsed at a rate at least its own / :data:`RETRY_FACTOR`."""
    m = collapsed.get(structure_key(cand.to_dict())) if collapsed else None
    return m is not None and cand.lr_multiplier <= m * RETRY_FACTOR


def features(cost_features: Sequence[float], params: int, cand: Candidate) -> list[float]:
    """What the model reads: the sampler's exact cost features (backprop depth, layer share, methods; the constant
    first one dropped), log10 of the exact parameter count, the sparsity and the log learning-rate multiplier."""
    sparsity = float(cand.sparsity.get("fraction", 0.0)) if cand.sparsity else 0.0
    return list(cost_features[1:]) + [math.log10(max(params, 1)), sparsity, math.log(cand.lr_multiplier)]


def fit(X: np.ndarray, scores: Sequence[float], chance: float, gap: float) -> Callable[[np.ndarray], np.ndarray] | None:
    """P(learns) as a function of feature rows, fitted on ``X`` (one row per trial) and the trials' ``scores`` (higher
    is better; a loss enters negated), or None before :data:`MIN_EACH` trials collapsed and as many learned.
    ``gap``: the distance from chance to a perfect score."""
    learned = np.array([s > chance + MARGIN * gap for s in scores])
    if learned.sum() < MIN_EACH or (~learned).sum() < MIN_EACH:
        return None
    from sklearn.linear_model import LogisticRegression

    mu, sd = X.mean(0), X.std(0) + 1e-9
    # balanced: a study's first collapsed trial is often its only one; unweighted, the model then expects every
    # config to learn and skips nothing
    clf = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced").fit((X - mu) / sd, learned)
    return lambda rows: clf.predict_proba((np.asarray(rows) - mu) / sd)[:, 1]


def learner(rows: Callable[[Sequence[Candidate]], np.ndarray], trials: Sequence[Candidate], scores: Sequence[float],
            chance: float, gap: float) -> Callable[[list[Candidate]], np.ndarray] | None:
    """P(a config learns) for a list of configs, from ``trials`` and their ``scores`` (higher is better): the
    regression of :func:`fit` on the feature rows ``rows`` gives, times 0 for a structure that collapsed at a rate as
    high (:func:`retries_collapse`); None before any trial collapsed (nothing to judge by)."""
    p = fit(rows(trials), scores, chance, gap)
    again = collapsed_rates(trials, scores, chance, gap)  # and never retry a collapse's rate
    if p is None and not again:
        return None

    def learns(cs: list[Candidate]) -> np.ndarray:
        out = np.ones(len(cs)) if p is None else p(rows(cs))
        if not again:
            return out
        return np.where([retries_collapse(c, again) for c in cs], 0.0, out)

    return learns
