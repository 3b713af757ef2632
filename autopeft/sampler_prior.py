"""Transfer for the default sampler: another study's trials as a prior for the score model (``--warm-start``).

Configs that do well on one GLUE task tend to do well on another with the same model: on the committed tables a
forest fitted to 300 SST-2 trials ranks 120 MRPC configs with Spearman 0.81 (and MRPC's forest ranks SST-2's with
0.80), where the parameter count alone ranks them with 0.54-0.61.  Queuing the other study's front (what
``--warm-start`` did first) uses only a few of those configs and spends trials on them; the prior uses all of them.

How: **the task as an input** of the score GP.  The source study's trials join the GP's data with one more input
column set to 0 (this study's trials: 1), their scores first put on this study's scale (the share of the
chance-to-perfect gap they closed, :func:`map_scores`: AUC on MRPC, accuracy on SST-2).  The RBF kernel's length
scale on that column is fitted with the others, so the GP learns from this study's trials how much the other task
says about this one: an unrelated source is shrunk away, a related one informs every prediction from the first
model-based trial on.  The acquisition is unchanged and uses this study's front only.  Why not botorch's
``MultiTaskGP``: its index kernel needs a task covariance fitted from data it does not yet have at trial 3; one
extra ARD input is the same idea with one hyperparameter, and the fast fit of :mod:`autopeft.sampler_gp` serves it
unchanged.

A prior keeps at most :data:`MAX_PRIOR_POINTS` source trials (the front, then the best scores, then a spread of the
rest), so the GP's hyperparameters are fitted on this study's trials too (:data:`autopeft.sampler_gp.FIT_POINTS`).
With a prior the random start-up design shrinks to :data:`PRIOR_STARTUP` trials, and the prior (its points, and its
configs as candidates of the acquisition's pool) is used until the study has :data:`PRIOR_UNTIL` finished trials of
its own: on the table replays (BENCHMARKS.md, "Warm start") a prior kept for all 40 trials led early and then fell
behind the cold search on SST-2 -> MRPC (0.534 vs 0.551 at 40 trials); dropped at 20 it kept the lead and ended level.

The study stores its prior's settings (:func:`resume_prior`: the source as ``NAME@URL``, :data:`PRIOR_UNTIL` and
:data:`autopeft.collapse_model.LEARN_WITH_PRIOR` as they were at its creation), so a resume, with or without
``--warm-start``, goes on with the prior it started with.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: source trials kept as the prior at most
MAX_PRIOR_POINTS = 128
#: random (or queued) trials before the model steers, when a prior is given
PRIOR_STARTUP = 2
#: with the default sampler, ``--warm-start`` queues this many of the other study's front (best score first); other
#: samplers get no prior, so the whole front is queued for them
WARM_QUEUE = 1
#: the prior informs the score model until the study has this many finished trials of its own (None: always)
PRIOR_UNTIL: int | None = 20


def resume_prior(stored: dict[str, Any] | None, given: str | None, resumed: bool,
                 name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The warm-start prior a search goes on with, ``{"source": NAME@URL, "until", "learn_with_prior"}`` (None: no
    prior), and a note for the user.  ``stored``: the study's (None: none, or a study that predates it); ``given``:
    ``--warm-start`` resolved to ``NAME@URL`` (None: not given).  A study keeps its stored settings (not the defaults
    of the day); another source given on a resume replaces it, with today's defaults."""
    from autopeft.collapse_model import LEARN_WITH_PRIOR

    if stored is not None and given in (None, stored["source"]):
        note = None
        if resumed and given is None:
            note = (f"study {name!r} was warm-started from {stored['source']}: its trials stay the sampler's prior "
                    f"until the study has {stored['until']} finished trials" if stored["until"] is not None else
                    f"study {name!r} was warm-started from {stored['source']}: its trials stay the sampler's prior")
        return dict(stored), note
    if given is None:
        return None, None
    note = (f"study {name!r} was warm-started from {stored['source']}; it goes on with {given} as the sampler's prior"
            if stored is not None else None)
    return {"source": given, "until": PRIOR_UNTIL, "learn_with_prior": LEARN_WITH_PRIOR}, note


def map_scores(scores: Sequence[float], source_chance: float, chance: float) -> np.ndarray:
    """Source scores on this study's scale: the same share of the chance-to-perfect gap (a score of 1 is perfect)."""
    s = np.asarray(scores, dtype=float)
    share = (s - source_chance) / max(1e-9, 1.0 - source_chance)
    return chance + share * (1.0 - chance)


def select(points: Sequence[tuple[Any, float, float, float]], limit: int = MAX_PRIOR_POINTS,
           seed: int = 0) -> list[int]:
    """Indices of the source trials to keep: ``points`` are (candidate, score, params, memory); the source's Pareto
    front first, then the best scores, then an even spread of the rest (fixed by ``seed``)."""
    from autopeft.pareto import non_dominated, to_max

    if len(points) <= limit:
        return list(range(len(points)))
    Y = np.array([to_max(("score", "params", "memory"), p[1:4]) for p in points])
    front = [int(i) for i in np.flatnonzero(non_dominated(Y))]
    by_score = [int(i) for i in np.argsort(-Y[:, 0]) if int(i) not in set(front)]
    keep = (front + by_score[: max(0, limit // 4 - len(front))])[:limit]
    rest = [i for i in range(len(points)) if i not in set(keep)]
    rng = np.random.default_rng(seed)
    keep += [int(i) for i in rng.choice(rest, size=min(len(rest), limit - len(keep)), replace=False)]
    return sorted(keep)


def with_task(X: np.ndarray, flag: float) -> np.ndarray:
    """The encodings with the task column (1: this study, 0: the source)."""
    return np.column_stack([X, np.full(len(X), flag)])


__all__ = ["MAX_PRIOR_POINTS", "PRIOR_STARTUP", "PRIOR_UNTIL", "WARM_QUEUE", "map_scores", "resume_prior", "select",
           "with_task"]
