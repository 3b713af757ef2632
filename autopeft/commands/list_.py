"""``autopeft list``: the studies in a storage (default: every SQLite file under the studies directory)."""

from __future__ import annotations

import argparse
from typing import Any


def add(sub: Any) -> None:
    p = sub.add_parser("list", help="list the studies in a storage")
    p.add_argument("--storage", help="storage URL (default: every SQLite file under studies/)")


def run(args: argparse.Namespace) -> int:
    from autopeft import api

    rows = api.list_studies(args.storage)
    if not rows and not args.storage:
        print(f"no studies under {api.studies_dir()}/")
        return 0
    print(f"{'study':40s} {'complete':>8s} {'total':>6s}  storage")
    for name, n, total, url in rows:
        print(f"{name:40s} {n:8d} {total:6d}  {url}")
    return 0
