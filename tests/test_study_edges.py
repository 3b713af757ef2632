"""Edge cases of the study: budgets over all trials, exporting a failed trial, abandoned trials,
adopting an empty study, a proposal that fails to become a trial, and Ray pool sizing."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autopeft import cli
from autopeft.errors import ConfigError, StudyError
from autopeft.result import load_study
from autopeft.api import open_search
from autopeft.contract import ABANDONED
from autopeft.session import Search
from autopeft.storage import A, SCHEMA_VERSION

FID = dict(n_train=32, n_eval=32, epochs=1, max_length=24, batch_size=16)
CAND = {"methods": {"lora": {"r": 2, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}}, "layers": [0, 1],
        "sparsity": {}, "lr_multiplier": 1.0}


def _synthetic(storage: str, objectives: list[str], rows: list[tuple[TrialState, list[float] | None, dict]],
               model: str = "m") -> None:
    dirs = {"score": "maximize", "params": "minimize", "memory": "minimize"}
    s = optuna.create_study(study_name="syn", storage=storage, directions=[dirs[o] for o in objectives])
    attrs = {"autopeft_schema": SCHEMA_VERSION, "model": model, "task": {"task": "sst2"}, "space": "tiny", "space_hash": "h",
             "objectives": objectives, "ref_point": [0.5, -6.0, -4.0][: len(objectives)], "fidelity": FID,
             "metric": "accuracy", "num_labels": 2, "base_params": 1_000_000}
    for k, v in attrs.items():
        s.set_user_attr(k, v)
    for state, values, ua in rows:
        s.add_trial(create_trial(state=state, values=values, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                                 user_attrs={"candidate": CAND, "summary": "lora", **ua}))


def test_budget_on_an_objective_the_study_lacks_looks_at_all_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    # A dominates B in (score, params), so B is off the front; only B fits a 200 MiB memory budget
    _synthetic(storage, ["score", "params"], [
        (TrialState.COMPLETE, [0.9, 100.0], {"params": 100, "memory_mib": 500.0}),
        (TrialState.COMPLETE, [0.8, 200.0], {"params": 200, "memory_mib": 150.0}),
    ])
    res = load_study("syn", storage)
    assert list(res.pareto_front["trial"]) == [0]
    assert res.best_trial().number == 0
    assert res.best_trial(max_memory=200).number == 1
    assert res.best_trial(max_params=150).number == 0
    with pytest.raises(StudyError, match="fits the budget"):
        res.best_trial(max_memory=100)


def test_export_of_a_failed_trial_is_refused(tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    _synthetic(storage, ["score", "params", "memory"], [
        (TrialState.COMPLETE, [0.9, 100.0, 50.0], {"params": 100, "memory_mib": 50.0}),
        (TrialState.FAIL, None, {"reason": "RuntimeError: injected fault", "status": "failed"}),
    ], model=tiny_model)
    out = tmp_path / "exp"
    assert cli.main(["export", "--study", "syn", "--storage", storage, "--trial", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "trial 1 of study 'syn' is FAIL (RuntimeError: injected fault)" in err and "Traceback" not in err
    assert not out.exists()
    assert cli.main(["export", "--study", "syn", "--storage", storage, "--trial", "0", "-o", str(out)]) == 0


def _search(tiny_model: str, glue_dir: Path, storage: str, n: int, study: str = "edge", **kw: object) -> Search:
    opts = dict(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=n, study_name=study,
                storage=storage, n_startup=2, **FID)
    opts.update(kw)
    return open_search(**opts)


def test_timeout_abandons_running_trials_and_their_candidates_stay_eligible(tiny_model: str, glue_dir: Path,
                                                                             tmp_path: Path) -> None:
    import time

    storage = f"sqlite:///{tmp_path / 'e.db'}"
    s = _search(tiny_model, glue_dir, storage, 5, executor="local", workers=1, timeout=4.0,
                fault=lambda n: "sleep:600")
    t0 = time.monotonic()
    res = s.run()
    assert time.monotonic() - t0 < 300  # stopped at the timeout, not after the 600 s trial (a wide bound: load)
    assert s.stop_reason == "timeout"
    trials = res.study.get_trials()
    assert trials and not [t for t in trials if t.state == TrialState.RUNNING]
    ab = [t for t in trials if t.user_attrs.get(A.STATUS) == ABANDONED]
    assert ab and all(t.state == TrialState.FAIL and "stopped before it finished (timeout)" in t.user_attrs[A.REASON]
                      for t in ab)
    # the proposer's index does not hold an abandoned candidate: it may be proposed again
    again = _search(tiny_model, glue_dir, storage, 5, executor="inline")
    proposer, _ = again.build()
    proposer.index.refresh(again.store.trials())
    for t in ab:
        assert not proposer.index.holds(t.user_attrs[A.CANDIDATE_KEY], other_than=-1)
    again.close()


def test_a_proposal_that_cannot_become_a_trial_is_recorded_failed(tiny_model: str, glue_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    s = _search(tiny_model, glue_dir, f"sqlite:///{tmp_path / 'p.db'}", 2, executor="inline")
    proposer, _ = s.build()

    def broken(trial: object) -> None:
        raise ValueError("decoder broke")

    monkeypatch.setattr(s.bound, "suggest", broken)
    with pytest.raises(ValueError, match="decoder broke"):
        proposer.ask()
    (t,) = s.store.trials()
    assert t.state == TrialState.FAIL and t.user_attrs[A.REASON] == "while preparing the trial: ValueError: decoder broke"
    s.close()


def test_an_empty_study_without_autopeft_attributes_is_adopted(tiny_model: str, glue_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import autopeft.storage as st

    monkeypatch.setattr(st, "ADOPT_WAIT_S", 0.5)
    storage = f"sqlite:///{tmp_path / 'a.db'}"
    # a driver that died between creating the study and writing its attributes leaves this behind
    optuna.create_study(study_name="edge", storage=storage, directions=["maximize", "minimize", "minimize"])
    res = _search(tiny_model, glue_dir, storage, 1, executor="inline").run()
    assert res.study.user_attrs["autopeft_schema"] == SCHEMA_VERSION
    assert len(res.study.get_trials(states=(TrialState.COMPLETE,))) == 1
    # an empty foreign study with other directions is refused, not silently changed
    optuna.create_study(study_name="other", storage=storage, directions=["minimize"])
    with pytest.raises(StudyError, match="is empty but has directions"):
        _search(tiny_model, glue_dir, storage, 1, study="other", executor="inline")


def test_ray_pool_is_sized_to_the_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    from autopeft.config import SearchConfig
    from autopeft.executors.ray import pool_size
    from autopeft.integrations.ray_tune import run_reference
    from autopeft.contract import TrialSpec

    with pytest.raises(ConfigError, match="cannot use a ray:// \\(Ray Client\\) address"):
        run_reference(TrialSpec(-1, {}, None, {}), {"address": "ray://head:10001"})
    with pytest.raises(ConfigError, match="--trial-timeout is not supported with --executor ray-tune"):
        SearchConfig.from_options(executor="ray-tune", trial_timeout=5.0)
    with pytest.raises(ConfigError, match="--gpus-per-trial must be a finite number >= 0, got -1"):
        SearchConfig.from_options(executor="ray", gpus_per_trial=-1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert pool_size(None, 0.25, 0.0) == 8
        assert pool_size(8, 1.0, 0.0) == 2
        assert "--workers 8 lowered to 2" in capsys.readouterr().err
        assert pool_size(1, 1.0, 0.0) == 1
        with pytest.raises(ConfigError, match="one trial needs 4 CPUs"):
            pool_size(None, 4.0, 0.0)
        with pytest.raises(ConfigError, match="0 GPUs, but one trial needs 1 CPUs and 0.5 GPUs"):
            pool_size(None, 1.0, 0.5)
    finally:
        ray.shutdown()


@pytest.mark.parametrize("flat,warned", [(7, True), (5, False)])
def test_collapsed_trials_are_warned_about_once(flat: int, warned: bool, capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    """Most trials at the majority-class score: the trials are too short; the loop says so once, in the study."""
    from autopeft.contract import OK, TrialResult
    from autopeft.loop import CollapseWarning
    from autopeft.result import SearchResult
    from autopeft.storage import StudyStore

    storage = f"sqlite:///{tmp_path / 'c.db'}"
    _synthetic(storage, ["score", "params"], [])
    study = optuna.load_study(study_name="syn", storage=storage)
    dist = {"x": FloatDistribution(0, 1)}
    for i in range(8):  # chance is 0.5 (the study's reference point)
        study.add_trial(create_trial(params={"x": i / 8}, distributions=dist, values=[0.5 if i < flat else 0.8, 100.0 + i]))
    store = StudyStore("syn", storage)
    store.study = study
    warn = CollapseWarning(0.5, "f1", 2, 8, {"n_train": 2000, "lr_scale": 1.0}, warned=False)
    warn(store, TrialResult(7, OK, score=0.8))
    warn(store, TrialResult(7, OK, score=0.8))
    err = capsys.readouterr().err
    warnings = SearchResult(optuna.load_study(study_name="syn", storage=storage), storage).warnings
    if warned:
        assert err.count("warning:") == 1 and f"{flat} of 8 trials score no better than always predicting" in err
        assert "(f1 0.500)" in err and "--n-train 4000 --batch-size 32 --lr-scale 3" in err
        assert "or rank by --metric auc" in err
        assert len(warnings) == 1 and warnings[0].startswith(f"{flat} of 8 trials")
    else:
        assert err == "" and warnings == []


def test_a_search_that_raises_its_fidelity_itself_warns_that_it_will(capsys: pytest.CaptureFixture[str],
                                                                      tmp_path: Path) -> None:
    """Every trial so far flat and the search set to raise its fidelity: the warning says the search will, not to
    start a new study."""
    from autopeft.contract import OK, TrialResult
    from autopeft.loop import CollapseWarning
    from autopeft.storage import StudyStore

    storage = f"sqlite:///{tmp_path / 'c.db'}"
    _synthetic(storage, ["score", "params"], [])
    study = optuna.load_study(study_name="syn", storage=storage)
    dist = {"x": FloatDistribution(0, 1)}
    for i in range(8):
        study.add_trial(create_trial(params={"x": i / 8}, distributions=dist, values=[0.5, 100.0 + i]))
    store = StudyStore("syn", storage)
    store.study = study
    warn = CollapseWarning(0.5, "accuracy", 2, 8, {"n_train": 600, "lr_scale": 2.0}, warned=False,
                           raise_to=lambda level, fid: None)
    warn(store, TrialResult(7, OK, score=0.5))
    err = capsys.readouterr().err
    assert ("8 of 8 trials score no better than always predicting the majority class (accuracy 0.500), so the trials "
            "may be too short for this task; if all of the first 10 stay there, the search raises their fidelity "
            "(more rows, higher learning rates) itself") in err and "start a new study" not in err


def test_options_that_switch_the_cpu_preset_off_are_said() -> None:
    from autopeft.contract import fidelity_note

    note = fidelity_note({"n_train": 200}, gpu=False)
    assert note is not None and note.startswith("--n-train turns the CPU trial preset off")
    assert "batch-size 32 (preset 8)" in note and "lr-scale 1 (preset 2)" in note and "epochs" not in note  # same 2
    assert fidelity_note({"n_train": 200}, gpu=True) is None  # GPUs have no preset
    assert fidelity_note({}, gpu=False) is None and fidelity_note({"max_length": 64}, gpu=False) is None
    assert fidelity_note({"n_train": 600, "epochs": 2, "batch_size": 8, "lr_scale": 2}, gpu=False) is None


def test_a_front_all_at_chance_says_so(tmp_path: Path) -> None:
    from autopeft import api
    from autopeft.storage import SCHEMA_VERSION

    url = f"sqlite:///{tmp_path / 'c.db'}"
    s = optuna.create_study(study_name="c", storage=url, directions=["maximize", "minimize", "minimize"])
    for k, v in {"autopeft_schema": SCHEMA_VERSION, "model": "m", "task": {"task": "sst2"}, "space_hash": "h",
                 "objectives": ["score", "params", "memory"], "ref_point": [0.44, -6.0, -4.0], "fidelity": {},
                 "metric": "accuracy", "num_labels": 2, "base_params": 1000, "chance_score": 0.44}.items():
        s.set_user_attr(k, v)
    cand = {"methods": {}, "layers": [], "sparsity": {}, "lr_multiplier": 1.0}
    for score, params in ((0.44, 10.0), (0.44, 5.0)):
        s.add_trial(optuna.trial.create_trial(values=[score, params, 5.0], user_attrs={"candidate": cand}))
    warns = api.load_study("c", url).warnings
    assert len(warns) == 1 and warns[0].startswith("every one of the 2 complete trials scored at the majority-class "
                                                   "level (accuracy 0.440; best 0.440)")
    s.add_trial(optuna.trial.create_trial(values=[0.61, 20.0, 5.0], user_attrs={"candidate": cand}))
    assert api.load_study("c", url).warnings == []


def test_the_api_shows_progress_where_someone_watches(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from autopeft import api

    import types

    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert api._interactive() is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert api._interactive() is False
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: None  # type: ignore[attr-defined]  # IPython imported (as the test suite does), no kernel
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert api._interactive() is False
    fake.get_ipython = lambda: type("ZMQInteractiveShell", (), {})()  # type: ignore[attr-defined]  # inside Jupyter
    assert api._interactive() is True


def test_studies_are_found_from_inside_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook runs in notebooks/: the project's studies/ is found; outside a project, ./studies as before."""
    from autopeft.storage import studies_dir

    monkeypatch.delenv("AUTOPEFT_STUDIES_DIR", raising=False)
    proj = tmp_path / "proj"
    (proj / "studies").mkdir(parents=True)
    (proj / "pyproject.toml").write_text("")
    (proj / "notebooks" / "deep").mkdir(parents=True)
    monkeypatch.chdir(proj / "notebooks" / "deep")
    assert studies_dir() == proj / "studies"
    monkeypatch.chdir(proj)
    assert studies_dir() == Path("studies")
    elsewhere = tmp_path / "other" / "sub"
    elsewhere.mkdir(parents=True)
    (tmp_path / "other" / "pyproject.toml").write_text("")  # a project without studies/: a new ./studies
    monkeypatch.chdir(elsewhere)
    assert studies_dir() == Path("studies")
    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(tmp_path / "mine"))
    assert studies_dir() == tmp_path / "mine"


def test_the_api_leaks_no_optuna_warnings(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    """autopeft uses heartbeats outside Study.optimize, experimental arguments and metric names on purpose: a search
    and a load through the API warn about none of them."""
    import warnings

    from autopeft import api

    url = f"sqlite:///{tmp_path / 'w.db'}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=2, storage=url,
                   study_name="w", executor="inline", n_startup=2, progress=False, **FID)
        api.load_study("w", url).pareto_front
    noisy = [str(w.message)[:80] for w in caught if "experimental" in str(w.message) or "Heartbeat" in str(w.message)]
    assert noisy == []
