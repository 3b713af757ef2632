"""The fair baseline protocol (issue 17): each hand-designed baseline gets the learning-rate search the found configs
get, at the same fidelity and on the same search split, before anything is re-trained at full budget.

A search's configs carry a searched learning-rate multiplier (the shipped spaces: ``lr_multiplier`` in [0.5, 2],
log scale); comparing them with baselines trained at each method's default rate favours the search.  ``tune`` scores
every baseline at ``--grid`` multipliers (default 0.5, 0.71, 1, 1.41, 2: the same range, log-spaced) with the
search's fidelity and seed (so the same held-out search split), appends each trial to
bench/tables/baselines-lr-<task>.jsonl (resumable), and prints each baseline's best multiplier.
``bench.retrain run --tuned-baselines`` then re-trains each baseline at its best multiplier (as
``<name> (lr xM, tuned)``), beside the found configs, so ``bench.retrain report`` compares like with like.

    python -m bench.fair_baselines tune --task sst2 --fidelity n_train=600,epochs=2,batch_size=8,lr_scale=2
    python -m bench.retrain run --task sst2 --tuned-baselines --found NAME@STORAGE
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import TABLES, add_data_dir, add_model, add_task, fidelity_arg

GRID = (0.5, 0.7071, 1.0, 1.4142, 2.0)


def path_for(task: str) -> Path:
    return TABLES / f"baselines-lr-{task}.jsonl"


def _done(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def with_lr(candidate: dict[str, Any], multiplier: float) -> dict[str, Any]:
    """A baseline's candidate at another learning-rate multiplier."""
    from autopeft.candidate import Candidate

    return Candidate.from_dict({**candidate, "lr_multiplier": float(multiplier)}).to_dict()


def best_multipliers(path: Path, fidelity: dict[str, Any] | None = None) -> dict[str, float]:
    """Each baseline's multiplier with the best search-split score in the tuning table (ties: the one nearest 1;
    ``fidelity``: only trials at that fidelity)."""
    import math

    best: dict[str, tuple[float, float, float]] = {}
    for r in _done(path):
        if r.get("score") is None or (fidelity is not None and r["fidelity"] != fidelity):
            continue
        m = float(r["lr_multiplier"])
        cur = best.get(r["name"])
        cand = (float(r["score"]), -abs(math.log(m)), m)
        if cur is None or cand[:2] > cur[:2]:
            best[r["name"]] = cand
    return {name: v[2] for name, v in best.items()}


def tune(a: argparse.Namespace) -> int:
    from autopeft.builder import model_info
    from autopeft.config import data_spec_dict
    from autopeft.contract import TrialSpec
    from autopeft.trial import run_trial, task_of
    from bench.retrain import FULL_FT, baselines

    data = data_spec_dict(a.task, a.data_dir)
    fid = dict(a.fidelity or {})
    if "metric" in fid:  # "metric=auc": the search's ranking metric (MRPC's searches rank by ROC AUC)
        data = {**data, "metric": fid.pop("metric")}
    info = model_info(a.model, task_of(data).num_labels)
    out = Path(a.out) if a.out else path_for(a.task)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["name"], float(r["lr_multiplier"]), json.dumps(r["fidelity"], sort_keys=True)) for r in _done(out)}
    names = baselines(info.arch.num_layers)
    jobs = [(name, c.to_dict(), m) for name, c in names.items() if name != FULL_FT
            and (not a.only or name in a.only) for m in a.grid if (name, float(m), json.dumps(fid, sort_keys=True)) not in done]
    print(f"{len(jobs)} tuning trials to run", flush=True)
    with ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(run_trial, TrialSpec(trial_id=i, candidate=with_lr(c, m), model=a.model, data=data,
                                                 fidelity=fid, seed=a.seed, threads=1)): (name, m)
                for i, (name, c, m) in enumerate(jobs)}
        for fut in futs:
            name, m = futs[fut]
            r = fut.result()
            with out.open("a") as fh:
                fh.write(json.dumps({"name": name, "lr_multiplier": m, "fidelity": fid, "seed": a.seed, "score": r.score,
                                     "metric": r.metric, "status": r.status, "wall_s": r.wall_s}) + "\n")
            print(f"{name:24s} lr x{m:<6g} {r.metric} {r.score}", flush=True)
    for name, m in best_multipliers(out, fid).items():
        print(f"best: {name}: lr x{m:g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("tune",))
    add_task(ap)
    add_data_dir(ap)
    add_model(ap)
    ap.add_argument("--fidelity", help="the search's fidelity, e.g. n_train=600,epochs=2,batch_size=8,lr_scale=2 "
                                       "(default: Fidelity()'s); metric=auc ranks by that metric as the search did")
    ap.add_argument("--grid", type=lambda s: [float(x) for x in s.split(",")], default=list(GRID),
                    help="learning-rate multipliers to try (default 0.5,0.7071,1,1.4142,2)")
    ap.add_argument("--seed", type=int, default=0, help="the search's seed (its held-out split; default 0)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="tune only this baseline (repeat for several; default: every one)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", help="JSONL of tuning trials (default bench/tables/baselines-lr-<task>.jsonl)")
    a = ap.parse_args(argv)
    from bench.retrain import FULL_FT, baselines

    choices = [n for n in baselines(6) if n != FULL_FT]  # the names do not depend on the model's depth
    unknown = [n for n in a.only if n not in choices]
    if unknown:
        ap.error(f"--only: no baseline {unknown[0]!r}; choose from {', '.join(choices)}")
    a.fidelity = fidelity_arg(ap, a.fidelity, allow_metric=True)
    from autopeft._quiet import quiet

    quiet()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return {"tune": tune}[a.cmd](a)


if __name__ == "__main__":
    main()
