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
    python -m bench.collapse_classifiers premodel --storage sqlite:///bench/tables/confirm-sst2-learnband.db
    python -m bench.collapse_classifiers premodel --score-gp --seeds 0,1,2,3,4,5 --storage ...

* ``premodel`` (session 23): the proposals no collapse model could judge.  The default sampler's model-proposed
  trials (:func:`bench.confirm.proposed_by_model`, start-up 8) that started before any trial of their study had
  collapsed, each counted once across storages (by study seed, trial number and config: searches of one seed share
  their start-up and so their first proposals); how many collapsed, and "head only" by learning-rate multiplier.
  ``--seeds``: only the studies of these seeds.  ``--score-gp`` (session 26): could the sampler's score GP have told
  them apart?  For each, the GP (:func:`autopeft.sampler_gp.fit_gp`, as the sampler fits it) on the trials complete
  when it started, and its P(score above the collapse margin) at the proposal's config, beside the same P over 500
  random configs of the space; ROC AUC of that P between the proposals that collapsed and those that learned.
* ``rates`` (session 26): the sampler's trials (number 8 on, not queued) by whether the study had tried their
  structure (:func:`autopeft.candidate.structure_key`) before and whether their rate is below x1; how many collapsed
  in each cell, each trial counted once across storages (as ``premodel``).

    python -m bench.collapse_classifiers rates --storage sqlite:///bench/tables/confirm-sst2-learnband.db
"""

from __future__ import annotations

import argparse
import json
import sys
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


def _shipped(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The sampler's own :func:`autopeft.collapse_model.fit` (labels given as scores 1 / 0 around a chance of 0.5)."""
    from autopeft.collapse_model import fit

    f = fit(np.asarray(X, dtype=float), [1.0 if v else 0.0 for v in y], 0.5, 0.5)
    if f is None:
        raise ValueError("the shipped model needs one collapsed and one learned trial")
    return f


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


#: :func:`autopeft.collapse_model.features` ends with log10 parameters, the sparsity and the log rate multiplier
LOG_PARAMS_FROM_END = 3


def models(n_features: int) -> dict[str, Fit]:
    """The classifiers compared on rows of ``n_features`` collapse features."""
    log_params_col = n_features - LOG_PARAMS_FROM_END
    return {"logistic (shipped)": _shipped, "logistic C=0.3": _logit(0.3), "logistic C=3": _logit(3.0),
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
    ms = models(X.shape[1])
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"table": path, "configs": len(cands), "collapsed_share": float(1 - learned.mean()), "n": {},
                           "splits": {}}
    for n in ns:
        if not 2 <= n < len(cands):
            raise ValueError(f"--n: each size must be in 2..{len(cands) - 1}, got {n}")
        rows: dict[str, list[tuple[float, float, float]]] = {k: [] for k in ms}
        for _ in range(reps):
            idx = rng.permutation(len(cands))
            tr, te = idx[:n], idx[n:]
            if learned[tr].all() or not learned[tr].any() or learned[te].all() or not learned[te].any():
                continue  # a split without both classes on each side: no model, or no AUC
            for k, fit in ms.items():
                rows[k].append(_figures(fit(X[tr], learned[tr])(X[te]), learned[te]))
        out["splits"][str(n)] = len(rows["logistic (shipped)"])
        out["n"][str(n)] = {k: dict(zip(("auc", "caught", "lost"), np.mean(v, 0).round(3).tolist())) if v else None
                            for k, v in rows.items()}
    return out


def studies(storages: Sequence[str], first: int) -> dict[str, Any]:
    import optuna

    from autopeft.api import load_study
    from autopeft.candidate import Candidate
    from autopeft.collapse_model import MARGIN
    from bench.compare_samplers import table_model

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    preds: dict[str, list[float]] = {}
    truth: list[bool] = []
    group: list[str] = []  # the study's name without its seed: e.g. confirm-sst2-autopeft, confirm-sst2-gp
    for st in storages:
        for summary in sorted(optuna.get_all_study_summaries(st), key=lambda s: s.study_name):
            res = load_study(summary.study_name, st)
            meta = res.meta
            feats = featurizer(str(meta["space"]), int(meta["num_layers"]), table_model(meta))
            chance = float(res.ref_point[0])
            trials = sorted(res.complete_trials(), key=lambda t: t.number)
            X = np.array([feats(Candidate.from_json(json.dumps(t.user_attrs["candidate"]))) for t in trials])
            y = np.array([t.values[0] > chance + MARGIN * (1 - chance) for t in trials])
            ms = models(X.shape[1])
            for i in range(first, len(trials)):
                truth.append(bool(y[i]))
                group.append(summary.study_name.rsplit("-", 1)[0])
                ok = y[:i].any() and not y[:i].all()  # before one collapsed and one learned the sampler has no model
                for k, fit in ms.items():
                    preds.setdefault(k, []).append(float(fit(X[:i], y[:i])(X[i:i + 1])[0]) if ok else 1.0)
    t, g = np.array(truth), np.array(group)
    out: dict[str, Any] = {"storages": list(storages), "trials": len(t), "collapsed": int((~t).sum()), "models": {},
                           "by_group": {}}

    def figures(mask: np.ndarray) -> dict[str, dict[str, Any]]:
        res: dict[str, dict[str, Any]] = {}
        for k, p in preds.items():
            pp, tt = np.array(p)[mask], t[mask]
            cut = pp < 0.5
            auc = round(_figures(pp, tt)[0], 3) if tt.any() and not tt.all() else None
            res[k] = {"auc": auc, "collapses_cut": int((cut & ~tt).sum()), "learners_cut": int((cut & tt).sum())}
        return res

    out["models"] = figures(np.ones(len(t), dtype=bool))
    for name in sorted(set(group)):
        m = g == name
        out["by_group"][name] = {"trials": int(m.sum()), "collapsed": int((~t[m]).sum()), "models": figures(m)}
    return out


def _existing(storages: Sequence[str]) -> Sequence[str]:
    """``storages``, or ValueError for a SQLite file that is not there (Optuna would create an empty one)."""
    for st in storages:
        if st.startswith("sqlite:///") and not Path(st[len("sqlite:///"):]).is_file():
            raise ValueError(f"no such storage file: {st[len('sqlite:///'):]}")
    return storages


def _score_gp_p_learns(res: Any, before: Sequence[Any], cand: dict[str, Any]) -> tuple[float, float]:
    """The score GP's P(score > the collapse margin) at ``cand`` when fitted on the complete trials ``before`` (the
    sampler's encoding and GP), and the share of 500 random configs of the mixed space it gives a lower P."""
    from scipy.stats import norm

    from autopeft.builder import count_params, model_info
    from autopeft.candidate import Candidate
    from autopeft.proposer import make_sampler
    from autopeft.space import SearchSpace

    info = model_info(res.meta.get("model"), 2)
    b = SearchSpace.load("mixed").bind(int(res.meta.get("num_layers") or 6))
    sam = make_sampler("autopeft", 0, b, ["score", "params", "memory"], list(res.ref_point), lambda c: count_params(c, info))
    X = sam._memo.encode_all([Candidate.from_dict(o.user_attrs["candidate"]) for o in before])
    gp = sam._fit_gp(X, np.array([o.values[0] for o in before]))
    chance = float(res.ref_point[0])
    thr = chance + 0.02 * (1 - chance)  # bench.common.collapsed's margin

    def p(cs: list[Any]) -> np.ndarray:
        mu, sd = sam._posterior(gp, sam._memo.encode_all(cs))
        return norm.cdf((mu - thr) / np.maximum(sd, 1e-9))

    rng = np.random.default_rng(0)
    pool = p([b.decode(b.random_vector(rng)) for _ in range(500)])
    mine = float(p([Candidate.from_dict(cand)])[0])
    return mine, float(np.mean(pool < mine))


def premodel(storages: Sequence[str], seeds: Sequence[int] | None = None, score_gp: bool = False) -> dict[str, Any]:
    import optuna

    from autopeft.api import load_study
    from bench.common import collapsed
    from bench.confirm import proposed_by_model

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    seen: dict[tuple[str, int, str], dict[str, Any]] = {}
    for st in storages:
        for summary in sorted(optuna.get_all_study_summaries(st), key=lambda s: s.study_name):
            if "-autopeft-" not in summary.study_name or (
                    seeds is not None and int(summary.study_name.rsplit("-", 1)[1]) not in seeds):
                continue
            res = load_study(summary.study_name, st)
            comp = sorted(res.complete_trials(), key=lambda t: t.number)
            chance = float(res.ref_point[0])
            by_model = set(proposed_by_model(comp, 8))
            for t in comp:
                if t.number not in by_model or any(collapsed(o.values[0], chance) for o in comp
                                                   if o.datetime_complete <= t.datetime_start):
                    continue
                c = t.user_attrs["candidate"]
                key = (summary.study_name.rsplit("-", 1)[1], t.number, json.dumps(c, sort_keys=True))
                if key in seen:
                    continue
                seen[key] = {"storage": st, "study": summary.study_name, "trial": t.number,
                             "collapsed": collapsed(t.values[0], chance), "head_only": not c["methods"],
                             "lr_multiplier": round(float(c["lr_multiplier"]), 3), "params": int(t.values[1]),
                             "summary": t.user_attrs.get("summary", "")}
                if score_gp:
                    gp_p, below = _score_gp_p_learns(res, [o for o in comp if o.datetime_complete <= t.datetime_start], c)
                    seen[key].update(score_gp_p_learns=round(gp_p, 4), pool_share_below=round(below, 3))
    rows = list(seen.values())
    head = [r for r in rows if r["head_only"]]
    out = {"storages": list(storages), "proposals": len(rows), "collapsed": sum(r["collapsed"] for r in rows),
           "head_only": len(head), "head_only_collapsed": sum(r["collapsed"] for r in head),
           "head_only_by_rate": sorted([r["lr_multiplier"], r["collapsed"]] for r in head), "rows": rows}
    if score_gp:
        from sklearn.metrics import roc_auc_score

        col = np.array([r["collapsed"] for r in rows])
        gp_p = np.array([r["score_gp_p_learns"] for r in rows])
        out["score_gp"] = {"p_collapsed": sorted(gp_p[col].tolist()), "p_learned": sorted(gp_p[~col].tolist()),
                           "auc": float(roc_auc_score(~col, gp_p)) if 0 < col.sum() < len(col) else None}
    return out


def rates(storages: Sequence[str]) -> dict[str, Any]:
    import optuna

    from autopeft.api import load_study
    from autopeft.candidate import structure_key
    from bench.common import collapsed

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    seen: dict[tuple[str, int, str], tuple[bool, bool, bool, bool]] = {}
    for st in storages:
        for summary in sorted(optuna.get_all_study_summaries(st), key=lambda s: s.study_name):
            if "-autopeft-" not in summary.study_name:
                continue
            res = load_study(summary.study_name, st)
            chance = float(res.ref_point[0])
            comp = sorted(res.complete_trials(), key=lambda t: t.number)
            keys = [structure_key(t.user_attrs["candidate"]) for t in comp]
            for i, t in enumerate(comp):
                if t.number < 8 or "seeded_by" in t.user_attrs:
                    continue
                c = t.user_attrs["candidate"]
                key = (summary.study_name.rsplit("-", 1)[1], t.number, json.dumps(c, sort_keys=True))
                seen.setdefault(key, (keys[i] not in keys[:i], float(c["lr_multiplier"]) < 1.0,
                                      collapsed(t.values[0], chance), not c["methods"]))
    out: dict[str, Any] = {"storages": list(storages), "trials": len(seen)}
    for new in (True, False):
        for low in (True, False):
            cell = [v for v in seen.values() if v[0] == new and v[1] == low]
            out[f"{'new' if new else 'tried'} structure, rate {'below' if low else 'at or above'} x1"] = {
                "trials": len(cell), "collapsed": sum(v[2] for v in cell)}
    head = [v for v in seen.values() if v[3]]
    out["head only, rate below x1"] = {"trials": sum(v[1] for v in head), "collapsed": sum(v[1] and v[2] for v in head)}
    out["head only, rate at or above x1"] = {"trials": sum(not v[1] for v in head),
                                             "collapsed": sum(not v[1] and v[2] for v in head)}
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
    m = sub.add_parser("premodel")
    m.add_argument("--storage", action="append", required=True)
    m.add_argument("--seeds", help="only the studies of these seeds, comma-separated (default: all)")
    m.add_argument("--score-gp", action="store_true", help="also the score GP's P(learns) at each proposal")
    r = sub.add_parser("rates")
    r.add_argument("--storage", action="append", required=True)
    for p in (t, s, m, r):
        p.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    try:
        if a.cmd == "table":
            if a.reps < 1:
                raise ValueError(f"--reps must be >= 1, got {a.reps}")
            try:
                ns = [int(x) for x in a.n.split(",")]
            except ValueError:
                raise ValueError(f"--n must be comma-separated integers, got {a.n[:40]!r}") from None
            out = table(a.table, ns, a.reps)
        elif a.cmd == "rates":
            out = rates(_existing(a.storage))
        elif a.cmd == "premodel":
            try:
                seeds = None if a.seeds is None else [int(x) for x in a.seeds.split(",")]
            except ValueError:
                raise ValueError(f"--seeds must be comma-separated integers, got {a.seeds[:40]!r}") from None
            out = premodel(_existing(a.storage), seeds, a.score_gp)
        else:
            if a.first < 2:
                raise ValueError(f"--first must be >= 2, got {a.first}")
            out = studies(_existing(a.storage), a.first)
    except (ValueError, OSError) as exc:  # one line, exit 2, as argparse's own errors
        print(f"collapse_classifiers: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
