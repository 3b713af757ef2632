"""``autopeft train``: train an exported config at full budget with each seed, and save it."""

from __future__ import annotations

import argparse
from typing import Any

from autopeft.commands._args import positive_float, positive_int


def add(sub: Any) -> None:
    t = sub.add_parser("train", help="train an exported config at full budget and save it")
    t.add_argument("--config", required=True, help="a directory written by 'autopeft export'")
    t.add_argument("--model", help="default: the model the config was found with")
    t.add_argument("--task", help="default: the task the config was found with")
    t.add_argument("--data-dir", help="directory holding <task>/train.jsonl (default $AUTOPEFT_DATA_DIR)")
    t.add_argument("--train-file", help="a local JSONL/CSV training file (instead of --task)")
    t.add_argument("--validation-file")
    t.add_argument("--metric", help="score the trained model with this metric (default: the search's), e.g. f1 after "
                                     "a search ranked by auc")
    t.add_argument("--epochs", type=positive_float, default=3.0, help="epochs (default 3)")
    t.add_argument("--n-train", type=positive_int, help="training rows (default: all)")
    t.add_argument("--max-length", type=positive_int, default=128, help="max tokens (default 128)")
    t.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    t.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    t.add_argument("-o", "--output", required=True, help="directory to save the trained model in")


def run(args: argparse.Namespace) -> int:
    from autopeft import api
    from autopeft.errors import ConfigError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds[:40]!r}") from None
    res = api.train(args.config, args.output, model=args.model, task=args.task, data_dir=args.data_dir,
                    train_file=args.train_file, validation_file=args.validation_file, metric=args.metric,
                    epochs=args.epochs, n_train=args.n_train, max_length=args.max_length, batch_size=args.batch_size,
                    seeds=seeds)
    print(f"{res['summary']}: {res['metric']} on validation {res['mean']:.4f} ± {res['std']:.4f} over seeds {seeds}; "
          f"saved to {args.output}")
    return 0
