"""What the bench scripts share: where the data and the committed tables are, their common options (``--task``,
``--space``, ``--data-dir``, ``--model``, ``--metric``, ``--quick``, ``--workers``/``--minutes``, ``--fidelity``)
and the rank correlation they report.

The data directory defaults to the shared GLUE copy beside the repository (``../shared/data/glue``);
``$AUTOPEFT_DATA_DIR`` replaces that default and ``--data-dir`` overrides both.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from autopeft.contract import Fidelity

TABLES = Path(__file__).resolve().parent / "tables"
GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
DATA_DIR_ENV = "AUTOPEFT_DATA_DIR"
#: the trials of a ``--quick`` run (on the tiny test model: a second or two each)
QUICK_FIDELITY: dict[str, Any] = {"n_train": 32, "n_eval": 32, "epochs": 1, "max_length": 24, "batch_size": 16}
#: each fidelity key and the type its value is read as (int or float, as Fidelity's defaults)
FIDELITY_KEYS: dict[str, type] = {f.name: type(f.default) for f in fields(Fidelity)}


def non_negative_floats(text: str) -> list[float]:
    """An argparse type: comma-separated finite numbers >= 0 (e.g. ``--head-lr 0,0.01``)."""
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text[:40]}") from None
    if not vals or any(not 0 <= v < math.inf for v in vals):
        raise argparse.ArgumentTypeError(f"must be finite numbers >= 0, got {text[:40]}")
    return vals


def collapsed(score: float, chance: float) -> bool:
    """A trial scored about the majority class: within 2 % of the chance-to-perfect gap above the chance level (the
    collapse rule of every sampler comparison in BENCHMARKS.md)."""
    return score <= chance + 0.02 * (1 - chance)


def default_data_dir() -> str:
    """``$AUTOPEFT_DATA_DIR`` if set, else the shared GLUE copy."""
    return os.environ.get(DATA_DIR_ENV) or str(GLUE)


def add_task(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--task", default="sst2", help="a GLUE task of --data-dir (default sst2)")


def add_space(ap: argparse.ArgumentParser, help: str = "a shipped search space (default mixed)") -> None:
    ap.add_argument("--space", default="mixed", help=help)


def add_chunk(ap: argparse.ArgumentParser, minutes: float) -> None:
    """--workers and --minutes of a resumable run of real trials (run again to go on)."""
    ap.add_argument("--workers", type=int, default=2, help="trials side by side (default 2)")
    ap.add_argument("--minutes", type=float, default=minutes,
                    help=f"stop cleanly after this long; run again to go on (default {minutes:g})")


def add_data_dir(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data-dir", default=default_data_dir(),
                    help=f"the GLUE copy (default ${DATA_DIR_ENV}, else {GLUE})")


def add_model(ap: argparse.ArgumentParser, note: str = "") -> None:
    ap.add_argument("--model", help="a Hugging Face model name or path (default: the packaged all-MiniLM-L6-v2"
                                    + (f"; {note}" if note else "") + ")")


def add_metric(ap: argparse.ArgumentParser, help: str) -> None:
    from autopeft.config import METRICS

    ap.add_argument("--metric", choices=METRICS, help=help)


def add_quick(ap: argparse.ArgumentParser, what: str = "a tiny run") -> None:
    ap.add_argument("--quick", action="store_true", help=f"{what}, for the test suite")


def add_sampler_knobs(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--refit-growth", type=float, help="the default sampler refits its GP's hyperparameters once the "
                    "trials grew by this share (autopeft.sampler_gp.REFIT_GROWTH; 0: at every new trial)")
    ap.add_argument("--score-trend", choices=("on", "off"), help="the default sampler's score GP models the residual "
                    "of a trend in log parameters (autopeft.sampler_gp.SCORE_TREND; default: as shipped)")
    ap.add_argument("--learn-cap", type=float, help="with --learn-weight, P(learns) counts as min(1, P / CAP) "
                    "(autopeft.collapse_model.LEARN_CAP; 1: no cap)")
    ap.add_argument("--learn-band", type=float, help="with --learn-weight, the weight chooses only among candidates "
                    "whose unweighted EHVI is at least this share of the pool's best (autopeft.collapse_model.LEARN_BAND; 0: all)")
    ap.add_argument("--learn-with-prior", choices=("on", "off"), help="whether the weight also applies while a warm "
                    "start's prior informs the model (autopeft.collapse_model.LEARN_WITH_PRIOR; default: as shipped)")
    ap.add_argument("--learn-weight", type=float, help="the default sampler multiplies its acquisition by the "
                    "collapse model's P(learns) to this power (autopeft.collapse_model.LEARN_WEIGHT; default: as shipped, 0: off)")


def apply_sampler_knobs(a: argparse.Namespace) -> None:
    """Set ``--refit-growth``, ``--score-trend``, ``--learn-weight``, ``--learn-cap``, ``--learn-band`` and
    ``--learn-with-prior`` in :mod:`autopeft.sampler_gp` and :mod:`autopeft.collapse_model` (this process's samplers);
    a bad value: one line, exit 2."""
    if a.refit_growth is not None:
        from autopeft import sampler_gp

        sampler_gp.REFIT_GROWTH = a.refit_growth
    if a.score_trend is not None:
        from autopeft import sampler_gp

        sampler_gp.SCORE_TREND = a.score_trend == "on"
    def bad(msg: str) -> None:  # one line, exit 2, as argparse's own errors
        print(msg, file=sys.stderr)
        raise SystemExit(2)

    if a.learn_weight is not None:
        if not a.learn_weight >= 0:
            bad(f"--learn-weight must be a number >= 0, got {a.learn_weight:g}")
        from autopeft import collapse_model

        collapse_model.LEARN_WEIGHT = a.learn_weight
    if a.learn_cap is not None:
        if not 0 < a.learn_cap <= 1:
            bad(f"--learn-cap must be a number in (0, 1], got {a.learn_cap:g}")
        from autopeft import collapse_model

        collapse_model.LEARN_CAP = a.learn_cap
    if a.learn_band is not None:
        if not 0 <= a.learn_band <= 1:
            bad(f"--learn-band must be a number in [0, 1], got {a.learn_band:g}")
        from autopeft import collapse_model

        collapse_model.LEARN_BAND = a.learn_band
    if a.learn_with_prior is not None:
        from autopeft import collapse_model

        collapse_model.LEARN_WITH_PRIOR = a.learn_with_prior == "on"


class FidelityError(ValueError):
    """A malformed --fidelity text (the scripts print it as one line and exit 2)."""


def parse_fidelity(text: str | None, allow_metric: bool = False) -> dict[str, Any] | None:
    """``n_train=2000,epochs=2,batch_size=32,lr_scale=3`` -> a Fidelity dict (None: the machine's default);
    ``metric=auc`` too where ``allow_metric``. Raises :class:`FidelityError` with the reason."""
    if not text:
        return None
    kinds: dict[str, Any] = {**FIDELITY_KEYS, **({"metric": str} if allow_metric else {})}
    out: dict[str, Any] = {}
    for kv in text.split(","):
        k, sep, v = kv.partition("=")
        k = k.strip()
        if not sep:
            raise FidelityError(f"--fidelity: {kv!r} is not KEY=VALUE (e.g. n_train=2000,epochs=2,batch_size=32,lr_scale=3)")
        if k not in kinds:
            raise FidelityError(f"--fidelity: unknown key {k!r}; use {', '.join(sorted(kinds))}")
        if kinds[k] is bool:  # bool("false") is True
            if v.strip().lower() not in ("true", "false"):
                raise FidelityError(f"--fidelity: {k}={v!r} must be true or false")
            out[k] = v.strip().lower() == "true"
            continue
        try:
            out[k] = kinds[k](v.strip())
        except ValueError:
            raise FidelityError(f"--fidelity: {k}={v!r} is not a number") from None
    return out


def fidelity_arg(ap: argparse.ArgumentParser, text: str | None, allow_metric: bool = False) -> dict[str, Any] | None:
    """parse_fidelity for a command line: a bad text is one argparse error line and exit 2."""
    try:
        return parse_fidelity(text, allow_metric)
    except FidelityError as exc:
        ap.error(str(exc))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties share their mean rank); NaN where either side is constant."""
    import pandas as pd

    return float(pd.Series(list(x)).rank().corr(pd.Series(list(y)).rank()))


def ratio_to_ceiling_interval(proxy: Sequence[float], full: Sequence[float], seed_a: Sequence[float],
                              seed_b: Sequence[float], goal: float = 0.8, n_boot: int = 2000,
                              rng_seed: int = 0) -> dict[str, float]:
    """How sure a proxy's "x the ceiling" is: configs resampled with replacement (one draw for both correlations),
    Spearman(proxy, full) / Spearman(seed_a, seed_b) in each resample.  Returns the 5th and 95th percentiles of that
    ratio and the share of resamples in which it is at least ``goal``; resamples where either ranking is constant or
    the ceiling is not above 0 count as below the goal (a ratio to a ceiling of 0 or less means nothing).

    With 20-30 configs a Spearman coefficient moves by about 0.2 between resamples, so one figure such as 1.04 x or
    0.53 x does not say on which side of 0.8 x a rung lies."""
    import numpy as np
    from scipy.stats import rankdata

    cols = [np.asarray(v, dtype=float) for v in (proxy, full, seed_a, seed_b)]
    n = len(cols[0])
    if n < 3 or any(len(c) != n for c in cols):
        raise ValueError(f"need one value per config in all four rankings and 3 or more configs, got {[len(c) for c in cols]}")
    idx = np.random.default_rng(rng_seed).integers(0, n, size=(n_boot, n))

    def rho(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        rx, ry = rankdata(x[idx], axis=1), rankdata(y[idx], axis=1)
        rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
        den = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (rx * ry).sum(1) / den, np.nan)

    top, ceil = rho(cols[0], cols[1]), rho(cols[2], cols[3])
    ok = np.isfinite(top) & np.isfinite(ceil) & (ceil > 0)
    ratio = np.where(ok, top / np.where(ok, ceil, 1.0), -np.inf)
    lo, hi = np.percentile(ratio, [5, 95], method="inverted_cdf")  # no interpolation with -inf
    return {"lo": float(lo), "hi": float(hi), "p_goal": float(np.mean(ratio >= goal)), "goal": goal, "n_boot": n_boot}
