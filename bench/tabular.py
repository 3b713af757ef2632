"""Tabular PEFT benchmark: real low-cost trials recorded once, replayed in seconds.

build   Evaluates a random design of candidates from a shipped space (plus the hand-designed baselines
        that the space contains) with real low-cost trials on the default MiniLM, as an ordinary autopeft
        study (sampler `random`), so it is resumable: run it again and it continues; `--minutes` stops it
        cleanly (run it in chunks of at most ~40 minutes). `export` writes the committed table.
export  Writes bench/tables/<task>-<space>.csv: candidate JSON, summary, score, params, memory (MiB), seconds.

    python bench/tabular.py build --task sst2 --space mixed --n 120 --minutes 40
    python bench/tabular.py export --task sst2 --space mixed
    python bench/tabular.py build --task sst2 --space mixed --tag cpu --n 300   # a second table beside the first
    python bench/tabular.py build --quick      # a tiny run for the test suite
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TABLES = ROOT / "bench" / "tables"
GLUE = ROOT.parent / "shared" / "data" / "glue"

BASELINES = {
    "lora r=8 q,v": lambda L: ({"lora": {"r": 8, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}}, list(range(L))),
    "ia3": lambda L: ({"ia3": {"targets": ["k", "v", "ffn_down"]}}, list(range(L))),
    "prefix 20": lambda L: ({"prefix": {"length": 20}}, []),
    "serial adapter 64": lambda L: ({"serial_adapter": {"size": 64, "scaling": 1.0}}, list(range(L))),
}


def table_name(task: str, space: str, tag: str = "") -> str:
    """``<task>-<space>`` or ``<task>-<space>-<tag>``: the CSV/JSON stem under bench/tables/."""
    return f"{task}-{space}-{tag}" if tag else f"{task}-{space}"


def study_name(task: str, space: str, tag: str = "") -> str:
    return f"table-{table_name(task, space, tag)}"


def storage_url(task: str, space: str, root: Path = TABLES, tag: str = "") -> str:
    return f"sqlite:///{root / (study_name(task, space, tag) + '.db')}"


def build(task: str, space: str, n: int, minutes: float | None, data_dir: str, workers: int, quick: bool = False,
          root: Path = TABLES, model: str | None = None, fidelity: dict | None = None, tag: str = "",
          metric: str | None = None) -> int:
    import optuna

    from autopeft.candidate import Candidate
    from autopeft.study import Driver, data_spec_dict

    root.mkdir(parents=True, exist_ok=True)
    drv = Driver(model=model, data=data_spec_dict(task, data_dir, None, None, None, None, metric), space=space, n_trials=n,
                 sampler="random", study_name=study_name(task, space, tag), storage=storage_url(task, space, root, tag),
                 workers=workers, seed=0, timeout=minutes * 60 if minutes else None, fidelity=fidelity,
                 executor="inline" if quick else "local", progress=not quick)
    study = drv.open()
    if not study.trials:  # the hand-designed baselines first (those the space can express)
        L = drv.info.arch.num_layers
        for name, make in BASELINES.items():
            methods, layers = make(L)
            c = Candidate.make(methods, layers)
            if drv.bound.contains(c):
                study.enqueue_trial(drv.bound.optuna_params(c), user_attrs={"baseline": name})
    res = drv.run()
    done = len(res.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    print(f"{study_name(task, space, tag)}: {done}/{n} complete")
    return done


def export(task: str, space: str, root: Path = TABLES, tag: str = "") -> Path:
    from autopeft.result import load_study

    res = load_study(study_name(task, space, tag), storage_url(task, space, root, tag))
    df = res.trials
    df = df[df["state"] == "COMPLETE"].copy()
    df["candidate"] = df["candidate"].map(lambda c: json.dumps(c, sort_keys=True))
    bl = {t.number: t.user_attrs.get("baseline", "") for t in res.study.get_trials(deepcopy=False)}
    df["baseline"] = df["trial"].map(bl)
    cols = ["trial", "summary", "baseline", "score", "params", "memory", "wall_s", "candidate"]
    out = root / f"{table_name(task, space, tag)}.csv"
    df[cols].rename(columns={"memory": "memory_mib"}).to_csv(out, index=False)
    meta = {k: res.meta[k] for k in ("model", "metric", "fidelity", "ref_point", "objectives", "chance_score",
                                     "base_params", "full_memory_mib", "num_layers")}
    (root / f"{table_name(task, space, tag)}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out} ({len(df)} rows)")
    return out


def main(argv: list[str] | None = None) -> None:
    from autopeft.data import METRICS

    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("build", "export"))
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--space", default="mixed")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--minutes", type=float, default=40.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data-dir", default=str(GLUE))
    ap.add_argument("--quick", action="store_true", help="tiny run (tiny model required via --model) for tests")
    ap.add_argument("--model")
    ap.add_argument("--root", default=str(TABLES))
    ap.add_argument("--tag", default="", help="a second table of the same task and space: <task>-<space>-<tag>.csv "
                    "(a new study; it takes the default fidelity of the machine it starts on)")
    ap.add_argument("--metric", choices=METRICS, help="the trials' metric (default: the task's), e.g. auc on MRPC, whose short trials "
                                     "leave F1 at the majority class")
    a = ap.parse_args(argv)
    from autopeft._quiet import quiet

    quiet()
    root = Path(a.root)
    if a.cmd == "build":
        fid = dict(n_train=32, n_eval=32, epochs=1, max_length=24, batch_size=16) if a.quick else None
        build(a.task, a.space, 6 if a.quick else a.n, a.minutes, a.data_dir, a.workers, a.quick, root, a.model, fid,
              a.tag, a.metric)
    else:
        export(a.task, a.space, root, a.tag)


if __name__ == "__main__":
    main()
