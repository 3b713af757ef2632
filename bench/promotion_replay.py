"""Replay ``--promote``'s rule on committed promotion studies: which rung-0 configs go up, in order, with and without
the chance margin (:func:`autopeft.promotion.chance_margin`), and with the margin and the study's seeded configs (its
hand-designed baselines) ranked first (:func:`autopeft.promotion.seeded_keys`), beside what the study itself promoted.

The replay takes each study's rung-0 evaluations in the order they finished and, after each, promotes while the rule
says so (no worker limit, no rate steps: it compares the rules' choices, not the searches they would have become).
A trial number with a "b" is a seeded baseline.

    python -m bench.promotion_replay bench/tables/confirm-mrpc-refine.db bench/tables/confirm-sst2-refine.db
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autopeft.pareto import to_max
from autopeft.promotion import Evaluated, chance_margin, next_promotion, seeded_keys
from autopeft.storage import A, rung_of


def replay(study: Any, margin: float, seeded_first: bool = False) -> list[int]:
    """The trial numbers of the rung-0 configs promoted to rung 1, in order, with ``margin`` above chance
    (``seeded_first``: the study's seeded configs ranked first once eligible)."""
    from optuna.trial import TrialState

    ua = study.user_attrs
    objectives, chance = ua[A.OBJECTIVES], float(ua[A.REF_POINT][0])
    base = sorted((t for t in study.trials if t.state == TrialState.COMPLETE and t.values is not None
                   and t.user_attrs.get(A.CANDIDATE_KEY) and not rung_of(t)), key=lambda t: t.datetime_complete)
    first = seeded_keys((t.user_attrs.get(A.CANDIDATE_KEY, ""), t.user_attrs.get(A.SEEDED_BY)) for t in study.trials
                        ) if seeded_first else set()
    done: list[Evaluated] = []
    held: set[tuple[str, int]] = set()
    order: list[int] = []
    for t in base:
        done.append(Evaluated(t.number, t.user_attrs[A.CANDIDATE_KEY], 0, tuple(to_max(objectives, t.values))))
        while (nxt := next_promotion(done, held, 2, chance, margin=margin, first=first)) is not None:
            held.add((nxt[0].key, nxt[1]))
            order.append(nxt[0].number)
    return order


def main(argv: list[str] | None = None) -> int:
    import optuna

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("storages", nargs="+", help="SQLite files of promotion studies")
    a = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for path in a.storages:
        if not Path(path).is_file():
            ap.error(f"no file {path}")
        url = f"sqlite:///{path}"
        for summary in optuna.get_all_study_summaries(url):
            study = optuna.load_study(study_name=summary.study_name, storage=url)
            if not study.user_attrs.get(A.LADDER):
                continue
            n_eval = int(study.user_attrs[A.FIDELITY]["n_eval"])
            score = {t.number: t.values[0] for t in study.trials if t.values}
            ran = [t.user_attrs[A.PROMOTED_FROM] for t in study.trials
                   if rung_of(t) == 1 and t.user_attrs.get(A.PROMOTED_FROM) is not None and t.values]
            without, with_margin = replay(study, 0.0), replay(study, chance_margin(n_eval))
            first = replay(study, chance_margin(n_eval), seeded_first=True)
            seeded = {t.number for t in study.trials if str(t.user_attrs.get(A.SEEDED_BY)).startswith("baseline:")}
            text = lambda ns: ", ".join(f"#{n}{'b' if n in seeded else ''} {score[n]:.3f}" for n in ns)  # noqa: E731
            print(f"{summary.study_name} ({Path(path).name}; chance {study.user_attrs[A.REF_POINT][0]:g}, margin "
                  f"{chance_margin(n_eval):.4f}){'' if without == with_margin else ': the margin changes it'}")
            print(f"  promoted in the study:  {text(ran)}")
            print(f"  replay without margin:  {text(without)}")
            print(f"  replay with the margin: {text(with_margin)}")
            print(f"  and baselines first:    {text(first)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
