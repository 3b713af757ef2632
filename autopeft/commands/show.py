"""``autopeft show``: a study's Pareto front (or every trial) as a table, JSON or CSV."""

from __future__ import annotations

import argparse
from typing import Any

from autopeft.commands._args import study_args


def add(sub: Any) -> None:
    p = sub.add_parser("show", help="print a study's Pareto front")
    study_args(p)
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format (default table)")
    p.add_argument("--all", action="store_true", help="all trials, not only the front")


def run(args: argparse.Namespace) -> int:
    from autopeft import api
    from autopeft.commands._output import print_front

    print_front(api.load_study(args.study, args.storage), args.format, args.all)
    return 0
