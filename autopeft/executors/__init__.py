"""Executors run trials: they see only :class:`~autopeft.contract.TrialSpec` -> :class:`~autopeft.contract.TrialResult`.

- ``inline``: :class:`~autopeft.executors.local.InlineExecutor`, in this process, one trial at a time.
- ``local``: :class:`~autopeft.executors.local.LocalExecutor`, long-lived worker processes on this machine.
- ``ray``: :class:`~autopeft.executors.ray.RayExecutor`, a pool of long-lived Ray actors.
- ``ray-tune`` is not an executor: Ray Tune drives the trials through :mod:`autopeft.integrations.ray_tune`.
- :class:`~autopeft.executors.simulated.SimulatedExecutor` answers specs without training (benchmarks, tests).
"""

from __future__ import annotations

from typing import Any

from autopeft.errors import ConfigError
from autopeft.executors.base import DEFAULT_RUNNER, Executor

_RAY_OPTIONS = ("address", "cpus_per_trial", "gpus_per_trial", "num_cpus")


def make_executor(name: str, workers: int | None = None, trial_timeout: float | None = None,
                  runner: str = DEFAULT_RUNNER, **options: Any) -> Executor:
    """The executor called ``name``; an option it does not take is an error, never silently dropped."""
    unknown = sorted(set(options) - set(_RAY_OPTIONS)) if name == "ray" else sorted(options)
    if unknown:
        raise ConfigError(f"executor {name!r} takes no option {unknown[0]!r}"
                          + (f"; it takes {', '.join(_RAY_OPTIONS)}" if name == "ray" else ""))
    if name == "inline":
        from autopeft.executors.local import InlineExecutor

        return InlineExecutor(trial_timeout, runner)
    if name == "local":
        from autopeft.executors.local import LocalExecutor

        return LocalExecutor(workers, trial_timeout, runner=runner)
    if name == "ray":
        from autopeft.executors.ray import RayExecutor

        return RayExecutor(workers, trial_timeout, runner=runner, **options)
    raise ConfigError(f"unknown executor {name!r}; choose local, ray or inline (ray-tune runs through Ray Tune)")


__all__ = ["Executor", "make_executor", "DEFAULT_RUNNER"]
