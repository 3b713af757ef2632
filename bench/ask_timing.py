"""Seconds per ask() at N finished trials, for autopeft's sampler and Optuna's GPSampler (BoTorchSampler on request),
side by side in one run.

The study is pre-filled with N trials (random candidates of the space, values from a deterministic toy landscape on
MiniLM's real shapes).  The landscape exercises the whole default sampler: about a third of the configs collapse (they
score the chance level, so the collapse model is fitted), and every 8th pre-filled trial was stopped early by the
pruner (PRUNED with its rung score, which the score model learns from).  Each sampler then proposes ``--asks`` more
with one trial always in flight (two workers: the next proposal is asked before the last one is told, so the kriging
believer path runs too); the samplers take turns ask by ask, so a change of machine load hits them alike.

``--load K`` starts K processes that train a small torch MLP (one thread each) for the whole run: the figure "while
both cores train" is ``--load 2`` on a two-core machine.  The machine's load average before and after is printed, and
beside each median wall time the median CPU seconds of this process (every thread's) per ask: on a shared machine the
wall time depends on the other work, the CPU time much less.

    python -m bench.ask_timing --trials 100 --asks 10 [--space mixed] [--samplers autopeft,gp] [--load 2] [--quick]
    python -m bench.ask_timing --trials 1000 --asks 5
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from autopeft._quiet import quiet
from autopeft.builder import ModelInfo, count_params, model_info
from autopeft.candidate import Candidate
from autopeft.contract import PRUNED
from autopeft.proposer import make_sampler
from autopeft.space import SearchSpace
from autopeft.storage import A
from bench.common import add_quick, add_sampler_knobs, add_space, apply_sampler_knobs

#: the chance level of the toy task (the study's reference score)
CHANCE = 0.5
#: configs with fewer trainable parameters than this (or sparser than COLLAPSE_SPARSITY) score CHANCE
COLLAPSE_PARAMS = 10_000
COLLAPSE_SPARSITY = 0.9
#: every this-many-th pre-filled trial is stored as stopped by the pruner
PRUNED_EVERY = 8


def toy_values(c: Candidate, info: ModelInfo) -> list[float]:
    """[score, params, memory MiB]: more parameters and upper layers help; small or very sparse configs collapse."""
    p = count_params(c, info)
    L = info.arch.num_layers
    score = 0.55 + 0.04 * math.log10(max(p, 1)) + 0.02 * sum(1 for i in c.layers if i >= L // 2)
    if p < COLLAPSE_PARAMS or float(c.sparsity.get("fraction", 0.0)) > COLLAPSE_SPARSITY:
        score = CHANCE
    mem = 100.0 + 40.0 * ((L - min(c.layers)) if c.layers else 0) + p * 16 / 2**20
    return [score, float(p), mem]


def _train_forever(seed: int) -> None:
    """A load process: one torch thread training a small MLP until killed."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x, y = torch.randn(32, 384), torch.randint(0, 2, (32,))
    while True:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def start_load(k: int) -> list[Any]:
    """K training processes (spawned, daemonic: they end with this one)."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_train_forever, args=(i,), daemon=True) for i in range(k)]
    for p in procs:
        p.start()
    time.sleep(3.0 if k else 0.0)  # let them import torch and start training
    return procs


def prefill(study: optuna.Study, b: Any, cands: list[Candidate], info: ModelInfo) -> None:
    """The N trials as finished (without the sampler): COMPLETE, or PRUNED with a rung score for every 8th."""
    dists = b.distributions()
    for i, c in enumerate(cands):
        params = b.optuna_params(c)
        v = toy_values(c, info)
        common = {"params": params, "distributions": {k: dists[k] for k in params}}
        if i % PRUNED_EVERY == PRUNED_EVERY - 1:
            attrs = {"candidate": c.to_dict(), A.STATUS: PRUNED, A.SCORE: max(CHANCE, v[0] - 0.03)}
            study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=attrs, **common))
        else:
            study.add_trial(optuna.trial.create_trial(values=v, user_attrs={"candidate": c.to_dict()}, **common))


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Median seconds per ask() by sampler name."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100, help="finished trials in the study before the timed asks")
    ap.add_argument("--asks", type=int, default=10, help="timed asks per sampler")
    add_space(ap)
    ap.add_argument("--samplers", default="autopeft,gp", help="comma-separated (autopeft, gp, botorch, ...)")
    ap.add_argument("--load", type=int, default=0, help="processes training a small torch model meanwhile")
    ap.add_argument("--out", help="write the figures as JSON here")
    add_sampler_knobs(ap)
    add_quick(ap)
    a = ap.parse_args(argv)
    apply_sampler_knobs(a)
    if a.quick:
        a.trials, a.asks, a.samplers = 12, 2, "autopeft,gp"
    quiet()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    info = model_info(None, 2)
    b = SearchSpace.load(a.space).bind(info.arch.num_layers)
    ref = [CHANCE, -math.log10(info.base_params), -math.log10(2000.0)]
    rng = np.random.default_rng(0)
    cands: list[Candidate] = []
    seen: set[str] = set()
    while len(cands) < a.trials:
        c = b.decode(b.random_vector(rng))
        if c.key not in seen:
            seen.add(c.key)
            cands.append(c)
    collapsed = sum(toy_values(c, info)[0] == CHANCE for c in cands) / max(1, len(cands))
    names = a.samplers.split(",")
    studies: dict[str, optuna.Study] = {}
    for name in names:
        sampler = make_sampler(name, 0, b, ["score", "params", "memory"], ref, lambda c: count_params(c, info),
                               n_startup=5)
        studies[name] = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
        prefill(studies[name], b, cands, info)
    load0 = os.getloadavg()
    procs = start_load(a.load)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}  # this process's CPU seconds (every thread's)
    in_flight: dict[str, tuple[Any, Candidate] | None] = {n: None for n in names}
    info_last: dict[str, Any] = {}
    try:
        for _ in range(a.asks):
            for name in names:  # turns: each sampler asks once per round
                study = studies[name]
                t0, c0 = time.perf_counter(), time.process_time()
                t = study.ask()
                cc = b.suggest(t)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                t.set_user_attr("candidate", cc.to_dict())
                prev, in_flight[name] = in_flight[name], (t, cc)
                if prev is not None:  # one trial stays in flight, as with two workers
                    study.tell(prev[0], toy_values(prev[1], info))
                info_last[name] = getattr(study.sampler, "last_info", {})
    finally:
        for p in procs:
            p.kill()
            p.join()
    load1 = os.getloadavg()
    out = {n: float(np.median(v)) for n, v in times.items()}
    for n, v in times.items():
        extra = {k: info_last[n][k] for k in ("collapse_skipped", "pool") if k in info_last.get(n, {})}
        print(f"{n:10s} at {a.trials} trials: median {np.median(v):.3f} s, mean {np.mean(v):.3f} s, "
              f"min {np.min(v):.3f}, max {np.max(v):.3f} per ask() over {len(v)}; CPU median "
              f"{np.median(cpu[n]):.3f} s  {extra or ''}", flush=True)
    print(f"space {a.space} ({b.size} encoded dims); {collapsed:.0%} of the pre-filled configs collapsed, every "
          f"{PRUNED_EVERY}th pruned; --load {a.load}; load average {load0[0]:.1f} before, {load1[0]:.1f} after "
          f"({os.cpu_count()} CPUs)", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"trials": a.trials, "asks": a.asks, "load": a.load, "loadavg": [load0[0], load1[0]],
                       "cpus": os.cpu_count(), "seconds": times, "cpu_seconds": cpu,
                       "median": out, "cpu_median": {n: float(np.median(v)) for n, v in cpu.items()}}, f, indent=1)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
