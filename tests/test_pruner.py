"""Multi-objective early stopping (autopeft.pruner): the rule on a synthetic landscape, a trial stopping itself at a
rung, and a search whose pruned trials are stored with their curve, count as trials and are never proposed again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from optuna.trial import TrialState

from conftest import dashboard_data

from autopeft import pruner
from autopeft.errors import ConfigError
from autopeft.pruner import RUNGS, cut, decide, prune_spec, rung_steps

FID = dict(n_train=64, n_eval=48, epochs=1, max_length=32, batch_size=8)


def _stored(params: int, memory: float, curve: list[list[float]]) -> Any:
    return SimpleNamespace(user_attrs={"params": params, "memory_mib": memory, "curve": curve})


def test_the_cut_compares_only_trials_that_cost_no_more() -> None:
    trials = [_stored(100 * (i + 1), 10.0 * (i + 1), [[0.25, 2, 0.5 + 0.05 * i], [0.5, 4, 0.6 + 0.05 * i]])
              for i in range(9)]  # params 100..900, memory 10..90, rung scores rising with cost
    spec = prune_spec("cost-sh", 600, trials, "maximize", 500)
    assert spec is not None and spec["rungs"] == list(RUNGS) and spec["n_eval"] == pruner.RUNG_EVAL_ROWS
    assert [p[0] for p in spec["peers"]] == [100, 200, 300, 400, 500, 600]  # params <= 600 x 1.1
    # a trial with 600 params and 60 MiB: 6 peers, keep the best 2 -> the cut is the 2nd best rung-0 score (0.7)
    assert cut(spec, 0, 60.0) == (pytest.approx(0.70), 6)
    assert decide(spec, 0, 0.69, 60.0, "accuracy") is not None
    assert decide(spec, 0, 0.70, 60.0, "accuracy") is None  # a tie goes on
    # the same trial measured at 40 MiB has only 4 cost peers (< MIN_PEERS): never stopped
    assert cut(spec, 0, 40.0) is None and decide(spec, 0, 0.0, 40.0, "accuracy") is None
    # a loss is minimised: the cut is the 2nd lowest
    low = prune_spec("cost-sh", 600, trials, "minimize", 500)
    assert cut(low, 1, 60.0) == (pytest.approx(0.65), 6)
    assert prune_spec("none", 600, trials, "maximize", 500) is None


def test_curve_points_are_scored_and_the_pruner_decides_at_its_own_rungs_only() -> None:
    trials = [_stored(100, 10.0, [[0.25, 2, 0.9], [0.5, 4, 0.9], [0.75, 6, 0.9]])] * 6  # six cheaper, strong peers
    # the curve alone: scored at 1/4, 2/4, 3/4 (the end is the final score), never stops anything
    alone = prune_spec("none", 600, trials, "maximize", 500, curve_points=4)
    assert alone is not None and alone["rungs"] == [0.25, 0.5, 0.75] and alone["cuts"] == [] and alone["peers"] == []
    assert all(decide(alone, r, 0.0, 60.0, "accuracy") is None for r in range(3))
    # with the pruner: its rungs joined with the curve's points (1/3 and 2/3), decisions at 0.25 and 0.5 only
    both = prune_spec("cost-sh", 600, trials, "maximize", 500, curve_points=3)
    assert both is not None and both["rungs"] == [0.25, 0.333333, 0.5, 0.666667] and both["cuts"] == [0, 2]
    assert [p[2] for p in both["peers"]][0] == [0.9, None, 0.9, None]  # peers' scores aligned to the points
    assert decide(both, 0, 0.5, 60.0, "accuracy") is not None and decide(both, 2, 0.5, 60.0, "accuracy") is not None
    assert decide(both, 1, 0.5, 60.0, "accuracy") is None and decide(both, 3, 0.5, 60.0, "accuracy") is None
    assert prune_spec("none", 600, trials, "maximize", 500, curve_points=0) is None
    for bad in (1, -2, 21, 2.5, True, "4"):
        with pytest.raises(ConfigError) as e:
            pruner.check_curve_points(bad)
        assert str(e.value) == f"--curve-points must be 0 (no learning curve) or an integer from 2 to 20, got {bad!r}"


def test_rung_steps_never_stop_at_the_last_step() -> None:
    assert rung_steps(8, RUNGS) == {2: 0, 4: 1}
    assert rung_steps(2, RUNGS) == {1: 0}  # two rungs on one step: the first
    assert rung_steps(1, RUNGS) == {}


def test_on_a_synthetic_landscape_pruning_stops_dominated_trials_and_never_a_front_config() -> None:
    """200 configs: cost (params, memory) and a final score that saturates with cost, with per-config quality
    noise; the learning curve reaches the final score along a shared shape plus rung noise.  Run in random order
    through the rule: a clearly dominated config (expensive and bad) is stopped at the first rung, no config of
    the final front (by final score) is ever stopped, and most of the compute of dominated configs is saved."""
    rng = np.random.default_rng(0)
    n = 200
    params = np.exp(rng.uniform(np.log(1e3), np.log(1e6), n)).astype(int)
    memory = 50 + params / 1e4 * rng.uniform(0.8, 1.2, n)
    final = 0.55 + 0.3 * (np.log10(params) - 3) / 3 + rng.normal(0, 0.05, n)
    final[7] = 0.5  # clearly dominated: among the most expensive, and the worst score
    params[7], memory[7] = 900_000, 50 + 90 * 1.2
    shape = {0.25: 0.8, 0.5: 0.92}
    stored, pruned_at, spent = [], {}, 0.0
    for i in rng.permutation(n):
        spec = prune_spec("cost-sh", int(params[i]), stored, "maximize", 500)
        curve, stop = [], None
        for r, f in enumerate(RUNGS):
            s = final[i] * shape[f] + rng.normal(0, 0.005)
            curve.append([f, r, s])
            if decide(spec, r, s, float(memory[i]), "accuracy") is not None:
                stop = r
                break
        spent += RUNGS[stop] if stop is not None else 1.0
        if stop is not None:
            pruned_at[i] = stop
        else:
            curve.append([1.0, 9, final[i]])
        stored.append(_stored(int(params[i]), float(memory[i]), curve))
    Y = np.column_stack([final, -params, -memory])
    on_front = [i for i in range(n) if not any((Y[j] >= Y[i]).all() and (Y[j] > Y[i]).any() for j in range(n))]
    assert on_front and not set(on_front) & set(pruned_at)
    assert pruned_at.get(7) == 0
    assert len(pruned_at) >= n // 3 and spent < 0.8 * n  # it saves compute


def test_a_trial_behind_its_peers_stops_itself_at_the_first_rung(tiny_model: str, glue_dir: Path) -> None:
    from autopeft.candidate import Candidate
    from autopeft.contract import OK, PRUNED, TrialSpec
    from autopeft.config import data_spec_dict
    from autopeft.trial import run_trial

    data = data_spec_dict(task="sst2", data_dir=str(glue_dir))
    cand = Candidate.make({"lora": {"r": 4, "alpha_ratio": 2.0, "dropout": 0.0, "targets": ["q", "v"]}}, [0, 1]).to_dict()
    peers = [[1, 0.0, [2.0, 2.0]]] * 5  # five cheaper trials that scored out of reach at both rungs
    prune = {**prune_spec("cost-sh", 10**9, [], "maximize", FID["n_eval"]), "peers": peers}
    res = run_trial(TrialSpec(0, cand, tiny_model, data, fidelity=FID, prune=prune))
    assert res.status == PRUNED, res.reason
    assert res.steps == 2 and len(res.curve) == 1 and res.curve[0][:2] == [0.25, 2]
    assert res.score == res.curve[0][2] and "stopped early at 25% of training" in res.reason
    # no peers that cost no more: trains to the end, its curve has both rungs and the final score
    res = run_trial(TrialSpec(0, cand, tiny_model, data, fidelity=FID, prune={**prune, "peers": []}))
    assert res.status == OK and [p[:2] for p in res.curve] == [[0.25, 2], [0.5, 4], [1.0, 8]]
    assert res.curve[-1][2] == pytest.approx(res.score, abs=1e-6)


def test_a_search_with_the_pruner_stores_curves_and_counts_pruned_trials(tiny_model: str, glue_dir: Path,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """From trial 3 on, every trial gets five unbeatable cost peers: it stops at 25 %.  The search still ends at
    n_trials evaluated trials; pruned trials are PRUNED with status, reason, score and curve (intermediate values
    too, which the dashboard draws), are off the front, and their candidates are never proposed again."""
    from autopeft import api
    from autopeft.storage import A

    real = pruner.prune_spec

    def rigged(name: str, params: int, trials: Any, direction: str, n_eval: int, *rest: Any) -> dict[str, Any] | None:
        spec = real(name, params, trials, direction, n_eval, *rest)
        if spec is not None and len(list(trials)) >= 3:
            spec["peers"] = [[1, 0.0, [2.0, 2.0]]] * 5
        return spec

    monkeypatch.setattr(pruner, "prune_spec", rigged)
    res = api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=6, study_name="p",
                     storage=f"sqlite:///{tmp_path / 'p.db'}", executor="inline", n_startup=2, pruner="cost-sh",
                     collapse_stop=False, **FID)
    study = res.study
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    stopped = [t for t in study.get_trials(states=(TrialState.PRUNED,)) if t.user_attrs.get(A.STATUS) == "pruned"]
    assert len(complete) == 3 and len(stopped) == 3
    for t in complete:
        assert [p[0] for p in t.user_attrs[A.CURVE]] == [0.25, 0.5, 1.0]
        assert sorted(t.intermediate_values) == [2, 4, 8]
    for t in stopped:
        assert t.user_attrs[A.SCORE] == t.user_attrs[A.CURVE][0][2] and t.intermediate_values == {2: t.user_attrs[A.SCORE]}
        assert "stopped early at 25% of training" in t.user_attrs[A.REASON]
    keys = [t.user_attrs[A.CANDIDATE_KEY] for t in complete + stopped]
    assert len(keys) == len(set(keys))
    assert {t.number for t in res.front_trials()} <= {t.number for t in complete}
    # the curves are in the dashboard's data
    _, detail = dashboard_data("p", f"sqlite:///{tmp_path / 'p.db'}")
    curves = {t["number"]: {v["step"]: v["value"] for v in t["intermediate_values"]} for t in detail["trials"]}
    for t in complete + stopped:
        assert curves[t.number] == pytest.approx(t.intermediate_values)



def test_a_search_with_curve_points_records_curves_and_stops_nothing(tiny_model: str, glue_dir: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``curve_points=4`` without a pruner: every trial is scored at 1/4, 2/4 and 3/4 of its steps and at the end,
    the curve is stored (attribute and intermediate values) and no trial is stopped; the CLI refuses a bad value in
    one line with exit code 2."""
    from autopeft import api
    from autopeft.storage import A

    res = api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=3, study_name="c",
                     storage=f"sqlite:///{tmp_path / 'c.db'}", executor="inline", n_startup=2, curve_points=4,
                     collapse_stop=False, **FID)
    trials = res.study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        curve = t.user_attrs[A.CURVE]
        assert [p[:2] for p in curve] == [[0.25, 2], [0.5, 4], [0.75, 6], [1.0, 8]]
        assert curve[-1][2] == pytest.approx(t.user_attrs[A.SCORE], abs=1e-6)
        assert sorted(t.intermediate_values) == [2, 4, 6, 8]
    from autopeft import cli

    assert cli.main(["search", "--curve-points", "1", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].endswith("--curve-points must be 0 (no learning curve) or an integer from 2 to 20, got 1")
