"""Confirm the tabular sampler comparison with real trials: our sampler vs another, a few seeds x N real trials.

`run` runs one ordinary autopeft study per (sampler, seed) on the default MiniLM at the default fidelity
(study ``confirm-<task>-<sampler>-<seed>`` in bench/tables/confirm-<task>.db), seed by seed, ours first. Studies
resume, so the command is resumable; ``--minutes`` stops it cleanly (chunks of ~40 minutes).
`report` prints the hypervolume after 10, 20, 30, 40 complete trials for each study, all against one common
reference point (the first study's: chance score, the base model's parameters, full fine-tuning's memory), so
the numbers compare across samplers and seeds.

    python bench/confirm.py run --task sst2 --space mixed --samplers autopeft,tpe --seeds 0,1 --trials 40 --minutes 38
    python bench/confirm.py report --task sst2 --samplers autopeft,tpe --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TABLES = ROOT / "bench" / "tables"
GLUE = ROOT.parent / "shared" / "data" / "glue"


def study_name(task: str, sampler: str, seed: int) -> str:
    return f"confirm-{task}-{sampler}-{seed}"


class FidelityError(ValueError):
    """A malformed --fidelity text (the scripts print it as one line and exit 2)."""


FIDELITY_KEYS = {"n_train": int, "n_eval": int, "epochs": float, "max_length": int, "batch_size": int,
                 "memory_batch_size": int, "lr_scale": float}


def parse_fidelity(text: str | None, allow_metric: bool = False) -> dict[str, Any] | None:
    """``n_train=2000,epochs=2,batch_size=32,lr_scale=3`` -> a Fidelity dict (None: the machine's default);
    ``metric=auc`` too where ``allow_metric``. Raises :class:`FidelityError` with the reason."""
    if not text:
        return None
    kinds: dict[str, Any] = {**FIDELITY_KEYS, **({"metric": str} if allow_metric else {})}
    out: dict[str, Any] = {}
    for kv in text.split(","):
        k, sep, v = kv.partition("=")
        k = k.strip()
        if not sep:
            raise FidelityError(f"--fidelity: {kv!r} is not KEY=VALUE (e.g. n_train=2000,epochs=2,batch_size=32,lr_scale=3)")
        if k not in kinds:
            raise FidelityError(f"--fidelity: unknown key {k!r}; use {', '.join(sorted(kinds))}")
        try:
            out[k] = kinds[k](v.strip())
        except ValueError:
            raise FidelityError(f"--fidelity: {k}={v!r} is not a number") from None
    return out


def fidelity_arg(ap: argparse.ArgumentParser, text: str | None, allow_metric: bool = False) -> dict[str, Any] | None:
    """parse_fidelity for a command line: a bad text is one argparse error line and exit 2."""
    try:
        return parse_fidelity(text, allow_metric)
    except FidelityError as exc:
        ap.error(str(exc))


def run(a: argparse.Namespace) -> int:
    from autopeft.study import Driver, data_spec_dict

    storage = a.storage or f"sqlite:///{TABLES / f'confirm-{a.task}.db'}"
    deadline = time.monotonic() + a.minutes * 60 if a.minutes else None
    fid = dict(n_train=32, n_eval=32, epochs=1, max_length=24, batch_size=16) if a.quick else a.fidelity
    left = 0
    for seed in [int(s) for s in a.seeds.split(",")]:
        for sampler in a.samplers.split(","):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining < 30:
                left += 1
                continue
            drv = Driver(model=a.model, data=data_spec_dict(a.task, a.data_dir, None, None, None, None, a.metric),
                         space=a.space, n_trials=a.trials, sampler=sampler, study_name=study_name(a.task, sampler, seed),
                         storage=storage, workers=a.workers, seed=seed, timeout=remaining, fidelity=fid,
                         executor="inline" if a.quick else "local", progress=not a.quick)
            res = drv.run()
            done = len(res._complete())
            print(f"{res.name}: {done}/{a.trials} complete", flush=True)
            left += done < a.trials
    return left


def report(a: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from autopeft.pareto import hypervolume, to_max
    from autopeft.result import load_study

    storage = a.storage or f"sqlite:///{TABLES / f'confirm-{a.task}.db'}"
    marks = [m for m in (10, 20, 30, 40, 60, 100) if m <= a.trials]
    out: dict[str, Any] = {"marks": marks, "studies": {}}
    ref = None
    for seed in [int(s) for s in a.seeds.split(",")]:
        for sampler in a.samplers.split(","):
            try:
                res = load_study(study_name(a.task, sampler, seed), storage)
            except Exception:  # not run yet
                continue
            ref = ref or list(res.ref_point)
            comp = sorted(res._complete(), key=lambda t: t.number)
            Y = [to_max(res.objectives, t.values) for t in comp]
            hv = [hypervolume(np.array(Y[:k]), ref) if k <= len(Y) else None for k in marks]
            best = max((t.values[0] for t in comp), default=None)
            out["studies"][f"{sampler}-{seed}"] = {"sampler": sampler, "seed": seed, "complete": len(comp), "hv": hv,
                                                  "best_score": best, "ref_point": ref}
            print(f"{sampler:9s} seed {seed}: {len(comp):3d} trials, best score {best if best is None else round(best, 3)}, "
                  "HV " + ", ".join(f"@{m}: {'-' if v is None else f'{v:.4f}'}" for m, v in zip(marks, hv)), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> Any:
    from autopeft.data import METRICS

    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("run", "report"))
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--space", default="mixed")
    ap.add_argument("--samplers", default="autopeft,tpe")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=38.0)
    ap.add_argument("--data-dir", default=str(GLUE))
    ap.add_argument("--model")
    ap.add_argument("--storage")
    ap.add_argument("--json")
    ap.add_argument("--metric", choices=METRICS, help="the search's metric, e.g. auc on MRPC (default: the task's)")
    ap.add_argument("--fidelity", help="the trials' fidelity, e.g. n_train=2000,epochs=2,batch_size=32,lr_scale=3 "
                                       "(default: the machine's default; a resumed study keeps its own)")
    ap.add_argument("--quick", action="store_true", help="tiny fidelity, in-process (use with --model TINY) for tests")
    a = ap.parse_args(argv)
    a.fidelity = fidelity_arg(ap, a.fidelity)
    from autopeft._quiet import quiet

    quiet()
    return run(a) if a.cmd == "run" else report(a)


if __name__ == "__main__":
    main()
