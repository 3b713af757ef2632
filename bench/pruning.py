"""Early stopping in real searches: trial-seconds spent to reach a hypervolume with and without ``--pruner cost-sh``.

``run`` runs the same search (model, task, space, fidelity, sampler seed) twice, in two studies of one storage: once
with every trial trained to the end, once with the pruner.  ``report`` reads both and prints, per search: trials,
trials stopped early, trial-seconds (the sum of every trial's wall time: what the workers spent), the hypervolume of
the front, and the trial-seconds each needed to first reach fractions of the plain search's final hypervolume
(trials in the order they finished).

    python -m bench.pruning run --trials 30 --workers 2 --storage sqlite:///bench/tables/pruning.db
    python -m bench.pruning report --storage sqlite:///bench/tables/pruning.db --out bench/tables/pruning.json
    python -m bench.pruning overhead --repeats 3   # what scoring the curve costs a trial that is not stopped

``replay`` replays early-stopping rules on a table with learning curves (``bench.tabular build --curve-points``): in
each seed the table's configs arrive in a random order (a random search over the table), each rule decides at its
rungs from the curves of the configs before it, and a stopped config costs its set-up time (wall minus training) plus
the fraction of its training done.  Printed per rule, median over seeds: trial-seconds to reach a share of the whole
table's hypervolume, against training every config to the end, the hypervolume at a share of the full compute, configs
stopped, and how often a config of the table's final front was stopped.

    python -m bench.pruning replay --table bench/tables/sst2-mixed-curves.csv --seeds 10 --out bench/tables/pruning-replay.json

``overhead`` runs one config (LoRA r=8 on q,v, all layers; the CPU fidelity) alternately with and without the curve
(a ``prune`` spec with no peers: scored at both rungs, never stopped), one thread each, and prints the median wall
times and their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Sequence

import numpy as np

STUDIES = {"none": "prune-off", "cost-sh": "prune-on"}


def trajectory(study: Any) -> dict[str, Any]:
    """Cumulative trial-seconds and hypervolume after each finished trial (by completion time)."""
    from optuna.trial import TrialState

    from autopeft.pareto import hypervolume, to_max
    from autopeft.storage import A

    meta = study.user_attrs
    objectives, ref = meta[A.OBJECTIVES], meta[A.REF_POINT]
    done = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and t.user_attrs.get(A.WALL_S) is not None]
    done.sort(key=lambda t: t.datetime_complete)
    secs, hv, pts = [], [], []
    total = 0.0
    for t in done:
        total += float(t.user_attrs[A.WALL_S])
        if t.state == TrialState.COMPLETE:
            pts.append(to_max(objectives, t.values))
        secs.append(total)
        hv.append(hypervolume(np.array(pts).reshape(-1, len(objectives)), ref) if pts else 0.0)
    n_pruned = sum(t.state == TrialState.PRUNED for t in done)
    # how well each rung's score ranks the final score, over the trials that ran to the end with a curve
    from scipy.stats import spearmanr

    full = [t.user_attrs[A.CURVE] for t in done if t.state == TrialState.COMPLETE and t.user_attrs.get(A.CURVE)]
    rung_rho = {}
    for r in (0.25, 0.5):
        pairs = [(next(p[2] for p in c if p[0] == r), c[-1][2]) for c in full if any(p[0] == r for p in c)]
        if len(pairs) >= 5:
            rung_rho[str(r)] = {"rho": float(spearmanr(*zip(*pairs))[0]), "n": len(pairs)}
    return {"trials": len(done), "pruned": n_pruned, "trial_s": total, "hv": hv[-1] if hv else 0.0,
            "secs": secs, "hvs": hv, "rung_rho": rung_rho}


def first_reaching(tr: dict[str, Any], target: float) -> float | None:
    return next((s for s, h in zip(tr["secs"], tr["hvs"]) if h >= target - 1e-12), None)


def report(storage: str) -> dict[str, Any]:
    import optuna

    from autopeft.storage import get_storage

    st = get_storage(storage, create=False)
    out = {name: trajectory(optuna.load_study(study_name=study, storage=st)) for name, study in STUDIES.items()}
    goal = out["none"]["hv"]
    for name, tr in out.items():
        tr["to_reach"] = {f"{f:.2f}": first_reaching(tr, f * goal) for f in (0.8, 0.9, 0.95, 1.0)}
        reach = ", ".join(f"{k}: {v:.0f} s" if v is not None else f"{k}: never" for k, v in tr["to_reach"].items())
        print(f"{name:8s} {tr['trials']} trials ({tr['pruned']} stopped early), {tr['trial_s']:.0f} trial-s, "
              f"hypervolume {tr['hv']:.4f}; trial-s to reach x of the plain search's final hypervolume: {reach}; "
              f"Spearman rho of rung and final score: {tr['rung_rho']}")
    return out


#: early-stopping rules tried on the replay.  Cost-aware successive halving (``kind`` "sh", the default; autopeft's
#: ``cost-sh``): rungs (fractions of training), eta (keep the best 1/eta of the cost peers), floor (a cut below chance +
#: floor stops nothing: the peers have not learned yet); "cost-sh" is the pruner as shipped (autopeft.pruner.RUNGS,
#: ETA).  Two other families (session 19): ``moasha``, syne-tune's MOASHA rule (non-dominated sorting of every trial's
#: (rung score, params, memory) at the rung, all trials, costs included; go on within the best 1/eta of the ranks;
#: :func:`moasha_stops`), and
#: ``reach``, a learning-curve model of "can it still reach the front": the finished trials whose score at the rung is
#: nearest the trial's (``k`` of them) say how far a trial scoring that at the rung ended; the trial stops when even
#: the best of them ended below the best final score of its cost peers (no more params and memory, 10 % slack).
REPLAY_RULES: dict[str, dict[str, Any]] = {
    "cost-sh": {"rungs": [0.25, 0.5], "eta": 3.0, "floor": None},
    "cost-sh floor": {"rungs": [0.25, 0.5], "eta": 3.0, "floor": 0.02},
    "late": {"rungs": [0.5, 0.75], "eta": 3.0, "floor": None},
    "late floor": {"rungs": [0.5, 0.75], "eta": 3.0, "floor": 0.02},
    "late floor eta2": {"rungs": [0.5, 0.75], "eta": 2.0, "floor": 0.02},
    "three floor": {"rungs": [0.25, 0.5, 0.75], "eta": 3.0, "floor": 0.02},
    "75% floor": {"rungs": [0.75], "eta": 3.0, "floor": 0.02},
    "75% floor eta2": {"rungs": [0.75], "eta": 2.0, "floor": 0.02},
    "moasha": {"kind": "moasha", "rungs": [0.25, 0.5], "eta": 3.0, "floor": None},
    "moasha late": {"kind": "moasha", "rungs": [0.5, 0.75], "eta": 3.0, "floor": None},
    "reach k5": {"kind": "reach", "rungs": [0.25, 0.5, 0.75], "k": 5, "floor": None},
    "reach k5 band1": {"kind": "reach", "rungs": [0.25, 0.5, 0.75], "k": 5, "band_se": 1.0, "floor": None},
    "reach k5 band2": {"kind": "reach", "rungs": [0.25, 0.5, 0.75], "k": 5, "band_se": 2.0, "floor": None},
    "reach k5 band1 late": {"kind": "reach", "rungs": [0.5, 0.75], "k": 5, "band_se": 1.0, "floor": None},
    "oracle 12.5%": {"kind": "oracle", "rungs": [0.125], "floor": None},
    "oracle 25%": {"kind": "oracle", "rungs": [0.25], "floor": None},
    "oracle 50%": {"kind": "oracle", "rungs": [0.5], "floor": None},
    "oracle 75%": {"kind": "oracle", "rungs": [0.75], "floor": None},
}


def nds_ranks(Y: np.ndarray) -> np.ndarray:
    """Non-dominated sorting (to maximise every column): each row's front, 0 the best."""
    from autopeft.pareto import non_dominated

    ranks = np.full(len(Y), -1)
    left = np.arange(len(Y))
    k = 0
    while len(left):
        m = non_dominated(Y[left])
        ranks[left[m]] = k
        left = left[~m]
        k += 1
    return ranks


def moasha_stops(peers: list[tuple[float, float, float]], me: tuple[float, float, float], eta: float) -> bool:
    """MOASHA's rule at one rung (syne-tune's ``_Bracket.on_result`` with its non-dominated priority): the trial
    stops when the share of the rung's points ranked before it exceeds 1/eta.  Points are (rung score, params,
    memory); every trial that reached the rung counts, whatever its cost.  A lenient variant: the points of one
    front tie here, where syne-tune orders each front further (an epsilon-net from the best score), so that a trial
    late in a large first front can be stopped too."""
    if not peers:
        return False
    Y = np.array([[s, -np.log10(max(p, 1.0)), -np.log10(max(m, 1e-9))] for s, p, m in [*peers, me]])
    r = nds_ranks(Y)
    return float(np.sum(r < r[-1])) / len(r) > 1.0 / eta


def reach_stops(done: list[tuple[float, float]], peers_final: list[float], score: float, k: int,
                band: float = 0.0) -> bool:
    """The curve-model rule at one rung: ``done`` holds (rung score, final score) of finished trials, ``peers_final``
    the final scores of the trial's cost peers.  It stops when the best final score among the ``k`` finished trials
    whose rung score is nearest ``score`` (with every tie, and every one within ``band`` of it) is below the best of
    its peers: no trial that scored as it does at the rung ended where it would need to be to reach the front."""
    if len(done) < MIN_REACH or not peers_final:
        return False
    by_gap = sorted(done, key=lambda d: abs(d[0] - score))
    gap = max(abs(by_gap[min(k, len(by_gap)) - 1][0] - score), band)
    near = [d for d in by_gap if abs(d[0] - score) <= gap + 1e-12]  # the k nearest, every tie, at least +-band
    return max(f for _, f in near) < max(peers_final)


#: the curve-model rule needs this many finished trials with a score at the rung
MIN_REACH = 5


def load_curves(path: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A curve table's rows (params, memory, wall_s, train_s, score, curve) and its meta (the JSON beside it)."""
    import pandas as pd

    df = pd.read_csv(path)
    if "curve" not in df.columns:
        raise SystemExit(f"{path} has no curve column: build it with bench.tabular build --curve-points N")
    meta = json.loads(open(path[:-4] + ".json").read())
    rows = []
    for r in df.itertuples():
        curve = json.loads(r.curve) if isinstance(r.curve, str) and r.curve else []
        rows.append({"params": int(r.params), "memory": float(r.memory_mib), "wall_s": float(r.wall_s),
                     "train_s": float(r.train_s) if r.train_s == r.train_s else float(r.wall_s),
                     "score": float(r.score), "curve": {round(f, 6): s for f, _, s in curve}})
    return rows, meta


def replay_one(rows: list[dict[str, Any]], order: Sequence[int], rule: dict[str, Any] | None, chance: float,
               front: frozenset[int] = frozenset(), rung_rows: int = 200
               ) -> tuple[list[float], list[bool], list[float]]:
    """One rule on one order: per config (in order) its cost in seconds, whether it was stopped, and the score it is
    stored with (its final score, or its score where it stopped).  ``front``: the table's final front (the oracle's
    knowledge); ``rung_rows``: the rows a curve point is scored on (the curve model's band)."""
    from types import SimpleNamespace

    from autopeft.pruner import COST_SLACK, MIN_PEERS, cut

    done: list[Any] = []
    costs, stopped, scores = [], [], []
    for i in order:
        r = rows[i]
        stop_at = None
        kind = rule.get("kind", "sh") if rule is not None else None
        if kind not in (None, "sh", "oracle", "moasha", "reach"):
            raise ValueError(f"unknown replay rule kind {kind!r}")
        if kind == "sh":
            peers = [[p.params, p.memory, [p.curve.get(f) for f in rule["rungs"]]] for p in done
                     if p.params <= r["params"] * (1 + COST_SLACK)]
            spec = {"rungs": rule["rungs"], "eta": rule["eta"], "min_peers": MIN_PEERS, "slack": COST_SLACK,
                    "direction": "maximize", "peers": peers}
            for k, f in enumerate(rule["rungs"]):
                c = cut(spec, k, r["memory"])
                s = r["curve"].get(f)
                if c is None or s is None:
                    continue
                if rule["floor"] is not None and c[0] <= chance + rule["floor"]:
                    continue
                if s < c[0]:
                    stop_at = k
                    break
        elif kind == "oracle":  # a bound, not a rule: knows the table's final front, stops the rest at the rung
            if i not in front and r["curve"].get(rule["rungs"][0]) is not None:
                stop_at = 0
        elif kind == "moasha":
            for k, f in enumerate(rule["rungs"]):
                s = r["curve"].get(f)
                at = [(p.curve[f], p.params, p.memory) for p in done if p.curve.get(f) is not None]
                if s is None or len(at) < MIN_PEERS:
                    continue
                if moasha_stops(at, (s, r["params"], r["memory"]), rule["eta"]):
                    stop_at = k
                    break
        elif kind == "reach":
            slack = 1 + COST_SLACK
            peers_final = [p.final for p in done if p.final is not None and p.params <= r["params"] * slack
                           and p.memory <= r["memory"] * slack]
            for k, f in enumerate(rule["rungs"]):
                s = r["curve"].get(f)
                pairs = [(p.curve[f], p.final) for p in done if p.final is not None and p.curve.get(f) is not None]
                band = rule.get("band_se", 0.0) * math.sqrt(max(s or 0.0, 1e-9) * (1 - min(s or 0.0, 1.0)) / rung_rows)
                if s is not None and reach_stops(pairs, peers_final, s, rule["k"], band):
                    stop_at = k
                    break
        setup = r["wall_s"] - r["train_s"]
        if stop_at is None:
            costs.append(r["wall_s"])
            stopped.append(False)
            scores.append(r["score"])
            done.append(SimpleNamespace(params=r["params"], memory=r["memory"], curve=r["curve"], final=r["score"]))
        else:
            f = rule["rungs"][stop_at]
            costs.append(setup + f * r["train_s"])
            stopped.append(True)
            scores.append(r["curve"][f])
            # a stopped config's curve is known up to where it stopped
            done.append(SimpleNamespace(params=r["params"], memory=r["memory"],
                                        curve={g: v for g, v in r["curve"].items() if g <= f}, final=None))
    return costs, stopped, scores


def replay(table: str, seeds: int) -> dict[str, Any]:
    from autopeft.pareto import hypervolume, non_dominated, to_max

    rows, meta = load_curves(table)
    objectives, ref, chance = meta["objectives"], meta["ref_point"], float(meta["chance_score"])
    Y = np.array([to_max(objectives, [r["score"], r["params"], r["memory"]]) for r in rows])
    full_hv = hypervolume(Y, ref)
    front = set(np.flatnonzero(non_dominated(Y)).tolist())
    shares = (0.8, 0.9, 0.95, 0.99, 1.0)
    out: dict[str, Any] = {"table": table, "rows": len(rows), "seeds": seeds, "full_hv": full_hv,
                           "front": sorted(front), "rules": {}}
    rules: dict[str, dict[str, Any] | None] = {"none": None, **REPLAY_RULES}
    for name, rule in rules.items():
        per_seed = []
        for seed in range(seeds):
            order = np.random.default_rng(seed).permutation(len(rows)).tolist()
            costs, stopped, _ = replay_one(rows, order, rule, chance, frozenset(front),
                                           int(meta.get("curve_eval_rows") or 200))
            secs = np.cumsum(costs)
            pts, hvs = [], []
            for i, st in zip(order, stopped):
                if not st:
                    pts.append(Y[i])
                hvs.append(hypervolume(np.array(pts), ref) if pts else 0.0)
            reach = {f"{f:.2f}": next((float(s) for s, h in zip(secs, hvs) if h >= f * full_hv - 1e-12), None)
                     for f in shares}
            per_seed.append({"trial_s": float(secs[-1]), "hv": hvs[-1], "stopped": int(sum(stopped)),
                             "front_stopped": sum(1 for i, st in zip(order, stopped) if st and i in front),
                             "reach": reach, "secs": [round(float(x), 1) for x in secs],
                             "hvs": [round(h, 5) for h in hvs]})
        out["rules"][name] = per_seed
    base = out["rules"]["none"]
    total = float(np.median([p["trial_s"] for p in base]))
    summary = {}
    for name, per_seed in out["rules"].items():
        med_reach = {}
        for k in per_seed[0]["reach"]:
            vals = [p["reach"][k] for p in per_seed]
            med_reach[k] = None if sum(v is None for v in vals) * 2 >= len(vals) else float(
                np.median([v if v is not None else np.inf for v in vals]))
        speedups = {}
        for k in med_reach:  # per seed: none's seconds / the rule's seconds to reach the same share (paired orders)
            ratios = [b["reach"][k] / p["reach"][k] for b, p in zip(base, per_seed)
                      if b["reach"][k] is not None and p["reach"][k] is not None]
            speedups[k] = {"median": float(np.median(ratios)) if ratios else None, "seeds": len(ratios)}
        at_share = {}
        for frac in (0.25, 0.5):
            hv = [next((h for s, h in zip(reversed(p["secs"]), reversed(p["hvs"])) if s <= frac * total), 0.0)
                  for p in per_seed]
            at_share[f"{frac:.2f}"] = float(np.median(hv))
        summary[name] = {"trial_s": float(np.median([p["trial_s"] for p in per_seed])),
                         "hv": float(np.median([p["hv"] for p in per_seed])),
                         "stopped": float(np.median([p["stopped"] for p in per_seed])),
                         "front_stopped": sum(p["front_stopped"] for p in per_seed),
                         "seeds_with_front_stopped": sum(p["front_stopped"] > 0 for p in per_seed),
                         "reach_s": med_reach, "speedup": speedups, "hv_at_compute": at_share}
        s = summary[name]
        reach = ", ".join(f"{k}: {'never' if v is None else f'{v:.0f} s'}" for k, v in med_reach.items())
        spd = ", ".join(f"{k}: {'-' if v['median'] is None else format(v['median'], '.2f') + 'x'} ({v['seeds']})"
                        for k, v in speedups.items())
        print(f"{name:16s} trial-s {s['trial_s']:.0f}, final hv {s['hv']:.4f} (table {full_hv:.4f}), stopped "
              f"{s['stopped']:.0f}/{len(rows)}, front configs stopped {s['front_stopped']} (in "
              f"{s['seeds_with_front_stopped']} of {seeds} seeds); median trial-s to reach x of the table's hv: "
              f"{reach}; speed-up vs none {spd}; hv at 25%/50% of none's compute {at_share['0.25']:.4f}/"
              f"{at_share['0.50']:.4f}")
    out["summary"] = summary
    return out


def overhead(task: str, data_dir: str, repeats: int) -> dict[str, Any]:
    import time

    from autopeft.builder import model_info
    from autopeft.candidate import Candidate
    from autopeft.config import data_spec_dict
    from autopeft.contract import CPU_FIDELITY, Fidelity, TrialSpec
    from autopeft.pruner import prune_spec
    from autopeft.trial import run_trial

    fid = Fidelity(**CPU_FIDELITY)
    layers = list(range(model_info(None, 2).arch.num_layers))
    cand = Candidate.make({"lora": {"r": 8, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}}, layers)
    data = data_spec_dict(task=task, data_dir=data_dir)
    prune = prune_spec("cost-sh", 10**9, [], "maximize", fid.n_eval)
    walls: dict[str, list[float]] = {"plain": [], "curve": []}
    for _ in range(repeats):
        for name, p in (("plain", None), ("curve", prune)):
            t0 = time.perf_counter()
            r = run_trial(TrialSpec(0, cand.to_dict(), None, data, fidelity=fid.to_dict(), threads=1, prune=p))
            walls[name].append(time.perf_counter() - t0)
            print(name, r.status, round(r.score or 0, 4), f"{walls[name][-1]:.1f} s", r.curve, flush=True)
    med = {k: float(np.median(v)) for k, v in walls.items()}
    print(f"median wall: plain {med['plain']:.1f} s, with the curve {med['curve']:.1f} s, ratio "
          f"{med['curve'] / med['plain']:.3f}")
    return {"walls": walls, "median": med, "ratio": med["curve"] / med["plain"]}


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("run", "report", "overhead", "replay"))
    ap.add_argument("--table", help="replay: a table CSV with a curve column")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--storage")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--space", default=None, help="default: autopeft's default space")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the report as JSON")
    a = ap.parse_args(argv)
    if a.cmd == "overhead":
        return overhead(a.task, a.data_dir, a.repeats)
    if a.cmd == "replay":
        if not a.table:
            ap.error("--table is required for replay")
        res = replay(a.table, a.seeds)
        if a.out:
            with open(a.out, "w") as f:
                json.dump(res, f, indent=1)
        return res
    if a.storage is None:
        ap.error("--storage is required for run and report")
    if a.cmd == "run":
        from autopeft import api

        for pruner, study in STUDIES.items():
            api.search(task=a.task, data_dir=a.data_dir, n_trials=a.trials, **({"space": a.space} if a.space else {}), study_name=study,
                       storage=a.storage, workers=a.workers, seed=a.seed, pruner=pruner, collapse_stop=False,
                       progress=False)
    out = report(a.storage)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
