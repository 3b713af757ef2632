"""``autopeft best``: the best config of a study under a budget, as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from autopeft.commands._args import study_args


def add(sub: Any) -> None:
    p = sub.add_parser("best", help="print the best config under a budget as JSON",
                       description="The highest-scoring config within the budgets, as JSON; a config the study ran "
                                   "first (a hand-designed baseline, --enqueue) answers instead when the best scores "
                                   "less than the noise of the search rows above it (preferred_over then names the "
                                   "other).")
    study_args(p)
    p.add_argument("--max-params", help="budget: a count, or a percentage of the base model like 0.5%%")
    p.add_argument("--max-memory", help="budget in MiB, or with a unit like 1.5GiB")


def run(args: argparse.Namespace) -> int:
    from autopeft import api

    found = api.best_config(args.study, args.storage, args.max_params, args.max_memory)
    print(json.dumps(found.to_dict(), indent=2))
    return 0
