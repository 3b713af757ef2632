"""What a search spent: its finished evaluations at each rung, its promotions and ``--refine-rate`` steps, and the
training row-epochs of them all (rows x epochs of each evaluation's fidelity), the measure BENCHMARKS.md compares
searches by ("at no more total compute than the MRPC searches").

    python -m bench.search_cost 'confirm-mrpc-clear-0@sqlite:///bench/tables/confirm-mrpc-clear.db'
"""

from __future__ import annotations

import argparse
from typing import Any

from autopeft.result import SearchResult
from autopeft.storage import A, current_level, rung_of


def search_cost(res: SearchResult) -> dict[str, Any]:
    """Counts and row-epochs of a study's complete evaluations (of its current level); the promotions and rate steps
    as the study's result counts them (:meth:`SearchResult.promotions`, :meth:`SearchResult.rate_steps`)."""
    trials = current_level(res.complete_trials(every_rung=True), res.level)
    by_rung: dict[int, int] = {}
    row_epochs = 0.0
    for t in trials:
        by_rung[rung_of(t)] = by_rung.get(rung_of(t), 0) + 1
        fid = t.user_attrs.get(A.FIDELITY) or {}
        row_epochs += float(fid.get("n_train", 0)) * float(fid.get("epochs", 0))
    return {"evaluations": len(trials), "by_rung": dict(sorted(by_rung.items())), "promotions": res.promotions(),
            "rate_steps": res.rate_steps(), "row_epochs": round(row_epochs)}


def main(argv: list[str] | None = None) -> int:
    import optuna

    from autopeft.errors import AutoPeftError
    from autopeft.result import load_study

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", help="STUDY@STORAGE")
    a = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for spec in a.studies:
        name, sep, storage = spec.partition("@")
        if not sep or not name or not storage:
            ap.error(f"{spec!r} is not STUDY@STORAGE; give e.g. confirm-mrpc-clear-0@sqlite:///bench/tables/x.db")
        try:
            res = load_study(name, storage)
        except AutoPeftError as exc:
            ap.error(str(exc).splitlines()[0])
        c = search_cost(res)
        rungs = ", ".join(f"rung {k}: {n}" for k, n in c["by_rung"].items())
        print(f"{name}: {c['evaluations']} evaluations ({rungs}); {c['promotions']} promotions, "
              f"{c['rate_steps']} rate steps; {c['row_epochs']:,} training row-epochs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
