"""No budget spent on noise (issue 17): a search whose trials all score at the majority-class level stops early and
says how to make trials learn; configurations that differ only in learning rate never share the front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import autopeft
from autopeft.pareto import front_mask, non_dominated


def test_learning_rate_copies_of_one_structure_keep_one_place_on_the_front() -> None:
    # (score, -log10 params, -log10 MiB): three "head only" at chance with lr x1, x1.6, x1.9; a LoRA above them
    Y = np.array([[0.53, -3.0, -2.5], [0.53, -3.0, -2.5], [0.55, -3.0, -2.5], [0.80, -5.0, -2.8]])
    groups = ["head", "head", "head", "lora"]
    assert non_dominated(Y).tolist() == [False, False, True, True]  # the best copy dominates the others here...
    Y[2, 0] = 0.53  # ...but at one score all three are non-dominated (duplicates), and crowd the front
    assert non_dominated(Y).tolist() == [True, True, True, True]
    assert front_mask(Y, groups).tolist() == [True, False, False, True]  # one per structure, the first on a tie
    Y[1, 0] = 0.54
    assert front_mask(Y, groups).tolist() == [False, True, False, True]  # the best of the copies


def _opts(model: str, glue: Path, tmp: Path, **kw: object) -> dict:
    return dict(model=model, task="sst2", data_dir=str(glue), space="tiny", storage=f"sqlite:///{tmp / 'c.db'}",
                executor="inline", workers=1, n_startup=3, n_train=32, n_eval=64, epochs=1, max_length=24,
                batch_size=16, lr_scale=1e-6, n_trials=12, progress=False, **kw)


def test_a_search_whose_trials_all_collapse_stops_early_and_says_why(tiny_model: str, glue_dir: Path,
                                                                     tmp_path: Path) -> None:
    from autopeft.loop import COLLAPSE_STOP_MARGIN, COLLAPSE_STOP_TRIALS
    from autopeft.storage import A

    s = autopeft.open_search(study_name="flat", **_opts(tiny_model, glue_dir, tmp_path))
    res = s.run()  # learning rates x1e-6: nothing learns, every trial predicts one class
    chance = res.meta[A.CHANCE_SCORE]
    scores = [t.values[0] for t in res.complete_trials()]
    assert all(v <= chance + COLLAPSE_STOP_MARGIN for v in scores)
    assert s.stop_reason == "collapse" and COLLAPSE_STOP_TRIALS <= len(scores) < 12
    assert "stopped early: none of the" in s.stop_message and "--n-train 2000" in s.stop_message
    assert any("stopped early" in w for w in res.warnings)  # stored: show and the API say it too
    # the user may insist: the budget is then run
    s2 = autopeft.open_search(study_name="flat2", collapse_stop=False, **_opts(tiny_model, glue_dir, tmp_path))
    res2 = s2.run()
    assert s2.stop_reason is None and len(res2.complete_trials()) == 12
    with pytest.raises(autopeft.errors.ConfigError, match="collapse-stop must be true or false"):
        autopeft.open_search(study_name="flat3", collapse_stop="no", **_opts(tiny_model, glue_dir, tmp_path))
