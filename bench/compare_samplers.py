"""Sampler comparison on a recorded table (bench/tables/<task>-<space>.csv): hypervolume vs trials.

Protocol (the same for every sampler, ours included): the search runs over exactly the recorded
configurations, a finite pool. Each proposal is decoded to a candidate; if that candidate is in the
table and not yet evaluated it is taken as is, otherwise it is snapped to the nearest unevaluated
recorded candidate (Euclidean distance in the flat encoding). The snapped candidate is added to the
study with its recorded values (the proposal itself is marked failed, so no sampler learns from a point
it did not get). Hypervolume uses the study's fixed reference point (chance score, base model's
parameter count, full fine-tuning memory), in (score, -log10 params, -log10 MiB).

``--protocol surrogate`` answers every proposal instead (bench/surrogate.py): the score from a random forest
fitted to the table, trainable parameters and memory computed exactly for the proposed candidate. No sampler is
pulled onto the recorded configs, so the comparison measures what each sampler itself proposes.

    python -m bench.compare_samplers --task sst2 --space mixed --seeds 10 --trials 60 --random-trials 100 \
        --plot docs/sampler_comparison.png --out bench/tables/compare-sst2-mixed.json
    # or side by side on 2 cores, then one summary and plot:
    python -m bench.compare_samplers --samplers gp --out /tmp/a.json & python -m bench.compare_samplers \
        --samplers random,tpe,nsga2,autopeft --random-trials 100 --out /tmp/b.json; wait
    python -m bench.compare_samplers --merge /tmp/a.json /tmp/b.json --out ... --plot ...
    python -m bench.compare_samplers --protocol surrogate --table bench/tables/sst2-mixed-cpu.csv ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.common import TABLES, add_quick, collapsed as is_collapsed, add_sampler_knobs, add_space, add_task, apply_sampler_knobs


def load_table(path: Path) -> tuple[list, np.ndarray, dict]:
    import pandas as pd

    from autopeft.candidate import Candidate

    df = pd.read_csv(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    cands = [Candidate.from_json(c) for c in df["candidate"]]
    vals = df[["score", "params", "memory_mib"]].to_numpy(dtype=float)
    return cands, vals, meta


def table_model(meta: dict) -> str | None:
    """The table's model for autopeft (None: the packaged default MiniLM)."""
    return None if meta["model"] == "all-MiniLM-L6-v2" else meta["model"]


def run_one(sampler_name: str, seed: int, cands: list, vals: np.ndarray, meta: dict, space: str, n_trials: int,
            n_startup: int, surrogate: tuple | None = None, first: Sequence = (),
            prior: Sequence = (), prior_until: int | None = None) -> tuple[list[float], float, int, int]:
    """One replayed search; ``surrogate`` = (TableSurrogate, ExactCosts) answers every proposal (else: the pool).
    ``first``: candidates queued before the sampler's proposals, as ``--enqueue``/``--warm-start`` queue them;
    ``prior``: (candidate, score on this table's scale) of another study, the default sampler's prior."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from autopeft.builder import count_params, model_info
    from autopeft.pareto import hypervolume, to_max
    from autopeft.proposer import make_sampler
    from autopeft.space import SearchSpace

    b = SearchSpace.load(space).bind(int(meta["num_layers"]))
    X = np.stack([b.encode(c) for c in cands])
    index = {c.key: i for i, c in enumerate(cands)}
    objectives = ["score", "params", "memory"]
    ref = meta["ref_point"]
    info = model_info(table_model(meta), 2)
    name, _, floor = sampler_name.partition(":floor=")  # "autopeft:floor=0": our sampler with another score floor
    sampler = make_sampler(name, seed, b, objectives, ref, lambda c: count_params(c, info), n_startup=n_startup)
    if floor:
        sampler.score_floor = float(floor)
    if prior:
        sampler.set_prior(prior)
        sampler.prior_until = prior_until
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    for c in first:
        study.enqueue_trial(b.optuna_params(c))
    used: set[int] = set()
    hv, ys = [], []
    t_ask = 0.0
    dists = b.distributions()
    while len(ys) < (n_trials if surrogate is not None else min(n_trials, len(cands))):
        t0 = time.perf_counter()
        trial = study.ask()
        c = b.suggest(trial)
        t_ask += time.perf_counter() - t0
        if surrogate is not None:  # every proposal answered: forest score, exact costs
            forest, costs = surrogate
            p, mem = costs(c)
            v = [forest.score(c, p, mem), float(p), mem]
            trial.set_user_attr("candidate", c.to_dict())
            study.tell(trial, v)
            ys.append(to_max(objectives, v))
            hv.append(hypervolume(np.array(ys), ref))
            continue
        i = index.get(c.key)
        if i is None or i in used:
            free = np.array([j for j in range(len(cands)) if j not in used])
            i = int(free[np.argmin(((X[free] - b.encode(c)) ** 2).sum(1))])
        if cands[i].key == c.key:
            trial.set_user_attr("candidate", c.to_dict())
            study.tell(trial, vals[i].tolist())
        else:
            trial.set_user_attr("candidate", c.to_dict())
            study.tell(trial, state=TrialState.FAIL)
            params = b.optuna_params(cands[i])
            study.add_trial(create_trial(params=params, distributions={k: dists[k] for k in params},
                                         values=vals[i].tolist(), user_attrs={"candidate": cands[i].to_dict()}))
        used.add(i)
        ys.append(to_max(objectives, vals[i]))
        hv.append(hypervolume(np.array(ys), ref))
    # collapsed: within 2 % of the chance-to-perfect gap above chance (about the majority class)
    # and among the trials after the start-up design (queued ones and the sampler's random start-up)
    after = sum(1 for y in ys[len(first) + n_startup:] if is_collapsed(y[0], ref[0]))
    collapsed = sum(1 for y in ys if is_collapsed(y[0], ref[0]))
    return hv, t_ask / max(1, len(ys)), collapsed, after


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    add_task(ap)
    add_space(ap)
    ap.add_argument("--table", help="CSV path (default bench/tables/<task>-<space>.csv)")
    ap.add_argument("--samplers", default="random,tpe,nsga2,autopeft,gp")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--random-trials", type=int, help="trials for random search (default --trials), e.g. 100 to set "
                                                      "the target 'random search's 100-trial hypervolume'")
    ap.add_argument("--n-startup", type=int, default=8)
    ap.add_argument("--protocol", choices=("pool", "surrogate"), default="pool",
                    help="pool: search the recorded configs only (a proposal is snapped to the nearest); surrogate: "
                         "answer every proposal, the score from a random forest fitted to the table, costs exact")
    ap.add_argument("--plot", help="write a PNG of median hypervolume vs trials")
    ap.add_argument("--out", help="write the curves as JSON")
    add_sampler_knobs(ap)
    add_quick(ap)
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="merge earlier --out files (one sampler set each) "
                    "into --out/--plot instead of running")
    a = ap.parse_args(argv)
    if a.merge:
        return merge(a.merge, a.out, a.plot, f"{a.task} / {a.space}")
    from autopeft._quiet import quiet

    quiet()
    apply_sampler_knobs(a)
    import optuna
    import torch

    torch.set_num_threads(1)  # the GP samplers' fits are small; one core leaves the other to trial runs

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path = Path(a.table) if a.table else TABLES / f"{a.task}-{a.space}.csv"
    cands, vals, meta = load_table(path)
    surrogate = None
    if a.protocol == "surrogate":
        from bench.surrogate import ExactCosts, TableSurrogate

        fid = meta.get("fidelity", {})
        surrogate = (TableSurrogate(cands, vals, int(meta["num_layers"])),
                     ExactCosts(table_model(meta), 2,
                                int(fid.get("max_length", 128)), int(fid.get("memory_batch_size", 32))))
    if a.quick:
        quick = [x for x in a.samplers.split(",") if x in ("autopeft", "random")]  # the fast ones of those asked
        a.seeds, a.trials, a.samplers, a.n_startup = 2, min(5, len(cands)), ",".join(quick) or "autopeft,random", 2
    curves: dict[str, list[list[float]]] = {}
    ask_s: dict[str, float] = {}
    collapsed: dict[str, float] = {}
    after: dict[str, float] = {}
    for s in a.samplers.split(","):
        n = a.random_trials if s == "random" and a.random_trials else a.trials
        runs = []
        for seed in range(a.seeds):
            t0 = time.perf_counter()
            runs.append(run_one(s, seed, cands, vals, meta, a.space, n, a.n_startup, surrogate))
            if not a.quick:
                print(f"  {s} seed {seed}: HV {runs[-1][0][-1]:.4f} after {n} trials, {runs[-1][2]} collapsed "
                      f"({runs[-1][3]} after the start-up; {time.perf_counter() - t0:.0f} s)", flush=True)
        curves[s] = [r[0] for r in runs]
        ask_s[s] = float(np.mean([r[1] for r in runs]))
        collapsed[s] = float(np.mean([r[2] for r in runs]))
        after[s] = float(np.mean([r[3] for r in runs]))
        med = np.median(np.array(curves[s]), axis=0)
        marks = {k: float(med[k - 1]) for k in (10, 20, 40, 50, 60, 100) if k <= len(med)}
        print(f"{s:9s} median HV at " + ", ".join(f"{k}: {v:.4f}" for k, v in marks.items()) + f"  (ask {ask_s[s]:.3f} s; {collapsed[s]:.1f} collapsed trials on average, {after[s]:.1f} after the "
              f"start-up)", flush=True)
    summary = {"table": str(path), "rows": len(cands), "seeds": a.seeds, "trials": a.trials, "protocol": a.protocol,
               "median": {s: np.median(np.array(c), axis=0).tolist() for s, c in curves.items()},
               "q25": {s: np.quantile(np.array(c), 0.25, axis=0).tolist() for s, c in curves.items()},
               "q75": {s: np.quantile(np.array(c), 0.75, axis=0).tolist() for s, c in curves.items()}, "ask_s": ask_s,
               "collapsed": collapsed, "collapsed_after_startup": after}
    return finish(summary, a.out, a.plot, f"{a.task} / {a.space}")


def finish(summary: dict, out: str | None, plot: str | None, title: str) -> dict:
    """Adds the 'random search's 100-trial hypervolume' target, writes the JSON and the plot."""
    if "random" in summary["median"] and "autopeft" in summary["median"]:
        r = summary["median"]["random"]
        target = r[min(len(r), 100) - 1]
        summary["random_final_trials"] = min(len(r), 100)
        ours = summary["median"]["autopeft"]
        hit = next((i + 1 for i, v in enumerate(ours) if v >= target), None)
        summary["autopeft_trials_to_random_final"] = hit
        print(f"autopeft reaches random's {min(len(r), 100)}-trial median HV ({target:.4f}) at trial {hit}")
    if out:
        Path(out).write_text(json.dumps(summary))
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for s in summary["median"]:
            x = np.arange(1, len(summary["median"][s]) + 1)
            ax.plot(x, summary["median"][s], label=s)
            ax.fill_between(x, summary["q25"][s], summary["q75"][s], alpha=0.15)
        ax.set_xlabel("trials")
        ax.set_ylabel("hypervolume (median, IQR)")
        what = "a surrogate of" if summary.get("protocol") == "surrogate" else "a pool of"
        ax.set_title(f"{title}: {what} {summary['rows']} recorded configs, {summary['seeds']} seeds")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
    return summary


def merge(files: list[str], out: str | None, plot: str | None, title: str) -> dict:
    """One summary (and plot) from runs of different samplers on the same table, e.g. run side by side."""
    parts = [json.loads(Path(f).read_text()) for f in files]
    if len({(p["table"], p["seeds"], p.get("protocol", "pool")) for p in parts}) != 1:
        print("compare_samplers: --merge needs runs on one table with one seed count and one protocol; rerun the odd "
              "one", file=sys.stderr)
        raise SystemExit(2)
    summary = {k: parts[0][k] for k in ("table", "rows", "seeds", "trials")}
    summary["protocol"] = parts[0].get("protocol", "pool")
    for k in ("median", "q25", "q75", "ask_s", "collapsed", "collapsed_after_startup"):
        summary[k] = {s: v for p in parts for s, v in p.get(k, {}).items()}
    return finish(summary, out, plot, title)


if __name__ == "__main__":
    main()
