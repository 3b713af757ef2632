"""The ``autopeft`` command line. Bad input ends in one line on stderr and exit code 2.

Imports are lazy so ``main(argv)`` starts fast and tests can drive it in-process.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from autopeft import __version__
    from autopeft.commands import COMMANDS

    ap = _Parser(prog="autopeft", description="Search PEFT configurations: Pareto front of score vs parameters vs memory.")
    ap.add_argument("--version", action="version", version=f"autopeft {__version__}")
    sub = ap.add_subparsers(dest="cmd", parser_class=_Parser)
    for module in COMMANDS.values():
        importlib.import_module(f"autopeft.commands.{module}").add(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from autopeft._quiet import quiet
    from autopeft.errors import AutoPeftError

    quiet()

    try:
        args = build_parser().parse_args(expand_spec(argv))
    except _UsageError as exc:
        print(str(exc).splitlines()[0], file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.cmd is None:
        print("autopeft: error: a command is required (search, show, best, list, export, train, plot, dashboard)",
              file=sys.stderr)
        return 2
    import importlib

    from autopeft.commands import COMMANDS

    try:
        return int(importlib.import_module(f"autopeft.commands.{COMMANDS[args.cmd]}").run(args) or 0)
    except KeyboardInterrupt:
        print("autopeft: interrupted; completed trials are stored, run the same command to resume", file=sys.stderr)
        return 130
    except AutoPeftError as exc:
        from autopeft.errors import TrialsFailing

        print(f"autopeft: error: {_first_line(exc)}", file=sys.stderr)
        return 1 if isinstance(exc, TrialsFailing) else 2
    except OSError as exc:  # a file or folder the command was pointed at (read-only, full, exists, missing)
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"autopeft: error: {exc.strerror or _first_line(exc)}{where}; check the path and its permissions",
              file=sys.stderr)
        return 2
    except Exception as exc:
        if not type(exc).__module__.startswith(("optuna", "sqlalchemy", "sqlite3", "psycopg")):
            raise
        print(f"autopeft: error: {_storage_failure(exc, getattr(args, 'storage', None))}", file=sys.stderr)
        return 2


def _storage_failure(exc: BaseException, storage: str | None) -> str:
    """One line for a storage failure: its root cause (Optuna wraps the database's own error in a generic one) and
    what to do.  Completed trials are never lost: each is committed when it finishes."""
    root: BaseException = exc
    seen = {id(root)}
    while True:  # the innermost cause: sqlite3's "database or disk is full" under sqlalchemy's and optuna's wrappers
        nxt = getattr(root, "orig", None) or root.__cause__ or root.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        root = nxt
    why = _first_line(root)
    where = f" ({storage[:200]})" if storage else ""
    low = why.lower()
    if "is full" in low or "disk full" in low or "no space" in low or "file too large" in low:
        todo = ("free some disk space, then run the same command to resume (completed trials are stored; the "
                "interrupted one is marked abandoned after the grace period)")
    elif "readonly" in low or "read-only" in low or "permission" in low:
        todo = "make the storage writable, or pass another --storage (--study for the default folder)"
    elif "malformed" in low or "not a database" in low or "corrupt" in low:
        todo = "the file is damaged: restore it from a copy, or pass another --storage"
    else:
        todo = "is the storage reachable, readable and writable? pass another --storage or --study"
    return f"the study storage{where} failed: {why}; {todo}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


#: a study spec is a short mapping of options: bounded (an alias bomb expands to billions of values)
SPEC_MAX_BYTES = 64 * 1024


def expand_spec(argv: list[str]) -> list[str]:
    """``search --spec FILE ...``: the spec's keys become options placed before the command line's own, so the
    command line wins and every value is checked exactly as if it had been typed."""
    if not argv or argv[0] != "search" or not any(a == "--spec" or a.startswith("--spec=") for a in argv):
        return argv
    rest, path = [], None
    it = iter(argv[1:])
    for a in it:
        if a == "--spec":
            path = next(it, None)
        elif a.startswith("--spec="):
            path = a.split("=", 1)[1]
        else:
            rest.append(a)
    if not path:
        raise _UsageError("autopeft search: --spec needs a YAML file")
    from autopeft.yamlio import load_yaml

    try:
        spec = load_yaml(path, "study spec", SPEC_MAX_BYTES)
    except ValueError as exc:
        raise _UsageError(f"autopeft search: {exc}") from None
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise _UsageError(f"autopeft search: study spec {path} must be a mapping of search options, not {type(spec).__name__}")
    search = build_parser()._subparsers._group_actions[0].choices["search"]  # type: ignore[union-attr]
    actions = {a.dest: a for a in search._actions if a.option_strings and a.dest not in ("help", "spec")}
    out: list[str] = []
    for key, value in spec.items():
        dest = str(key).replace("-", "_")
        if dest == "trust_remote_code":
            raise _UsageError(f"autopeft search: study spec {path} may not switch on trust-remote-code (it runs the "
                              "model's own code); pass --trust-remote-code on the command line")
        if dest not in actions:
            raise _UsageError(f"autopeft search: unknown key {str(key)[:40]!r} in study spec {path}; allowed: "
                              + ", ".join(sorted(d.replace("_", "-") for d in actions)))
        act = actions[dest]
        if isinstance(act, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise _UsageError(f"autopeft search: {key!r} in study spec {path} must be true or false")
            out += [act.option_strings[0]] if value else []
        elif isinstance(value, (dict, type(None))) or isinstance(value, bool):
            raise _UsageError(f"autopeft search: {key!r} in study spec {path} must be a number, a string or a list")
        else:
            out += [act.option_strings[0], ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return ["search", *out, *rest]


if __name__ == "__main__":
    sys.exit(main())
