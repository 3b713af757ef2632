"""``--refine-rate``: the learning-rate line search on the best config at the top rung (the rule, and searches with
and without ``--promote`` on simulated trials whose score peaks at a known rate)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from optuna.trial import TrialState

from autopeft.errors import ConfigError
from autopeft.promotion import RATE_STEP, Evaluated, next_rate_step

#: the learning-rate multiplier at which :func:`rate_runner`'s score peaks
PEAK = 1.41421


def rate_runner(spec: object) -> object:
    """Simulated trials (nothing trained) whose params, memory and base score come from the config without its rate,
    and whose score falls off as (log2 of the rate over ``PEAK``) squared, plus 0.05 per rung of rows: a landscape
    where the best rate of every config is known.  Used as ``runner="test_rate_search:rate_runner"``."""
    from autopeft.contract import OK, REFERENCE, TrialResult

    if spec.purpose == REFERENCE:  # type: ignore[attr-defined]
        return TrialResult(spec.trial_id, OK, score=0.5, memory_bytes=2000 * 2**20, metric="simulated")  # type: ignore[attr-defined]
    cand = dict(spec.candidate)  # type: ignore[attr-defined]
    lr = float(cand.pop("lr_multiplier", 1.0))
    h = int(hashlib.sha256(json.dumps(cand, sort_keys=True).encode()).hexdigest()[:12], 16)
    rows = spec.fidelity["n_train"]  # type: ignore[attr-defined]
    score = 0.6 + 0.2 * ((h >> 20) % 1000) / 1000 + 0.05 * (rows > 32) - 0.05 * math.log2(lr / PEAK) ** 2
    return TrialResult(spec.trial_id, OK, score=score, params=1000 + h % 1_000_000,  # type: ignore[attr-defined]
                       memory_bytes=(100 + (h >> 30) % 900) * 2**20, metric="simulated")


def _e(n: int, score: float, lr: float, rung: int = 1, group: str = "g") -> Evaluated:
    return Evaluated(n, f"{group}@{lr}", rung, (score, -100.0), lr, group)


def test_the_rule_walks_the_best_configs_rate_uphill_and_stops_at_a_peak() -> None:
    def fits(e: Evaluated, lr: float) -> bool:
        return 0.5 - 1e-9 <= lr <= 2.0 + 1e-9

    done = [_e(0, 0.70, 1.0, rung=0), _e(1, 0.74, 1.0), _e(2, 0.72, 1.0, group="h")]
    step = next_rate_step(done, {}, 1, 0.5, fits)
    assert step is not None and step[0].number == 1 and step[1] == pytest.approx(RATE_STEP)  # up first
    # x1.41 running: the walk waits for it (if it scores higher, x0.71 is never needed); h is not on g's walk
    assert next_rate_step(done, {("g", 1): [1.0, 1.41421]}, 1, 0.5, fits) is None
    step = next_rate_step(done + [_e(9, 0.73, 1.41421)], {}, 1, 0.5, fits)  # x1.41 scored lower: down next
    assert step is not None and step[0].number == 1 and step[1] == pytest.approx(1 / RATE_STEP)
    assert next_rate_step(done, {("g", 1): [1.0, 1.41421, 0.707107]}, 1, 0.5, fits) is None  # both in flight
    # x1.41 scored higher: it is the best now, and the walk goes on from it (x1 is held: x2 next)
    done += [_e(3, 0.78, 1.41421), _e(4, 0.73, 0.707107)]
    step = next_rate_step(done, {}, 1, 0.5, fits)
    assert step is not None and step[0].number == 3 and step[1] == pytest.approx(2.0, rel=1e-12)  # the grid's x2
    done.append(_e(5, 0.76, 1.99999))
    assert next_rate_step(done, {}, 1, 0.5, fits) is None  # both neighbours of the best score lower: a peak
    # the space's range ends the walk; a rung-0 score is never stepped from at rung 1; nothing above chance: nothing
    assert next_rate_step([_e(0, 0.8, 2.0)], {}, 1, 0.5, fits)[1] == pytest.approx(2.0 / RATE_STEP)  # type: ignore[index]
    assert next_rate_step([_e(0, 0.8, 1.0, rung=0)], {}, 1, 0.5, fits) is None
    assert next_rate_step([_e(0, 0.5, 1.0)], {}, 1, 0.5, fits) is None
    assert next_rate_step([_e(0, 0.8, 1.0)], {}, 1, 0.5, lambda e, lr: False) is None


def test_front_mode_walks_every_front_configs_rate_best_score_first() -> None:
    def fits(e: Evaluated, lr: float) -> bool:
        return 0.5 - 1e-9 <= lr <= 2.0 + 1e-9

    def ev(n: int, score: float, lr: float, group: str, params: float) -> Evaluated:
        return Evaluated(n, f"{group}@{lr}", 1, (score, -params), lr, group)

    # g's walk is done (both neighbours lower); h is on the front (cheaper); k is dominated by g (dearer, lower)
    done = [ev(0, 0.80, 1.0, "g", 1000), ev(1, 0.78, 1.41421, "g", 1000), ev(2, 0.77, 0.707107, "g", 1000),
            ev(3, 0.70, 1.0, "h", 100), ev(4, 0.60, 1.0, "k", 5000)]
    assert next_rate_step(done, {}, 1, 0.5, fits, "best") is None
    step = next_rate_step(done, {}, 1, 0.5, fits, "front")
    assert step is not None and step[0].number == 3 and step[1] == pytest.approx(RATE_STEP)
    done += [ev(5, 0.69, 1.41421, "h", 100), ev(6, 0.68, 0.707107, "h", 100)]
    assert next_rate_step(done, {}, 1, 0.5, fits, "front") is None  # k is never walked: it is dominated
    # while a group's step up runs, front mode walks the next front group meanwhile
    done = [ev(0, 0.80, 1.0, "g", 1000), ev(3, 0.70, 1.0, "h", 100)]
    step = next_rate_step(done, {("g", 1): [1.0, 1.41421]}, 1, 0.5, fits, "front")
    assert step is not None and step[0].number == 3 and step[1] == pytest.approx(RATE_STEP)
    with pytest.raises(ConfigError) as e:
        next_rate_step(done, {}, 1, 0.5, fits, "all")
    assert str(e.value) == "--refine-rate must be one of none, best, front, got 'all'"


def _opts(tiny_model: str, glue_dir: Path, tmp_path: Path, **kw: object) -> dict:
    return dict(model=tiny_model, data_dir=str(glue_dir), task="sst2", space="mixed", n_train=32, n_eval=32, epochs=1,
                max_length=24, batch_size=16, n_startup=4, progress=False, executor="inline",
                runner="test_rate_search:rate_runner", storage=f"sqlite:///{tmp_path / 'r.db'}", enqueue="none",
                sampler="random", collapse_stop=False, **kw)


def test_a_search_with_promotion_line_searches_the_top_configs_rate_and_keeps_its_best(
        tiny_model: str, glue_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import autopeft
    from autopeft.candidate import structure_key
    from autopeft.storage import A, rung_of

    res = autopeft.search(n_trials=24, study_name="rr", promote="64x1", refine_rate="best", trial_lines=True, seed=1,
                          **_opts(tiny_model, glue_dir, tmp_path))
    trials = res.study.get_trials()
    comp = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(comp) == 24
    steps = [t for t in comp if A.RATE_FROM in t.user_attrs]
    assert len(steps) >= 2
    by_number = {t.number: t for t in trials}
    err = capsys.readouterr().err
    for t in steps:  # the source's config, at its rate x or / sqrt(2), at the top rung's fidelity
        src = by_number[t.user_attrs[A.RATE_FROM]]
        assert rung_of(t) == rung_of(src) == 1 and t.user_attrs[A.FIDELITY]["n_train"] == 64
        assert structure_key(t.user_attrs[A.CANDIDATE]) == structure_key(src.user_attrs[A.CANDIDATE])
        ratio = t.user_attrs[A.CANDIDATE]["lr_multiplier"] / src.user_attrs[A.CANDIDATE]["lr_multiplier"]
        assert min(abs(ratio - RATE_STEP), abs(ratio - 1 / RATE_STEP)) < 1e-4
        assert t.params["training.lr_multiplier"] == pytest.approx(t.user_attrs[A.CANDIDATE]["lr_multiplier"])
        assert (f"autopeft: trial {t.number}: {t.user_attrs[A.SUMMARY]} | 64x1 (rung 1), trial {src.number}'s config "
                "at another rate | ") in err
    # what the CLI's last line counts: each step is a config of its own, the promotions are the other evaluations
    assert res.rate_steps() == len(steps) and res.promotions() == sum(A.PROMOTED_FROM in t.user_attrs for t in comp)
    assert len(res.complete_trials()) + res.promotions() == 24
    pairs = [(t.user_attrs[A.CANDIDATE_KEY], rung_of(t)) for t in comp]
    assert len(pairs) == len(set(pairs))  # nothing trained twice at one rung
    # the walk ended at a peak: the best config at rung 1 has both neighbours within the space evaluated, lower
    top = max((t for t in comp if rung_of(t) == 1), key=lambda t: t.values[0])
    same = [t for t in comp if rung_of(t) == 1 and structure_key(t.user_attrs[A.CANDIDATE]) ==
            structure_key(top.user_attrs[A.CANDIDATE])]
    lr = top.user_attrs[A.CANDIDATE]["lr_multiplier"]
    rates = sorted(t.user_attrs[A.CANDIDATE]["lr_multiplier"] for t in same)
    for nb in (lr * RATE_STEP, lr / RATE_STEP):
        if 0.5 <= nb * (1 - 1e-4) and nb * (1 + 1e-4) <= 2.0:
            assert any(abs(math.log(nb / r)) < 0.01 for r in rates), (lr, rates)
    assert abs(math.log2(lr / PEAK)) <= 0.25 + 1e-3  # the walk's grid point nearest the peak: within half a step
    # the front keeps one rate of each config: the best
    front = res.front_trials()
    keys = [structure_key(t.user_attrs[A.CANDIDATE]) for t in front]
    assert len(keys) == len(set(keys)) and top.number in [t.number for t in front]
    # without --refine-rate the same search steps no rate
    # (and --promote-lr-scale sets the rungs' learning-rate scale, the base rung keeps the study's)
    res2 = autopeft.search(n_trials=12, study_name="plain", promote="64x1", promote_lr_scale=0.5, seed=1,
                           **_opts(tiny_model, glue_dir, tmp_path))
    done2 = [t for t in res2.study.get_trials() if t.state == TrialState.COMPLETE]
    assert not any(A.RATE_FROM in t.user_attrs for t in done2)
    assert {rung_of(t): t.user_attrs[A.FIDELITY]["lr_scale"] for t in done2} == {0: 1.0, 1: 0.5}


def test_without_promotion_the_line_search_runs_at_the_studys_fidelity_after_the_start_up_trials(
        tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    import autopeft
    from autopeft.storage import A, rung_of

    res = autopeft.search(n_trials=12, study_name="r0", refine_rate="front", seed=2, **_opts(tiny_model, glue_dir, tmp_path))
    comp = sorted((t for t in res.study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    steps = [t for t in comp if A.RATE_FROM in t.user_attrs]
    assert steps and all(rung_of(t) == 0 for t in steps)
    assert min(t.number for t in steps) >= 4  # not before the 4 start-up trials finished
    with pytest.raises(ConfigError) as e:
        autopeft.search(n_trials=2, study_name="fixed", refine_rate="best",
                        **{**_opts(tiny_model, glue_dir, tmp_path), "space": "lora"})
    assert str(e.value) == ("--refine-rate: search space 'lora' fixes the learning rate; give a space with a "
                            "training.lr_multiplier or learning_rate range (e.g. --space mixed) or drop it")


def test_the_cli_refuses_a_line_search_on_a_fixed_rate_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft.cli import main

    monkeypatch.setenv("AUTOPEFT_STUDIES_DIR", str(tmp_path))
    db = tmp_path / "x.db"
    assert main(["search", "--refine-rate", "front", "--space", "lora", "--storage", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--refine-rate: search space 'lora' fixes the learning rate; give a space with a "
                        "training.lr_multiplier or learning_rate range (e.g. --space mixed) or drop it")
    assert len(err.splitlines()) == 1 and "Traceback" not in err and not db.exists()


def test_best_and_export_follow_the_line_search_back_to_the_baseline(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """On the committed MRPC search with ``--refine-rate front --promote-lr-scale 1`` (BENCHMARKS.md, session 14) the
    best config is the LoRA baseline (queued as trial 0, promoted as trial 5) walked to x1.41 (trial 11) and x2 (trial
    14): ``best`` says it came from the baseline, and ``export --best`` says so with the rate."""
    import shutil

    import autopeft
    from autopeft.cli import main
    from autopeft.storage import A

    src = Path(__file__).resolve().parent.parent / "bench" / "tables" / "confirm-mrpc-refine.db"
    shutil.copy(src, tmp_path / "m.db")
    storage, name = f"sqlite:///{tmp_path / 'm.db'}", "confirm-mrpc-front-lr1-2"
    best = autopeft.best_config(name, storage)
    d = best.to_dict()
    assert d["trial"] == 14 and d["rung"] == 1 and d["candidate"]["lr_multiplier"] == 2.0
    assert best.trial.user_attrs[A.RATE_FROM] == 11 and d["seeded_by"] == "baseline:lora r=8 q,v"
    assert main(["export", "--study", name, "--storage", storage, "--best", "-o", str(tmp_path / "e")]) == 0
    assert ("it is the hand-designed baseline lora r=8 q,v at learning rate x2 (--refine-rate's line search from its "
            "default rate), which the study ran first: no config the search proposed scored higher within the budget"
            ) in capsys.readouterr().out
