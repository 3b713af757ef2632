"""autopeft: find the Pareto front of task score vs trainable parameters vs training memory for PEFT."""

from __future__ import annotations

from typing import Any

from autopeft.errors import AutoPeftError, ConfigError, DataError, ModelError, SpaceError, StudyError

__version__ = "0.1.0"
__all__ = ["search", "load_study", "list_studies", "best_config", "open_search", "load_config", "load_for_training", "Candidate", "SearchSpace", "run_trial", "TrialSpec", "TrialResult",
           "AutoPeftError", "ConfigError", "DataError", "ModelError", "SpaceError", "StudyError", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: importing autopeft stays cheap (the CLI starts fast)
    if name in ("search", "load_study", "list_studies", "best_config", "open_search", "load_for_training"):
        from autopeft import api

        return getattr(api, name)
    if name == "load_config":
        from autopeft.export import load_config

        return load_config
    if name == "Candidate":
        from autopeft.candidate import Candidate

        return Candidate
    if name == "SearchSpace":
        from autopeft.space import SearchSpace

        return SearchSpace
    if name in ("run_trial", "TrialSpec", "TrialResult"):
        from autopeft import trial

        return getattr(trial, name)
    raise AttributeError(f"module 'autopeft' has no attribute {name!r}")
