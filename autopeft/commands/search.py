"""``autopeft search``: run or resume a search, then print its Pareto front."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from autopeft.commands._args import non_negative_float, positive_float, positive_int, seed, study_args
from autopeft.commands._output import print_front
from autopeft.config import DEFAULT_SPACE, METRICS, TASK_TYPES, hub_task
from autopeft.contract import CLASS_WEIGHTS, DTYPES
from autopeft.pruner import PRUNERS

#: options passed to the API under the same name
_SAME = ("model", "task", "data_dir", "train_file", "validation_file", "text_columns", "label_column", "metric", "task_type", "space",
         "sampler", "storage", "objectives", "max_params", "max_memory", "n_train", "n_eval", "epochs", "max_length",
         "batch_size", "memory_batch_size", "lr_scale", "dtype", "gradient_checkpointing", "class_weights", "head_lr", "workers", "executor", "seed", "timeout", "trial_timeout",
         "max_failures", "collapse_stop", "escalate", "pruner", "curve_points", "promote", "promote_fraction", "promote_lr_scale", "refine_rate", "n_startup", "learn_weight", "trust_remote_code", "enqueue", "warm_start",
         "layers_pattern", "target_modules")


def add(sub: Any) -> None:
    s = sub.add_parser("search", help="run or resume a search")
    s.add_argument("--spec", help="a study spec: a YAML file of these options (e.g. studies/sst2-lora.yaml); "
                                  "options on the command line override it")
    s.add_argument("--model", default=None, help="HF model id or local directory (default: the packaged all-MiniLM-L6-v2)")
    s.add_argument("--task", default="sst2", help="task name under --data-dir, or a HF datasets name (default sst2)")
    s.add_argument("--data-dir", default=None, help="directory holding <task>/train.jsonl (default $AUTOPEFT_DATA_DIR)")
    s.add_argument("--dataset", help="a Hugging Face datasets name, as in transformers' examples (instead of --task)")
    s.add_argument("--dataset-config", help="its configuration, e.g. --dataset glue --dataset-config sst2")
    s.add_argument("--train-file", help="a local JSONL, JSON, CSV, TSV or Parquet training file (instead of --task)")
    s.add_argument("--validation-file")
    s.add_argument("--text-columns", help="comma-separated text columns (default: inferred)")
    s.add_argument("--label-column", help="label column (default: inferred)")
    s.add_argument("--task-type", choices=TASK_TYPES, help="classification, causal-lm or seq2seq (default: inferred: no "
                   "label column but a prompt/response pair such as GSM8K's question/answer, or one text column, is "
                   "causal-lm; the pair is seq2seq on an encoder-decoder such as T5)")
    s.add_argument("--metric", choices=METRICS, help="task metric (default: GLUE's for the task, else from the labels); "
                                                     "auc (binary tasks): threshold-free, for tasks where short trials "
                                                     "predict only the majority class")
    s.add_argument("--space", default=DEFAULT_SPACE, help=f"shipped space name or a YAML path (default {DEFAULT_SPACE})")
    s.add_argument("--trials", type=positive_int, default=30, help="complete trials the study holds when done (default 30)")
    s.add_argument("--sampler", default="autopeft", help="autopeft (default), random, tpe, nsga2, gp, botorch")
    study_args(s, required=False)
    s.add_argument("--objectives", default="score,params,memory", help="comma-separated; score first (also: time)")
    s.add_argument("--max-params", help="budget: a count, or a percentage of the base model like 0.5%%")
    s.add_argument("--max-memory", help="budget in MiB, or with a unit like 1.5GiB")
    s.add_argument("--n-train", type=positive_int, help="training rows per trial (default 600 on CPU, 2000 on GPU; "
                   "causal LM 64 / 1000)")
    s.add_argument("--n-eval", type=positive_int, help="held-out search rows scored per trial (default 500; "
                   "causal LM 32 on CPU, 200 on GPU)")
    s.add_argument("--epochs", type=positive_float, help="epochs per trial (default 2; causal LM 1)")
    s.add_argument("--max-length", type=positive_int, help="max tokens (default 128, causal LM 256; "
                   "capped at the model's limit)")
    s.add_argument("--batch-size", type=positive_int, help="batch size of the trials (default 8 on CPU, 32 on "
                   "GPU; causal LM 4 / 8)")
    s.add_argument("--memory-batch-size", type=positive_int,
                   help="batch the memory objective is reported for (default 32, causal LM 8; whatever the trial batch)")
    s.add_argument("--dtype", choices=DTYPES, help="the base model's dtype in trials (default float32; adapters stay "
                   "float32; bfloat16 halves the weights' memory, and runs on CPU too)")
    s.add_argument("--class-weights", choices=("auto", *CLASS_WEIGHTS),
                   help="classification loss weights of the trials: balanced weighs classes evenly; auto (default) = "
                        "balanced for imbalanced tasks scored by Matthews or macro-F1 (short trials of those settle on "
                        "the majority class), else none")
    s.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute activations in backward in trials: less memory (counted in the memory objective), "
                        "more time")
    s.add_argument("--lr-scale", type=positive_float,
                   help="multiply every learning rate of the trials (default 2 on CPU, 1 on GPU; setting any of --n-train, --epochs, --batch-size, --lr-scale drops the CPU preset: the rest take the GPU values)")
    s.add_argument("--head-lr", type=non_negative_float,
                   help="the classification head's learning rate in trials when the methods' own rate is lower, before "
                        "the config's multiplier and --lr-scale (default 0.01 for classification; 0: the methods' rate, as at full "
                        "budget)")
    s.add_argument("--workers", type=positive_int, help="concurrent trials (default: number of cores)")
    s.add_argument("--executor", default="local", help="local (default), ray (actor pool), ray-tune (Tune Tuner + Searcher), inline")
    s.add_argument("--ray-address", help="join a Ray cluster (ray://host:10001 or auto)")
    s.add_argument("--cpus-per-trial", type=positive_float, default=1.0, help="CPUs per Ray trial (default 1)")
    s.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per Ray trial, fractions allowed (default 0)")
    s.add_argument("--seed", type=seed, default=0, help="random seed of the sampler and the trials (default 0)")
    s.add_argument("--timeout", type=positive_float, help="stop cleanly after this many seconds")
    s.add_argument("--trial-timeout", type=positive_float, help="fail a trial that runs longer than this (seconds)")
    s.add_argument("--max-failures", type=positive_int, default=5, help="stop after this many failed trials in a row (default 5)")
    s.add_argument("--no-collapse-stop", dest="collapse_stop", action="store_false",
                   help="run the whole budget even when every trial so far scored at the majority-class level (by "
                        "default the search raises the trials' fidelity after 10 such trials, at most twice, then stops "
                        "and says how to make trials learn)")
    s.add_argument("--no-escalate", dest="escalate", action="store_false",
                   help="when every trial so far scored at the majority-class level, stop at once instead of raising "
                        "the trials' fidelity (rows, batch, learning rates) inside the study")
    s.add_argument("--pruner", choices=PRUNERS, default="none",
                   help="early stopping: cost-sh scores each trial at 25%% and 50%% of its training and stops one "
                        "that is behind the best third of the trials with no more params and memory at that point "
                        "(counts as a trial, stored as pruned); none (default) trains every trial to the end")
    s.add_argument("--curve-points", type=int, default=0, metavar="N",
                   help="record each trial's learning curve: its search-split score at N evenly spaced points of "
                        "training (the last is the final score; stored, and drawn by the Optuna dashboard); each point "
                        "scores 200 rows. 0 (default): none, unless --pruner needs its own points")
    s.add_argument("--promote", metavar="ROWSxEPOCHS[@BATCH],...", help="promote the best configs to higher "
                   "fidelities as they finish, e.g. 2000x1@32,allx3 (rows x epochs, optionally @ batch size, of each "
                   "rung above the study's own; all = every training row): a config goes up when it is in the best "
                   "third of its rung among the configs that cost no more; --trials counts every evaluation; the front "
                   "takes each config at its highest rung")
    s.add_argument("--promote-fraction", type=float, help="the share of a rung's configs that may go up (default 1/3)")
    s.add_argument("--promote-lr-scale", type=float, metavar="X",
                   help="the learning-rate scale of --promote's rungs (default: the study's --lr-scale); the rungs "
                        "train longer than the base rung, so a lower scale, e.g. 1 (the rates full training uses), "
                        "may rank learning rates more as full training does")
    s.add_argument("--refine-rate", choices=("none", "best", "front"), default="none",
                   help="a learning-rate line search once the start-up trials are done: best runs the config that "
                        "scores best at the top rung (the study's own fidelity without --promote) again there at its "
                        "learning rate x1.41 and /1.41, and on from whichever scores higher until neither does (within "
                        "the space's range; each counts toward --trials); front does so for every config on the top "
                        "rung's front; the front keeps the best rate of each config. none (default): no line search")
    s.add_argument("--n-startup", type=positive_int, default=8, help="random trials before the model steers (default 8)")
    s.add_argument("--learn-weight", type=non_negative_float, metavar="K",
                   help="once a trial collapsed (stayed at the majority class) and one learned, the default sampler "
                        "weighs each proposal by its chance of learning (a logistic model of the trials so far) to the "
                        "power K, choosing among the proposals within half the best expected gain. Default 10: on six "
                        "real SST-2 searches 12 of the 180 trials proposed from the model collapsed (25 with 0, "
                        "Optuna's GPSampler 21) at the same mean hypervolume at 40 trials (lower at 20, higher at 30); "
                        "0: off. The study stores it: a resume keeps the study's unless given")
    s.add_argument("--enqueue", help="configs to evaluate first, comma-separated: YAML/JSON files (a config like "
                   "autopeft_candidate.json, a list of them, or the output of 'show --format json'), export folders, "
                   "or 'baselines' (the hand-designed configs of the space's methods); default: a new study without "
                   "--warm-start runs the baselines its space can express first; 'none': nothing first")
    s.add_argument("--warm-start", help="start from another study: NAME (in --storage, or its default file) or "
                   "NAME@STORAGE_URL; the default sampler re-trains its best front config first and uses all its "
                   "trials as a prior for the first 20 trials; other samplers re-train its whole front first")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the hub (off by default)")
    s.add_argument("--layers-pattern", help="for a model whose layers autopeft cannot find: the dotted path of its "
                   "layer list, e.g. transformer.encoder.block (default: found in the module tree)")
    s.add_argument("--target-modules", help="for a model whose projections autopeft cannot find: SUB=NAME pairs, names "
                   "inside a layer, e.g. q=layer.0.SelfAttention.q,v=layer.0.SelfAttention.v,o=...,ffn_up=...,"
                   "ffn_down=... (default: found by name)")


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The API options of the parsed command line."""
    opts = {k: getattr(args, k) for k in _SAME}
    task = hub_task(args.dataset, args.dataset_config)
    if task is not None:
        opts["task"] = task
    opts.update(n_trials=args.trials, study_name=args.study, progress=not args.no_progress, trial_lines=True)
    if args.executor in ("ray", "ray-tune"):
        opts.update(address=args.ray_address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
    return opts


def run(args: argparse.Namespace) -> int:
    from autopeft import api

    t0 = time.monotonic()
    status = _isatty()  # a transient status line in a terminal (bad input must still end in exactly one line)
    if status:
        sys.stderr.write("autopeft: loading the model and data (a new study first measures full fine-tuning's memory)\r")
        sys.stderr.flush()
    try:
        s = api.open_search(**options(args))
    finally:
        if status:
            sys.stderr.write("\033[K")  # clear it: the header or the error line takes its place
            sys.stderr.flush()
    task = s.task
    print(f"autopeft: study {s.name!r} in {s.storage_url}", file=sys.stderr)
    learn = f" (learn weight {s.learn_weight:g}, band {s.learn_band:g})" if s.learn_weight is not None else ""
    what = "seq2seq" if task.is_seq2seq else "causal LM" if task.is_lm else f"{task.num_labels} labels"
    print(f"autopeft: task {task.name} ({task.n_train} train rows, {what}), "
          f"metric {task.metric} ({task.metric_reason}); space {s.space_def.name} ({s.bound.size} encoded dims); "
          f"sampler {args.sampler}{learn}; {s.workers} worker(s); fidelity {s.fidelity.to_dict()}", file=sys.stderr)
    for note in (task.label_note, s.learn_note, s.prior_note):
        if note:
            print(f"autopeft: note: {note}", file=sys.stderr)
    if s.fidelity_note and not s.resumed:
        print(f"autopeft: note: {s.fidelity_note}", file=sys.stderr)
    if task.embedded:
        print(f"autopeft: data: the demo copy of {task.name} shipped with autopeft ({task.n_train:,} training "
              "rows); pass --data-dir with the full task (or --task glue/sst2 for the Hugging Face hub)", file=sys.stderr)
    res = s.run()
    if s.stop_reason == "collapse":
        print(f"autopeft: {s.stop_message}", file=sys.stderr)
    if s.stop_reason == "timeout":
        print("autopeft: stopped at --timeout; run the same command to continue", file=sys.stderr)
    print_front(res, "table")
    n_conf, n_up = len(res.complete_trials()), res.promotions()  # --promote: a config may have several evaluations
    done = (f"{n_conf} configs complete ({n_conf + n_up} evaluations, {n_up} of them promotions)" if n_up
            else f"{n_conf} complete trials")
    n_rate = res.rate_steps()
    done += f" ({n_rate} of the configs are --refine-rate steps)" if n_rate else ""
    print(f"\n{done}{f' at fidelity level {res.level}' if res.level else ''} in "
          f"{time.monotonic() - t0:.0f} s; hypervolume {res.hypervolume():.4f}; "
          f"study {res.name!r} stored in {res.storage}")
    print(f"inspect: autopeft show --study {res.name}" + (f" --storage {args.storage}" if args.storage else ""))
    return 0


def _isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
