"""The head's rate in low-cost trials (issue 17): trials that collapsed in real searches, run again with the head's
learning-rate floor (``Fidelity.head_lr``).

A low-cost trial trains its configuration for about 150 steps, and the classification head, a freshly initialised
linear layer, trained at the methods' own rate (LoRA's 5e-4, an adapter's 1e-3, x the config's multiplier and the
fidelity's ``lr_scale``).  ``run`` takes every model-proposed trial that scored at the majority class in the given
studies (trial number >= ``--startup``; the collapse rule of :func:`bench.common.collapsed`, at the study's own
chance level), each study's best trial and its first two random start-up trials that learned, and trains each
again with the study's own fidelity, seed (so the same search split), metric and candidate, the head's rate
floored at each ``--head-lr``; rows go to bench/tables/head-lr-<task>.jsonl (resumable).  ``--after-scale``
floors the head's rate after the config's multiplier and the fidelity's ``lr_scale`` instead of before them (the
head trains at max(methods' rate x multiplier x lr_scale, floor): ``Fidelity.head_lr_after_scale``).  ``report`` counts, per
floor, how many of the collapsed trials still collapse and how the others' scores moved.  A missing storage or
study, or a negative floor, is one line, exit 2.

    python -m bench.head_lr run --task sst2 --storage sqlite:///bench/tables/confirm-sst2-learnband.db \
        --studies confirm-sst2-autopeft-0,...,confirm-sst2-autopeft-9 --head-lr 0.01,0.03
    python -m bench.head_lr report --task sst2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import TABLES, add_data_dir, add_task, collapsed, non_negative_floats


def path_for(task: str) -> Path:
    return TABLES / f"head-lr-{task}.jsonl"


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def picks(storage: str, names: list[str], startup: int, first_random: int = 4, per_study: int = 2) -> list[dict[str, Any]]:
    """Per study: its model-proposed trials that collapsed ("collapsed"), its best trial ("best": chosen for its
    score) and the random start-up trials that learned ("startup", numbers ``first_random`` to ``startup - 1``,
    after the four baselines: chosen by no score; the first ``per_study`` of them)."""
    import optuna

    from autopeft.result import load_study
    from autopeft.storage import A

    out: list[dict[str, Any]] = []
    for name in names:
        res = load_study(name, storage)
        chance = float(res.ref_point[0])
        study = optuna.load_study(study_name=name, storage=storage)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
        best = max(done, key=lambda t: t.values[0])
        n_startup = 0
        for t in done:
            low = collapsed(t.values[0], chance)
            kind = ("collapsed" if t.number >= startup and low else "best" if t is best
                    else "startup" if first_random <= t.number < startup and not low and n_startup < per_study
                    else None)
            n_startup += kind == "startup"
            if kind:
                u = t.user_attrs
                out.append({"study": name, "trial": t.number, "kind": kind, "summary": u.get("summary"),
                            "params": u.get("params"), "candidate": u["candidate"], "fidelity": u["fidelity"],
                            "seed": int(study.user_attrs["seed"]), "metric": res.meta.get(A.METRIC), "chance": chance,
                            "score_before": float(t.values[0])})
    return out


def run(a: argparse.Namespace) -> int:
    from autopeft.config import data_spec_dict
    from autopeft.contract import TrialSpec
    from autopeft.trial import run_trial

    data = data_spec_dict(a.task, a.data_dir)
    out = path_for(a.task)
    mode = "after" if a.after_scale else "before"
    done = {(r["study"], r["trial"], r["head_lr"]) for r in _rows(out) if r.get("floor", "before") == mode}
    jobs = [(p, h) for p in picks(a.storage, a.studies.split(","), a.startup) for h in a.head_lr
            if (p["study"], p["trial"], h) not in done and a.kind in ("all", p["kind"])]
    print(f"{len(jobs)} trials to run", flush=True)
    with ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(run_trial, TrialSpec(trial_id=p["trial"], candidate=p["candidate"], model=None,
                                                 data={**data, "metric": p["metric"]},  # as the study ranked
                                                 fidelity={**p["fidelity"], "head_lr": h,
                                                           "head_lr_after_scale": mode == "after"},
                                                 seed=p["seed"],
                                                 threads=1)): (p, h) for p, h in jobs}
        for fut in futs:
            p, h = futs[fut]
            r = fut.result()
            row = {k: v for k, v in p.items() if k not in ("candidate", "fidelity")}
            row.update(head_lr=h, floor=mode, score=r.score, status=r.status, wall_s=round(r.wall_s, 1))
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{p['study']} #{p['trial']:<3d} {p['kind']:9s} {p['summary']}: {p['score_before']:.3f} -> "
                  f"{r.score} at head lr {h:g}", flush=True)
    return report(a)


def summary(rows: list[dict[str, Any]], mode: str = "before") -> dict[float, dict[str, Any]]:
    """Per floor (applied ``mode`` the multiplier and lr_scale): the collapsed trials run, how many collapse again,
    their median margin over chance; the best trials' score changes (against their scores in the studies)."""
    out: dict[float, dict[str, Any]] = {}
    rows = [r for r in rows if r.get("floor", "before") == mode]
    for h in sorted({r["head_lr"] for r in rows}):
        mine = [r for r in rows if r["head_lr"] == h]
        col = [r for r in mine if r["kind"] == "collapsed"]
        out[h] = {"collapsed": len(col), "again": sum(collapsed(r["score"], r["chance"]) for r in col),
                  "margin": statistics.median([r["score"] - r["chance"] for r in col]) if col else None, "rows": mine,
                  **{f"{k}_change": [round(r["score"] - r["score_before"], 3) for r in mine if r["kind"] == k]
                     for k in ("best", "startup")}}
    return out


def report(a: argparse.Namespace) -> int:
    rows = [r for r in _rows(path_for(a.task)) if r["status"] == "ok"]
    if not rows:
        raise ValueError(f"no rows in {path_for(a.task)}: run `python -m bench.head_lr run` first")
    for h, v in [*summary(rows).items(), *summary(rows, "after").items()]:
        h = f"{h:g}" + (" after scaling" if v["rows"][0].get("floor") == "after" else "")
        if v["collapsed"]:
            print(f"head lr {h}: {v['again']} of {v['collapsed']} collapsed trials collapse again; their margin over "
                  f"chance {v['margin']:+.3f} (median)")
        for k, what in (("best", "the studies' best trials"), ("startup", "random start-up trials that learned")):
            d = v[f"{k}_change"]
            if d:
                print(f"head lr {h}: {what} ({len(d)}): score change median {statistics.median(d):+.3f}, mean "
                      f"{statistics.mean(d):+.3f}, range {min(d):+.3f} to {max(d):+.3f}; lower on {sum(x < 0 for x in d)}")
        for r in sorted(v["rows"], key=lambda r: (r["kind"], r["study"], r["trial"])):
            print(f"    {r['kind']:9s} {r['study']} #{r['trial']:<3d} {r['summary']}: chance {r['chance']:.3f}, "
                  f"{r['score_before']:.3f} -> {r['score']:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="head_lr", description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=("run", "report"))
    add_task(ap)
    add_data_dir(ap)
    ap.add_argument("--storage", help="the studies' storage URL (run)")
    ap.add_argument("--studies", help="comma-separated study names (run)")
    ap.add_argument("--startup", type=int, default=10, help="first model-proposed trial number (default 10)")
    ap.add_argument("--head-lr", type=non_negative_floats, default=[0.01],
                    help="the head's rate floors to run (comma-separated; default 0.01)")
    ap.add_argument("--kind", choices=("all", "collapsed", "best", "startup"), default="all",
                    help="run only the collapsed trials, the best ones or the random start-up ones that learned "
                         "(default all)")
    ap.add_argument("--after-scale", action="store_true",
                    help="floor the head's rate after the multiplier and lr_scale (Fidelity.head_lr_after_scale; default: before)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    from autopeft.errors import AutoPeftError

    if a.cmd == "run":
        if not a.storage or not a.studies:
            ap.error("run needs --storage and --studies")
    try:
        return run(a) if a.cmd == "run" else report(a)
    except (AutoPeftError, ValueError) as exc:
        ap.error(str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
