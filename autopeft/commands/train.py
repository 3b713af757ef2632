"""``autopeft train``: train an exported config at full budget with each seed, and save it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from autopeft.commands._args import non_negative_float, positive_float, positive_int


def add(sub: Any) -> None:
    t = sub.add_parser("train", help="train an exported config at full budget and save it")
    t.add_argument("--config", required=True, help="a directory written by 'autopeft export'")
    t.add_argument("--model", help="default: the model the config was found with")
    t.add_argument("--task", help="default: the task the config was found with")
    t.add_argument("--data-dir", help="directory holding <task>/train.jsonl (default $AUTOPEFT_DATA_DIR)")
    t.add_argument("--dataset", help="a Hugging Face datasets name (instead of --task)")
    t.add_argument("--dataset-config", help="its configuration, e.g. --dataset glue --dataset-config sst2")
    t.add_argument("--train-file", help="a local JSONL, JSON, CSV, TSV or Parquet training file (instead of --task)")
    t.add_argument("--validation-file")
    t.add_argument("--metric", help="score the trained model with this metric (default: the search's), e.g. f1 after "
                                     "a search ranked by auc")
    t.add_argument("--epochs", type=auto_or_number, default="auto",
                   help="epochs, or auto (default): up to 10, stopped once 2 in a row bring no better score on the "
                        "held-out tenth of the training rows (3 when there are too few rows to hold any out; with "
                        "--lr-scale auto a run still flat after 3 stops and the next scale is tried); the best "
                        "epoch is kept either way")
    t.add_argument("--n-train", type=positive_int, help="training rows (default: all)")
    t.add_argument("--max-length", type=positive_int, default=128, help="max tokens (default 128)")
    t.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    t.add_argument("--lr-scale", type=auto_or_number, default="auto",
                   help="multiply every learning rate (each method's rate x the config's multiplier) by this; auto "
                        "(default): x1, and a seed that learns nothing by the held-out rows (classification: the "
                        "majority class) trains again at x2, then x4, keeping the best (the search's own --lr-scale "
                        "is in the export's search_fidelity)")
    t.add_argument("--head-lr", type=non_negative_float, default=0.0,
                   help="the classification head's learning-rate floor before the config's multiplier and --lr-scale, "
                        "as a search's trials use (its search_fidelity in the export); default 0: the methods' rate")
    t.add_argument("--text-columns", help="comma-separated text columns (default: inferred)")
    t.add_argument("--label-column", help="label column (default: inferred)")
    t.add_argument("--task-type", choices=("classification", "causal-lm", "seq2seq"),
                   help="default: inferred from the columns (and the model: a prompt/response pair is seq2seq on T5)")
    t.add_argument("--n-eval", type=positive_int, help="score only the first N rows of the evaluation split "
                   "(default: all)")
    t.add_argument("--generate", type=int, default=None, metavar="ROWS",
                   help="causal LM, seq2seq: evaluation rows answered greedily for exact match (default: all on a "
                        "GPU, 100 on CPU; 0: none)")
    t.add_argument("--class-weights", choices=("auto", "balanced", "none"), default="auto",
                   help="classification loss weights: balanced weighs classes evenly; auto (default) = balanced for "
                        "imbalanced tasks scored by Matthews or macro-F1, as the search's trials")
    t.add_argument("--seeds", default="0", help="comma-separated seed numbers, e.g. 0,1,2 for three seeds (default 0)")
    t.add_argument("-o", "--output", required=True, help="directory to save the trained model in")
    g = t.add_argument_group("transformers Trainer")
    g.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when there is one, else cpu")
    g.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (default off)")
    g.add_argument("--fp16", action="store_true", help="float16 mixed precision, CUDA only (default off)")
    g.add_argument("--gradient-accumulation-steps", type=positive_int, default=1, help="default 1")
    g.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory (default off)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --output from its checkpoints; finished seeds are kept")
    g.add_argument("--report-to", default="none", help="none (default), or e.g. tensorboard, wandb, mlflow (installed)")
    g.add_argument("--training-args", action="append", default=[], metavar="FILE|KEY=VALUE",
                   help="any other TrainingArguments field, as KEY=VALUE (repeatable) or a JSON/YAML file of them")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (loss lines are still logged)")


def auto_or_number(text: str) -> float | str:
    """``--epochs``, ``--lr-scale``: auto, or a number > 0."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be auto or a finite number > 0, got {text[:40]}") from None


def run(args: argparse.Namespace) -> int:
    from autopeft import api
    from autopeft.errors import ConfigError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds[:40]!r}") from None
    if len(seeds) == 1 and seeds[0] > 1:  # "--seeds 3" reads like "three seeds"
        print(f"autopeft: training seed {seeds[0]} only (--seeds takes seed numbers; for {seeds[0]} seeds give "
              f"--seeds {','.join(map(str, range(seeds[0])))})", file=sys.stderr)
    from autopeft.config import hub_task

    task = hub_task(args.dataset, args.dataset_config) or args.task
    res = api.train(args.config, args.output, model=args.model, task=task, data_dir=args.data_dir,
                    train_file=args.train_file, validation_file=args.validation_file, metric=args.metric,
                    epochs=args.epochs, n_train=args.n_train, max_length=args.max_length, batch_size=args.batch_size,
                    seeds=seeds, text_columns=args.text_columns, label_column=args.label_column,
                    task_type=args.task_type, device=args.device,
                    bf16=args.bf16, fp16=args.fp16, grad_accum=args.gradient_accumulation_steps,
                    grad_ckpt=args.gradient_checkpointing, resume=args.resume, report_to=args.report_to,
                    training_args=training_args(args.training_args), progress=not args.no_progress,
                    generate=args.generate, n_eval=args.n_eval, class_weights=args.class_weights,
                    lr_scale=args.lr_scale, head_lr=args.head_lr)
    split = res.get("split", "validation")
    if res.get("label_note"):
        print(f"autopeft: note: {res['label_note']}")
    em = (f"; exact match {res['exact_match_mean']:.4f} on {res['generated_rows']} {split} rows"
          if "exact_match" in res else "")
    print(f"{res['summary']}: {res['metric']} on {split} {res['mean']:.4f} ± {res['std']:.4f}{em} over seeds {seeds} "
          f"({res.get('n_train', '?')} training rows, {res.get('holdout', 0)} of them held out to pick the epoch; on "
          f"{res.get('device', 'cpu')}); saved to {args.output}")
    if "majority" in res:  # the bar to clear: always answering the majority class
        maj = res["majority"]
        acc = "" if res["metric"] == "accuracy" else (f"; accuracy {res['accuracy_mean']:.4f} here, "
                                                       f"{maj['accuracy']:.4f} for the majority class")
        print(f"always the majority class on {split}: {res['metric']} {maj[res['metric']]:.4f}{acc}")
    runs = [(s, r) for s, r in zip(seeds, res.get("epochs_run", [])) if r and r[1] is not None]
    if runs:  # how long each seed trained and which epoch was kept
        how = (f"--epochs auto: up to {res['epochs']:g}, stopping after {res['patience']} without a better held-out "
               f"score" if res.get("patience") else f"--epochs {res['epochs']:g}")
        print(f"epochs trained (best held-out epoch kept): {', '.join(f'seed {s} {r[0]:g} ({r[1]:g})' for s, r in runs)}"
              f" ({how})")
    late = still_improving(res, seeds)
    if late:
        print(late)
    from autopeft.escalation import FLAT_LOSS_Z

    for seed, tried in zip(seeds, res.get("lr_tried", [])):
        if len(tried) > 1:  # --lr-scale auto raised the rates: say which runs were made and which was kept
            runs = ", ".join(f"x{s:g} {h:.4f}" if h is not None else f"x{s:g}" for s, h, *_ in tried)
            kept = res["lr_scales"][seeds.index(seed)]
            print(f"seed {seed}: held-out {res['metric']} by learning-rate scale {runs}; kept x{kept:g} (--lr-scale auto)")
            zs = ", ".join(f"x{s:g} {z[0]:+.1f}" for s, _, *z in tried if z and z[0] is not None)
            if zs:  # a run whose loss is not 2 standard errors below the class prior's counts as flat
                print(f"seed {seed}: held-out loss against the class prior's, in standard errors (below "
                      f"-{FLAT_LOSS_Z:g}: learned): {zs}")
    return 0


def training_args(items: list[str]) -> dict[str, Any]:
    """``--training-args`` values: KEY=VALUE (the value read as YAML: 0.1, true, [a, b]) or a JSON/YAML file of them."""
    from pathlib import Path

    from autopeft.errors import ConfigError
    from autopeft.yamlio import excerpt, load_yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" in item and not Path(item).is_file():
            key, _, value = item.partition("=")
            import yaml

            try:
                out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
            except yaml.YAMLError:
                raise ConfigError(f"--training-args: cannot read the value of {key.strip()!r}: {excerpt(value)}") from None
        else:
            try:
                d = load_yaml(item, "training arguments file", 64 * 1024)
            except ValueError as exc:
                raise ConfigError(f"--training-args: {exc}") from None
            if not isinstance(d, dict):
                raise ConfigError(f"--training-args: {item} must hold a mapping of TrainingArguments fields")
            out.update({str(k): v for k, v in d.items()})
    return out


def still_improving(res: dict, seeds: list[int]) -> str | None:
    """The line saying which seeds' best held-out epoch was their last (still learning when training ended: an MRPC
    LoRA scored Matthews 0.33 at 3 epochs, 0.45 at 6), and how to train longer; None when no seed's was."""
    late = [s for s, last in zip(seeds, res.get("best_last", [])) if last]
    if not late:
        return None
    more = (f"--epochs auto trains at most {res['epochs']:g}; --epochs N trains N, with no early stop"
            if res.get("patience") else f"--epochs, now {res['epochs']:g}")
    return (f"the best held-out {res['metric']} came in the last epoch for seed(s) {', '.join(map(str, late))}: still "
            f"improving when training ended; more epochs may score higher ({more})")
