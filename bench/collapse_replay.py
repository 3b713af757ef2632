"""Replay a parameter floor for the sampler's model-based proposals on recorded real searches (tried in session 13 and
rejected: BENCHMARKS.md "Tried and rejected: a parameter floor"; the rule: once a trial collapsed, no proposal under
the smallest learner's parameter count / STEP).

For every model-based trial of each study (one proposed once at least ``--startup`` trials had finished), the floor is
what the trials finished before it started give: the smallest learner's parameter count / ``--step``, once one of
them collapsed.  The report
counts the model-based trials under that floor among those that collapsed (the rule would have skipped them) and
among those that learned (the cost: configs the rule would have kept the search from).  A replay of what was proposed,
not a search: a skipped proposal would have been replaced by another.

    python -m bench.collapse_replay --storage sqlite:///bench/tables/confirm-sst2-collapse-bal.db \
        --storage sqlite:///bench/tables/confirm-sst2-collapse-running.db --step 1.5
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import collapsed as is_collapsed


def replay(storage: str, step: float, startup: int, only: str) -> tuple[list[Any], list[Any]]:
    """(collapsed, learned) model-based trials of every study in ``storage`` whose name holds ``only``, each as
    (study, number, score, params, under the floor)."""
    import optuna

    from autopeft.api import load_study

    col: list[Any] = []
    learned: list[Any] = []
    for s in optuna.get_all_study_summaries(storage):
        if only not in s.study_name:
            continue
        res = load_study(s.study_name, storage)
        chance = float(res.ref_point[0])
        trials = sorted(res.complete_trials(), key=lambda t: t.number)
        size = {t.number: float(t.user_attrs.get("params") or t.values[1]) for t in trials}
        for t in trials:
            done = [o for o in trials if o.datetime_complete <= t.datetime_start]
            if len(done) < startup:  # a start-up proposal
                continue
            learners = [size[o.number] for o in done if not is_collapsed(o.values[0], chance)]
            # as the sampler: no floor before a trial collapsed, nor before one learned
            under = 0 < len(learners) < len(done) and size[t.number] < min(learners) / step
            row = (s.study_name, t.number, round(t.values[0], 4), int(size[t.number]), under)
            (col if is_collapsed(t.values[0], chance) else learned).append(row)
    return col, learned


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--storage", action="append", required=True, help="an Optuna storage URL (repeatable)")
    ap.add_argument("--step", type=float, default=1.5, help="the floor: smallest learner's params / STEP")
    ap.add_argument("--startup", type=int, default=8, help="trials finished before the first model-based proposal")
    ap.add_argument("--only", default="autopeft", help="studies whose name holds this (default: autopeft's)")
    a = ap.parse_args(argv)
    if not a.step > 0:
        ap.error(f"--step must be a number > 0, got {a.step:g}")
    from pathlib import Path

    for st in a.storage:  # reading a SQLite URL that names no file would create an empty database there
        if st.startswith("sqlite:///") and not Path(st[len("sqlite:///"):]).is_file():
            ap.error(f"--storage {st}: no such database file")
    col: list[Any] = []
    learned: list[Any] = []
    for st in a.storage:
        c, lr = replay(st, a.step, a.startup, a.only)
        col += c
        learned += lr
    n_col, n_learn = sum(r[-1] for r in col), sum(r[-1] for r in learned)
    print(f"floor = smallest learner / {a.step:g}: under it {n_col} of {len(col)} model-based trials that collapsed, "
          f"{n_learn} of {len(learned)} that learned")
    for r in learned:
        if r[-1]:
            print(f"  a learner under the floor: {r[0]} trial {r[1]}: score {r[2]}, {r[3]:,} params")
    return {"collapsed": col, "learned": learned}


if __name__ == "__main__":
    main()
