"""Hand-off commands: dashboard, plot, export, train. Registered here, run lazily."""

from __future__ import annotations

import argparse
import socket
from typing import Any, Callable


def add_commands(sub: Any, study_args: Callable[..., None]) -> None:
    d = sub.add_parser("dashboard", help="open optuna-dashboard on a study's storage")
    d.add_argument("--study")
    d.add_argument("--storage")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)

    p = sub.add_parser("plot", help="Pareto front (HTML + PNG) and hypervolume over trials")
    study_args(p)
    p.add_argument("-o", "--output", default="plots")

    e = sub.add_parser("export", help="write a found config for peft / autopeft training")
    study_args(e)
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--trial", type=int)
    g.add_argument("--best", action="store_true")
    e.add_argument("--max-params")
    e.add_argument("--max-memory")
    e.add_argument("-o", "--output", required=True)

    t = sub.add_parser("train", help="train an exported config at full budget and save it")
    t.add_argument("--config", required=True, help="a directory written by 'autopeft export'")
    t.add_argument("--model", help="default: the model the config was found with")
    t.add_argument("--task", help="default: the task the config was found with")
    t.add_argument("--data-dir")
    t.add_argument("--train-file")
    t.add_argument("--validation-file")
    t.add_argument("--metric", help="score the trained model with this metric (default: the search's), e.g. f1 after "
                                     "a search ranked by auc")
    t.add_argument("--epochs", type=float, default=3.0)
    t.add_argument("--n-train", type=int, help="training rows (default: all)")
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    t.add_argument("-o", "--output", required=True)


def run(args: argparse.Namespace) -> int:
    return {"dashboard": cmd_dashboard, "plot": cmd_plot, "export": cmd_export, "train": cmd_train}[args.cmd](args)


def _storage_of(args: argparse.Namespace) -> str:
    from autopeft.errors import ConfigError
    from autopeft.storage import default_storage, load_optuna_study

    if args.storage is None and args.study is None:
        raise ConfigError("pass --study NAME or --storage URL")
    if args.study is not None:
        load_optuna_study(args.study, args.storage)  # exists? (never creates)
        return args.storage or default_storage(args.study)
    import optuna

    from autopeft.storage import get_storage

    optuna.get_all_study_summaries(get_storage(args.storage, create=False))
    return args.storage


def cmd_dashboard(args: argparse.Namespace) -> int:
    from autopeft.errors import ConfigError

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    url = _storage_of(args)
    with socket.socket() as s:
        try:
            s.bind((args.host, args.port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; pass another --port") from None
    from optuna_dashboard import run_server

    from autopeft.storage import get_storage

    print(f"autopeft: dashboard for {url} at http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    run_server(get_storage(url, create=False), host=args.host, port=args.port)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from autopeft import api
    from autopeft.plot import plot_study

    paths = plot_study(api.load_study(args.study, args.storage), args.output)
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autopeft import api

    found = api.found_config(args.study, args.storage, None if args.best else args.trial, args.max_params, args.max_memory)
    d = api.export(found, args.output)
    print(f"exported {found.candidate.summary()} to {d}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from autopeft import api
    from autopeft.errors import ConfigError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    res = api.train(args.config, args.output, model=args.model, task=args.task, data_dir=args.data_dir,
                    train_file=args.train_file, validation_file=args.validation_file, metric=args.metric,
                    epochs=args.epochs, n_train=args.n_train, max_length=args.max_length, batch_size=args.batch_size,
                    seeds=seeds)
    print(f"{res['summary']}: {res['metric']} on validation {res['mean']:.4f} ± {res['std']:.4f} over seeds {seeds}; "
          f"saved to {args.output}")
    return 0
