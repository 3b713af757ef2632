"""Which classifier should the sampler's collapse model be?  Offline, on recorded trials (session 22).

Two views, each for the shipped logistic regression (:func:`autopeft.collapse_model.fit`: C = 1, classes balanced)
and alternatives on the same features (:func:`autopeft.collapse_model.features`):

* ``table``: a tabular benchmark's configs (random ones: no sampler chose them).  Fit on ``n`` random configs,
  predict the rest; ROC AUC, the share of collapsed configs a cut at P(learns) < 0.5 catches and the share of
  learners it loses; ``--reps`` random splits per ``n``.
* ``studies``: real searches.  For each trial from ``--first`` on, fit on the trials numbered before it and
  predict it; the same figures over every such trial of every study in the storages (the sampler's own proposals
  had already passed its model, so this is the hard part of the problem: the configs near the boundary).

    python -m bench.collapse_classifiers table --table bench/tables/sst2-mixed-cpu.csv
    python -m bench.collapse_classifiers studies --storage sqlite:///bench/tables/confirm-sst2-warmcheck.db
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

Fit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _logit(C: float = 1.0, drop: int | None = None, square: int | None = None) -> Fit:
    """Logistic regression, classes balanced, on standardised features (``drop``: a column left out; ``square``: a
    column's square added)."""
    from sklearn.linear_model import LogisticRegression

    def shape(A: np.ndarray) -> np.ndarray:
        A = np.asarray(A, dtype=float)
        if square is not None:
            A = np.column_stack([A, A[:, square] ** 2])
        return np.delete(A, drop, 1) if drop is not None else A

    def fit(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        Z = shape(X)
        mu, sd = Z.mean(0), Z.std(0) + 1e-9
        clf = LogisticRegression(C=C, max_iter=1000, class_weight="balanced").fit((Z - mu) / sd, y)
        return lambda A: clf.predict_proba((shape(A) - mu) / sd)[:, 1]

    return fit


def _forest(extra: bool = False, leaf: int = 1) -> Fit:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    def fit(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        kind = ExtraTreesClassifier if extra else RandomForestClassifier
        clf = kind(n_estimators=200, min_samples_leaf=leaf, class_weight="balanced", random_state=0).fit(X, y)
        return lambda A: clf.predict_proba(np.asarray(A))[:, 1]

    return fit


def _blend(a: Fit, b: Fit) -> Fit:
    def fit(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        f, g = a(X, y), b(X, y)
        return lambda A: 0.5 * (f(A) + g(A))

    return fit


def models(log_params_col: int) -> dict[str, Fit]:
    """The classifiers compared; ``log_params_col``: the feature column of log10 parameters."""
    return {"logistic (shipped)": _logit(), "logistic C=0.3": _logit(0.3), "logistic C=3": _logit(3.0),
            "logistic, no log-params": _logit(drop=log_params_col),
            "logistic + log-params^2": _logit(square=log_params_col), "random forest": _forest(),
            "random forest, leaf 2": _forest(leaf=2), "extra trees": _forest(extra=True),
            "logistic + forest (mean)": _blend(_logit(), _forest())}


def featurizer(space: str, num_layers: int, model: str | None) -> Callable[[Any], list[float]]:
    """A candidate -> the collapse model's features, as the default sampler computes them."""
    from autopeft.builder import count_params, model_info
    from autopeft.sampler_memo import SamplerMemo
    from autopeft.space import SearchSpace

    info = model_info(model, 2)
    memo = SamplerMemo(SearchSpace.load(space).bind(num_layers), lambda c: count_params(c, info))
    return memo.collapse_features


def _figures(p: np.ndarray, learned: np.ndarray) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score

    cut = p < 0.5
    return (float(roc_auc_score(learned, p)), float((cut & ~learned).sum() / max(1, (~learned).sum())),
            float((cut & learned).sum() / max(1, learned.sum())))


def table(path: str, ns: Sequence[int], reps: int, seed: int = 0) -> dict[str, Any]:
    from autopeft.collapse_model import MARGIN
    from bench.compare_samplers import load_table, table_model

    cands, vals, meta = load_table(Path(path))
    feats = featurizer("mixed", int(meta["num_layers"]), table_model(meta))  # the tables' space
    X = np.array([feats(c) for c in cands])
    chance = float(meta["ref_point"][0])
    learned = vals[:, 0] > chance + MARGIN * (1 - chance)
    ms = models(X.shape[1] - 3)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"table": path, "configs": len(cands), "collapsed_share": float(1 - learned.mean()), "n": {}}
    for n in ns:
        rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in ms}
        for _ in range(reps):
            idx = rng.permutation(len(cands))
            tr, te = idx[:n], idx[n:]
            if learned[tr].all() or not learned[tr].any():
                continue
            for k, fit in ms.items():
                rows[k].append(_figures(fit(X[tr], learned[tr])(X[te]), learned[te]))
        out["n"][str(n)] = {k: dict(zip(("auc", "caught", "lost"), np.mean(v, 0).round(3).tolist())) for k, v in rows.items()}
    return out


def studies(storages: Sequence[str], first: int) -> dict[str, Any]:
    import optuna

    from autopeft.api import load_study
    from autopeft.candidate import Candidate
    from autopeft.collapse_model import MARGIN

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    feats = featurizer("mixed", 6, None)
    ms = models(len(feats(Candidate.make({}, []))) - 3)
    preds: dict[str, list[float]] = {k: [] for k in ms}
    truth: list[bool] = []
    for st in storages:
        for summary in optuna.get_all_study_summaries(st):
            res = load_study(summary.study_name, st)
            chance = float(res.ref_point[0])
            trials = sorted(res.complete_trials(), key=lambda t: t.number)
            X = np.array([feats(Candidate.from_json(json.dumps(t.user_attrs["candidate"]))) for t in trials])
            y = np.array([t.values[0] > chance + MARGIN * (1 - chance) for t in trials])
            for i in range(first, len(trials)):
                truth.append(bool(y[i]))
                for k, fit in ms.items():  # before one trial collapsed and one learned the sampler has no model
                    ok = y[:i].any() and not y[:i].all()
                    preds[k].append(float(fit(X[:i], y[:i])(X[i:i + 1])[0]) if ok else 1.0)
    t = np.array(truth)
    out: dict[str, Any] = {"storages": list(storages), "trials": len(t), "collapsed": int((~t).sum()), "models": {}}
    for k, p in preds.items():
        auc, _, _ = _figures(np.array(p), t)
        cut = np.array(p) < 0.5
        out["models"][k] = {"auc": round(auc, 3), "collapses_cut": int((cut & ~t).sum()), "learners_cut": int((cut & t).sum())}
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("--table", required=True)
    t.add_argument("--n", default="12,20,30,40", help="training sizes, comma-separated")
    t.add_argument("--reps", type=int, default=60)
    s = sub.add_parser("studies")
    s.add_argument("--storage", action="append", required=True)
    s.add_argument("--first", type=int, default=10, help="predict trials from this number on")
    for p in (t, s):
        p.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    out = (table(a.table, [int(x) for x in a.n.split(",")], a.reps) if a.cmd == "table"
           else studies(a.storage, a.first))
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
