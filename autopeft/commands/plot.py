"""``autopeft plot``: the Pareto front (HTML + PNG) and hypervolume over trials."""

from __future__ import annotations

import argparse
from typing import Any

from autopeft.commands._args import study_args


def add(sub: Any) -> None:
    p = sub.add_parser("plot", help="Pareto front (HTML + PNG) and hypervolume over trials")
    study_args(p)
    p.add_argument("-o", "--output", default="plots", help="directory to write (default plots)")


def run(args: argparse.Namespace) -> int:
    from autopeft import api

    for k, p in api.plot(args.study, args.storage, args.output).items():
        print(f"{k}: {p}")
    return 0
