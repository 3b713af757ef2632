"""A real search with the Ray executor (local Ray, 2 CPUs, tiny model): every trial lands in the study,
no candidate runs twice, and a crashed worker's trial is recorded failed while the rest complete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from optuna.trial import TrialState

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.mark.parametrize("executor", ["ray", "ray-tune"])
def test_ray_search(executor: str, tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    from autopeft import api

    res = api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=6, study_name="ray",
                     storage=f"sqlite:///{tmp_path / 'ray.db'}", executor=executor, workers=2, n_startup=3,
                     n_train=32, n_eval=32, epochs=1, max_length=24, batch_size=16,
                     fault=lambda n: "exit" if n == 2 else None, cpus_per_trial=1.0, num_cpus=2)
    study = res.study
    comp = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(comp) == 6
    for t in comp:
        assert t.values is not None and t.user_attrs["status"] == "ok" and t.user_attrs["memory_mib"] > 0
    crashed = study.trials[2]
    assert crashed.state == TrialState.FAIL and "Ray worker failed" in crashed.user_attrs["reason"]
    keys = [t.user_attrs["candidate_key"] for t in study.trials if t.state != TrialState.PRUNED]
    assert len(keys) == len(set(keys))
    assert not study.get_trials(states=(TrialState.RUNNING,))
