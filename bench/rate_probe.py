"""Re-train one hand-designed baseline at a given learning-rate multiplier at ``bench.retrain``'s full budget, with
its seeds, into a JSONL of its own (``bench.retrain run`` trains only the default and the tuned rates).

    python -m bench.rate_probe --task mrpc --baseline ia3 --lr 1.41421 --out bench/tables/retrain-mrpc-ia3-walk.jsonl
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.common import add_data_dir, add_model, add_task
from bench.fair_baselines import with_lr
from bench.lean_loop import run_seed
from bench.retrain import FULL, FULL_FT, _data, baselines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_task(ap)
    add_data_dir(ap)
    add_model(ap)
    ap.add_argument("--baseline", required=True, help="a baseline's name, e.g. ia3 or 'lora r=8 q,v'")
    ap.add_argument("--lr", type=float, required=True, help="the learning-rate multiplier, e.g. 1.41421")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True, help="JSONL to append the runs to")
    a = ap.parse_args(argv)
    names = {n: c for n, c in baselines(6).items() if n != FULL_FT}
    if a.baseline not in names:
        ap.error(f"--baseline: no baseline {a.baseline!r}; choose from {', '.join(names)}")
    if not a.lr > 0:
        ap.error(f"--lr must be > 0, got {a.lr}")
    from autopeft.builder import model_info
    from autopeft.trial import task_of

    data = _data(a.task, a.data_dir)
    layers = model_info(a.model, task_of(data).num_labels).arch.num_layers
    cand = with_lr(baselines(layers)[a.baseline].to_dict(), a.lr)
    full = dict(FULL.get(a.task, {"n_train": None, "epochs": 3.0}))
    with ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(run_seed, json.dumps(cand), a.model, data, full["n_train"], full["epochs"], s): s
                for s in range(a.seeds)}
        for fut, s in futs.items():
            r = fut.result()
            with Path(a.out).open("a") as fh:
                fh.write(json.dumps({"name": f"{a.baseline} (lr x{a.lr:g})", "candidate": cand, "seed": s, "full": full,
                                     **r}) + "\n")
            print(f"{a.baseline} x{a.lr:g} seed {s}: {r.get('score')} ({r.get('seconds', 0):.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    main()
