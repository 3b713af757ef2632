"""Re-train one hand-designed baseline at a given learning-rate multiplier, or one trial's config of a study, at
``bench.retrain``'s full budget, with its seeds, into a JSONL of its own (``bench.retrain run`` trains only the default
and the tuned rates, and the configs a search's front picks).

    python -m bench.rate_probe --task mrpc --baseline ia3 --lr 1.41421 --out bench/tables/retrain-mrpc-ia3-walk.jsonl
    python -m bench.rate_probe --task sst2 --trial 'confirm-sst2-front-base-3@sqlite:///bench/tables/confirm-sst2-refine.db#26' --out ...
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
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--baseline", help="a baseline's name, e.g. ia3 or 'lora r=8 q,v' (with --lr)")
    which.add_argument("--trial", help="a study's trial as STUDY@STORAGE#NUMBER: its config, at its own rate")
    ap.add_argument("--lr", type=float, help="the baseline's learning-rate multiplier, e.g. 1.41421")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True, help="JSONL to append the runs to")
    a = ap.parse_args(argv)
    names = {n: c for n, c in baselines(6).items() if n != FULL_FT}
    if a.baseline is not None:
        if a.baseline not in names:
            ap.error(f"--baseline: no baseline {a.baseline!r}; choose from {', '.join(names)}")
        if a.lr is None or not a.lr > 0:
            ap.error(f"--baseline needs --lr > 0, got {a.lr}")
    else:
        if a.lr is not None:
            ap.error("--lr is for --baseline; a --trial's config keeps its own rate")
        study, _, number = a.trial.rpartition("#")
        if not study or "@" not in study or not number.isdigit():
            ap.error(f"--trial must be STUDY@STORAGE#NUMBER, got {a.trial!r}")
    from autopeft.builder import model_info
    from autopeft.trial import task_of

    data = _data(a.task, a.data_dir)
    if a.baseline is not None:
        layers = model_info(a.model, task_of(data).num_labels).arch.num_layers
        cand, label = with_lr(baselines(layers)[a.baseline].to_dict(), a.lr), f"{a.baseline} (lr x{a.lr:g})"
    else:
        from autopeft.api import load_study

        name, _, storage = study.partition("@")
        by_number = {t.number: t for t in load_study(name, storage).study.get_trials(deepcopy=False)}
        if int(number) not in by_number or "candidate" not in by_number[int(number)].user_attrs:
            ap.error(f"--trial: study {name!r} has no trial {number} with a config")
        t = by_number[int(number)]
        cand, label = t.user_attrs["candidate"], f"{name} #{number}: {t.user_attrs.get('summary', '')}"
    full = dict(FULL.get(a.task, {"n_train": None, "epochs": 3.0}))
    with ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(run_seed, json.dumps(cand), a.model, data, full["n_train"], full["epochs"], s): s
                for s in range(a.seeds)}
        for fut, s in futs.items():
            r = fut.result()
            with Path(a.out).open("a") as fh:
                fh.write(json.dumps({"name": label, "candidate": cand, "seed": s, "full": full, **r}) + "\n")
            print(f"{label} seed {s}: {r.get('score')} ({r.get('seconds', 0):.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    main()
