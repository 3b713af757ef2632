"""``autopeft dashboard``: optuna-dashboard on a study's storage (read-only use; never creates a study)."""

from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any) -> None:
    d = sub.add_parser("dashboard", help="open optuna-dashboard on a study's storage")
    d.add_argument("--study", help="a study name (its default storage), or pass --storage")
    d.add_argument("--storage", help="Optuna storage URL")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=8080, help="port (default 8080)")


def run(args: argparse.Namespace) -> int:
    from autopeft import api

    api.dashboard(args.study, args.storage, args.host, args.port,
                  on_start=lambda url: print(f"autopeft: dashboard for {url} at http://{args.host}:{args.port}/ "
                                             "(Ctrl-C to stop)", flush=True))
    return 0
