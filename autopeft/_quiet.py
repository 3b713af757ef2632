"""Keep third-party chatter (progress bars, deprecation and experimental-feature warnings) out of autopeft's output.

Imports nothing: environment variables and warning filters only, so the CLI can call it before parsing."""

from __future__ import annotations

import os
import warnings


def quiet() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for cat in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=cat)
    warnings.filterwarnings("ignore", module=r"(transformers|peft|torch|botorch|gpytorch|linear_operator|optuna)(\..*)?")
    # optuna's ExperimentalWarning, matched by text so optuna need not be imported here
    warnings.filterwarnings("ignore", message=r".*(is experimental|is an experimental feature).*")
    warnings.filterwarnings("ignore", message=r"Heartbeat of storage is supposed to be used with Study.optimize")
