"""Warm start on the tabular replay: trials a search needs to reach the cold search's hypervolume when it first
re-evaluates another task's Pareto front (what ``autopeft search --warm-start OTHER`` queues).

The source table's front (non-dominated in score, params, memory; best score first, as ``--warm-start`` orders it),
mapped to the target model's depth and kept where the space holds it, is queued in the replayed study with Optuna's
``enqueue_trial``, then autopeft's sampler goes on as usual (the queued trials count toward its start-up design).
``--protocol surrogate`` (default) answers every proposal, the front's configs included, with the target table's
forest and exact costs (bench/surrogate.py); ``pool`` snaps each to the nearest unevaluated recorded config.

    python -m bench.warm_start --table bench/tables/mrpc-mixed-auc.csv --source bench/tables/sst2-mixed-cpu.csv \\
        --seeds 10 --trials 40 --out bench/tables/warm-sst2-to-mrpc.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.common import add_quick, add_sampler_knobs, add_space, apply_sampler_knobs


def source_front(path: Path, space: str, num_layers: int) -> list:
    """The source table's front, best score first, mapped to ``num_layers`` layers, less what ``space`` lacks."""
    from autopeft.pareto import non_dominated, to_max
    from autopeft.seeding import remap_layers
    from autopeft.space import SearchSpace
    from bench.compare_samplers import load_table

    cands, vals, meta = load_table(path)
    mask = non_dominated(np.array([to_max(["score", "params", "memory"], v) for v in vals]))
    order = sorted(np.flatnonzero(mask), key=lambda i: -vals[i][0])
    b = SearchSpace.load(space).bind(num_layers)
    mapped = [remap_layers(cands[i], int(meta["num_layers"]), num_layers) for i in order]
    return [c for c in mapped if b.contains(c)]


def source_prior(path: Path, space: str, num_layers: int, chance: float, seed: int = 0) -> list:
    """The source table's trials as a prior: (candidate mapped to ``num_layers``, score on the target's scale), at
    most :data:`autopeft.sampler_prior.MAX_PRIOR_POINTS` of them, those ``space`` holds."""
    from autopeft.sampler_prior import map_scores, select
    from autopeft.seeding import remap_layers
    from autopeft.space import SearchSpace
    from bench.compare_samplers import load_table

    cands, vals, meta = load_table(path)
    b = SearchSpace.load(space).bind(num_layers)
    mapped = [remap_layers(c, int(meta["num_layers"]), num_layers) for c in cands]
    pts = [(c, *v) for c, v in zip(mapped, vals) if b.contains(c)]
    keep = select(pts, seed=seed)
    scores = map_scores([pts[i][1] for i in keep], float(meta["ref_point"][0]), chance)
    return [(pts[i][0], float(y)) for i, y in zip(keep, scores)]


def first_reaching(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), None)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", required=True, help="the target task's table (CSV)")
    ap.add_argument("--source", required=True, help="the table whose front warm-starts the search (CSV)")
    add_space(ap)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--top", type=int, help="queue only the front's best-scoring TOP configs (default: all)")
    ap.add_argument("--n-startup", type=int, default=8)
    ap.add_argument("--protocol", choices=("pool", "surrogate"), default="surrogate")
    ap.add_argument("--prior-until", type=int, help="the prior informs the model until this many trials (default: "
                    "autopeft.sampler_prior.PRIOR_UNTIL)")
    ap.add_argument("--arms", default="cold,warm", help="comma-separated: cold, warm, prior, prior+front")
    ap.add_argument("--out", help="write the curves as JSON")
    add_quick(ap)
    add_sampler_knobs(ap)
    a = ap.parse_args(argv)
    apply_sampler_knobs(a)
    from autopeft._quiet import quiet

    quiet()
    import optuna
    import torch

    from bench.compare_samplers import load_table, run_one, table_model

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cands, vals, meta = load_table(Path(a.table))
    first = source_front(Path(a.source), a.space, int(meta["num_layers"]))[:a.top]
    if a.quick:
        a.seeds, a.trials, a.n_startup = 2, min(5, len(cands)), 2
    surrogate = None
    if a.protocol == "surrogate":
        from bench.surrogate import ExactCosts, TableSurrogate

        fid = meta.get("fidelity", {})
        surrogate = (TableSurrogate(cands, vals, int(meta["num_layers"])),
                     ExactCosts(table_model(meta), 2, int(fid.get("max_length", 128)),
                                int(fid.get("memory_batch_size", 32))))
    arms = [k.strip() for k in a.arms.split(",") if k.strip()]
    bad = [k for k in arms if k not in ("cold", "warm", "prior", "prior+front")]
    if bad or "cold" not in arms:
        ap.error(f"--arms: cold and any of warm, prior, prior+front (got {a.arms!r})")
    from autopeft.sampler_prior import PRIOR_STARTUP, PRIOR_UNTIL

    prior = source_prior(Path(a.source), a.space, int(meta["num_layers"]), float(meta["ref_point"][0])) \
        if any(k.startswith("prior") for k in arms) else []
    queue = {"cold": (), "warm": first, "prior": (), "prior+front": first[:PRIOR_STARTUP]}
    curves: dict[str, list[list[float]]] = {k: [] for k in arms}
    for seed in range(a.seeds):
        for kind in arms:
            t0 = time.perf_counter()
            hv, *_ = run_one("autopeft", seed, cands, vals, meta, a.space, a.trials, a.n_startup, surrogate,
                               queue[kind], prior if kind.startswith("prior") else (),
                               a.prior_until if a.prior_until is not None else PRIOR_UNTIL)
            curves[kind].append(hv)
            print(f"  {kind} seed {seed}: HV {hv[-1]:.4f} after {a.trials} trials ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    med = {k: np.median(np.array(c), axis=0).tolist() for k, c in curves.items()}
    target = med["cold"][-1]
    per_seed = {k: [first_reaching(c, target) for c in curves[k]] for k in arms if k != "cold"}
    hit = {k: first_reaching(med[k], target) for k in arms if k != "cold"}
    summary = {"table": a.table, "source": a.source, "protocol": a.protocol, "seeds": a.seeds, "trials": a.trials,
               "queued": len(first), "prior_points": len(prior), "median": med, "cold_target": target,
               "median_trials_to_target": hit, "seed_trials_to_target": per_seed,
               "warm_median_trials_to_target": hit.get("warm"), "warm_seed_trials_to_target": per_seed.get("warm"),
               "q25": {k: np.quantile(np.array(c), 0.25, axis=0).tolist() for k, c in curves.items()},
               "q75": {k: np.quantile(np.array(c), 0.75, axis=0).tolist() for k, c in curves.items()}}
    marks = [k for k in (1, 5, 10, 20, 30, 40) if k <= a.trials]
    for k in arms:
        print(f"{k:11s} median HV at " + ", ".join(f"{m}: {med[k][m - 1]:.4f}" for m in marks))
    print(f"{len(first)} front configs, {len(prior)} prior trials; the cold {a.trials}-trial median is {target:.4f}")
    for k in hit:
        print(f"  {k}: its median reaches it at trial {hit[k]}; per seed: {per_seed[k]}")
    if a.out:
        Path(a.out).write_text(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
