"""Found vs hand-designed, and how well the low-cost trial predicts the full-budget score.

`run` re-trains, at full budget and with several seeds, scored on the untouched validation split:
  - the methods' hand-designed baselines (``autopeft.methods.baseline_candidates``: LoRA r=8 on q,v; IA3;
    prefix 20; serial adapter 64) and full fine-tuning;
  - up to 5 configs from the Pareto front of each search (``--found NAME@STORAGE``, repeatable), chosen from its
    low-cost results as a user would: its best config, and for each baseline what ``best_config(max_params=<the
    baseline's params>)`` returns (then, if fewer than 5, configs spread over params among its high scorers);
  - extra configs from the tabular benchmark's table (spread over its low-cost scores) until ``--n-proxy``
    configs in all have a low-cost score, for the rank correlation.
Every (config, seed) run is appended to bench/tables/retrain-<task>.jsonl as it finishes, so the command is
resumable: run it again and it goes on; ``--minutes`` stops submitting new runs (chunks of ~40 minutes).
Two runs go side by side, one thread each.

`proxy` scores every re-trained config again with other low-cost fidelities (``--fidelity n_train=1000,epochs=1,
batch_size=8``, repeatable; seed 0 as in the search), appended to bench/tables/proxy-<task>.jsonl, so the rank
correlation and cost of candidate default fidelities can be compared on the same configs.

`report` prints (and writes as JSON) for each baseline whether a found config has at least its mean score with at
most its parameters, and the Spearman rank correlation between the low-cost score and the full-budget score
(mean over seeds), next to the seed-to-seed correlation of the full-budget score itself (seed 0 vs seed 1: the
ceiling any proxy can reach), and the cost ratio (low-cost trial seconds / full-budget seconds); the same for each
fidelity that `proxy` ran.

    python -m bench.retrain run --task sst2 --found confirm-sst2-autopeft-0@sqlite:///bench/tables/confirm-sst2.db
    python -m bench.retrain proxy --task sst2 --fidelity n_train=1000,epochs=1,batch_size=8
    python -m bench.retrain report --task sst2 --json bench/tables/retrain-sst2.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from bench.common import (TABLES, add_chunk, add_data_dir, add_model, add_quick, add_space, add_task, fidelity_arg,
                          ratio_to_ceiling_interval, spearman)

# full budget per task (issue 6): SST-2 8,000 training rows x 1 epoch; MRPC all rows x 3 epochs
FULL = {"sst2": {"n_train": 8000, "epochs": 1.0}, "mrpc": {"n_train": None, "epochs": 3.0}}
FULL_FT = "full fine-tuning"


def baselines(num_layers: int) -> dict[str, Any]:
    """The configs every search is compared with: the methods' hand-designed baselines, then full fine-tuning."""
    from autopeft.candidate import Candidate
    from autopeft.methods import baseline_candidates

    return {**baseline_candidates(num_layers), FULL_FT: Candidate.make({"full": {}}, [])}


def _data(task: str, data_dir: str) -> dict[str, Any]:
    from autopeft.config import data_spec_dict

    return data_spec_dict(task, data_dir)


#: ``--answer-se``: the factor of the answers' noise margin for every search this process opens (None: the default,
#: :data:`autopeft.pareto.ANSWER_SE`; 0: no preference for seeded configs, the answers before session 18)
ANSWER_SE: float | None = None


def _load(found: str) -> Any:
    """A ``NAME@STORAGE`` search, with ``--answer-se`` applied."""
    from autopeft.api import load_study

    name, _, storage = found.partition("@")
    res = load_study(name, storage or None)
    if ANSWER_SE is not None:
        res.answer_se = ANSWER_SE
    return res


def found_configs(found: str, budgets: dict[str, int], k: int = 5) -> list[dict[str, Any]]:
    """Up to ``k`` front configs of one search, picked from its low-cost results only, as a user would:
    its best config, then for each baseline what ``best_config(max_params=<that baseline's params>)`` returns,
    then (if fewer than ``k``) configs spread over log-params among those within 0.05 of the best score."""
    name = found.partition("@")[0]
    res = _load(found)
    front = res.front_trials()  # best low-cost score first
    if not front:
        return []
    by_num = {t.number: t for t in res.complete_trials()}
    best_found = res.best_config()
    picked: dict[int, str] = {best_found.trial.number: "best score" if best_found.preferred_over is None else
                              "best config (seeded, within the noise of the best score)"}
    for bname, bparams in sorted(budgets.items(), key=lambda kv: kv[1]):
        if any(t.user_attrs["params"] <= bparams for t in by_num.values()):
            n = res.best_trial(max_params=bparams).number  # a seeded config within the noise of the best answers
            if n not in picked:
                picked[n] = f"best under {bname}'s params"
    on_top = dict(zip((t.number for t in front), res.scores_on_top(front)))  # as the front compares them (--promote)
    best = on_top[front[0].number]
    good = sorted([t for t in front if on_top[t.number] >= best - 0.05], key=lambda t: t.user_attrs["params"])
    if len(good) > 1 and k > 1:
        for i in sorted({round(i * (len(good) - 1) / (k - 1)) for i in range(k)}):
            if len(picked) >= k:
                break
            picked.setdefault(good[i].number, "spread over params")
    return [{"kind": "found", "name": f"found #{n}: {by_num[n].user_attrs.get('summary', '')}", "source": name, "why": why,
             "candidate": by_num[n].user_attrs["candidate"], "low_score": by_num[n].values[0],
             "low_s": by_num[n].user_attrs.get("wall_s"), "low_fidelity": res.meta.get("fidelity")}
            for n, why in list(picked.items())[:k]]


def table_rows(task: str, space: str) -> list[dict[str, Any]]:
    import pandas as pd

    path = TABLES / f"{task}-{space}.csv"
    if not path.exists():
        return []
    df = pd.read_csv(path)
    return [{"candidate": json.loads(r.candidate), "low_score": float(r.score), "low_s": float(r.wall_s),
             "baseline": r.baseline if isinstance(r.baseline, str) else ""} for r in df.itertuples()]


def plan(task: str, space: str, found: list[str], n_proxy: int, info: Any, picks: int = 5,
         tuned: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The configs to re-train: baselines, found (up to ``picks`` per search), then table configs spread over low-cost
    scores.  ``tuned``: baseline name -> its tuned learning-rate multiplier (:mod:`bench.fair_baselines`); those
    baselines are re-trained at it instead, named ``<name> (lr xM, tuned)``."""
    from autopeft.builder import count_params
    from autopeft.candidate import Candidate

    num_layers = info.arch.num_layers

    table = table_rows(task, space)
    by_key = {Candidate.from_dict(r["candidate"]).key: r for r in table}
    out: list[dict[str, Any]] = []
    for name, c in baselines(num_layers).items():
        if tuned and name in tuned:
            from bench.fair_baselines import with_lr

            name, c = tuned_name(name, tuned[name]), Candidate.from_dict(with_lr(c.to_dict(), tuned[name]))
        row = by_key.get(c.key, {})
        out.append({"kind": "baseline", "name": name, "candidate": c.to_dict(), "low_score": row.get("low_score"),
                    "low_s": row.get("low_s")})
    budgets = {o["name"]: count_params(Candidate.from_dict(o["candidate"]), info) for o in out if o["name"] != FULL_FT}
    keys = {Candidate.from_dict(o["candidate"]).key for o in out}
    for f in found or []:
        for o in found_configs(f, budgets, picks):
            if Candidate.from_dict(o["candidate"]).key not in keys:
                keys.add(Candidate.from_dict(o["candidate"]).key)
                out.append(o)
    have = sum(o["low_score"] is not None for o in out)
    rest = sorted([r for k, r in by_key.items() if k not in keys], key=lambda r: r["low_score"])
    need = max(0, n_proxy - have)
    if need and rest:  # spread evenly over the range of low-cost scores (many configs tie at chance level)
        lo, hi = rest[0]["low_score"], rest[-1]["low_score"]
        picked: list[int] = []
        for t in range(need):
            target = lo + (hi - lo) * t / max(1, need - 1)
            free = [i for i in range(len(rest)) if i not in picked]
            if free:
                picked.append(min(free, key=lambda i: abs(rest[i]["low_score"] - target)))
        for i in sorted(picked):
            r = rest[i]
            out.append({"kind": "proxy", "name": Candidate.from_dict(r["candidate"]).summary(), "candidate": r["candidate"],
                        "low_score": r["low_score"], "low_s": r["low_s"]})
    for o in out:
        o["key"] = Candidate.from_dict(o["candidate"]).key
    return out


def _tuned(a: argparse.Namespace) -> dict[str, float]:
    """``--tuned-baselines``: each baseline's tuned multiplier, from ``--tuned-from`` (default
    bench/tables/baselines-lr-<task>.jsonl)."""
    from bench.fair_baselines import best_multipliers, path_for

    return best_multipliers(Path(a.tuned_from) if a.tuned_from else path_for(a.task))


def tuned_rows(recs: list[dict[str, Any]], rows: list[dict[str, Any]], tuned: dict[str, float]) -> list[dict[str, Any]]:
    """The rows of the tuned baselines, found by config and rate (not by name): ``run`` re-trains a tuned baseline
    once, so one that an earlier run re-trained as a search's pick (same config, same rate) or as the baseline at its
    default rate (a multiplier of 1) is that row, named here as the tuned baseline (marked ``alias`` where it was not
    one).  A tuned baseline not re-trained yet is printed as such."""
    from autopeft.candidate import Candidate
    from bench.fair_baselines import with_lr

    default = {r["name"]: r["candidate"] for r in recs if r["kind"] == "baseline" and r["name"] in tuned}
    want = {Candidate.from_dict(with_lr(c, tuned[name])).key: tuned_name(name, tuned[name])
            for name, c in default.items()}
    out = [r for r in rows if r["kind"] == "baseline" and r["key"] in want]
    for key, name in want.items():
        if any(r["key"] == key for r in out):
            continue
        r = next((r for r in rows if r["key"] == key and not r.get("alias")), None)
        if r is None:
            print(f"tuned baseline {name} is not re-trained yet (run `run --tuned-baselines`)")
        else:
            out.append({**r, "kind": "baseline", "name": name, "alias": True})
    return out


def tuned_name(name: str, multiplier: float) -> str:
    return f"{name} (lr x{multiplier:g}, tuned)"


def _done(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _rows(a: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs of ``--out`` and of every ``--also`` file (read, never written): a new comparison reuses the committed
    runs (baselines, configs re-trained before) without copying them into its own file, so the reports of the committed
    files keep their figures.  A run (config and seed) that an earlier file already has is skipped, so files that
    overlap (one started as a copy of another) count each run once."""
    rows = _done(Path(a.out or TABLES / f"retrain-{a.task}.jsonl"))
    for extra in a.also or []:
        have = {(r["key"], r["seed"]) for r in rows}
        rows += [r for r in _done(Path(extra)) if (r["key"], r["seed"]) not in have]
    return rows


def run(a: argparse.Namespace) -> int:
    from autopeft.builder import model_info

    data = _data(a.task, a.data_dir)
    from autopeft.trial import task_of

    info = model_info(a.model, task_of(data).num_labels)
    tuned = None
    if a.tuned_baselines:
        tuned = _tuned(a)
        if not tuned:
            raise SystemExit(f"no tuned baselines for {a.task}: run python -m bench.fair_baselines tune --task {a.task} first")
    configs = plan(a.task, a.space, a.found, a.n_proxy, info, a.picks, tuned)
    full = dict(FULL.get(a.task, {"n_train": None, "epochs": 3.0}))
    if a.quick:
        full = {"n_train": 32, "epochs": 1.0}
    out = Path(a.out or TABLES / f"retrain-{a.task}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["key"], r["seed"]) for r in _rows(a)}
    jobs = []  # seed-major: a run cut short by --minutes still has every config at seed 0
    for s in range(a.seeds):
        for c in configs:
            if s < (a.seeds if c["kind"] != "proxy" else min(a.seeds, a.proxy_seeds)) and (c["key"], s) not in done:
                jobs.append((c, s))
    print(f"{len(configs)} configs, {len(jobs)} runs to do, {len(done)} done", flush=True)
    deadline = time.monotonic() + a.minutes * 60 if a.minutes else math.inf
    ml, bs = (24, 16) if a.quick else (128, 32)
    import multiprocessing as mp

    from bench.lean_loop import run_seed

    with ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn")) as pool:
        running: dict[Any, tuple[dict[str, Any], int]] = {}
        while jobs or running:
            while jobs and len(running) < a.workers and time.monotonic() < deadline:
                c, s = jobs.pop(0)
                fut = pool.submit(run_seed, json.dumps(c["candidate"]), a.model, data, full["n_train"], full["epochs"], s, ml, bs)
                running[fut] = (c, s)
            if not running:
                break
            fin, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in fin:
                c, s = running.pop(fut)
                try:
                    r = fut.result()
                except Exception as exc:  # a diverged or failed run is recorded, not fatal
                    r = {"score": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
                rec = {k: c[k] for k in ("kind", "name", "key", "candidate", "low_score", "low_s", "source", "why", "low_fidelity")
                       if k in c}
                rec.update({"seed": s, "full": full, **r})
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"{c['name']:40s} seed {s}: {r.get('score')}  ({r.get('seconds', 0):.0f} s)", flush=True)
    left = len(jobs)
    print(f"{'stopped at --minutes; ' + str(left) + ' runs left, run again to go on' if left else 'all runs done'}")
    return left


def _x(v: float) -> str:
    """A bootstrap ratio for a report line: -inf marks resamples whose ceiling was not above 0."""
    return f"{v:.2f}" if math.isfinite(v) else "undefined"


def _fid_label(f: dict[str, Any]) -> str:
    return ",".join(f"{k}={f[k]}" for k in sorted(f))


def proxy(a: argparse.Namespace) -> int:
    """Score every re-trained config with other low-cost fidelities (seed 0, as the search), for the rank correlation."""
    import multiprocessing as mp

    from autopeft.contract import TrialSpec
    from autopeft.trial import run_trial

    data = _data(a.task, a.data_dir)
    recs = _rows(a)
    configs = {r["key"]: r["candidate"] for r in recs if r.get("score") is not None}
    if a.ceiling_only:  # the configs the seed-to-seed ceiling is measured on (re-trained with 2 or more seeds)
        seeds: dict[str, set[int]] = {}
        for r in recs:
            if r.get("score") is not None:
                seeds.setdefault(r["key"], set()).add(r["seed"])
        configs = {k: c for k, c in configs.items() if len(seeds[k]) >= 2}
    out = Path(a.proxy_out or TABLES / f"proxy-{a.task}.jsonl")
    done = {(r["key"], r["fidelity_label"]) for r in _done(out)}
    fids = a.fidelity or []  # parsed in main; "metric=auc" in --fidelity scores the same trial by ROC AUC
    jobs = [(k, c, f) for f in fids for k, c in configs.items() if (k, _fid_label(f)) not in done]
    print(f"{len(configs)} configs x {len(fids)} fidelities: {len(jobs)} trials to run", flush=True)
    with ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(run_trial, TrialSpec(trial_id=i, candidate=c, model=a.model,
                                                 data={**data, "metric": f.get("metric", data.get("metric"))},
                                                 fidelity={x: v for x, v in f.items() if x != "metric"}, seed=0,
                                                 threads=1)): (k, f) for i, (k, c, f) in enumerate(jobs)}
        for fut in futs:
            k, f = futs[fut]
            r = fut.result()
            with out.open("a") as fh:
                fh.write(json.dumps({"key": k, "fidelity": f, "fidelity_label": _fid_label(f), "score": r.score,
                                     "metric": r.metric, "wall_s": r.wall_s, "status": r.status}) + "\n")
    return 0


def _work_ratio(low: dict[str, Any] | None, recs: list[dict[str, Any]]) -> float:
    """Training rows x epochs of a low-cost fidelity over those of the full budget (timing-independent cost)."""
    from autopeft.contract import Fidelity

    f = Fidelity(**{k: v for k, v in (low or {}).items() if k != "metric"})
    full = recs[0]
    return f.n_train * f.epochs / (full["n_train"] * full["full"]["epochs"])


def paired_diff(found: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Found minus baseline, seed by seed over the seeds both ran: mean, standard error and a call.

    'better' / 'worse' when the mean difference is more than two standard errors from zero, else 'tie': with three
    seeds a gap inside the seed-to-seed spread is not evidence either way (MRPC's configs lie within 0.01 F1)."""
    import statistics

    fs, bs = dict(zip(found["seed_list"], found["scores"])), dict(zip(base["seed_list"], base["scores"]))
    d = [fs[s] - bs[s] for s in sorted(set(fs) & set(bs))]
    mean = statistics.fmean(d) if d else float("nan")
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) >= 2 else float("nan")
    call = "tie" if not len(d) >= 2 or abs(mean) <= 2 * se else ("better" if mean > 0 else "worse")
    return {"found": found["name"], "params": found["params"], "diff": mean, "se": se, "n": len(d), "call": call}


def baseline_picks(found: list[str], rows: list[dict[str, Any]], picks: int) -> list[dict[str, Any]]:
    """Rows for the picks of the ``found`` searches that are a baseline, or another search's pick, same config and
    rate (a new study runs the baselines first, so a search may return one; two searches may return one config):
    ``run`` re-trains such a pick once, filed under the baseline or the search that re-trained it first, and without
    these rows ``report`` would not count it as this search's answer.  Marked ``alias``: the proxy and seed-to-seed
    figures count the first row only."""
    from autopeft.candidate import Candidate

    base = {r["key"]: r for r in rows if r["kind"] == "baseline"}
    other = {r["key"]: r for r in rows if r["kind"] == "found" and not r.get("alias")}
    budgets = {r["name"]: r["params"] for r in base.values() if r["name"] != FULL_FT}
    out = []
    for f in found or []:
        for o in found_configs(f, budgets, picks):
            key = Candidate.from_dict(o["candidate"]).key
            b, g = base.get(key), other.get(key)
            if b is not None:
                same = f"the baseline {b['name']}"
            elif g is not None and g.get("source") != o["source"]:
                b, same = g, f"{g.get('source')}'s {str(g['name']).split(':', 1)[0]}"
            else:
                continue
            out.append({**b, "kind": "found", "name": f"{o['name']} (= {same})", "source": o["source"], "why": o["why"],
                        "low_score": o["low_score"], "low_s": o["low_s"], "low_fidelity": o["low_fidelity"],
                        "alias": True})
    return out


def stale_picks(found: list[str], rows: list[dict[str, Any]], picks: int) -> list[dict[str, Any]]:
    """The re-trained rows of the ``found`` searches that are not among their picks now (``found_configs`` with this
    ``picks``): a pick that the rule for answers no longer makes (e.g. a rate that scored within the noise of a seeded
    config's, which answers now), or one that a larger ``--picks`` made.  ``report`` prints them apart (kind
    ``stale``) and leaves them out of the verdicts; a pick not re-trained yet is printed as such (run ``run``)."""
    from autopeft.candidate import Candidate

    budgets = {r["name"]: r["params"] for r in rows if r["kind"] == "baseline" and r["name"] != FULL_FT}
    out = []
    for f in found or []:
        now = {Candidate.from_dict(o["candidate"]).key: o["name"] for o in found_configs(f, budgets, picks)}
        name = f.partition("@")[0]
        mine = [r for r in rows if r["kind"] == "found" and r.get("source") == name]
        out += [r for r in mine if r["key"] not in now]
        for key, pick in now.items():
            if not any(r["key"] == key for r in mine):
                print(f"{name}: pick {pick[:60]} is not re-trained yet (run `run` with this --found and --picks)")
    return out


def answers_per_budget(found: list[str], rows: list[dict[str, Any]],
                       base_rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """For each search and each baseline: the search's answer under that baseline's parameters (``best_trial``, as a
    user gets it) against the baseline, paired over seeds; ``matched`` when its mean is at least the baseline's (the
    issue's goal, one answer per budget; the verdicts above take any of a search's picks).  An answer not re-trained yet
    is printed as such (``run`` with a ``--picks`` that reaches it)."""
    from autopeft.candidate import Candidate
    from autopeft.errors import StudyError

    by_key = {r["key"]: r for r in rows if not r.get("alias")}  # any re-training of the config: a baseline's too
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for f in found or []:
        name, res = f.partition("@")[0], _load(f)
        out[name] = {}
        line = []
        for b in sorted(base_rows, key=lambda r: r["params"]):
            short = b["name"].split(" (")[0]
            try:
                t = res.best_trial(max_params=b["params"])
            except StudyError:  # nothing the search ran fits this budget: no answer, not matched
                out[name][b["name"]] = {"trial": None, "retrained": False}
                line.append(f"{short}: no config fits")
                continue
            row = by_key.get(Candidate.from_dict(t.user_attrs["candidate"]).key)
            if row is None:
                out[name][b["name"]] = {"trial": t.number, "retrained": False}
                line.append(f"{short}: #{t.number} not re-trained")
                continue
            d = paired_diff(row, b)
            ok = row["mean"] >= b["mean"] - 1e-12
            out[name][b["name"]] = {"trial": t.number, "retrained": True, "matched": ok, **d}
            line.append(f"{short}: #{t.number} {d['diff']:+.3f} ± {d['se']:.3f}{'' if ok else ' (missed)'}")
        n_ok = sum(v.get("matched", False) for v in out[name].values())
        print(f"answers of {name} under each baseline's params: {n_ok} of {len(base_rows)} matched or beaten; "
              + "; ".join(line))
    return out


def report(a: argparse.Namespace) -> dict[str, Any]:
    import statistics

    recs = [r for r in _rows(a) if r.get("score") is not None]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by.setdefault(r["key"], []).append(r)
    rows = []
    for key, rs in by.items():
        rs.sort(key=lambda r: r["seed"])
        scores = [r["score"] for r in rs]
        rows.append({"key": key, "kind": rs[0]["kind"], "name": rs[0]["name"], "params": rs[0]["params"], "seeds": len(rs),
                     "mean": statistics.fmean(scores), "std": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
                     "scores": scores, "seed_list": [r["seed"] for r in rs], "low_score": rs[0]["low_score"], "low_s": rs[0]["low_s"],
                     "full_s": statistics.fmean(r["seconds"] for r in rs), "source": rs[0].get("source"),
                     "why": rs[0].get("why"), "low_fidelity": rs[0].get("low_fidelity")})
    rows += baseline_picks(a.found, rows, a.picks)
    for r in stale_picks(a.found, rows, a.picks):
        r["kind"] = "stale"  # re-trained as an earlier pick of its search; not counted as its answer
    rows.sort(key=lambda r: (r["kind"], -r["mean"]))
    print(f"{'kind':9s} {'config':45s} {'params':>10s} {'full score (mean±sd, seeds)':>28s} {'low-cost':>9s}")
    for r in rows:
        low = f"{r['low_score']:.3f}" if r["low_score"] is not None else "-"
        print(f"{r['kind']:9s} {r['name'][:45]:45s} {r['params']:>10,d} {r['mean']:.3f} ± {r['std']:.3f} ({r['seeds']}){'':9s}"
              f" {low:>9s}")
    found = [r for r in rows if r["kind"] == "found"]
    # --tuned-baselines: compare with the baselines given the found configs' learning-rate search only
    base_rows = tuned_rows(recs, rows, _tuned(a)) if a.tuned_baselines else [r for r in rows if r["kind"] == "baseline"]
    verdict: dict[str, dict[str, str | None]] = {}
    paired: dict[str, dict[str, dict[str, Any]]] = {}
    for src in sorted({str(f["source"]) for f in found}) + ["any search"]:
        mine = [f for f in found if src == "any search" or str(f["source"]) == src]
        verdict[src] = {}
        print(f"found by {src} ({len(mine)} configs re-trained):")
        paired[src] = {}
        for b in base_rows:
            win = [f for f in mine if f["mean"] >= b["mean"] and f["params"] <= b["params"]]
            verdict[src][b["name"]] = max(win, key=lambda f: f["mean"])["name"] if win else None
            print(f"  baseline {b['name']:20s} ({b['mean']:.3f}, {b['params']:,} params): "
                  + (f"beaten by {verdict[src][b['name']]}" if win else "no found config has >= its score with <= its params"))
            fit = [f for f in mine if f["params"] <= b["params"]]
            if fit:  # the best found config within its params, against it seed by seed (same seed: same data order)
                paired[src][b["name"]] = pd_ = paired_diff(max(fit, key=lambda f: f["mean"]), b)
                if pd_["n"] >= 2:
                    print(f"    closest within its params: {pd_['found'][:45]}: {pd_['diff']:+.4f} ± {pd_['se']:.4f} "
                          f"(paired over {pd_['n']} seeds) -> {pd_['call']}")
    out_budget = answers_per_budget(a.found, rows, base_rows)
    from autopeft.contract import Fidelity

    want = Fidelity(**(a.low_fidelity or {})).to_dict()
    # low-cost scores from a search at another fidelity (records without one came from the table's fidelity)
    prox = [r for r in rows if r["low_score"] is not None and not r.get("alias")
            and (r["low_fidelity"] is None or Fidelity.from_stored(r["low_fidelity"]).to_dict() == want)]
    out: dict[str, Any] = {"rows": rows, "verdict": verdict, "paired": paired, "per_budget": out_budget}
    if len(prox) >= 3:
        out["proxy_rho"] = spearman([r["low_score"] for r in prox], [r["mean"] for r in prox])
        out["proxy_n"] = len(prox)
        two = [r for r in rows if len(r["scores"]) >= 2 and not r.get("alias")]
        if len(two) >= 3:
            out["seed_rho"] = spearman([r["scores"][0] for r in two], [r["scores"][1] for r in two])
            out["seed_n"] = len(two)
        ratio = [r["low_s"] / r["full_s"] for r in prox if r["low_s"] and r["full_s"]]
        out["cost_ratio"] = statistics.median(ratio) if ratio else None
        out["work_ratio"] = _work_ratio(a.low_fidelity, recs)
        print(f"proxy Spearman rho {out['proxy_rho']:.3f} over {len(prox)} configs; seed-to-seed rho "
              f"{out.get('seed_rho', float('nan')):.3f} over {out.get('seed_n', 0)}; "
              f"median cost ratio {out['cost_ratio'] if out['cost_ratio'] is None else round(out['cost_ratio'], 3)} "
              f"(training rows x epochs: {out['work_ratio']:.3f} of the full budget)")
    pf = Path(a.proxy_out or TABLES / f"proxy-{a.task}.jsonl")
    full_by_key = {r["key"]: r for r in rows if not r.get("alias")}
    out["fidelities"] = {}
    for label in sorted({r["fidelity_label"] for r in _done(pf)}):
        pr = [r for r in _done(pf) if r["fidelity_label"] == label and r["score"] is not None and r["key"] in full_by_key]
        if len(pr) < 3:
            continue
        rho = spearman([r["score"] for r in pr], [full_by_key[r["key"]]["mean"] for r in pr])
        ratio = statistics.median(r["wall_s"] / full_by_key[r["key"]]["full_s"] for r in pr)
        work = _work_ratio(pr[0]["fidelity"], recs)
        out["fidelities"][label] = {"rho": rho, "n": len(pr), "cost_ratio": ratio, "work_ratio": work}
        # on the ceiling's own configs (2+ seeds): rho and the seed-to-seed ceiling on one config set (issue 17's audit)
        same = [r for r in pr if len(full_by_key[r["key"]]["scores"]) >= 2]
        if len(same) >= 3:
            low, mean = [r["score"] for r in same], [full_by_key[r["key"]]["mean"] for r in same]
            s0, s1 = ([full_by_key[r["key"]]["scores"][i] for r in same] for i in (0, 1))
            rho_same, ceil = spearman(low, mean), spearman(s0, s1)
            band = ratio_to_ceiling_interval(low, mean, s0, s1)
            out["fidelities"][label].update({"rho_ceiling_configs": rho_same, "ceiling": ceil, "n_ceiling": len(same),
                                             "x_ceiling": rho_same / ceil, "x_ceiling_interval": band})
        print(f"fidelity {label}: Spearman rho {rho:.3f} over {len(pr)} configs, median cost ratio {ratio:.3f} "
              f"(training rows x epochs: {work:.3f} of the full budget)"
              + (f"; on the {len(same)} ceiling configs rho {rho_same:.3f} vs ceiling {ceil:.3f} ({rho_same / ceil:.2f} x; "
                 f"configs resampled: 90 % of the ratios in {_x(band['lo'])} to {_x(band['hi'])} x, at least "
                 f"{band['goal']:g} x in {100 * band['p_goal']:.0f} %)" if len(same) >= 3 else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> Any:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("run", "proxy", "report"))
    add_task(ap)
    add_space(ap, "the tabular benchmark's space (its table gives proxy configs)")
    ap.add_argument("--found", action="append", default=[],
                    help="a search's study as NAME@STORAGE; its front gives up to --picks found configs (repeatable; "
                         "report: a pick that is a baseline counts as found by that search)")
    ap.add_argument("--picks", type=int, default=5, help="found configs per search, at most (in pick order: best "
                                                         "score, best under each baseline's params, spread)")
    ap.add_argument("--n-proxy", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--proxy-seeds", type=int, default=1, help="seeds for the extra proxy configs (the seed-to-seed "
                                                               "ceiling comes from the configs with --seeds seeds)")
    add_chunk(ap, 38.0)
    add_data_dir(ap)
    add_model(ap)
    ap.add_argument("--out", help="JSONL of runs (default bench/tables/retrain-<task>.jsonl)")
    ap.add_argument("--also", action="append", help="run/proxy/report: another JSONL of runs to read with --out's "
                    "(runs done there are not run again; never written; repeatable)")
    ap.add_argument("--json", help="report: write the summary here")
    ap.add_argument("--fidelity", action="append",
                    help="proxy: a low-cost fidelity to score every re-trained config with, e.g. "
                         "n_train=1000,epochs=1,batch_size=8 (repeatable)")
    ap.add_argument("--low-fidelity", type=json.loads, help="report: the fidelity of the low-cost scores in the table "
                                                            "and the found study, as JSON (default: Fidelity(), 2,000 rows x 2 epochs at batch 32, the table's)")
    ap.add_argument("--proxy-out", help="JSONL of proxy trials (default bench/tables/proxy-<task>.jsonl)")
    ap.add_argument("--tuned-baselines", action="store_true", help="run/report: the baselines at the learning-rate "
                    "multipliers bench.fair_baselines tune found (the fair protocol), instead of their defaults")
    ap.add_argument("--tuned-from", help="run/report: the tuning trials --tuned-baselines takes each baseline's best "
                    "multiplier from (default bench/tables/baselines-lr-<task>.jsonl)")
    ap.add_argument("--ceiling-only", action="store_true", help="proxy: only the configs re-trained with 2 or more "
                                                                "seeds (the seed-to-seed ceiling's configs)")
    ap.add_argument("--answer-se", type=float, help="the factor of the noise margin within which a seeded config "
                    "answers in place of a higher-scoring one (default: autopeft's, 0.5; 0: the answers without it)")
    add_quick(ap, "a tiny budget (with --model TINY)")
    a = ap.parse_args(argv)
    if a.picks < 1:
        ap.error(f"--picks must be at least 1, got {a.picks}")
    for extra in a.also or []:
        if not Path(extra).is_file():
            ap.error(f"--also {extra}: no such file; give a JSONL of re-training runs (bench/tables/retrain-*.jsonl)")
    if a.tuned_from and not Path(a.tuned_from).is_file():
        ap.error(f"--tuned-from {a.tuned_from}: no such file; give the JSONL that bench.fair_baselines tune --out wrote")
    if a.answer_se is not None and not 0 <= a.answer_se < math.inf:
        ap.error(f"--answer-se must be a finite number >= 0, got {a.answer_se}")
    global ANSWER_SE
    ANSWER_SE = a.answer_se
    a.fidelity = [fidelity_arg(ap, text, allow_metric=True) for text in a.fidelity or []]
    from autopeft._quiet import quiet

    quiet()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return {"run": run, "proxy": proxy, "report": report}[a.cmd](a)


if __name__ == "__main__":
    main()
