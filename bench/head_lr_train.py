"""The head's rate floor at full budget (issue 17): does ``autopeft train`` need it where a search's trials did?

A search's low-cost trials train the classification head at no less than ``Fidelity.head_lr`` (0.01 x the config's
multiplier x ``lr_scale``); ``autopeft train`` trains it at the methods' own rate unless ``--head-lr`` is given.
On a small task full-budget training is short too (RTE: 2,241 rows, about 70 steps an epoch at batch 32), so the
head may stay at the majority class there for the same reason the trials' did.  ``run`` trains hand-designed
baselines (``--configs``, labels of :func:`autopeft.methods.baseline_candidates`; default "lora r=8 q,v") with
:func:`autopeft.final.train_final`'s defaults (``--epochs auto``, ``--lr-scale auto``, the held-out tenth) at each
``--head-lr``, one process per (config, floor, seed), one thread each; rows go to
bench/tables/head-lr-train-<task>.jsonl (resumable).  ``report`` prints, per config and floor, the validation
score over seeds beside the majority class's and each seed's difference to floor 0.  Bad input: one line, exit 2.

    python -m bench.head_lr_train run --task rte --head-lr 0,0.01 --seeds 0,1,2
    python -m bench.head_lr_train report --task rte
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import TABLES, add_data_dir, add_task, non_negative_floats


def path_for(task: str) -> Path:
    return TABLES / f"head-lr-train-{task}.jsonl"


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def train_one(label: str, cand_json: str, data: dict[str, Any], head_lr: float, seed: int,
              n_train: int | None, epochs: float | str) -> dict[str, Any]:
    """One seed of one config at one floor, with ``autopeft train``'s defaults; the row to store."""
    import torch

    from autopeft.candidate import Candidate
    from autopeft.final import train_final

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        r = train_final(Candidate(json.loads(cand_json)), None, data, out, seeds=[seed], threads=1,
                        progress=False, head_lr=head_lr, n_train=n_train, epochs=epochs)
    maj = r.get("majority", {})
    return {"config": label, "head_lr": head_lr, "seed": seed, "metric": r["metric"], "score": r["scores"][0],
            "accuracy": r["accuracies"][0] if r.get("accuracies") else None,
            "majority": maj.get(r["metric"]), "majority_accuracy": maj.get("accuracy"),
            "lr_scale": r["lr_scales"][0], "lr_tried": r["lr_tried"][0], "epochs_run": r["epochs_run"][0],
            "n_train": r["n_train"], "seconds": round(r["seconds"][0], 1)}


def run(a: argparse.Namespace) -> int:
    from autopeft.builder import model_info
    from autopeft.config import data_spec_dict
    from autopeft.methods import baseline_candidates
    from autopeft.trial import task_of

    data = data_spec_dict(a.task, a.data_dir)
    known = baseline_candidates(model_info(None, task_of(data).num_labels).arch.num_layers)  # the default model's
    labels = [c.strip() for c in a.configs.split(";") if c.strip()]
    bad = [c for c in labels if c not in known]
    if bad:
        raise ValueError(f"unknown baseline {bad[0]!r}; known: {'; '.join(known)}")
    out = path_for(a.task)
    done = {(r["config"], r["head_lr"], r["seed"]) for r in _rows(out)}
    jobs = [(c, h, s) for s in a.seeds for c in labels for h in a.head_lr if (c, h, s) not in done]
    print(f"{len(jobs)} runs to do", flush=True)
    with ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(train_one, c, json.dumps(known[c].to_dict()), data, h, s, a.n_train, a.epochs): (c, h, s)
                for c, h, s in jobs}
        for fut in futs:
            row = fut.result()
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{row['config']} head lr {row['head_lr']:g} seed {row['seed']}: {row['metric']} {row['score']:.4f} "
                  f"(majority {row['majority']}), x{row['lr_scale']:g} kept, {row['seconds']:.0f} s", flush=True)
    return report(a)


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (config, floor): the seeds' scores, mean, sample sd, and the paired difference to floor 0 seed by seed."""
    by: dict[tuple[str, float], dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["config"], r["head_lr"]), {})[r["seed"]] = r
    out = []
    for (cfg, h), seeds in sorted(by.items()):
        base = by.get((cfg, 0.0), {})
        sc = [seeds[s]["score"] for s in sorted(seeds)]
        diffs = [seeds[s]["score"] - base[s]["score"] for s in sorted(seeds) if s in base] if h else []
        out.append({"config": cfg, "head_lr": h, "seeds": sorted(seeds), "scores": sc, "mean": statistics.fmean(sc),
                    "sd": statistics.stdev(sc) if len(sc) > 1 else 0.0,
                    "majority": next(iter(seeds.values()))["majority"],
                    "accuracy": statistics.fmean(seeds[s]["accuracy"] for s in seeds) if all(
                        seeds[s]["accuracy"] is not None for s in seeds) else None,
                    "kept_scales": [seeds[s]["lr_scale"] for s in sorted(seeds)],
                    "paired_diff": diffs, "seconds": sum(seeds[s]["seconds"] for s in seeds)})
    return out


def report(a: argparse.Namespace) -> int:
    rows = _rows(path_for(a.task))
    if not rows:
        raise ValueError(f"no rows in {path_for(a.task)}: run first")
    for s in summary(rows):
        d = s["paired_diff"]
        paired = (f"; against floor 0, seed by seed {', '.join(f'{x:+.3f}' for x in d)} (mean {statistics.fmean(d):+.3f})"
                  if d else "")
        print(f"{s['config']}, head lr {s['head_lr']:g}: {s['mean']:.4f} ± {s['sd']:.4f} over seeds {s['seeds']} "
              f"({', '.join(f'{x:.3f}' for x in s['scores'])}; majority class {s['majority']:.4f}; kept scales "
              f"{', '.join(f'x{k:g}' for k in s['kept_scales'])}; {s['seconds']:.0f} s){paired}")
    return 0


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text[:40]!r}")
    return seeds


def _epochs(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v < math.inf:
        raise argparse.ArgumentTypeError(f"must be auto or a finite number > 0, got {text[:40]}")
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="head_lr_train", description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=("run", "report"))
    add_task(ap)
    add_data_dir(ap)
    ap.add_argument("--configs", default="lora r=8 q,v",
                    help="semicolon-separated baseline labels (default 'lora r=8 q,v')")
    ap.add_argument("--head-lr", type=non_negative_floats, default=[0.0, 0.01], help="floors (default 0,0.01)")
    ap.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--n-train", type=int, help="training rows (default all)")
    ap.add_argument("--epochs", default="auto", type=_epochs, help="a number, or auto (default: autopeft train's)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    from autopeft.errors import AutoPeftError

    try:
        return run(a) if a.cmd == "run" else report(a)
    except (AutoPeftError, ValueError) as exc:
        ap.error(str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
