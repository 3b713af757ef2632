"""Printing a study's front or trials as a table, JSON or CSV."""

from __future__ import annotations

import json
from typing import Any, Sequence


def front_table(df: Any, objectives: Sequence[str]) -> Any:
    out = df.copy()
    if "params" in out:
        out["params"] = out["params"].map(lambda v: f"{int(v):,}" if v == v and v is not None else "")
    if "memory" in out:
        out = out.rename(columns={"memory": "memory_mib"})
    return out.drop(columns=[c for c in ("candidate",) if c in out])


def print_front(res: Any, fmt: str, all_trials: bool = False) -> None:
    import pandas as pd

    df = res.trials if all_trials else res.pareto_front
    if fmt in ("json", "csv"):  # machine-readable: counts as integers, units in the names
        d = df.rename(columns={"memory": "memory_mib", "time": "time_s"})
        if "params" in d:
            d["params"] = d["params"].astype("Int64")
    if fmt == "json":
        print(d.to_json(orient="records", indent=2))
    elif fmt == "csv":
        if "candidate" in d:
            d["candidate"] = d["candidate"].map(json.dumps)
        print(d.to_csv(index=False), end="")
    else:
        with pd.option_context("display.max_rows", 500, "display.max_colwidth", 70, "display.width", 200,
                               "display.float_format", "{:.4g}".format):
            m = res.meta.get("metric")
            ladder = (f"; each config at the highest fidelity it reached, compared on the top rung's scale "
                      f"({res.objectives[0]}_on_top)") if res.laddered else ""
            title = "All trials" if all_trials else (f"Pareto front ({m} on the held-out search split"
                                                     f"{', lower is better' if m == 'loss' else ''}"
                                                     f"{ladder}"
                                                     f"{res.level_note()})")
            print(title)
            print(front_table(df, res.objectives).to_string(index=False) if len(df) else
                  "(no completed trials yet" + (" at this fidelity level" if res.level and not all_trials else "") + ")")
            for w in res.warnings:
                print(f"warning: {w}")

