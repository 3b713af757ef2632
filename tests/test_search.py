"""End-to-end searches on the tiny model: the study, resume, the front, budgets, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import autopeft
from autopeft.cli import main
from autopeft.pareto import non_dominated, to_max

FID = dict(n_train=48, n_eval=48, epochs=1, max_length=32, batch_size=16)


@pytest.fixture()
def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def _search(tiny_model: str, glue_dir: Path, storage: str, n: int, **kw: object) -> autopeft.result.SearchResult:
    args = dict(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=n, storage=storage,
                study_name="e2e", executor="inline", n_startup=3, **FID)
    args.update(kw)
    return autopeft.search(**args)


def test_search_front_resume_and_budget(tiny_model: str, glue_dir: Path, storage: str) -> None:
    res = _search(tiny_model, glue_dir, storage, 6)
    assert Path(storage[len("sqlite:///"):]).is_file()
    study = optuna.load_study(study_name="e2e", storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6
    # every trial stores its full candidate, values, fidelity and status
    for t in complete:
        assert set(t.user_attrs) >= {"candidate", "summary", "params", "memory_mib", "status", "fidelity", "sampler_s"}
        assert t.values[1] == t.user_attrs["params"]
    # the front is non-dominated and matches optuna's best_trials
    front = res.pareto_front
    Y = np.array([to_max(res.objectives, t.values) for t in complete])
    nd = {t.number for t, m in zip(complete, non_dominated(Y)) if m}
    assert set(front["trial"]) == nd == {t.number for t in study.best_trials}
    for _, row in front.iterrows():
        for t in complete:
            v = t.values
            assert not (v[0] >= row["score"] and v[1] <= row["params"] and v[2] <= row["memory"]
                        and (v[0], v[1], v[2]) != (row["score"], row["params"], row["memory"]))
    # best_config respects a budget: the cheapest front point's params
    budget = int(front["params"].min())
    best = res.best_config(max_params=budget)
    assert autopeft.builder.count_params(best.candidate, autopeft.builder.model_info(tiny_model, 2)) <= budget
    above = [v[0] for v in (t.values for t in complete) if v[0] > res.meta["chance_score"]]
    assert (res.hypervolume() > 0) == bool(above)  # only points better than chance add volume
    # resume: more trials, none repeated, the first ones kept
    first = {t.number: t.values for t in complete}
    res2 = _search(tiny_model, glue_dir, storage, 9)
    study = optuna.load_study(study_name="e2e", storage=storage)
    comp2 = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(comp2) == 9
    assert all(study.trials[n].values == v for n, v in first.items())
    keys = [t.user_attrs["candidate_key"] for t in study.trials if t.state != TrialState.PRUNED]
    assert len(keys) == len(set(keys))
    assert res2.meta["ref_point"] == res.meta["ref_point"]


def test_resume_with_other_task_is_refused(tiny_model: str, glue_dir: Path, storage: str) -> None:
    _search(tiny_model, glue_dir, storage, 1)
    with pytest.raises(autopeft.StudyError, match="different task"):
        _search(tiny_model, glue_dir, storage, 2, task="rte")
    with pytest.raises(autopeft.StudyError, match="different search space"):
        _search(tiny_model, glue_dir, storage, 2, space="lora")


def test_param_budget_rejects_before_training(tiny_model: str, glue_dir: Path, storage: str) -> None:
    res = _search(tiny_model, glue_dir, storage, 3, max_params=2000, sampler="random")
    study = res.study
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert t.user_attrs["params"] <= 2000
        elif t.user_attrs.get("status") == "infeasible":
            assert t.user_attrs["params"] > 2000 and "wall_s" not in t.user_attrs  # never trained
            cons = t.constraints
            assert (cons["max_params"] if isinstance(cons, dict) else cons[0]) > 0


def test_cli_search_show_best_list(tiny_model: str, glue_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(tmp_path / "studies"))
    argv = ["search", "--model", tiny_model, "--data-dir", str(glue_dir), "--space", "tiny", "--trials", "3",
            "--study", "cli", "--workers", "2", "--n-train", "48", "--n-eval", "48", "--epochs", "1",
            "--max-length", "32", "--batch-size", "16", "--lr-scale", "1.5", "--n-startup", "2", "--no-progress"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    out = cap.out
    lines = re.findall(r"^autopeft: trial \d+: .+ \| accuracy 0\.\d{4} \| [\d,]+ params \| \d+ MiB \| \d+ s$", cap.err, re.M)
    assert len(lines) >= 3, cap.err  # one line per finished trial (--no-progress)
    import optuna

    stored = optuna.load_study(study_name="cli", storage=f"sqlite:///{tmp_path / 'studies' / 'cli.db'}").user_attrs
    assert stored["fidelity"]["lr_scale"] == 1.5 and stored["fidelity"]["batch_size"] == 16
    assert "Pareto front" in out and "complete trials" in out and str(tmp_path / "studies" / "cli.db") in out
    assert main(["show", "--study", "cli", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all("score" in r and isinstance(r["params"], int) and "memory_mib" in r for r in rows)
    assert main(["best", "--study", "cli"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["candidate"]["methods"] is not None and best["values"]["score"] == max(r["score"] for r in rows)
    assert main(["list"]) == 0
    assert "cli" in capsys.readouterr().out
    assert main(["show", "--study", "cli", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("trial,summary,score,params,memory_mib")


@pytest.mark.parametrize("argv,msg", [
    (["search", "--sampler", "magic"], "unknown sampler 'magic'"),
    (["search", "--space", "nope"], "neither a file nor a shipped space"),
    (["search", "--task", "sst2", "--data-dir", "/no/such/dir"], "data dir not found"),
    (["search", "--storage", "notaurl"], "bad storage URL"),
    (["search", "--trials", "0"], "must be >= 1"),
    (["search", "--lr-scale", "0"], "must be a finite number > 0"),
    (["show", "--study", "ghost"], "storage file not found"),
    (["best", "--study", "ghost"], "storage file not found"),
])
def test_cli_bad_input_exit_2(argv: list[str], msg: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch, glue_dir: Path) -> None:
    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(tmp_path))
    monkeypatch.setenv("AUTOPEFT_DATA_DIR", str(glue_dir))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.glob("*.db"))  # nothing created
