"""Raising the trial fidelity inside a study when every trial so far collapsed (issue 17).

A search whose first :data:`autopeft.loop.COLLAPSE_STOP_TRIALS` complete trials all score at the chance level (the
majority class; for a causal LM, no lower loss than the untrained model's) learns nothing more from the rest of its
budget at that fidelity: on a held-out NLI task (RTE as plain CSV) every default-fidelity trial stayed at the majority
class.  Instead of stopping, the study moves up one *level*: longer trials at higher learning rates, in the same
study.  The trials of a lower level stay in the study (nothing is lost, ``autopeft show --all`` lists them) but every
reader that ranks or models trials (the front, ``best``, ``export``, the plots, the samplers of autopeft, the pruner's
peers, promotion, the collapse checks) takes only the study's current level, since a score at another fidelity is
not comparable; a config run at a lower level may be proposed again at the new one.  ``--trials`` counts every
evaluation, lower levels included.  After :data:`MAX_LEVELS` raises the search stops with its advice, as before.

The study's ``fidelity`` attribute is the current level's; ``fidelity_levels`` lists every level's fidelity, the
first as the study was created (what a resume with the same options is compared with); each trial of a raised level
carries its ``level``.  The memory objective stays at the first level's ``memory_batch_size``, so the reference point
measured at creation still bounds it.

Pure Python: no torch or optuna import (numpy inside :func:`loss_gain_z`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

#: how many times a study may raise its fidelity before the collapse stop applies
MAX_LEVELS = 2
#: classification: rows of a raised level at least this many (and twice the previous level's), batch 32, learning
#: rates x2 (at least x3) up to x8 -- the setting the collapse advice named; on SST-2 and RTE the default CPU
#: fidelity's LoRA trials stay at the majority class while 2000 rows at batch 32, x3-x4 learn (BENCHMARKS.md)
MIN_ROWS = 2000
BATCH = 32
MIN_LR_SCALE, MAX_LR_SCALE = 3.0, 8.0


def next_fidelity(fid: dict[str, Any], lm: bool, n_rows: int) -> dict[str, Any] | None:
    """The fidelity one level above ``fid`` (a :class:`~autopeft.contract.Fidelity` as a dict), or None when it can be
    raised no further (every row already, learning rates at :data:`MAX_LR_SCALE`).  ``n_rows``: the training rows a
    trial can use (the task's minus the search split).  Everything else (epochs, evaluation rows, memory batch, dtype)
    is kept."""
    n, lr = int(fid["n_train"]), float(fid["lr_scale"])
    new = dict(fid)
    batch = int(fid.get("batch_size", BATCH))
    new.setdefault("memory_batch_size", batch)
    if lm:  # cost is set by tokens: more rows at the same batch, learning rates x2
        new["n_train"] = min(4 * n, n_rows)
        new["lr_scale"] = min(2 * lr, MAX_LR_SCALE)
    else:
        new["n_train"] = min(max(MIN_ROWS, 2 * n), n_rows)
        new["batch_size"] = max(batch, BATCH) if new["n_train"] >= BATCH else batch
        new["lr_scale"] = min(max(MIN_LR_SCALE, 2 * lr), MAX_LR_SCALE)
    if new["n_train"] <= n and new["lr_scale"] <= lr:
        return None
    return new


def advice(fid: dict[str, Any], lm: bool) -> str:
    """The next level's options as the user would pass them to a new study (the collapse warning's and stop's advice),
    e.g. ``--n-train 2000 --batch-size 32 --lr-scale 4``: the same rule as :func:`next_fidelity`, rows uncapped."""
    new = next_fidelity(fid, lm, n_rows=2**62) or dict(fid)  # uncapped rows always grow: never None
    batch = "" if lm else f" --batch-size {new['batch_size']}"
    return f"--n-train {new['n_train']}{batch} --lr-scale {float(new['lr_scale']):g}"


def describe(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What changes between two levels, e.g. ``600 -> 2000 rows, batch 8 -> 32, learning rates x2 -> x4``."""
    parts = []
    if new["n_train"] != old["n_train"]:
        parts.append(f"{old['n_train']} -> {new['n_train']} rows")
    if new["batch_size"] != old["batch_size"]:
        parts.append(f"batch {old['batch_size']} -> {new['batch_size']}")
    if new["lr_scale"] != old["lr_scale"]:
        parts.append(f"learning rates x{float(old['lr_scale']):g} -> x{float(new['lr_scale']):g}")
    return ", ".join(parts) or "no change"


#: a score at most this far above the chance level counts as flat (learned nothing): the collapse stop's margin
FLAT_MARGIN = 0.02
#: ``autopeft train --lr-scale auto``: a seed that learned nothing at x1 trains again at x2, then x4
FINAL_LR_RAISES = 2
FINAL_LR_FACTOR = 2.0


#: ``--lr-scale auto`` also counts a run as flat when its held-out cross-entropy is less than this many standard errors
#: below that of always predicting the training rows' class shares (:func:`loss_gain_z`): on RTE's 249 held-out rows
#: a run 0.024 above the majority class gained 1.1 standard errors of loss, noise the accuracy margin let through
#: (BENCHMARKS.md "The held-out task")
FLAT_LOSS_Z = 2.0


#: ... but only while the score is within this many binomial standard errors at 0.5 (``0.5 / sqrt(rows)``) of chance:
#: a model well above chance has learned however badly calibrated its loss is (MRPC as plain files, Matthews 0.29 on
#: 366 held-out rows with balanced class weights: loss z only -2.8, since confident mistakes widen the error)
CLEAR_SE = 3.0


def flat(score: float | None, chance: float | None, loss_z: float | None = None, n_rows: int | None = None) -> bool:
    """True when ``score`` is at most :data:`FLAT_MARGIN` above ``chance`` (a higher-is-better score), or when the
    run's held-out loss is not clearly below the class prior's (``loss_z``, :func:`loss_gain_z`, above
    -:data:`FLAT_LOSS_Z`) and its score is within :data:`CLEAR_SE` standard errors of chance on ``n_rows`` rows."""
    if score is not None and chance is not None and score <= chance + FLAT_MARGIN:
        return True
    if loss_z is None or loss_z <= -FLAT_LOSS_Z:
        return False
    if score is None or chance is None or not n_rows:
        return True
    return score <= chance + CLEAR_SE * 0.5 / math.sqrt(n_rows)


def loss_gain_z(logits: Any, labels: Sequence[int], train_labels: Sequence[int],
                weights: Sequence[float] | None = None) -> float:
    """How many standard errors the cross-entropy of ``logits`` on ``labels`` lies below (negative) or above that of
    the best constant prediction learned from ``train_labels`` (their class shares; with class ``weights``, the shares
    times the weights, normalised: the constant the weighted loss would settle on).  Paired per row, each row weighted
    by its class's weight, so the standard error is in units of the model's own confidence: a model whose predictions
    barely leave the prior gets a small error and a small gain, and the ratio says whether the gain is real."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    k = z.shape[1]
    w_c = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    q = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=k).astype(np.float64) * w_c
    q = np.clip(q / q.sum(), 1e-12, None)
    z = z - z.max(1, keepdims=True)
    ce = np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]
    d = ce + np.log(q[y])  # the model's loss minus the constant's, per row
    w = w_c[y]
    gain = float((w * d).sum() / w.sum())
    se = float(np.sqrt((w ** 2 * (d - gain) ** 2).sum()) / w.sum())
    if se == 0.0:
        return 0.0 if gain == 0.0 else math.copysign(math.inf, gain)
    return gain / se


def final_lr_scales(start: float = 1.0) -> list[float]:
    """The learning-rate scales final training tries for a seed, in order, until one learns: ``start`` (the scale the
    seed before kept; x1 for the first), then the others of the ladder x1, x2, x4 (:data:`FINAL_LR_FACTOR`,
    :data:`FINAL_LR_RAISES`) from the lowest."""
    ladder = [FINAL_LR_FACTOR ** k for k in range(FINAL_LR_RAISES + 1)]
    return [start] + [s for s in ladder if s != start]


def raise_rule(rows: int, lm: bool) -> Callable[[int, dict[str, Any]], dict[str, Any] | None]:
    """A study's rule for the next fidelity level after a collapse (:func:`next_fidelity`; ``rows``: the task's
    training rows outside the search split), None past :data:`MAX_LEVELS`."""
    return lambda level, fid: next_fidelity(fid, lm, rows) if level < MAX_LEVELS else None
