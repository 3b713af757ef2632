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

from bench.common import add_quick, add_space


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
    ap.add_argument("--out", help="write the curves as JSON")
    add_quick(ap)
    a = ap.parse_args(argv)
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
    curves: dict[str, list[list[float]]] = {"cold": [], "warm": []}
    for seed in range(a.seeds):
        for kind in ("cold", "warm"):
            t0 = time.perf_counter()
            hv, _, _ = run_one("autopeft", seed, cands, vals, meta, a.space, a.trials, a.n_startup, surrogate,
                               first if kind == "warm" else ())
            curves[kind].append(hv)
            print(f"  {kind} seed {seed}: HV {hv[-1]:.4f} after {a.trials} trials ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    med = {k: np.median(np.array(c), axis=0).tolist() for k, c in curves.items()}
    target = med["cold"][-1]
    per_seed = [first_reaching(c, target) for c in curves["warm"]]
    hit = first_reaching(med["warm"], target)
    summary = {"table": a.table, "source": a.source, "protocol": a.protocol, "seeds": a.seeds, "trials": a.trials,
               "queued": len(first), "median": med, "cold_target": target, "warm_median_trials_to_target": hit,
               "warm_seed_trials_to_target": per_seed,
               "q25": {k: np.quantile(np.array(c), 0.25, axis=0).tolist() for k, c in curves.items()},
               "q75": {k: np.quantile(np.array(c), 0.75, axis=0).tolist() for k, c in curves.items()}}
    marks = [k for k in (1, 5, 10, 20, 30, 40) if k <= a.trials]
    for k in ("cold", "warm"):
        print(f"{k:5s} median HV at " + ", ".join(f"{m}: {med[k][m - 1]:.4f}" for m in marks))
    print(f"{len(first)} front configs queued; the warm median reaches the cold {a.trials}-trial median ({target:.4f}) "
          f"at trial {hit}; per seed: {per_seed}")
    if a.out:
        Path(a.out).write_text(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
