"""No budget spent on noise (issue 17): a search whose trials all score at the majority-class level stops early and
says how to make trials learn; configurations that differ only in learning rate never share the front."""

from __future__ import annotations

import hashlib
import json
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

    s = autopeft.open_search(study_name="flat", escalate=False, **_opts(tiny_model, glue_dir, tmp_path))
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


# ----------------------------------------------------------------------------- raising the fidelity on collapse
def fidelity_runner(spec: object) -> object:
    """Simulated trials (nothing trained) that stay at chance (0.5) below learning rates x3 and learn above: a task the
    study's first fidelity cannot tell configs apart on.  Used as ``runner="test_collapse:fidelity_runner"``."""
    from autopeft.contract import REFERENCE
    from autopeft.executors.simulated import run

    res = run(spec)  # type: ignore[arg-type]
    if spec.purpose != REFERENCE and (spec.fidelity["lr_scale"] < 3 or FLAT_ALWAYS):  # type: ignore[attr-defined]
        res.score = 0.5
    return res


FLAT_ALWAYS = False


def test_next_fidelity_raises_rows_batch_and_learning_rates_until_it_cannot() -> None:
    from autopeft.contract import CPU_FIDELITY, LM_CPU_FIDELITY, Fidelity
    from autopeft.escalation import describe, next_fidelity

    f0 = Fidelity(**CPU_FIDELITY).to_dict()  # 600 rows x 2 epochs, batch 8, learning rates x2
    f1 = next_fidelity(f0, lm=False, n_rows=5000)
    assert (f1["n_train"], f1["batch_size"], f1["lr_scale"], f1["epochs"]) == (2000, 32, 4.0, 2.0)
    assert f1["memory_batch_size"] == f0["memory_batch_size"] == 32  # the memory objective keeps its meaning
    assert describe(f0, f1) == "600 -> 2000 rows, batch 8 -> 32, learning rates x2 -> x4"
    f2 = next_fidelity(f1, lm=False, n_rows=3000)
    assert (f2["n_train"], f2["batch_size"], f2["lr_scale"]) == (3000, 32, 8.0)  # capped by the rows there are
    assert next_fidelity(f2, lm=False, n_rows=3000) is None  # every row, rates at x8: nothing left to raise
    lm = Fidelity(**{**CPU_FIDELITY, **LM_CPU_FIDELITY}).to_dict()
    l1 = next_fidelity(lm, lm=True, n_rows=7000)
    assert (l1["n_train"], l1["batch_size"], l1["lr_scale"]) == (256, 4, 4.0)  # a causal LM keeps its small batch


def _sim(tmp: Path, glue: Path, **kw: object) -> dict:
    return dict(task="sst2", data_dir=str(glue), space="lora", storage=f"sqlite:///{tmp / 'e.db'}", study_name="esc",
                executor="inline", runner="test_collapse:fidelity_runner", n_startup=3, progress=False, **kw)


def test_a_study_whose_trials_all_collapse_raises_its_fidelity_and_then_learns(tiny_model: str, glue_dir: Path,
                                                                               tmp_path: Path) -> None:
    """Ten flat trials at the first fidelity: the study moves to level 1 (2,000 rows at batch 32, rates x4), keeps the
    flat trials apart (stored, counted towards --trials, never on the front or in the sampler's data), and the
    search runs its budget; a resume with the creation options goes on at level 1; export says the level."""
    from optuna.trial import TrialState

    from autopeft.loop import COLLAPSE_STOP_TRIALS
    from autopeft.storage import A, level_of

    opts = _sim(tmp_path, glue_dir, model=tiny_model, n_train=600, batch_size=8, lr_scale=2.0)
    s = autopeft.open_search(n_trials=16, **opts)
    res = s.run()
    assert s.stop_reason is None
    trials = [t for t in res.study.get_trials() if t.state == TrialState.COMPLETE]
    levels = [level_of(t) for t in trials]
    assert levels == [0] * COLLAPSE_STOP_TRIALS + [1] * 6 and len(trials) == 16
    assert all(t.values[0] == 0.5 for t in trials[:COLLAPSE_STOP_TRIALS])
    assert all(t.values[0] > 0.5 for t in trials[COLLAPSE_STOP_TRIALS:])
    assert {(t.user_attrs[A.FIDELITY]["n_train"], t.user_attrs[A.FIDELITY]["batch_size"],
             t.user_attrs[A.FIDELITY]["lr_scale"]) for t in trials[COLLAPSE_STOP_TRIALS:]} == {(2000, 32, 4.0)}
    assert [t.number for t in res.complete_trials()] == [t.number for t in trials[COLLAPSE_STOP_TRIALS:]]
    assert len(res.complete_trials(every_rung=True)) == 16  # show --all lists the flat ones too
    assert res.meta[A.FIDELITY]["lr_scale"] == 4.0
    assert [f["lr_scale"] for f in res.meta[A.LEVELS]] == [2.0, 4.0]
    assert any("raising the trials' fidelity to level 1 (600 -> 2000 rows, batch 8 -> 32, learning rates x2 -> x4)"
               in w for w in res.warnings)
    assert not any("10 of 10 trials score no better" in w for w in res.warnings)  # the old level is not warned about
    assert res.level == 1 and res.level_note() == ("; fidelity level 1 (2000x2 rows x epochs); 10 complete trial(s) at "
                                                   "lower levels: --all")
    assert res.trials["level"].tolist()[:COLLAPSE_STOP_TRIALS + 1] == [0] * COLLAPSE_STOP_TRIALS + [1]
    # the sampler models the current level only: its history holds the 6 level-1 trials
    assert len(res.study.sampler.history(res.study)) == 6
    # resumed with the options it was created with: no fidelity mismatch, new trials at level 1
    res2 = autopeft.search(n_trials=18, **opts)
    new = [t for t in res2.study.get_trials() if t.number >= 16 and t.state == TrialState.COMPLETE]
    assert len(new) == 2 and all(level_of(t) == 1 and t.user_attrs[A.FIDELITY]["lr_scale"] == 4.0 for t in new)
    out = autopeft.api.export(res2.best_config(), tmp_path / "best")
    info = json.loads((out / "autopeft_config.json").read_text())
    assert info["level"] == 1 and info["search_fidelity"]["n_train"] == 2000


def test_a_study_that_collapses_at_every_level_stops_after_the_last(tiny_model: str, glue_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.escalation import MAX_LEVELS
    from autopeft.loop import COLLAPSE_STOP_TRIALS
    from autopeft.storage import level_of

    monkeypatch.setattr(__import__(__name__), "FLAT_ALWAYS", True)
    s = autopeft.open_search(n_trials=40, **_sim(tmp_path, glue_dir, model=tiny_model))
    res = s.run()
    levels = [level_of(t) for t in res.complete_trials(every_rung=True)]
    assert levels == [lv for lv in range(MAX_LEVELS + 1) for _ in range(COLLAPSE_STOP_TRIALS)]
    assert s.stop_reason == "collapse" and f"at fidelity level {MAX_LEVELS}" in s.stop_message


def test_trials_of_the_lower_level_still_in_flight_are_stopped_when_the_level_rises(tiny_model: str, glue_dir: Path,
                                                                                    tmp_path: Path) -> None:
    """Two slots and one spec prepared ahead: when the study raises its level, the lower level's trials still running
    or queued are stopped and stored abandoned with the reason (their configs free again), not trained to the end."""
    from optuna.trial import TrialState

    from autopeft.executors.base import Event
    from autopeft.executors.local import InlineExecutor
    from autopeft.loop import COLLAPSE_STOP_TRIALS
    from autopeft.storage import A, level_of

    class TwoSlots(InlineExecutor):  # two trials run at once; one finishes per poll, the oldest
        def __init__(self) -> None:
            super().__init__(None, "test_collapse:fidelity_runner")
            self.capacity = 2

        def _poll(self, handles: list, timeout: float) -> list:
            h = min(h for h in handles if h in self._ready)
            return [Event(h, "result", self._fn(self._ready.pop(h)))]

    opts = _sim(tmp_path, glue_dir, model=tiny_model, n_train=600, batch_size=8, lr_scale=2.0)
    s = autopeft.open_search(n_trials=16, **opts)
    s.executor = TwoSlots()
    res = s.run()
    trials = res.study.get_trials()
    comp = [t for t in trials if t.state == TrialState.COMPLETE]
    assert [level_of(t) for t in comp] == [0] * COLLAPSE_STOP_TRIALS + [1] * (16 - COLLAPSE_STOP_TRIALS)
    stopped = [t for t in trials if t.user_attrs.get(A.STATUS) == "abandoned"]
    assert len(stopped) == 2 and all(level_of(t) == 0 and "the study raised its fidelity level" in t.user_attrs[A.REASON]
                                     for t in stopped)  # one running, one queued, both at level 0
    assert len(res.complete_trials()) == 16 - COLLAPSE_STOP_TRIALS


# ----------------------------------------------------------------------------- --learn-weight through the API
def low_rank_collapses(spec: object) -> object:
    """Simulated trials on the ``lora`` space: "head only" and, for two configs in five (by a hash of the config), ranks
    up to 4 stay at chance (0.5); the others learn (0.6-0.9).
    Used as ``runner="test_collapse:low_rank_collapses"``."""
    from autopeft.contract import REFERENCE
    from autopeft.executors.simulated import run

    res = run(spec)  # type: ignore[arg-type]
    cand = spec.candidate  # type: ignore[attr-defined]
    r = cand["methods"].get("lora", {}).get("r", 0)
    h = int(hashlib.sha256(json.dumps(cand, sort_keys=True).encode()).hexdigest()[:8], 16)
    if spec.purpose != REFERENCE and (r == 0 or (r <= 4 and h % 5 < 2)):  # type: ignore[attr-defined]
        res.score = 0.5
    return res


def test_learn_weight_reaches_the_sampler_and_keeps_its_proposals_off_configs_that_collapse(
        tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    """``learn_weight`` (``--learn-weight K``) is the sampler's: on a landscape where low ranks stay at chance, fewer of
    the model-based trials collapse with the default (10, within half the best gain) than with 0 (off): 1 against 4 of
    24 here; an explicit value reaches the sampler as given."""
    from autopeft.storage import level_of

    collapsed = {}
    for w in (0.0, None, 3.0):
        opts = {**_sim(tmp_path, glue_dir, model=tiny_model, enqueue="none", learn_weight=w, collapse_stop=False),
                "runner": "test_collapse:low_rank_collapses", "study_name": f"lw{w}", "n_startup": 6}
        res = autopeft.search(n_trials=30, **opts)
        assert res.study.sampler.learn_weight == (10.0 if w is None else w)
        trials = [t for t in res.complete_trials() if level_of(t) == 0]
        collapsed[w] = sum(t.values[0] == 0.5 for t in trials[6:])
    assert collapsed[None] < collapsed[0.0]


@pytest.mark.parametrize("value, message", [
    (True, "--learn-weight must be a finite number >= 0, got True"),
    (-1.0, "--learn-weight must be a finite number >= 0, got -1.0"),
    (float("inf"), "--learn-weight must be a finite number >= 0, got inf"),
    ("10", "--learn-weight must be a finite number >= 0, got '10'"),
])
def test_a_bad_learn_weight_from_the_api_is_one_exact_message(value: object, message: str) -> None:
    from autopeft.config import SearchConfig
    from autopeft.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        SearchConfig.from_options(learn_weight=value)
    assert str(err.value) == message
    assert SearchConfig.from_options(learn_weight=0).learn_weight == 0  # 0 (off) and None (the default) are valid
    with pytest.raises(ConfigError, match=r"^--learn-weight applies to the default sampler \(autopeft\), not --sampler tpe"):
        SearchConfig.from_options(learn_weight=3, sampler="tpe")


def test_the_study_keeps_its_learn_weight_and_band_and_a_resume_may_change_the_weight(
        tiny_model: str, glue_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The collapse weight and band a study was created with are stored and kept by a plain resume (not the module's
    defaults of the day); ``learn_weight`` on a resume changes the weight, says so in one note and stores it; a study
    created before they were stored goes on with the defaults and a note saying the default used to be 0; the CLI's
    header names the weight and band in use."""
    import sqlite3

    from autopeft import collapse_model
    from autopeft.cli import main
    from autopeft.storage import A

    opts = {**_sim(tmp_path, glue_dir, model=tiny_model, enqueue="none", collapse_stop=False), "study_name": "keep"}
    monkeypatch.setattr(collapse_model, "LEARN_BAND", 0.25)
    s = autopeft.open_search(n_trials=2, learn_weight=3.0, **opts)
    res = s.run()
    assert (s.learn_weight, s.learn_band, s.learn_note) == (3.0, 0.25, None)
    assert (res.study.user_attrs[A.LEARN_WEIGHT], res.study.user_attrs[A.LEARN_BAND]) == (3.0, 0.25)
    assert (res.study.sampler.learn_weight, res.study.sampler.learn_band) == (3.0, 0.25)

    monkeypatch.setattr(collapse_model, "LEARN_BAND", 0.5)  # the defaults of a later day: the study keeps its own
    s = autopeft.open_search(n_trials=3, **opts)
    res = s.run()
    assert (s.learn_weight, s.learn_band, s.learn_note) == (3.0, 0.25, None)
    assert (res.study.sampler.learn_weight, res.study.sampler.learn_band) == (3.0, 0.25)

    s = autopeft.open_search(n_trials=4, learn_weight=0, **opts)
    res = s.run()
    assert s.learn_note == "study 'keep' was run with learn weight 3; it goes on with 0"
    assert (res.study.sampler.learn_weight, res.study.user_attrs[A.LEARN_WEIGHT]) == (0.0, 0.0)
    assert len(res.complete_trials()) == 4

    with sqlite3.connect(tmp_path / "e.db") as db:  # as a study created before the weight was stored
        n = db.execute("DELETE FROM study_user_attributes WHERE key IN (?, ?)", (A.LEARN_WEIGHT, A.LEARN_BAND)).rowcount
    assert n == 2
    capsys.readouterr()
    argv = ["search", "--model", tiny_model, "--data-dir", str(glue_dir), "--task", "sst2", "--space", "lora",
            "--storage", opts["storage"], "--study", "keep", "--trials", "4", "--no-progress"]
    assert main(argv) == 0  # its 4 trials are done: nothing runs
    err = capsys.readouterr().err
    assert "sampler autopeft (learn weight 10, band 0.5);" in err
    assert ("autopeft: note: study 'keep' was created before autopeft stored its learn weight: it goes on with learn "
            "weight 10 (band 0.5); before 2026-12-05 the default was 0 (pass --learn-weight 0 to keep that)\n") in err
    s = autopeft.open_search(n_trials=4, **opts)
    assert (s.learn_weight, s.learn_band, s.learn_note) == (10.0, 0.5, None)  # stored by the resume before
    s.close()
