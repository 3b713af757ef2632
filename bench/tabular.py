"""Tabular PEFT benchmark: real low-cost trials recorded once, replayed in seconds.

build   Evaluates a random design of candidates from a shipped space (plus the hand-designed baselines
        that the space contains) with real low-cost trials on the default MiniLM, as an ordinary autopeft
        study (sampler `random`), so it is resumable: run it again and it continues; `--minutes` stops it
        cleanly (run it in chunks of at most ~40 minutes). `export` writes the committed table.
export  Writes bench/tables/<task>-<space>.csv: candidate JSON, summary, score, params, memory (MiB), seconds.

    python -m bench.tabular build --task sst2 --space mixed --n 120 --minutes 40
    python -m bench.tabular export --task sst2 --space mixed
    python -m bench.tabular build --task sst2 --space mixed --tag cpu --n 300   # a second table beside the first
    python -m bench.tabular build --quick --model TINY     # a tiny run for the test suite

Learning curves (issue 17): ``--curve-points N`` scores each trial's search split (its first 200 rows) at N evenly
spaced points of training, the last being the final score, so early stopping and promotion replay on the table;
``--configs CSV --first K`` evaluates the first K configs of an existing table instead of a random design (the same
configs at another fidelity: ``--fidelity``), and ``export`` writes the ``curve`` column.  The format is documented in
bench/tables/README.md.

    python -m bench.tabular build --task sst2 --space mixed --tag curves --configs bench/tables/sst2-mixed-cpu.csv \
        --first 96 --n 96 --curve-points 8 --workers 2
    python -m bench.tabular build --task sst2 --space mixed --tag curves-2000x1 --configs bench/tables/sst2-mixed-cpu.csv \
        --first 96 --n 96 --curve-points 8 --workers 2 --fidelity n_train=2000,epochs=1,batch_size=32,lr_scale=2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import (QUICK_FIDELITY, TABLES, add_chunk, add_data_dir, add_metric, add_model, add_quick,
                          add_space, add_task, fidelity_arg)


def table_name(task: str, space: str, tag: str = "") -> str:
    """``<task>-<space>`` or ``<task>-<space>-<tag>``: the CSV/JSON stem under bench/tables/."""
    return f"{task}-{space}-{tag}" if tag else f"{task}-{space}"


def study_name(task: str, space: str, tag: str = "") -> str:
    return f"table-{table_name(task, space, tag)}"


def storage_url(task: str, space: str, root: Path = TABLES, tag: str = "") -> str:
    return f"sqlite:///{root / (study_name(task, space, tag) + '.db')}"


def build(task: str, space: str, n: int, minutes: float | None, data_dir: str, workers: int, quick: bool = False,
          root: Path = TABLES, model: str | None = None, fidelity: dict | None = None, tag: str = "",
          metric: str | None = None, curve_points: int = 0, configs: list[dict] | None = None) -> int:
    from autopeft.api import open_search
    from autopeft.methods import baseline_candidates

    root.mkdir(parents=True, exist_ok=True)
    search = open_search(model=model, task=task, data_dir=data_dir, metric=metric, space=space, n_trials=n,
                         sampler="random", study_name=study_name(task, space, tag),
                         storage=storage_url(task, space, root, tag), workers=workers, seed=0,
                         timeout=minutes * 60 if minutes else None, executor="inline" if quick else "local",
                         progress=not quick, curve_points=curve_points, collapse_stop=False,
                         enqueue=tuple(configs or ()), **(fidelity or {}))
    study = search.store.study
    if not study.trials and configs is None:  # the hand-designed baselines first (those the space can express)
        for name, c in baseline_candidates(search.info.arch.num_layers).items():
            if search.bound.contains(c):
                study.enqueue_trial(search.bound.optuna_params(c), user_attrs={"baseline": name})
    res = search.run()
    done = len(res.complete_trials())
    print(f"{study_name(task, space, tag)}: {done}/{n} complete")
    return done


def export(task: str, space: str, root: Path = TABLES, tag: str = "") -> Path:
    from autopeft.api import load_study

    res = load_study(study_name(task, space, tag), storage_url(task, space, root, tag))
    df = res.trials
    df = df[df["state"] == "COMPLETE"].copy()
    df["candidate"] = df["candidate"].map(lambda c: json.dumps(c, sort_keys=True))
    stored = {t.number: t for t in res.study.get_trials(deepcopy=False)}
    df["baseline"] = df["trial"].map(lambda n: stored[n].user_attrs.get("baseline", ""))
    cols = ["trial", "summary", "baseline", "score", "params", "memory", "wall_s", "candidate"]
    curves = {n: t.user_attrs.get("curve") for n, t in stored.items()}
    df["train_s"] = df["trial"].map(lambda n: stored[n].user_attrs.get("train_s"))
    cols.insert(cols.index("wall_s") + 1, "train_s")
    if any(curves.values()):  # [[fraction of training, step, score], ...], the last at 1.0 (the final score)
        df["curve"] = df["trial"].map(lambda n: json.dumps(curves.get(n)) if curves.get(n) else "")
        cols.append("curve")
    out = root / f"{table_name(task, space, tag)}.csv"
    df[cols].rename(columns={"memory": "memory_mib"}).to_csv(out, index=False)
    meta = {k: res.meta[k] for k in ("model", "metric", "fidelity", "ref_point", "objectives", "chance_score",
                                     "base_params", "full_memory_mib", "num_layers")}
    if "curve" in cols:
        from autopeft.pruner import RUNG_EVAL_ROWS

        meta["curve_eval_rows"] = min(RUNG_EVAL_ROWS, int(res.meta["fidelity"]["n_eval"]))
    (root / f"{table_name(task, space, tag)}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out} ({len(df)} rows)")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("build", "export"))
    add_task(ap)
    add_space(ap)
    ap.add_argument("--n", type=int, default=120)
    add_chunk(ap, 40.0)
    add_data_dir(ap)
    add_quick(ap, "a tiny run (with --model TINY)")
    add_model(ap)
    ap.add_argument("--root", default=str(TABLES))
    ap.add_argument("--tag", default="", help="a second table of the same task and space: <task>-<space>-<tag>.csv "
                    "(a new study; it takes the default fidelity of the machine it starts on)")
    add_metric(ap, "the trials' metric (default: the task's), e.g. auc on MRPC, whose short trials leave F1 at the "
                   "majority class")
    ap.add_argument("--curve-points", type=int, default=0, help="score each trial at N points of training (its curve)")
    ap.add_argument("--configs", help="a table CSV whose configs are evaluated (instead of a random design)")
    ap.add_argument("--first", type=int, help="with --configs: its first K rows only")
    ap.add_argument("--fidelity", help="the trials' fidelity, e.g. n_train=2000,epochs=1,batch_size=32,lr_scale=2 "
                    "(default: the machine's)")
    a = ap.parse_args(argv)
    fidelity = fidelity_arg(ap, a.fidelity)
    configs = None
    if a.configs:
        import pandas as pd

        rows = pd.read_csv(a.configs)["candidate"].tolist()
        configs = [json.loads(c) for c in (rows[:a.first] if a.first else rows)]
    from autopeft._quiet import quiet

    quiet()
    root = Path(a.root)
    if a.cmd == "build":
        fid = {**QUICK_FIDELITY, **(fidelity or {})} if a.quick else fidelity
        n = (len(configs) if configs else 6) if a.quick else a.n
        build(a.task, a.space, n, a.minutes, a.data_dir, a.workers, a.quick, root, a.model, fid,
              a.tag, a.metric, a.curve_points, configs)
    else:
        export(a.task, a.space, root, a.tag)


if __name__ == "__main__":
    main()
