"""Hand-off commands (dashboard, plot, export, train): registered here, run lazily."""

from __future__ import annotations

import argparse
from typing import Any, Callable


def add_commands(sub: Any, study_args: Callable[..., None]) -> None:
    e = sub.add_parser("export", help="write a found config for peft / autopeft training")
    study_args(e)
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--trial", type=int)
    g.add_argument("--best", action="store_true")
    e.add_argument("--max-params")
    e.add_argument("--max-memory")
    e.add_argument("-o", "--output", required=True)


def run(args: argparse.Namespace) -> int:
    if args.cmd == "export":
        from autopeft.errors import StudyError
        from autopeft.export import export_config
        from autopeft.result import FoundConfig, load_study
        from autopeft.candidate import Candidate

        res = load_study(args.study, args.storage)
        if args.best:
            found = res.best_config(args.max_params, args.max_memory)
        else:
            ts = [t for t in res.study.get_trials(deepcopy=False) if t.number == args.trial]
            if not ts or "candidate" not in ts[0].user_attrs:
                raise StudyError(f"study {res.name!r} has no trial {args.trial}")
            found = FoundConfig(Candidate.from_dict(ts[0].user_attrs["candidate"]), res.meta, ts[0])
        d = export_config(found, args.output)
        print(f"exported {found.candidate.summary()} to {d}")
        return 0
    raise SystemExit(2)
