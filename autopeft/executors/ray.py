"""Trials on a pool of long-lived Ray actors (``--executor ray``): a local Ray, or a cluster with ``--ray-address``.

Also the Ray helpers the Ray Tune integration shares: joining or starting Ray, and sizing the pool to what the
cluster holds.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from autopeft.contract import TrialSpec
from autopeft.errors import ConfigError
from autopeft.executors.base import DEFAULT_RUNNER, Event, Executor, load_runner


def ensure_ray(address: str | None, num_cpus: int | None, cpus_per_trial: float, gpus_per_trial: float) -> bool:
    """Check per-trial resources; start a local Ray or join ``address`` unless Ray is up. True if started here.

    A local Ray keeps Ray's own token authentication (on by default since Ray 2.5x: the token is
    ``~/.ray/auth_token``, created by Ray if missing), because its GCS server, raylet and workers listen on every
    interface (Ray 2.60 has no setting to bind them to loopback): without a token, anyone who can reach the machine
    could attach and run code.  ``RAY_AUTH_MODE=disabled`` turns it off, with a warning.  A cluster given with
    ``address`` is the user's: its own authentication applies (``RAY_AUTH_TOKEN``/``~/.ray/auth_token``)."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
                print("autopeft: warning: RAY_AUTH_MODE=disabled: the local Ray listens on every network interface "
                      "without authentication, so anyone who can reach this machine can run code on it",
                      file=sys.stderr)
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot start or join Ray{' at ' + address if address else ''}: "
                          f"{str(exc).splitlines()[0][:200]}") from None
    return True


def pool_size(workers: int | None, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Concurrent trials: ``workers`` (default: as many as fit), capped at what the cluster holds now."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    fit = int(cpus // cpus_per_trial + 1e-9)
    if gpus_per_trial > 0:
        fit = min(fit, int(gpus // gpus_per_trial + 1e-9))
    if fit < 1:
        raise ConfigError(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs, but one trial needs {cpus_per_trial:g} "
                          f"CPUs and {gpus_per_trial:g} GPUs; lower --cpus-per-trial/--gpus-per-trial or add nodes")
    if workers is not None and workers > fit:
        print(f"autopeft: --workers {workers} lowered to {fit}: the Ray cluster fits {fit} trials of "
              f"{cpus_per_trial:g} CPU / {gpus_per_trial:g} GPU at once", file=sys.stderr)
    return min(workers or fit, fit)


# ----------------------------------------------------------------------------- actor pool
def _actor_class() -> Any:
    import ray

    @ray.remote
    class TrialWorker:
        """A long-lived Ray actor: model and data stay cached between its trials."""

        def __init__(self, threads: int, runner: str) -> None:
            from autopeft._quiet import quiet

            quiet()
            import torch

            torch.set_num_threads(max(1, threads))
            self._run = load_runner(runner)

        def run(self, spec: dict[str, Any]) -> dict[str, Any]:
            return self._run(TrialSpec(**spec)).to_dict()

        def pid(self) -> int:
            return os.getpid()

    return TrialWorker


class RayExecutor(Executor):
    """Trials on a pool of long-lived Ray actors (``--executor ray``), one per worker slot.

    Why not Tune here: with Tune's Tuner + Searcher (``--executor ray-tune``) every trial pays Tune's
    per-trial bookkeeping (trial objects, result files, actor scheduling): measured here 5 s per trial,
    66% parallel efficiency on 64 x 10 s simulated trials with 8 workers (bench/ray_efficiency.py).
    An actor pool keeps the same guarantees (resources per trial with fractions, model and data loaded
    once per actor, crashed actors reported as failed trials and replaced, the driver as the only
    writer) at a few milliseconds per trial.
    """

    def __init__(self, workers: int | None = None, trial_timeout: float | None = None, address: str | None = None,
                 cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, num_cpus: int | None = None,
                 runner: str = DEFAULT_RUNNER) -> None:
        import ray

        self.started_here = ensure_ray(address, num_cpus, cpus_per_trial, gpus_per_trial)
        try:
            capacity = pool_size(workers, cpus_per_trial, gpus_per_trial)
        except BaseException:
            if self.started_here:
                ray.shutdown()
            raise
        super().__init__(capacity, trial_timeout, runner)
        self.opts = {"num_cpus": cpus_per_trial, "num_gpus": gpus_per_trial}
        self.threads = max(1, int(cpus_per_trial))
        self._cls = _actor_class()
        self._actors: dict[Any, Any] = {}  # ref -> actor running it
        # start the whole pool now (imports, torch) so that cost is paid once, before any trial
        actors = [self._new_actor() for _ in range(self.capacity)]
        start_s = float(os.environ.get("AUTOPEFT_RAY_START_S", "300"))
        try:
            ray.get([a.pid.remote() for a in actors], timeout=start_s)
        except ray.exceptions.GetTimeoutError:
            have = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
            for a in actors:
                ray.kill(a)
            if self.started_here:
                ray.shutdown()
            raise ConfigError(f"Ray could not start {self.capacity} trial workers within {start_s:g} s "
                              f"(free on the cluster: {have}); "
                              "check the cluster's free resources, or lower --workers") from None
        self._idle: list[Any] = actors

    def _new_actor(self) -> Any:
        return self._cls.options(**self.opts).remote(self.threads, self.runner)

    def _launch(self, spec: TrialSpec) -> Any | None:
        if not self._idle and len(self._actors) >= self.capacity:
            return None
        actor = self._idle.pop() if self._idle else self._new_actor()
        spec.threads = spec.threads or self.threads
        ref = actor.run.remote(spec.to_dict())
        self._actors[ref] = actor
        return ref

    def _poll(self, handles: list[Any], timeout: float) -> list[Event]:
        import ray

        from autopeft.contract import TrialResult

        ready, _ = ray.wait(handles, num_returns=len(handles), timeout=timeout)
        events = []
        for ref in ready:
            actor = self._actors.pop(ref)
            try:
                events.append(Event(ref, "result", TrialResult.from_dict(ray.get(ref))))
                self._idle.append(actor)
            except Exception as exc:  # RayActorError, worker crash, ...
                events.append(Event(ref, "died", reason=f"Ray worker failed ({type(exc).__name__}): "
                                                        "the actor crashed or was killed"))
                _kill_actor(actor)
        return events

    def _kill(self, handle: Any) -> None:
        actor = self._actors.pop(handle, None)
        if actor is not None:
            _kill_actor(actor)

    def _close(self) -> None:
        import ray

        for actor in self._idle:
            _kill_actor(actor)
        self._idle.clear()
        if self.started_here:
            ray.shutdown()


def _kill_actor(actor: Any) -> None:
    import ray

    try:
        ray.kill(actor)
    except Exception:  # already dead
        pass
