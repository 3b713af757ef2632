"""Search overhead: wall time of `autopeft search` vs the trials' own time (local executor).

overhead = span of the trial phase (first trial start -> last trial end) / (sum of trial wall times / workers) - 1,
and, given the command's total wall time (`--total-s`, e.g. from `time autopeft search ...`), the same with start-up.

    time autopeft search --data-dir ../shared/data/glue          # note the real time, e.g. 313 s
    python -m bench.overhead --study all-MiniLM-L6-v2-sst2-lora --workers 2 --total-s 313
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", required=True)
    ap.add_argument("--storage")
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--total-s", type=float, help="the command's measured end-to-end wall time")
    a = ap.parse_args(argv)
    from autopeft._quiet import quiet
    from autopeft.api import load_study

    quiet()
    res = load_study(a.study, a.storage)
    ts = [t for t in res.study.get_trials() if t.datetime_complete is not None and "wall_s" in t.user_attrs]
    trial_s = sum(t.user_attrs["wall_s"] for t in ts)
    sampler_s = sum(t.user_attrs.get("sampler_s", 0.0) for t in ts)
    span = (max(t.datetime_complete for t in ts) - min(t.datetime_start for t in ts)).total_seconds()
    ideal = trial_s / a.workers
    out = {"trials": len(ts), "sum_trial_s": round(trial_s, 1), "ideal_s": round(ideal, 1), "trial_phase_s": round(span, 1),
           "overhead_trial_phase": round(span / ideal - 1, 4), "sampler_s_total": round(sampler_s, 2)}
    if a.total_s:
        out["total_s"] = a.total_s
        out["overhead_end_to_end"] = round(a.total_s / ideal - 1, 4)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
