"""The ``autopeft`` command line. Bad input ends in one line on stderr and exit code 2.

Imports are lazy so ``main(argv)`` starts fast and tests can drive it in-process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

from autopeft.data import METRICS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def _study_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--study", required=required, help="study name")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///studies/<study>.db)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="autopeft", description="Search PEFT configurations: Pareto front of score vs parameters vs memory.")
    sub = ap.add_subparsers(dest="cmd", parser_class=_Parser)

    s = sub.add_parser("search", help="run or resume a search")
    s.add_argument("--spec", help="a study spec: a YAML file of these options (e.g. studies/sst2-lora.yaml); "
                                  "options on the command line override it")
    s.add_argument("--model", default=None, help="HF model id or local directory (default: the packaged all-MiniLM-L6-v2)")
    s.add_argument("--task", default="sst2", help="task name under --data-dir, or a HF datasets name (default sst2)")
    s.add_argument("--data-dir", default=None, help="directory holding <task>/train.jsonl (default $AUTOPEFT_DATA_DIR)")
    s.add_argument("--train-file", help="a local JSONL/CSV training file (instead of --task)")
    s.add_argument("--validation-file")
    s.add_argument("--text-columns", help="comma-separated text columns (default: inferred)")
    s.add_argument("--label-column", help="label column (default: inferred)")
    s.add_argument("--metric", choices=METRICS, help="task metric (default: GLUE's for the task, else from the labels); "
                                                     "auc (binary tasks): threshold-free, for tasks where short trials "
                                                     "predict only the majority class")
    s.add_argument("--space", default="lora", help="shipped space name or a YAML path (default lora)")
    s.add_argument("--trials", type=_positive_int, default=30, help="complete trials the study holds when done (default 30)")
    s.add_argument("--sampler", default="autopeft", help="autopeft (default), random, tpe, nsga2, gp, botorch")
    _study_args(s, required=False)
    s.add_argument("--objectives", default="score,params,memory", help="comma-separated; score first (also: time)")
    s.add_argument("--max-params", help="budget: a count, or a percentage of the base model like 0.5%%")
    s.add_argument("--max-memory", help="budget in MiB, or with a unit like 1.5GiB")
    s.add_argument("--n-train", type=_positive_int, help="training rows per trial (default 600 on CPU, 2000 on GPU)")
    s.add_argument("--n-eval", type=_positive_int, help="held-out search rows scored per trial (default 500)")
    s.add_argument("--epochs", type=_positive_float, help="epochs per trial (default 2)")
    s.add_argument("--max-length", type=_positive_int, help="max tokens (default 128, capped at the model's limit)")
    s.add_argument("--batch-size", type=_positive_int, help="batch size of the trials (default 8 on CPU, 32 on GPU)")
    s.add_argument("--memory-batch-size", type=_positive_int,
                   help="batch the memory objective is reported for (default 32, whatever the trial batch)")
    s.add_argument("--lr-scale", type=_positive_float,
                   help="multiply every learning rate of the trials (default 2 on CPU, 1 on GPU; setting any of --n-train, --epochs, --batch-size, --lr-scale drops the CPU preset: the rest take the GPU values)")
    s.add_argument("--workers", type=_positive_int, help="concurrent trials (default: number of cores)")
    s.add_argument("--executor", default="local", help="local (default), ray (actor pool), ray-tune (Tune Tuner + Searcher), inline")
    s.add_argument("--ray-address", help="join a Ray cluster (ray://host:10001 or auto)")
    s.add_argument("--cpus-per-trial", type=_positive_float, default=1.0)
    s.add_argument("--gpus-per-trial", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--timeout", type=_positive_float, help="stop cleanly after this many seconds")
    s.add_argument("--trial-timeout", type=_positive_float, help="fail a trial that runs longer than this (seconds)")
    s.add_argument("--max-failures", type=_positive_int, default=5, help="stop after this many failed trials in a row")
    s.add_argument("--n-startup", type=_positive_int, default=8, help="random trials before the model steers")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the hub (off by default)")

    sh = sub.add_parser("show", help="print a study's Pareto front")
    _study_args(sh)
    sh.add_argument("--format", choices=("table", "json", "csv"), default="table")
    sh.add_argument("--all", action="store_true", help="all trials, not only the front")

    b = sub.add_parser("best", help="print the best config under a budget as JSON")
    _study_args(b)
    b.add_argument("--max-params")
    b.add_argument("--max-memory")

    ls = sub.add_parser("list", help="list the studies in a storage")
    ls.add_argument("--storage", help="storage URL (default: every SQLite file under studies/)")

    from autopeft import cli_more

    cli_more.add_commands(sub, _study_args)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from autopeft._quiet import quiet
    from autopeft.errors import AutoPeftError

    quiet()

    try:
        args = build_parser().parse_args(expand_spec(argv))
    except _UsageError as exc:
        print(str(exc).splitlines()[0], file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.cmd is None:
        build_parser().print_help()
        return 2
    try:
        return int(_COMMANDS[args.cmd](args) or 0) if args.cmd in _COMMANDS else _more(args)
    except KeyboardInterrupt:
        print("autopeft: interrupted; completed trials are stored, run the same command to resume", file=sys.stderr)
        return 130
    except AutoPeftError as exc:
        from autopeft.loop import TrialsFailing

        print(f"autopeft: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1 if isinstance(exc, TrialsFailing) else 2


def expand_spec(argv: list[str]) -> list[str]:
    """``search --spec FILE ...``: the spec's keys become options placed before the command line's own, so the
    command line wins and every value is checked exactly as if it had been typed."""
    if not argv or argv[0] != "search" or not any(a == "--spec" or a.startswith("--spec=") for a in argv):
        return argv
    rest, path = [], None
    it = iter(argv[1:])
    for a in it:
        if a == "--spec":
            path = next(it, None)
        elif a.startswith("--spec="):
            path = a.split("=", 1)[1]
        else:
            rest.append(a)
    if not path:
        raise _UsageError("autopeft search: --spec needs a YAML file")
    from pathlib import Path

    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise _UsageError(f"autopeft search: cannot read study spec {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise _UsageError(f"autopeft search: study spec {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise _UsageError(f"autopeft search: study spec {path} must be a mapping of search options, not {type(spec).__name__}")
    search = build_parser()._subparsers._group_actions[0].choices["search"]  # type: ignore[union-attr]
    actions = {a.dest: a for a in search._actions if a.option_strings and a.dest not in ("help", "spec")}
    out: list[str] = []
    for key, value in spec.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise _UsageError(f"autopeft search: unknown key {key!r} in study spec {path}; allowed: "
                              + ", ".join(sorted(d.replace("_", "-") for d in actions)))
        act = actions[dest]
        if isinstance(act, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise _UsageError(f"autopeft search: {key!r} in study spec {path} must be true or false")
            out += [act.option_strings[0]] if value else []
        elif isinstance(value, (dict, type(None))) or isinstance(value, bool):
            raise _UsageError(f"autopeft search: {key!r} in study spec {path} must be a number, a string or a list")
        else:
            out += [act.option_strings[0], ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return ["search", *out, *rest]


def _more(args: argparse.Namespace) -> int:
    from autopeft import cli_more

    return int(cli_more.run(args) or 0)


# ----------------------------------------------------------------------------- commands
def cmd_search(args: argparse.Namespace) -> int:
    from autopeft import api

    opts = {k: getattr(args, k) for k in _SEARCH_OPTIONS}
    opts.update(n_trials=args.trials, study_name=args.study, progress=not args.no_progress)
    if args.executor in ("ray", "ray-tune"):
        opts.update(address=args.ray_address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
    t0 = time.monotonic()
    s = api.open_search(**opts)
    task = s.task
    print(f"autopeft: study {s.name!r} in {s.storage_url}", file=sys.stderr)
    print(f"autopeft: task {task.name} ({len(task.train_labels)} train rows, {task.num_labels} labels), "
          f"metric {task.metric} ({task.metric_reason}); space {s.space_def.name} ({s.bound.size} encoded dims); "
          f"sampler {args.sampler}; {s.workers} worker(s); fidelity {s.fidelity.to_dict()}", file=sys.stderr)
    res = s.run()
    if s.stop_reason == "timeout":
        print("autopeft: stopped at --timeout; run the same command to continue", file=sys.stderr)
    _print_front(res, "table")
    print(f"\n{len(res.complete_trials())} complete trials in {time.monotonic() - t0:.0f} s; hypervolume {res.hypervolume():.4f}; "
          f"study {res.name!r} stored in {res.storage}")
    print(f"inspect: autopeft show --study {res.name}" + (f" --storage {args.storage}" if args.storage else ""))
    return 0


_SEARCH_OPTIONS = ("model", "task", "data_dir", "train_file", "validation_file", "text_columns", "label_column", "metric",
                   "space", "sampler", "storage", "objectives", "max_params", "max_memory", "n_train", "n_eval", "epochs",
                   "max_length", "batch_size", "memory_batch_size", "lr_scale", "workers", "executor", "seed", "timeout",
                   "trial_timeout", "max_failures", "n_startup", "trust_remote_code")


def _front_table(df: Any, objectives: Sequence[str]) -> Any:
    out = df.copy()
    if "params" in out:
        out["params"] = out["params"].map(lambda v: f"{int(v):,}" if v == v and v is not None else "")
    if "memory" in out:
        out = out.rename(columns={"memory": "memory_mib"})
    return out.drop(columns=[c for c in ("candidate",) if c in out])


def _print_front(res: Any, fmt: str, all_trials: bool = False) -> None:
    import pandas as pd

    df = res.trials if all_trials else res.pareto_front
    if fmt == "json":
        print(df.to_json(orient="records", indent=2))
    elif fmt == "csv":
        d = df.copy()
        if "candidate" in d:
            d["candidate"] = d["candidate"].map(json.dumps)
        print(d.to_csv(index=False), end="")
    else:
        with pd.option_context("display.max_rows", 500, "display.max_colwidth", 70, "display.width", 200,
                               "display.float_format", "{:.4g}".format):
            title = "All trials" if all_trials else f"Pareto front ({res.meta.get('metric')} on the held-out search split)"
            print(title)
            print(_front_table(df, res.objectives).to_string(index=False) if len(df) else "(no completed trials yet)")
            for w in res.warnings:
                print(f"warning: {w}")


def cmd_show(args: argparse.Namespace) -> int:
    from autopeft import api

    _print_front(api.load_study(args.study, args.storage), args.format, args.all)
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from autopeft import api

    found = api.best_config(args.study, args.storage, args.max_params, args.max_memory)
    print(json.dumps(found.to_dict(), indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from autopeft import api
    from autopeft.storage import studies_dir

    rows = api.list_studies(args.storage)
    if not rows and not args.storage:
        print(f"no studies under {studies_dir()}/")
        return 0
    print(f"{'study':40s} {'complete':>8s} {'total':>6s}  storage")
    for name, n, total, url in rows:
        print(f"{name:40s} {n:8d} {total:6d}  {url}")
    return 0


_COMMANDS = {"search": cmd_search, "show": cmd_show, "best": cmd_best, "list": cmd_list}

if __name__ == "__main__":
    sys.exit(main())
