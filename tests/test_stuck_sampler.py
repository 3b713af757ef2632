"""A sampler that repeats itself (Optuna's GPSampler ignores the proposals the study rejects as duplicates, and given
the same trials proposes the same config) gets a random config queued after RANDOM_AFTER duplicates in a row, so the
search goes on instead of stopping at MAX_REJECTIONS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

SIM = dict(task="sst2", space="lora", n_train=32, n_eval=32, epochs=1, max_length=24, batch_size=16, n_startup=4,
           progress=False, collapse_stop=False)


class Stuck(optuna.samplers.BaseSampler):
    """Proposes the same config every time."""

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
        return optuna.samplers.RandomSampler(seed=0).sample_independent(study, trial, name, dist)


def test_a_sampler_that_repeats_itself_gets_random_configs_and_the_search_finishes(
        tiny_model: str, glue_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import autopeft
    from autopeft import proposer
    from autopeft.executors.simulated import RUNNER
    from autopeft.storage import A

    monkeypatch.setattr(proposer, "make_sampler", lambda *a, **k: Stuck())
    storage = f"sqlite:///{tmp_path / 's.db'}"
    autopeft.search(model=tiny_model, data_dir=str(glue_dir), storage=storage, study_name="s", n_trials=4,
                    executor="inline", runner=RUNNER, enqueue="none", **SIM)  # no baseline first: the sampler's own
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and len({t.user_attrs[A.CANDIDATE_KEY] for t in done}) == 4
    dups = [t for t in trials if t.user_attrs.get(A.STATUS) == "duplicate"]
    # the first config is the sampler's; each later one is random, queued after exactly RANDOM_AFTER duplicates
    assert len(dups) == 3 * proposer.RANDOM_AFTER
    assert "seeded_by" not in done[0].user_attrs
    assert all(t.user_attrs[A.SEEDED_BY].startswith("random:") for t in done[1:])


def test_without_the_random_config_the_same_sampler_stops_the_search(
        tiny_model: str, glue_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: with the fallback off, the repeating sampler ends the search with the exhausted-space error."""
    import autopeft
    from autopeft import proposer
    from autopeft.errors import StudyError
    from autopeft.executors.simulated import RUNNER

    monkeypatch.setattr(proposer, "make_sampler", lambda *a, **k: Stuck())
    monkeypatch.setattr(proposer, "RANDOM_AFTER", 10**9)
    monkeypatch.setattr(proposer, "MAX_REJECTIONS", 20)
    with pytest.raises(StudyError, match="20 proposals in a row were duplicates"):
        autopeft.search(model=tiny_model, data_dir=str(glue_dir), storage=f"sqlite:///{tmp_path / 's.db'}",
                        study_name="s", n_trials=4, executor="inline", runner=RUNNER, **SIM)
