"""``--promote``: the front, ``best`` and the hypervolume compare configs scored at different rungs on the top rung's
scale (:func:`autopeft.promotion.rung_offsets`), so a rung that lowers every score does not hand budgets to configs
that were never promoted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from autopeft.promotion import Evaluated, on_top_rung, rung_offsets

#: how much :func:`drop_runner`'s promoted rung lowers every config's score
DROP = 0.1


def drop_runner(spec: object) -> object:
    """Simulated trials whose score comes from the config (rate included) and is ``DROP`` lower at any fidelity of
    more than 32 rows: the rungs rank configs alike, on scales ``DROP`` apart (as MRPC's 2,000-row rung at rates x1
    scored every promoted config 0.029-0.036 lower).  Used as ``runner="test_rung_scale:drop_runner"``."""
    from autopeft.contract import OK, REFERENCE, TrialResult

    if spec.purpose == REFERENCE:  # type: ignore[attr-defined]
        return TrialResult(spec.trial_id, OK, score=0.5, memory_bytes=2000 * 2**20, metric="simulated")  # type: ignore[attr-defined]
    return TrialResult(spec.trial_id, OK, score=base_score(spec.candidate) - DROP * (spec.fidelity["n_train"] > 32),  # type: ignore[attr-defined]
                       params=params_of(spec.candidate), memory_bytes=200 * 2**20, metric="simulated")  # type: ignore[attr-defined]


def _h(candidate: dict) -> int:
    return int(hashlib.sha256(json.dumps(candidate, sort_keys=True).encode()).hexdigest()[:12], 16)


def base_score(candidate: dict) -> float:
    return 0.6 + 0.3 * ((_h(candidate) >> 20) % 1000) / 1000


def params_of(candidate: dict) -> int:
    return 1000 + _h(candidate) % 1_000_000


def _e(n: int, key: str, rung: int, score: float) -> Evaluated:
    return Evaluated(n, key, rung, (score, -100.0))


def test_offsets_are_the_median_change_of_configs_scored_at_both_rungs() -> None:
    done = [_e(0, "a", 0, 0.70), _e(1, "b", 0, 0.60), _e(2, "c", 0, 0.65), _e(3, "d", 0, 0.50),
            _e(4, "a", 1, 0.66), _e(5, "b", 1, 0.58), _e(6, "c", 1, 0.40),  # changes -0.04, -0.02, -0.25: median -0.04
            _e(7, "e", 1, 0.90),  # a rate step: a config of its own, with no score at rung 0, not a pair
            _e(8, "a", 2, 0.76)]  # one config at rung 2: fewer than two pairs, compared as scored
    offsets = rung_offsets(done)
    assert offsets == pytest.approx([0.0, -0.04, 0.0])
    assert on_top_rung(0.50, 0, offsets) == pytest.approx(0.46)  # d, never promoted, on the top rung's scale
    assert on_top_rung(0.90, 1, offsets) == pytest.approx(0.90) and on_top_rung(0.76, 2, offsets) == 0.76
    assert rung_offsets(done, min_pairs=1) == pytest.approx([0.0, -0.04, 0.10])
    assert rung_offsets([]) == [0.0] and rung_offsets(done[:4]) == [0.0]  # no promotion: nothing moves


def test_a_rung_that_lowers_every_score_does_not_hand_budgets_to_unpromoted_configs(
        tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    import autopeft
    from autopeft.plot import hypervolume_curve
    from autopeft.storage import A, complete_trials, rung_of

    res = autopeft.search(model=tiny_model, data_dir=str(glue_dir), task="sst2", space="lora", n_train=32, n_eval=32,
                          epochs=1, max_length=24, batch_size=16, n_trials=16, n_startup=16, executor="inline",
                          runner="test_rung_scale:drop_runner", storage=f"sqlite:///{tmp_path / 's.db'}",
                          study_name="drop", promote="64x1", progress=False)
    assert res.rung_offsets() == pytest.approx([0.0, -DROP])
    comp = complete_trials(res.study)
    promoted = [t for t in comp if rung_of(t)]
    assert len(promoted) >= 2 and len(comp) > len(promoted)
    # in this landscape the rungs rank configs alike: under any budget the right answer is the fitting config with
    # the highest score at rung 0 (which every config has)
    naive_misses = 0
    for budget in sorted({t.user_attrs[A.PARAMS] for t in comp}):
        fit = [t for t in comp if t.user_attrs[A.PARAMS] <= budget]
        truth = max(fit, key=lambda t: base_score(t.user_attrs[A.CANDIDATE]))
        assert res.best_config(max_params=budget).trial.number == truth.number
        naive = max(fit, key=lambda t: t.values[0])  # comparing rungs as scored
        naive_misses += naive.number != truth.number
    assert naive_misses >= 1  # the landscape does test the rung scale: as scored, some budget gets another answer
    front = res.pareto_front
    on_top = dict(zip(front["trial"], front["score_on_top"]))
    for t in comp:
        if t.number in on_top:
            assert on_top[t.number] == pytest.approx(t.values[0] - (0.0 if rung_of(t) else DROP))
    assert list(front["score_on_top"]) == sorted(front["score_on_top"], reverse=True)  # best first, as compared
    assert hypervolume_curve(res)[-1] == pytest.approx(res.hypervolume())
