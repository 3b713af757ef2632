"""Parallel efficiency of the Ray executor with simulated trials (no training).

64 trials that each sleep 10 s (0.25 CPU each), 8 concurrent workers, the default sampler:
efficiency = ideal time (64 / 8 x 10 s = 80 s) / measured time of the trial phase. Also the fixed cost
of starting the Ray executor (ray.init + Tuner start).

    python -m bench.ray_efficiency [--trials 64 --workers 8 --sleep 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from bench.common import add_data_dir, add_model, add_quick, add_space



def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=10.0)
    ap.add_argument("--cpus-per-trial", type=float, default=0.25)
    add_space(ap)
    add_data_dir(ap)
    add_model(ap, "only its shapes are used")
    ap.add_argument("--executor", default="ray", help="ray (actor pool) or ray-tune")
    add_quick(ap)
    a = ap.parse_args(argv)
    if a.quick:
        a.trials, a.workers, a.sleep = 3, 1, 0.5
    from autopeft._quiet import quiet
    from autopeft.config import SearchConfig
    from autopeft.executors.simulated import RUNNER
    from autopeft.session import Search

    quiet()
    import ray

    pool_s = None
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        # trials that sleep --sleep seconds and train nothing (the simulated runner reads "simulate:<s>")
        search = Search(SearchConfig.from_options(
            model=a.model, task="sst2", data_dir=a.data_dir, space=a.space, n_trials=a.trials, study_name="ray-bench",
            storage=f"sqlite:///{tmp}/b.db", executor=a.executor, workers=a.workers, runner=RUNNER,
            fault=lambda n: f"simulate:{a.sleep}", cpus_per_trial=a.cpus_per_trial))
        if a.executor != "ray":  # the study and its reference point, outside the timed run (Tune starts at run())
            search.open()
        t1 = time.perf_counter()
        if a.executor == "ray":  # the pool's start-up, measured on its own
            from autopeft.executors.ray import RayExecutor

            t2 = time.perf_counter()
            RayExecutor(workers=a.workers, cpus_per_trial=a.cpus_per_trial, runner=RUNNER).shutdown()
            pool_s = time.perf_counter() - t2
            t1 = time.perf_counter()
        res = search.run()  # for ray it opens the study first, starting the actor pool: part of run_s, as before
        run_s = time.perf_counter() - t1
        trials = res.study.get_trials()
        first_start = min(t.datetime_start for t in trials).timestamp()
        last_end = max(t.datetime_complete for t in trials if t.datetime_complete).timestamp()
        phase_s = last_end - first_start
        n_ok = sum(t.state.name == "COMPLETE" for t in trials)
        sampler_s = sum(t.user_attrs.get("sampler_s", 0.0) for t in trials)
    ray.shutdown()
    ideal = a.trials / a.workers * a.sleep
    out = {"executor": a.executor, "trials": n_ok, "workers": a.workers, "ideal_s": ideal, "trial_phase_s": phase_s, "run_s": run_s,
           "efficiency": ideal / phase_s, "efficiency_incl_startup": ideal / run_s, "ray_init_s": init_s,
           "executor_startup_s": run_s - phase_s, "pool_start_s": pool_s if a.executor == "ray" else None, "sampler_s_total": sampler_s}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
