"""Confirm the tabular sampler comparison with real trials: our sampler vs another, a few seeds x N real trials.

`run` runs one ordinary autopeft study per (sampler, seed) on the default MiniLM at the default fidelity
(study ``confirm-<task>-<sampler>-<seed>`` in bench/tables/confirm-<task>.db), seed by seed, ours first. Studies
resume, so the command is resumable; ``--minutes`` stops it cleanly (chunks of ~40 minutes).
`report` prints the hypervolume after 10, 20, 30, 40 complete trials for each study against a reference point
whose costs are common to all studies (the first study's: the base model's parameters, full fine-tuning's memory)
and whose score is the study's own chance level (each seed holds out its own search split, so its majority class
differs: with seed 0's level for seed 1, seed 1's collapsed trials earned hypervolume).

    python -m bench.confirm run --task sst2 --space mixed --samplers autopeft,tpe --seeds 0,1 --trials 40 --minutes 38
    python -m bench.confirm report --task sst2 --samplers autopeft,tpe --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import (QUICK_FIDELITY, TABLES, add_chunk, add_data_dir, add_metric, add_model, add_quick,
                          add_sampler_knobs, add_space, add_task, apply_sampler_knobs, fidelity_arg)
from bench.common import collapsed as is_collapsed


def study_name(task: str, sampler: str, seed: int) -> str:
    return f"confirm-{task}-{sampler}-{seed}"


def run(a: argparse.Namespace) -> int:
    from autopeft.api import search

    storage = a.storage or f"sqlite:///{TABLES / f'confirm-{a.task}.db'}"
    deadline = time.monotonic() + a.minutes * 60 if a.minutes else None
    fid = QUICK_FIDELITY if a.quick else a.fidelity
    left = 0
    for seed in [int(s) for s in a.seeds.split(",")]:
        for sampler in a.samplers.split(","):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining < 30:
                left += 1
                continue
            res = search(model=a.model, task=a.task, data_dir=a.data_dir, metric=a.metric, space=a.space,
                         n_trials=a.trials, sampler=sampler, study_name=study_name(a.task, sampler, seed),
                         storage=storage, workers=a.workers, seed=seed, timeout=remaining,
                         executor="inline" if a.quick else "local", progress=not a.quick,
                         escalate=False, enqueue=_enqueue(a),
                         warm_start=a.warm_start, **(fid or {}))  # samplers compared at one fidelity: never raised
            done = len(res.complete_trials())
            print(f"{res.name}: {done}/{a.trials} complete", flush=True)
            left += done < a.trials
    return left


def _enqueue(a: argparse.Namespace) -> Any:
    """What a new study runs first: the baselines (the default), then any ``--enqueue`` files; ``--no-baselines``
    drops the baselines."""
    if not a.enqueue:
        return "none" if a.no_baselines else None
    return list(a.enqueue) if a.no_baselines else ["baselines", *a.enqueue]


def collapsed(res: Any, comp: list[Any], startup: int) -> tuple[list[int], list[int]]:
    """The model-based trials (number >= ``startup``) that collapsed: scored within 2 % of the chance-to-perfect gap
    above the study's chance level (about the majority class); and those of them that started while a trial of the
    same config at another learning rate (:func:`autopeft.candidate.structure_key`) was still training."""
    from autopeft.candidate import structure_key

    chance = float(res.ref_point[0])
    every = [t for t in res.study.get_trials(deepcopy=False) if "candidate" in t.user_attrs and t.datetime_start]
    keys = {t.number: structure_key(t.user_attrs["candidate"]) for t in every}
    col = [t.number for t in comp if t.number >= startup and is_collapsed(t.values[0], chance)]
    start = {t.number: t.datetime_start for t in every}
    beside = [n for n in col if any(o.number != n and keys[o.number] == keys[n] and o.datetime_start <= start[n]
                                    and (o.datetime_complete is None or o.datetime_complete > start[n]) for o in every)]
    return col, beside


def proposed_by_model(comp: list[Any], startup: int) -> list[int]:
    """The complete trials a sampler proposed from its model: not queued (a baseline, a warm-start config, the
    proposer's random config after repeated duplicates: ``seeded_by``) and started once at least ``startup`` trials had
    completed (autopeft's and GPSampler's start-up rules count complete trials, so with 2 workers the trials numbered
    ``startup`` and ``startup + 1`` are usually still random).  Inferred from the times: a warm-started autopeft
    search plans from its model after only PRIOR_STARTUP trials (give that as ``startup``), and a model-based step
    that found no expected improvement proposes at random, counted here as the model's."""
    from autopeft.storage import A

    ends = sorted(t.datetime_complete for t in comp)
    return [t.number for t in comp if A.SEEDED_BY not in t.user_attrs
            and sum(e <= t.datetime_start for e in ends) >= startup]


def report(a: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from autopeft.api import load_study
    from autopeft.pareto import hypervolume, to_max
    from autopeft.storage import A

    storage = a.storage or f"sqlite:///{TABLES / f'confirm-{a.task}.db'}"
    marks = [m for m in (10, 20, 30, 40, 60, 100) if m <= a.trials]
    out: dict[str, Any] = {"marks": marks, "studies": {}}
    common: list[float] | None = None
    for seed in [int(s) for s in a.seeds.split(",")]:
        for sampler in a.samplers.split(","):
            try:
                res = load_study(study_name(a.task, sampler, seed), storage)
            except Exception:  # not run yet
                continue
            common = common or list(res.ref_point)
            ref = [float(res.ref_point[0]), *common[1:]]  # this study's chance level, the common costs
            comp = sorted(res.complete_trials(), key=lambda t: t.number)
            Y = [to_max(res.objectives, t.values) for t in comp]
            hv = [hypervolume(np.array(Y[:k]), ref) if k <= len(Y) else None for k in marks]
            reach, target = None, a.reach
            if a.reach_from is not None:  # the same seed's study there, its hypervolume after --trials trials
                target = _hv_after(study_name(a.task, sampler, seed), a.reach_from, a.trials, common)
            if target is not None:  # the first number of complete trials whose front reaches the target
                reach = next((k for k in range(1, len(Y) + 1) if hypervolume(np.array(Y[:k]), ref) >= target - 1e-12),
                             None)
            # the methods the storage layer records per trial ("head": nothing but the classification head trains)
            methods = [Counter(str(t.user_attrs.get(A.METHOD)) for t in part) for part in (comp[:20], comp[20:a.trials])]
            best = max((t.values[0] for t in comp), default=None)
            col, beside = collapsed(res, comp, a.startup)
            by_model = proposed_by_model(comp, a.startup)
            col_model = sorted(set(by_model) & set(col))
            chance = float(res.ref_point[0])
            first = min((t.datetime_complete for t in comp if is_collapsed(t.values[0], chance)), default=None)
            # proposed before any trial of the study had collapsed: no collapse model yet (autopeft's P(learns))
            model_set = set(by_model)
            blind = [t.number for t in comp if t.number in model_set and (first is None or first > t.datetime_start)]
            out["studies"][f"{sampler}-{seed}"] = {"sampler": sampler, "seed": seed, "complete": len(comp), "hv": hv,
                                                  "best_score": best, "ref_point": ref, "collapsed": col,
                                                  "collapsed_beside_itself": beside, "trials_to_reach": reach,
                                                  "reach_target": target,
                                                  "methods_first_20": dict(methods[0]), "methods_after_20": dict(methods[1]),
                                                  "proposed_by_model": by_model, "collapsed_by_model": col_model,
                                                  "proposed_before_a_collapse": blind}
            n_model = sum(t.number >= a.startup for t in comp)
            print(f"{sampler:9s} seed {seed}: {len(comp):3d} trials, best score {best if best is None else round(best, 3)}, "
                  "HV " + ", ".join(f"@{m}: {'-' if v is None else f'{v:.4f}'}" for m, v in zip(marks, hv))
                  + f"; collapsed {len(col)} of {n_model} model-based trials, {len(beside)} proposed while the same "
                  "config trained at another rate"
                  + f"; of the {len(by_model)} the model proposed (not queued, {a.startup}+ complete before), "
                    f"{len(col_model)} collapsed ({len(set(blind) & set(col))} of the {len(blind)} proposed before any "
                    "trial of the study had collapsed)"
                  + ("" if target is None else f"; HV {target:.6g} first reached at trial "
                     f"{'never' if reach is None else reach}"), flush=True)
            if a.methods:
                print(f"{'':9s} seed {seed}: methods of the first 20 trials {_counts(methods[0])}; of trials 21-{a.trials} "
                      f"{_counts(methods[1])}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


def _hv_after(name: str, storages: list[str], k: int, common: list[float] | None) -> float:
    """The hypervolume of study ``name``'s first ``k`` complete trials (its chance level, ``common``'s costs: the
    reference ``report`` uses), from the first of ``storages`` that holds it (ValueError: none does)."""
    import numpy as np

    from autopeft.api import load_study
    from autopeft.errors import StudyError
    from autopeft.pareto import hypervolume, to_max

    for storage in storages:
        try:
            res = load_study(name, storage)
            break
        except StudyError:
            continue
    else:
        raise ValueError(f"--reach-from: no study named {name!r} in {', '.join(storages)}")
    comp = sorted(res.complete_trials(), key=lambda t: t.number)[:k]
    ref = [float(res.ref_point[0]), *(common or list(res.ref_point))[1:]]
    return float(hypervolume(np.array([to_max(res.objectives, t.values) for t in comp]), ref))


def _counts(c: Counter) -> str:
    return ", ".join(f"{m} {n}" for m, n in c.most_common()) or "none"


def compare(a: argparse.Namespace) -> dict[str, Any]:
    """Two ``report --json`` files (e.g. autopeft and GPSampler, same seeds; each side may be several files, comma-separated): the share of model-proposed trials that
    collapsed in each, their ratio, and how sure that ratio is: seeds resampled with replacement (paired: a seed's
    two studies go together), the ratio of the summed counts in each resample; its 5th-95th percentiles and the share
    of resamples at or under ``--goal``.  Also how many seeds each side's hypervolume at the last mark is higher."""
    import numpy as np

    def by_seed(paths: str) -> dict[int, dict[str, Any]]:  # comma-separated report files of one sampler
        out: dict[int, dict[str, Any]] = {}
        for path in paths.split(","):
            try:
                studies = {int(s["seed"]): s for s in json.loads(Path(path).read_text())["studies"].values()}
                if not all(isinstance(s["hv"], list) and s["hv"] and isinstance(s["collapsed_by_model"], list)
                           and isinstance(s["proposed_by_model"], list) for s in studies.values()):
                    raise ValueError("a study lacks its hypervolume or its lists of trials")
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path} is not a report --json file ({type(exc).__name__}: {exc})") from None
            again = sorted(set(studies) & set(out))
            if again:
                raise ValueError(f"seed {again[0]} is in more than one of {paths}")
            out.update(studies)
        return out

    mine, other = by_seed(a.json), by_seed(a.against)
    seeds = sorted(set(mine) & set(other))
    if not seeds:
        raise ValueError(f"{a.json} and {a.against} share no seed")
    idx = np.random.default_rng(0).integers(0, len(seeds), size=(a.boot, len(seeds)))

    def ratio(c: np.ndarray) -> np.ndarray:
        """Rows: resamples of the seeds' counts summed; the two shares divided as IEEE floats do: inf where only the
        other side collapsed none, NaN (no ratio) where neither collapsed or a side proposed none (0 / 0); a NaN
        resample never counts as meeting the goal."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (c[..., 0] / c[..., 1]) / (c[..., 2] / c[..., 3])

    def summary(counts: np.ndarray) -> dict[str, Any]:
        """Per-seed rows (collapsed, proposed, collapsed, proposed) -> both sides' sums, their ratio (None: neither
        side collapsed), the 5th-95th percentiles of the ratio over the seed resamples that have one, the share of
        those resamples and the share of all resamples at or under the goal."""
        tot, boot = counts.sum(0), ratio(counts[idx].sum(1))
        point, some = float(ratio(tot)), boot[~np.isnan(boot)]
        interval = [float(v) for v in np.percentile(some, [5, 95], method="inverted_cdf")] if some.size else None
        return {"collapsed": [int(tot[0]), int(tot[2])], "proposed": [int(tot[1]), int(tot[3])],
                "ratio": None if np.isnan(point) else point, "interval": interval,
                "with_a_ratio": float(some.size / boot.size), "p_at_most_goal": float(np.mean(boot <= a.goal))}

    def said(s: dict[str, Any]) -> str:  # the ratio and its interval as printed
        if s["ratio"] is None:
            return f"no ratio ({'a side had no such trial' if 0 in s['proposed'] else 'neither side collapsed any'})"
        lo, hi = s["interval"]
        n = round(s["with_a_ratio"] * a.boot)
        some = "" if n == a.boot else f" of the {n} of {a.boot} resamples with a ratio"
        return f"{s['ratio']:.2f} x; seeds resampled: 90 %{some} in {lo:.2f} to {hi:.2f} x"

    def counts(side: dict[int, dict[str, Any]], s: int, skip: set[int]) -> list[int]:
        return [len(set(side[s]["collapsed_by_model"]) - skip), len(set(side[s]["proposed_by_model"]) - skip)]

    none: set[int] = set()
    whole = summary(np.array([counts(mine, s, none) + counts(other, s, none) for s in seeds], float))
    out_after = None
    if all("proposed_before_a_collapse" in d[s] for d in (mine, other) for s in seeds):
        # the same for the proposals made once the study had seen a collapse (a collapse model can exist only then)
        out_after = summary(np.array([counts(mine, s, set(mine[s]["proposed_before_a_collapse"]))
                                      + counts(other, s, set(other[s]["proposed_before_a_collapse"])) for s in seeds],
                                     float))
        del out_after["p_at_most_goal"]
    hv_a = [mine[s]["hv"][-1] for s in seeds]
    hv_b = [other[s]["hv"][-1] for s in seeds]
    out = {"seeds": seeds, **whole, "goal": a.goal, "hv_last_higher": int(sum(x > y for x, y in zip(hv_a, hv_b))),
           "hv_last_mean": [float(np.mean(hv_a)), float(np.mean(hv_b))], "after_a_collapse": out_after}
    print(f"{len(seeds)} seeds: collapsed model-proposed {out['collapsed'][0]} of {out['proposed'][0]} against "
          f"{out['collapsed'][1]} of {out['proposed'][1]}: {said(out)}, at most {a.goal:g} x in "
          f"{100 * out['p_at_most_goal']:.0f} % of all resamples; hypervolume at the last mark "
          f"higher on {out['hv_last_higher']} of {len(seeds)} seeds (mean {out['hv_last_mean'][0]:.3f} against "
          f"{out['hv_last_mean'][1]:.3f})")
    if out_after is not None:
        print(f"  proposed once the study had seen a collapse: {out_after['collapsed'][0]} of {out_after['proposed'][0]} "
              f"against {out_after['collapsed'][1]} of {out_after['proposed'][1]}: {said(out_after)}")
    return out


def main(argv: list[str] | None = None) -> Any:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("run", "report", "compare"))
    add_task(ap)
    add_space(ap)
    ap.add_argument("--samplers", default="autopeft,tpe")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--trials", type=int, default=40)
    add_chunk(ap, 38.0)
    add_data_dir(ap)
    add_model(ap)
    ap.add_argument("--storage")
    ap.add_argument("--warm-start", help="run: start every search from another study, NAME@STORAGE_URL (autopeft search "
                    "--warm-start: its best front config queued, its trials the default sampler's prior); keep such "
                    "searches in their own --storage, as their study names are the cold ones'")
    ap.add_argument("--reach", type=float, help="report: also the number of complete trials (in trial order) after "
                    "which each study's hypervolume first reaches this value (e.g. a cold search's 40-trial figure)")
    ap.add_argument("--reach-from", metavar="STORAGE_URL", action="append", help="report: as --reach, each seed's value "
                    "the hypervolume after --trials trials of the same seed's study in this storage (e.g. the cold "
                    "searches'; repeatable: the first that holds it)")
    ap.add_argument("--methods", action="store_true", help="report: also each study's methods (as each trial stored "
                    "them; 'head': nothing but the head trains), counted in its first 20 complete trials and in the rest "
                    "up to --trials")
    ap.add_argument("--enqueue", action="append", default=[], metavar="FILE",
                    help="run: configs (a YAML/JSON file, as autopeft search --enqueue) a new study runs after the "
                         "baselines and before its start-up design; repeatable")
    ap.add_argument("--no-baselines", action="store_true",
                    help="run: no hand-designed baselines first (a new study's default since session 11), as the runs "
                         "recorded before it: the same random start-up design per seed")
    ap.add_argument("--json", help="report: write the figures here; compare: the first side's report JSON (several: A,B)")
    ap.add_argument("--against", help="compare: the second side's report JSON (e.g. GPSampler's, same seeds; several: A,B)")
    ap.add_argument("--goal", type=float, default=0.5, help="compare: the collapse-share ratio asked for (default 0.5)")
    ap.add_argument("--boot", type=int, default=2000, help="compare: seed resamples (default 2000)")
    ap.add_argument("--startup", type=int, default=8, help="report: trials before this number are the random start-up "
                                                           "design, not counted as model-based (default 8)")
    add_metric(ap, "the search's metric, e.g. auc on MRPC (default: the task's)")
    ap.add_argument("--fidelity", help="the trials' fidelity, e.g. n_train=2000,epochs=2,batch_size=32,lr_scale=3 "
                                       "(default: the machine's default; a resumed study keeps its own)")
    add_quick(ap, "a tiny fidelity, in-process (with --model TINY)")
    add_sampler_knobs(ap)
    a = ap.parse_args(argv)
    a.fidelity = fidelity_arg(ap, a.fidelity)
    apply_sampler_knobs(a)
    from autopeft._quiet import quiet

    quiet()
    if a.reach is not None and a.reach_from is not None:
        ap.error("give --reach or --reach-from, not both")
    if a.cmd == "compare":
        if not a.json or not a.against:
            ap.error("compare needs --json A.json --against B.json (two report --json files)")
        if a.boot < 1 or not a.goal > 0:
            ap.error(f"compare needs --boot 1 or more and --goal above 0, got --boot {a.boot} --goal {a.goal:g}")
        try:
            return compare(a)
        except ValueError as exc:
            ap.error(str(exc))
    if a.cmd == "run":
        return run(a)
    try:
        return report(a)
    except ValueError as exc:
        ap.error(str(exc))


if __name__ == "__main__":
    main()
