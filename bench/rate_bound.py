"""Does the learning-rate-bound warning tell the truth? Each committed study whose best trial ran at a bound of the
space's rate range, with the same config scoring worse further in (``autopeft.rate_bound``), has that best config
trained again at its own fidelity, seed and search split: at the bound (a check that the trial reproduces) and one and
two steps of x1.41 beyond it (``--steps 1,2``: beyond only, the stored score standing for the bound's). The
warning's claim, "a higher (lower) rate may score better", holds for a study when a
step beyond scores better than the bound.

    python -m bench.rate_bound run --storage sqlite:///bench/tables/A.db [--storage ...] --data-dir ../shared/data/glue
    python -m bench.rate_bound report [--storage ... : also which of them today's warning, with the noise margin, fires on]

Rows: bench/tables/rate-bound.jsonl (resumable: a (study config, rate) already there is not run again). Studies of one
config, task, seed and fidelity (a study copied into another file, or two searches that answer with the same seeded
trial) count once.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import TABLES, add_data_dir

OUT = TABLES / "rate-bound.jsonl"
STEPS = (0, 1, 2)  # at the bound, then x1.41 and x2 beyond it


def picks(storages: list[str], skip_models: tuple[str, ...] = ("smollm2",), margin: bool = False) -> list[dict[str, Any]]:
    """One row per distinct (task, metric, seed, fidelity, config) whose study the check fires on: without the noise
    margin (``margin`` False: the warning until session 37, whose cases the committed rows hold), or with it (the
    warning since: a twin further in must score worse by more than the answer rule's margin)."""
    import optuna

    from autopeft.rate_bound import at_bound
    from autopeft.result import SearchResult, structure_key
    from autopeft.storage import A

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, dict[str, Any]] = {}
    for storage in dict.fromkeys(storages):  # each file once, in the order given
        for name in optuna.get_all_study_names(storage):
            res = SearchResult(optuna.load_study(study_name=name, storage=storage), storage)
            if A.SPACE_DEF not in res.meta or res.meta.get(A.MODEL) in skip_models:
                continue
            comp = res.complete_trials()
            if len(comp) < 2:
                continue
            Y = res.ranked_values(comp)
            found = at_bound(res.meta[A.SPACE_DEF], comp, list(Y[:, 0]), [structure_key(t) for t in comp],
                             res.margins(Y, comp) if margin else None)  # what the warning's check finds
            if found is None:
                continue
            best, side, key_name = comp[found["best"]], found["side"], found["key"]
            rate = float(best.user_attrs[A.CANDIDATE]["lr_multiplier"])
            task = dict(res.meta[A.TASK] if isinstance(res.meta.get(A.TASK), dict) else {"task": res.meta.get(A.TASK)})
            row = {"study": name, "storage": storage, "trial": best.number, "summary": best.user_attrs.get(A.SUMMARY),
                   "candidate": best.user_attrs[A.CANDIDATE], "fidelity": best.user_attrs[A.FIDELITY],
                   "seed": int(res.meta.get("seed", 0)), "task": task, "metric": res.meta.get(A.METRIC),
                   "score_stored": float(best.values[0]), "rate": rate, "side": side, "rate_key": key_name}
            key = json.dumps([task, row["metric"], row["seed"], row["fidelity"], row["candidate"]], sort_keys=True)
            if key in out:
                out[key]["also"].append(name)
            else:
                out[key] = {**row, "also": []}
    return list(out.values())


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def run(a: argparse.Namespace) -> int:
    from autopeft.config import data_spec_dict
    from autopeft.contract import TrialSpec
    from autopeft.trial import run_trial

    out = Path(a.out)
    done = {(r["study"], r["step"]) for r in _rows(out)}
    jobs = [(p, k) for p in picks(a.storage) for k in a.steps if (p["study"], k) not in done]
    print(f"{len(jobs)} trials to run", flush=True)
    with ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {}
        for p, k in jobs:
            task = dict(p["task"])
            data = {**data_spec_dict(task.pop("task"), a.data_dir), **task}
            rate = p["rate"] * math.sqrt(2) ** (k * p["side"])
            cand = {**p["candidate"], "lr_multiplier": rate}
            spec = TrialSpec(trial_id=p["trial"], candidate=cand, model=None, data=data, fidelity=p["fidelity"],
                             seed=p["seed"], threads=1)
            futs[pool.submit(run_trial, spec)] = (p, k, rate)
        for fut in futs:
            p, k, rate = futs[fut]
            r = fut.result()
            row = {k2: v for k2, v in p.items() if k2 not in ("candidate", "storage")}
            row.update(step=k, lr_multiplier=round(rate, 4), score=r.score, status=r.status, wall_s=round(r.wall_s, 1))
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{p['study']} #{p['trial']} {p['summary']}: step {k} x{rate:.3g} {p['metric']} {r.score}", flush=True)
    return report(a)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per study: the score at the bound (and whether it reproduces the stored one), the best beyond it, and whether
    a rate beyond scored higher (lower for a loss)."""
    from autopeft.pareto import noise_margin

    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["study"], {})[int(r["step"])] = r
    out = []
    for study, steps in by.items():
        if not all(k in steps and steps[k].get("score") is not None for k in STEPS[1:]):
            continue
        first = steps[STEPS[1]]
        sign = -1.0 if first["metric"] == "loss" else 1.0
        # at the bound: as trained again here, else as the study stored it (the re-runs reproduce it: see report)
        at = steps[0]["score"] if 0 in steps else first["score_stored"]
        beyond = max((steps[k] for k in STEPS[1:]), key=lambda r: sign * r["score"])
        out.append({"study": study, "summary": first["summary"], "metric": first["metric"],
                    "stored": first["score_stored"], "at_bound": at, "rerun": 0 in steps, "bound": first["rate"],
                    "beyond": [(steps[k]["lr_multiplier"], steps[k]["score"]) for k in STEPS[1:]],
                    "best_beyond": beyond["score"], "gain": sign * (beyond["score"] - at),
                    "held": sign * (beyond["score"] - at) > 0, "also": sorted(set(first.get("also", [])) - {study}),
                    # one standard error of a difference of two scores on the search rows (0 for a loss)
                    "se": noise_margin(at, int(first["fidelity"].get("n_eval", 0)), 1.0, first["metric"])})
    return out


def report(a: argparse.Namespace) -> int:
    s = summarise(_rows(Path(a.out)))
    now: set[str] | None = None  # with --storage: the studies today's warning (with the noise margin) fires on
    if a.storage:
        import optuna

        now = {n for p in picks(a.storage, margin=True) for n in (p["study"], *p["also"])}
        held = {n for url in a.storage for n in optuna.get_all_study_names(url)}
        missing = sorted(r["study"] for r in s if r["study"] not in held)
        if missing:  # a study left out of --storage would count as one the warning no longer fires on
            print(f"--storage: no study named {missing[0]!r} in the files given ({len(missing)} of the rows' studies "
                  "missing); give every file the rows came from", file=sys.stderr)
            return 2
        for r in s:
            r["warned"] = r["study"] in now
    for r in s:
        beyond = ", ".join(f"x{m:g} {v:.4f}" for m, v in r["beyond"])
        again = f"again {r['at_bound']:.4f}" if r["rerun"] else "not run again"
        print(f"{r['study']}: {r['summary']}: stored {r['stored']:.4f} at x{r['bound']:g} ({again}); "
              f"{beyond}: {'higher' if r['held'] else 'not higher'} beyond ({r['gain']:+.4f}"
              + (f", {r['gain'] / r['se']:+.1f} se)" if r["se"] else ")")
              + (f" [also {', '.join(r['also'])}]" if r["also"] else "")
              + ("" if now is None else "; warned today" if r["warned"] else "; not warned today (within the noise)"))
    if s:
        clear = sum(r["se"] > 0 and r["gain"] > r["se"] for r in s)
        print(f"the warning's claim held on {sum(r['held'] for r in s)} of {len(s)} studies, by more than one standard "
              f"error of a difference on the search rows on {clear} (median gain "
              f"{sorted(r['gain'] for r in s)[len(s) // 2]:+.4f})")
    if s and now is not None:
        w = [r for r in s if r["warned"]]
        print(f"with the noise margin (the warning since session 37) it fires on {len(w)} of them; the claim held on "
              f"{sum(r['held'] for r in w)} of those, and on {sum(r['held'] for r in s if not r['warned'])} of the "
              f"{len(s) - len(w)} it no longer fires on")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=("run", "report"))
    ap.add_argument("--storage", action="append", default=[], help="run: a study file to read; report: the files the rows came from, to say "
                    "which of them today's warning (with the noise margin) fires on (repeat)")
    add_data_dir(ap)
    ap.add_argument("--steps", type=lambda t: [int(x) for x in t.split(",")], default=list(STEPS),
                    help="which of the steps to run: 0 at the bound (does the trial reproduce?), 1 and 2 beyond it "
                         "(default 0,1,2)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    if a.cmd == "run" and not a.storage:
        ap.error("run needs --storage (a study file whose warning to check)")
    from autopeft._quiet import quiet

    quiet()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return {"run": run, "report": report}[a.cmd](a)


if __name__ == "__main__":
    raise SystemExit(main())
