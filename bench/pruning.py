"""Early stopping in real searches: trial-seconds spent to reach a hypervolume with and without ``--pruner cost-sh``.

``run`` runs the same search (model, task, space, fidelity, sampler seed) twice, in two studies of one storage: once
with every trial trained to the end, once with the pruner.  ``report`` reads both and prints, per search: trials,
trials stopped early, trial-seconds (the sum of every trial's wall time: what the workers spent), the hypervolume of
the front, and the trial-seconds each needed to first reach fractions of the plain search's final hypervolume
(trials in the order they finished).

    python -m bench.pruning run --trials 30 --workers 2 --storage sqlite:///bench/tables/pruning.db
    python -m bench.pruning report --storage sqlite:///bench/tables/pruning.db --out bench/tables/pruning.json
    python -m bench.pruning overhead --repeats 3   # what scoring the curve costs a trial that is not stopped

``overhead`` runs one config (LoRA r=8 on q,v, all layers; the CPU fidelity) alternately with and without the curve
(a ``prune`` spec with no peers: scored at both rungs, never stopped), one thread each, and prints the median wall
times and their ratio.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

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
    ap.add_argument("cmd", choices=("run", "report", "overhead"))
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
