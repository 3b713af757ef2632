"""Run a search's trials on Ray Tune (a local Ray, or a cluster with ``--ray-address``).

Ray Tune's own machinery drives execution: a ``Tuner`` over a function trainable with per-trial
resources (fractions allowed, so small trials share a GPU), and :class:`DriverSearcher`, a Tune
``Searcher`` that asks the autopeft driver for each new trial and hands every result back to it.
The Optuna study stays the single source of truth: only the driver (this process) writes to
storage; the sampler sees Tune's running trials as pending Optuna trials, so concurrent workers
get different candidates.  A trial whose worker crashes is reported by Tune as errored and is
recorded failed with the reason; the search goes on.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from autopeft.trial import FAILED, TrialResult, TrialSpec, run_trial


def _trainable(config: dict[str, Any]) -> None:
    """Tune function trainable: one autopeft trial, reported once. Model and data are cached per worker
    process (``functools.lru_cache`` in autopeft.builder / autopeft.trial), and Tune reuses actors."""
    from ray import tune

    spec = TrialSpec(**config["spec"])
    res = run_trial(spec)
    # one JSON string: Tune flattens nested dicts in results
    tune.report({"autopeft_result": json.dumps(res.to_dict()), "score": res.score if res.score is not None else float("nan")})


def _searcher_class() -> type:
    from ray.tune.search import Searcher

    class DriverSearcher(Searcher):
        """A Tune Searcher backed by the autopeft driver (ask -> TrialSpec, result -> tell)."""

        def __init__(self, driver: Any) -> None:
            super().__init__(metric="score", mode="max")
            self.driver = driver
            self.by_tune_id: dict[str, int] = {}

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            d = self.driver
            if d.finished():
                return Searcher.FINISHED
            while d.needs_more():
                spec = d.ask_spec()
                if spec is not None:
                    self.by_tune_id[trial_id] = spec.trial_id
                    return {"spec": spec.to_dict()}
            if not d.pending and d.finished():
                return Searcher.FINISHED
            return None  # enough trials running; Tune asks again later

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            number = self.by_tune_id.pop(trial_id, None)
            if number is None or number not in self.driver.pending:
                return
            if result is not None and "autopeft_result" in result and not error:
                res = TrialResult.from_dict(json.loads(result["autopeft_result"]))
            else:
                started = self.driver.pending[number][2]
                res = TrialResult(number, FAILED, wall_s=time.monotonic() - started,
                                  reason="Ray worker failed (crashed, killed or raised) before reporting a result")
            self.driver.complete(res)

    return DriverSearcher


def run_with_ray(driver: Any, address: str | None = None, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
                 num_cpus: int | None = None, **_: Any) -> None:
    """Run the driver's remaining trials on Ray Tune."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import ray
    from ray import tune

    from autopeft.errors import ConfigError

    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    started_here = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot start or join Ray{' at ' + address if address else ''}: {str(exc).splitlines()[0][:200]}") from None
        started_here = True
    try:
        searcher = _searcher_class()(driver)
        trainable = tune.with_resources(_trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        with tempfile.TemporaryDirectory(prefix="autopeft-ray-") as tmp:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=driver.workers,
                                            reuse_actors=True),
                run_config=tune.RunConfig(storage_path=tmp, name="autopeft", verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=0),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=None, checkpoint_at_end=False)),
            )
            tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
