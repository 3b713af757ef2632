"""``autopeft export``: write a found config for peft / autopeft training."""

from __future__ import annotations

import argparse
from typing import Any

from autopeft.commands._args import study_args


def add(sub: Any) -> None:
    p = sub.add_parser("export", help="write a found config for peft / autopeft training")
    study_args(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--trial", type=int, help="the number of a COMPLETE trial")
    g.add_argument("--best", action="store_true", help="the best config under the budgets")
    p.add_argument("--max-params", help="budget for --best: a count, or a percentage of the base model like 0.5%%")
    p.add_argument("--max-memory", help="budget for --best in MiB, or with a unit like 1.5GiB")
    p.add_argument("-o", "--output", required=True, help="directory to write")


def run(args: argparse.Namespace) -> int:
    from autopeft import api

    found = api.found_config(args.study, args.storage, None if args.best else args.trial, args.max_params, args.max_memory)
    d = api.export(found, args.output)
    print(f"exported {found.candidate.summary()} to {d}")
    over = found.preferred_over if args.best else None
    loss = found.meta.get("metric") == "loss"
    within = ("" if over is None else f"trial #{over['trial']} ({over['summary']}) "
              + (f"had a loss {over['score_here'] - over['score']:.4f} lower" if loss else
                 f"scored {over['score'] - over['score_here']:.4f} higher")
              + ", less than the noise of the search rows, so ")
    if args.best and (found.seeded_by or "").startswith("baseline:"):  # the study ran it first; nothing found beat it
        name, lr = found.seeded_by.split(":", 1)[1], found.candidate.lr_multiplier
        at = "" if lr == 1.0 else f" at learning rate x{lr:.3g} (--refine-rate's line search from its default rate)"
        print(f"it is the hand-designed baseline {name}{at}, which the study ran first: "
              + (f"{within}the baseline stays the answer" if over else
                 "no config the search proposed scored higher within the budget"))
    elif over is not None:  # an --enqueue config, kept over one within the noise
        print(f"it is a config you queued ({found.seeded_by}): {within}your config stays the answer")
    print(api.describe_export(d))
    return 0
