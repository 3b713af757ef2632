"""Mean seconds per ask() at N completed trials, for autopeft's sampler and Optuna's GPSampler / BoTorchSampler.

The study is pre-filled with N trials (random candidates of the space, values from a deterministic toy
landscape on MiniLM's real shapes); each sampler then proposes `--asks` more, each told before the next.

    python -m bench.ask_timing --trials 100 --asks 10 [--space mixed] [--samplers autopeft,gp,botorch] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import optuna

from autopeft._quiet import quiet
from autopeft.builder import count_params, model_info
from autopeft.candidate import Candidate
from autopeft.proposer import make_sampler
from autopeft.space import SearchSpace
from bench.common import add_quick, add_space


def toy_values(c: Candidate, info) -> list[float]:  # type: ignore[no-untyped-def]
    p = count_params(c, info)
    L = info.arch.num_layers
    score = 0.55 + 0.04 * math.log10(p) + 0.02 * sum(1 for i in c.layers if i >= L // 2)
    mem = 100.0 + 40.0 * ((L - min(c.layers)) if c.layers else 0) + p * 16 / 2**20
    return [score, float(p), mem]


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--asks", type=int, default=10)
    add_space(ap)
    ap.add_argument("--samplers", default="autopeft,gp,botorch")
    add_quick(ap)
    a = ap.parse_args(argv)
    if a.quick:
        a.trials, a.asks, a.samplers = 12, 2, "autopeft,gp"
    quiet()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    info = model_info(None, 2)
    b = SearchSpace.load(a.space).bind(info.arch.num_layers)
    ref = [0.5, -math.log10(info.base_params), -math.log10(2000.0)]
    rng = np.random.default_rng(0)
    seed_cands = []
    seen = set()
    while len(seed_cands) < a.trials:
        c = b.decode(b.random_vector(rng))
        if c.key not in seen:
            seen.add(c.key)
            seed_cands.append(c)
    out: dict[str, float] = {}
    for name in a.samplers.split(","):
        sampler = make_sampler(name, 0, b, ["score", "params", "memory"], ref, lambda c: count_params(c, info), n_startup=5)
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
        dists = b.distributions()
        for c in seed_cands:  # pre-fill without the sampler (as finished trials), then time the asks
            params = b.optuna_params(c)
            study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                      values=toy_values(c, info), user_attrs={"candidate": c.to_dict()}))
        times = []
        for _ in range(a.asks):
            t0 = time.perf_counter()
            t = study.ask()
            cc = b.suggest(t)
            times.append(time.perf_counter() - t0)
            t.set_user_attr("candidate", cc.to_dict())
            study.tell(t, toy_values(cc, info))
        out[name] = float(np.mean(times))
        print(f"{name:10s} mean ask() at {a.trials} trials: {out[name]:.3f} s  (space {a.space}, {b.size} encoded dims)",
              flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
