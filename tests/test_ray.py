"""A real search with the Ray executor (local Ray, 2 CPUs, tiny model): every trial lands in the study,
no candidate runs twice, and a crashed worker's trial is recorded failed while the rest complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState


@pytest.mark.parametrize("executor", ["ray", "ray-tune"])
def test_ray_search(executor: str, tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    from autopeft import api

    res = api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=4, study_name="ray",
                     storage=f"sqlite:///{tmp_path / 'ray.db'}", executor=executor, workers=2, n_startup=3,
                     n_train=32, n_eval=32, epochs=1, max_length=24, batch_size=16,
                     fault=lambda n: "exit" if n == 2 else None, cpus_per_trial=1.0, num_cpus=2,
                     progress=executor == "ray-tune")  # Tune pickles its searcher: the bar's file handle must not go
    study = res.study
    comp = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(comp) == 4
    for t in comp:
        assert t.values is not None and t.user_attrs["status"] == "ok" and t.user_attrs["memory_mib"] > 0
    crashed = study.trials[2]
    assert crashed.state == TrialState.FAIL and "Ray worker failed" in crashed.user_attrs["reason"]
    keys = [t.user_attrs["candidate_key"] for t in study.trials if t.state != TrialState.PRUNED]
    assert len(keys) == len(set(keys))
    assert not study.get_trials(states=(TrialState.RUNNING,))


_ATTACH = """
import os, subprocess, sys
from autopeft.executors.ray import ensure_ray
import ray
assert ensure_ray(None, 1, 1.0, 0.0)  # a local Ray, started as --executor ray starts it
gcs = ray.get_runtime_context().gcs_address
probe = "from ray._raylet import GcsClient; GcsClient(address=%r).internal_kv_keys(b'', namespace=None, timeout=5); print('ATTACHED')"
for mode in ("disabled", "token"):  # a client without the token, then one with it (Ray's ~/.ray/auth_token)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}, "RAY_AUTH_MODE": mode}
    r = subprocess.run([sys.executable, "-c", probe % gcs], env=env, capture_output=True, text=True, timeout=120)
    print(mode, "ATTACHED" in r.stdout, "InvalidAuthToken" in r.stderr)
ray.shutdown()
"""


def test_a_local_ray_refuses_clients_without_its_token() -> None:
    """The Ray that autopeft starts listens on every interface (Ray 2.60 cannot bind it to loopback), so it keeps
    Ray's token authentication: a client without the token is refused, one with it attaches."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    r = subprocess.run([sys.executable, "-c", _ATTACH], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[-3:] == ["disabled False True", "token True False", ""], r.stdout
