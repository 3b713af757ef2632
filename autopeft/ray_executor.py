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


def _heartbeat_callback(driver: Any) -> Any:
    """A Tune Callback that records the driver's heartbeats from Tune's event loop, so other drivers on
    the same study never take this driver's running trials for those of a dead one."""
    from ray.tune import Callback

    from autopeft.study import HEARTBEAT_S

    class Heartbeat(Callback):
        def __init__(self) -> None:
            self.last = 0.0

        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            if time.monotonic() - self.last >= HEARTBEAT_S / 2:
                driver.heartbeat()
                self.last = time.monotonic()

    return Heartbeat()


def ensure_ray(address: str | None, num_cpus: int | None, cpus_per_trial: float, gpus_per_trial: float) -> bool:
    """Check per-trial resources; start a local Ray or join ``address`` unless Ray is up. True if started here."""
    import ray

    from autopeft.errors import ConfigError

    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot start or join Ray{' at ' + address if address else ''}: "
                          f"{str(exc).splitlines()[0][:200]}") from None
    return True


def pool_size(workers: int | None, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Concurrent trials: ``workers`` (default: as many as fit), capped at what the cluster holds now."""
    import ray

    from autopeft.errors import ConfigError

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    fit = int(cpus // cpus_per_trial + 1e-9)
    if gpus_per_trial > 0:
        fit = min(fit, int(gpus // gpus_per_trial + 1e-9))
    if fit < 1:
        raise ConfigError(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs, but one trial needs {cpus_per_trial:g} "
                          f"CPUs and {gpus_per_trial:g} GPUs; lower --cpus-per-trial/--gpus-per-trial or add nodes")
    if workers is not None and workers > fit:
        import sys

        print(f"autopeft: --workers {workers} lowered to {fit}: the Ray cluster fits {fit} trials of "
              f"{cpus_per_trial:g} CPU / {gpus_per_trial:g} GPU at once", file=sys.stderr)
    return min(workers or fit, fit)


def run_with_ray(driver: Any, address: str | None = None, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
                 num_cpus: int | None = None, **_: Any) -> None:
    """Run the driver's remaining trials on Ray Tune."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import ray
    from ray import tune

    if address and address.startswith("ray://"):
        from autopeft.errors import ConfigError

        raise ConfigError("--executor ray-tune cannot use a ray:// (Ray Client) address: Tune must run on the cluster; "
                          "use --executor ray with ray://, or run autopeft on the head node with --ray-address auto")
    if driver.trial_timeout is not None:
        from autopeft.errors import ConfigError

        raise ConfigError("--trial-timeout is not supported with --executor ray-tune; use --executor ray")
    started_here = ensure_ray(address, num_cpus, cpus_per_trial, gpus_per_trial)
    try:
        workers = pool_size(getattr(driver, "workers_arg", driver.workers), cpus_per_trial, gpus_per_trial)
        driver.workers = workers
        searcher = _searcher_class()(driver)
        trainable = tune.with_resources(_trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        with tempfile.TemporaryDirectory(prefix="autopeft-ray-") as tmp:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=workers,
                                            reuse_actors=True),
                run_config=tune.RunConfig(storage_path=tmp, name="autopeft", verbose=0, callbacks=[_heartbeat_callback(driver)],
                                          failure_config=tune.FailureConfig(max_failures=0),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=None, checkpoint_at_end=False)),
            )
            tuner.fit()  # Tune handles Ctrl-C itself: it stops the experiment and returns
        if not driver.finished():
            driver.stop_reason = "interrupted"  # Tune stopped before the driver was done: Ctrl-C
    finally:
        if started_here:
            ray.shutdown()


# ----------------------------------------------------------------------------- actor pool
def _actor_class() -> Any:
    import ray

    @ray.remote
    class TrialWorker:
        """A long-lived Ray actor: model and data stay cached between its trials."""

        def __init__(self, threads: int) -> None:
            from autopeft._quiet import quiet

            quiet()
            import torch

            torch.set_num_threads(max(1, threads))

        def run(self, spec: dict[str, Any]) -> dict[str, Any]:
            return run_trial(TrialSpec(**spec)).to_dict()

        def pid(self) -> int:
            return os.getpid()

    return TrialWorker


class RayExecutor:
    """Trials on a pool of long-lived Ray actors (``--executor ray``), one per worker slot.

    Why not Tune here: with Tune's Tuner + Searcher (``--executor ray-tune``) every trial pays Tune's
    per-trial bookkeeping (trial objects, result files, actor scheduling): measured here 5 s per trial,
    66% parallel efficiency on 64 x 10 s simulated trials with 8 workers (bench/ray_efficiency.py).
    An actor pool keeps the same guarantees (resources per trial with fractions, model and data loaded
    once per actor, crashed actors reported as failed trials and replaced, the driver as the only
    writer) at a few milliseconds per trial.
    """

    def __init__(self, workers: int | None = None, trial_timeout: float | None = None, address: str | None = None,
                 cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, num_cpus: int | None = None, **_: Any) -> None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray

        self.started_here = ensure_ray(address, num_cpus, cpus_per_trial, gpus_per_trial)
        try:
            self.capacity = pool_size(workers, cpus_per_trial, gpus_per_trial)
        except BaseException:
            if self.started_here:
                ray.shutdown()
            raise
        self.trial_timeout = trial_timeout
        self.opts = {"num_cpus": cpus_per_trial, "num_gpus": gpus_per_trial}
        self.threads = max(1, int(cpus_per_trial))
        self._cls = _actor_class()
        self._idle: list[Any] = []
        self._running: dict[Any, tuple[Any, TrialSpec, float]] = {}  # ref -> (actor, spec, start)
        self._queue: list[TrialSpec] = []
        self._n_actors = 0
        # start the whole pool now (imports, torch) so that cost is paid once, before any trial
        actors = [self._cls.options(**self.opts).remote(self.threads) for _ in range(self.capacity)]
        start_s = float(os.environ.get("AUTOPEFT_RAY_START_S", "300"))
        try:
            ray.get([a.pid.remote() for a in actors], timeout=start_s)
        except ray.exceptions.GetTimeoutError:
            have = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
            for a in actors:
                ray.kill(a)
            if self.started_here:
                ray.shutdown()
            from autopeft.errors import ConfigError

            raise ConfigError(f"Ray could not start {self.capacity} trial workers within {start_s:g} s "
                              f"(free on the cluster: {have}); "
                              "check the cluster's free resources, or lower --workers") from None
        self._idle = actors
        self._n_actors = len(actors)

    def _actor(self) -> Any | None:
        if self._idle:
            return self._idle.pop()
        if self._n_actors < self.capacity:
            self._n_actors += 1
            return self._cls.options(**self.opts).remote(self.threads)
        return None

    def submit(self, spec: TrialSpec) -> None:
        self._queue.append(spec)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue:
            actor = self._actor()
            if actor is None:
                return
            spec = self._queue.pop(0)
            spec.threads = spec.threads or self.threads
            ref = actor.run.remote(spec.to_dict())
            self._running[ref] = (actor, spec, time.monotonic())

    def running(self) -> int:
        return len(self._running) + len(self._queue)

    def _drop(self, actor: Any) -> None:
        import ray

        try:
            ray.kill(actor)
        except Exception:  # already dead
            pass
        self._n_actors -= 1

    def wait(self, timeout: float | None = None) -> list[TrialResult]:
        import ray

        out: list[TrialResult] = []
        if not self._running:
            return out
        step = 1.0 if timeout is None else min(1.0, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not out:
            ready, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=step)
            now = time.monotonic()
            for ref in ready:
                actor, spec, start = self._running.pop(ref)
                try:
                    out.append(TrialResult.from_dict(ray.get(ref)))
                    self._idle.append(actor)
                except Exception as exc:  # RayActorError, worker crash, ...
                    out.append(TrialResult(spec.trial_id, FAILED, wall_s=now - start,
                                           reason=f"Ray worker failed ({type(exc).__name__}): the actor crashed or was killed"))
                    self._drop(actor)
            if self.trial_timeout is not None:
                for ref, (actor, spec, start) in list(self._running.items()):
                    if now - start > self.trial_timeout:
                        self._running.pop(ref)
                        out.append(TrialResult(spec.trial_id, FAILED, wall_s=now - start,
                                               reason=f"exceeded the per-trial timeout of {self.trial_timeout:g} s"))
                        self._drop(actor)
            self._dispatch()
            if deadline is not None and time.monotonic() >= deadline:
                break
        return out

    def shutdown(self) -> None:
        import ray

        for actor in self._idle + [a for a, _, _ in self._running.values()]:
            try:
                ray.kill(actor)
            except Exception:  # already dead
                pass
        self._idle.clear()
        self._running.clear()
        if self.started_here:
            ray.shutdown()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
