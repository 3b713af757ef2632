"""autopeft as a Ray Tune ``Searcher``, for anyone's own ``tune.Tuner`` (as Optuna's ``OptunaSearch`` is used).

    from ray import tune
    from autopeft.integrations.ray_tune import AutoPeftSearcher, trainable

    searcher = AutoPeftSearcher.create(task="sst2", data_dir="../shared/data/glue", space="lora", n_trials=30)
    tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
               tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=4)).fit()
    searcher.result().pareto_front

The searcher proposes through autopeft's proposer and records through its study store (the driver process is the
only writer; the sampler sees Tune's running trials as pending trials, so concurrent workers get different
candidates).  A trial whose worker crashes is reported by Tune as errored and recorded failed with the reason.
``autopeft search --executor ray-tune`` runs exactly this.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from autopeft.contract import FAILED, TrialResult, TrialSpec
from autopeft.errors import ConfigError


def trainable(config: dict[str, Any]) -> None:
    """Tune function trainable: one autopeft trial, reported once. Model and data are cached per worker
    process (``functools.lru_cache`` in autopeft.builder / autopeft.trial), and Tune reuses actors."""
    from ray import tune

    from autopeft.executors.base import DEFAULT_RUNNER, load_runner

    res = load_runner(config.get("runner", DEFAULT_RUNNER))(TrialSpec(**config["spec"]))
    # one JSON string: Tune flattens nested dicts in results
    tune.report({"autopeft_result": json.dumps(res.to_dict()), "score": res.score if res.score is not None else float("nan")})


def _searcher_base() -> type:
    from ray.tune.search import Searcher

    return Searcher


def __getattr__(name: str) -> Any:  # the class needs ray at definition time; build it on first use
    if name == "AutoPeftSearcher":
        return _searcher_class()
    raise AttributeError(name)


_CLASS: list[type] = []
_STARTED: list[bool] = []  # whether measuring the reference point started Ray (then the search shuts it down)


def _searcher_class() -> type:
    if _CLASS:
        return _CLASS[0]
    Searcher = _searcher_base()

    class AutoPeftSearcher(Searcher):
        """A Tune Searcher backed by autopeft's proposer and study store (suggest -> TrialSpec, result -> store)."""

        def __init__(self, search: Any, loop: Any) -> None:
            super().__init__(metric="score", mode="max")
            self.search, self.loop = search, loop
            self.by_tune_id: dict[str, int] = {}

        def __getstate__(self) -> dict[str, Any]:
            """What Tune pickles into its experiment state: not the live study, loop and progress bar (a file handle
            cannot be pickled); a search resumes from its study (run the same command), not from Tune's state."""
            return {**self.__dict__, "search": None, "loop": None}

        @classmethod
        def create(cls, **options: Any) -> "AutoPeftSearcher":
            """A searcher for a new or resumed study, from ``autopeft.search``'s options."""
            from autopeft.config import SearchConfig
            from autopeft.session import Search

            search = Search(SearchConfig.from_options(**{**options, "executor": "ray-tune"}))
            search.reference_runner, search.driver = run_reference, run_search
            search.open()
            _, loop = search.build()
            return cls(search, loop)

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            loop = self.loop
            if loop.finished():
                return Searcher.FINISHED
            while loop.needs_more():
                spec = loop.ask()
                if spec is not None:
                    self.by_tune_id[trial_id] = spec.trial_id
                    return {"spec": spec.to_dict(), "runner": self.search.config.runner}
            if not loop.proposer.pending and loop.finished():
                return Searcher.FINISHED
            return None  # enough trials running; Tune asks again later

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            number = self.by_tune_id.pop(trial_id, None)
            started = self.loop.proposer.started(number) if number is not None else None
            if started is None:
                return
            if result is not None and "autopeft_result" in result and not error:
                res = TrialResult.from_dict(json.loads(result["autopeft_result"]))
            else:
                res = TrialResult(number, FAILED, wall_s=time.monotonic() - started,
                                  reason="Ray worker failed (crashed, killed or raised) before reporting a result")
            self.loop.complete(res)

        def result(self) -> Any:
            from autopeft.result import SearchResult

            return SearchResult(self.search.store.study, self.search.storage_url)

    _CLASS.append(AutoPeftSearcher)
    return AutoPeftSearcher


def _check_address(address: str | None) -> None:
    if address and address.startswith("ray://"):
        raise ConfigError("--executor ray-tune cannot use a ray:// (Ray Client) address: Tune must run on the cluster; "
                          "use --executor ray with ray://, or run autopeft on the head node with --ray-address auto")


def run_reference(spec: TrialSpec, ray_options: dict[str, Any], runner: str = "autopeft.trial:run_trial") -> TrialResult:
    """Measure a new study's reference point as one Ray task (Ray started or joined as for the search)."""
    import ray

    from autopeft.executors.ray import ensure_ray

    _check_address(ray_options.get("address"))
    cpus, gpus = ray_options.get("cpus_per_trial", 1.0), ray_options.get("gpus_per_trial", 0.0)
    _STARTED.append(ensure_ray(ray_options.get("address"), ray_options.get("num_cpus"), cpus, gpus))

    def _run(d: dict[str, Any]) -> dict[str, Any]:
        from autopeft.executors.base import load_runner

        return load_runner(runner)(TrialSpec(**d)).to_dict()

    return TrialResult.from_dict(ray.get(ray.remote(_run).options(num_cpus=cpus, num_gpus=gpus).remote(spec.to_dict())))


def run_search(search: Any, loop: Any) -> None:
    """Run a search's remaining trials on Ray Tune (``--executor ray-tune``)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import ray
    from ray import tune

    from autopeft.executors.ray import ensure_ray, pool_size
    from autopeft.storage import HEARTBEAT_S

    opts = search.config.ray
    _check_address(opts.get("address"))
    cpus, gpus = opts.get("cpus_per_trial", 1.0), opts.get("gpus_per_trial", 0.0)
    started_here = ensure_ray(opts.get("address"), opts.get("num_cpus"), cpus, gpus) or any(_STARTED)
    _STARTED.clear()
    try:
        workers = pool_size(search.config.workers, cpus, gpus)
        search.workers = workers
        searcher = _searcher_class()(search, loop)
        with tempfile.TemporaryDirectory(prefix="autopeft-ray-") as tmp:
            tuner = tune.Tuner(
                tune.with_resources(trainable, {"cpu": cpus, "gpu": gpus}),
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=workers,
                                            reuse_actors=True),
                run_config=tune.RunConfig(storage_path=tmp, name="autopeft", verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=0),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=None, checkpoint_at_end=False)),
            )
            with loop.proposer.heartbeats(HEARTBEAT_S / 2):
                tuner.fit()  # Tune handles Ctrl-C itself: it stops the experiment and returns
        if not loop.finished():
            loop.policy.reason = "interrupted"  # Tune stopped before the search was done: Ctrl-C
    finally:
        loop.close()
        if started_here:
            ray.shutdown()
    loop.policy.raise_for_stop()
