"""Promotion to higher fidelity (``--promote``): the rule, a search that promotes, and a driver killed while a promoted
trial runs, resumed with no config trained twice at one rung."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autopeft.errors import ConfigError
from autopeft.promotion import (Evaluated, chance_margin, ladder_fidelities, ladder_text, next_promotion, parse_ladder,
                                peer_rank, seeded_keys, with_lr_scale)

SIM = dict(task="sst2", space="lora", n_train=32, n_eval=32, epochs=1, max_length=24, batch_size=16, n_startup=4,
           progress=False)


def _e(n: int, score: float, params: float, rung: int = 0, key: str | None = None) -> Evaluated:
    return Evaluated(n, key or f'{{"c": {n}}}', rung, (score, -params))


def test_ladders_are_parsed_and_checked_with_exact_messages() -> None:
    assert parse_ladder("2000x2, allx3") == [{"n_train": 2000, "epochs": 2.0}, {"n_train": "all", "epochs": 3.0}]
    assert parse_ladder("2000x1@32") == [{"n_train": 2000, "epochs": 1.0, "batch_size": 32}]
    assert parse_ladder([{"n_train": 64, "epochs": 1}]) == [{"n_train": 64, "epochs": 1.0}]
    assert parse_ladder(None) == [] and parse_ladder("") == []
    bad = {"2000": "--promote: '2000' is not ROWSxEPOCHS[@BATCH]; give e.g. 2000x1@32,allx3 (rows x epochs, optionally "
                   "@ batch size, of each rung above the study's own fidelity; all = every training row)",
           "10x1@0": "--promote: batch size must be an integer >= 1, got 0",
           "0x2": "--promote: rows must be an integer >= 1 or all, got 0",
           "10x0": "--promote: epochs must be a finite number > 0, got 0.0"}
    for text, msg in bad.items():
        with pytest.raises(ConfigError) as e:
            parse_ladder(text)
        assert str(e.value) == msg
    with pytest.raises(ConfigError, match=r"^--promote: each rung needs n_train and epochs \(batch_size and lr_scale "):
        parse_ladder([{"n_train": 5}])
    # a rung's own learning-rate scale (the API's lr_scale, or --promote-lr-scale for every rung without one)
    assert with_lr_scale(parse_ladder("2000x2@32,allx3"), 1) == [
        {"n_train": 2000, "epochs": 2.0, "batch_size": 32, "lr_scale": 1.0}, {"n_train": "all", "epochs": 3.0, "lr_scale": 1.0}]
    assert with_lr_scale(parse_ladder([{"n_train": 64, "epochs": 1, "lr_scale": 3}]), 1)[0]["lr_scale"] == 3.0
    assert with_lr_scale(parse_ladder("64x1"), None) == [{"n_train": 64, "epochs": 1.0}]
    for call, msg in ((lambda: with_lr_scale([], 1), "--promote-lr-scale sets the learning-rate scale of --promote's "
                       "rungs; give --promote too"),
                      (lambda: with_lr_scale(parse_ladder("64x1"), 0), "--promote-lr-scale must be a finite number > 0, "
                       "got 0"),
                      (lambda: parse_ladder([{"n_train": 64, "epochs": 1, "lr_scale": "x"}]), "--promote: lr_scale must be "
                       "a finite number > 0, got 'x'")):
        with pytest.raises(ConfigError) as e:
            call()
        assert str(e.value) == msg
    assert ladder_text(with_lr_scale(parse_ladder("2000x2@32"), 1)) == "2000x2@32 (lr scale 1)"
    base = {"n_train": 600, "epochs": 2.0, "batch_size": 8, "lr_scale": 3.0}
    fids = ladder_fidelities(base, parse_ladder("2000x2@32,allx3"), 5000)
    assert [(f["n_train"], f["epochs"], f["batch_size"]) for f in fids] == [(600, 2.0, 8), (2000, 2.0, 32), (5000, 3.0, 8)]
    assert [f["lr_scale"] for f in fids] == [3.0, 3.0, 3.0]  # the study's scale, unless a rung gives its own
    assert [f["lr_scale"] for f in ladder_fidelities(base, with_lr_scale(parse_ladder("2000x2@32"), 1), 5000)] == [3.0, 1.0]
    with pytest.raises(ConfigError) as e:
        ladder_fidelities(base, parse_ladder("2000x2,allx1"), 1500)
    assert str(e.value) == ("--promote: rung 2 (1500 rows x 1 epochs) trains no more than the rung below it (1500 x 2; "
                            "the task has 1500 training rows); each rung must train more")


def test_the_rule_promotes_the_best_among_cost_peers_within_the_quota() -> None:
    # six configs at rung 0: a cheap one on the front with a low score, an expensive one with the best score
    done = [_e(0, 0.70, 100), _e(1, 0.90, 10_000), _e(2, 0.80, 5_000), _e(3, 0.60, 200), _e(4, 0.50, 50),
            _e(5, 0.85, 20_000)]
    assert peer_rank(done[0], done) == 0.0  # nothing cheaper scores better: on the front
    assert peer_rank(done[5], done) == pytest.approx(1 / 6)  # of its 6 peers (all cheaper or equal) one is better
    assert peer_rank(done[3], done) == pytest.approx(1 / 3)  # peers: itself, 0 (better) and 4
    # quota floor(6/3) = 2; config 4 scores at chance (0.5) and is never promoted even though it is the cheapest
    first = next_promotion(done, set(), 2, chance=0.5)
    assert first is not None and (first[0].number, first[1]) == (1, 1)  # front configs first, the best score among them
    held = {(first[0].key, 1)}
    second = next_promotion(done, held, 2, chance=0.5)
    assert second is not None and second[0].number == 2  # on the front too (0.80 at 5,000), next best score
    held.add((second[0].key, 1))
    assert next_promotion(done, held, 2, chance=0.5) is None  # quota of 2 used
    # a higher rung is served first once it has enough configs: three at rung 1 give a quota of one to rung 2
    up = [_e(10, 0.91, 10_000, 1, done[1].key), _e(11, 0.82, 5_000, 1, done[2].key), _e(12, 0.72, 100, 1, done[0].key)]
    held |= {(e.key, 1) for e in up}
    nxt = next_promotion(done + up, held, 3, chance=0.5)
    assert nxt is not None and (nxt[0].number, nxt[1]) == (10, 2)
    # nothing at all beats chance: nothing goes up
    assert next_promotion([_e(i, 0.5, 10 * (i + 1)) for i in range(9)], set(), 2, chance=0.5) is None


def test_configs_within_noise_of_chance_are_not_promoted_before_a_learner() -> None:
    # MRPC seed 0's rung 0 (AUC on 500 search rows; chance 0.5): the IA3 baseline (14,594 params) scored 0.582, a
    # cheaper LoRA 0.596; the two cheapest configs on the front scored 0.535 and 0.541 (within 2 standard errors of
    # chance); six configs scored below chance
    done = [_e(0, 0.673, 74_498), _e(1, 0.582, 14_594), _e(2, 0.660, 35_330), _e(3, 0.596, 5_378), _e(4, 0.535, 770),
            _e(5, 0.541, 2_774)] + [_e(6 + i, 0.46 + 0.005 * i, 100_000 + i) for i in range(9)]
    margin = chance_margin(500)
    assert margin == pytest.approx(2 * 0.5 / 500 ** 0.5) and round(margin, 4) == 0.0447
    assert chance_margin(500, metric_is_loss=True) == 0.0 and chance_margin(0) == 0.0

    def promoted(m: float) -> list[int]:  # the quota of 5 (15 configs), filled
        held: set[tuple[str, int]] = set()
        out = []
        while (nxt := next_promotion(done, held, 2, chance=0.5, margin=m)) is not None:
            held.add((nxt[0].key, 1))
            out.append(nxt[0].number)
        return out

    assert peer_rank(done[1], done) > 0 and peer_rank(done[4], done) == 0.0 == peer_rank(done[5], done)
    # without the margin the cheap near-chance front configs (5 and 4) outrank the IA3 baseline and fill the quota
    assert promoted(0.0) == [0, 2, 3, 5, 4]
    # with it, the learner goes up and the quota's last place stays free for a config that clears chance
    assert promoted(margin) == [0, 2, 3, 1]


def test_seeded_baselines_go_up_first_once_eligible() -> None:
    # MRPC seed 1's rung 0 in outline (AUC on 500 rows, chance 0.5, margin 0.045): the IA3 baseline (#1, 14,594
    # params, 0.582) is eligible (3 of its 10 cost peers score better) but five configs scoring 0.60-0.67 on their
    # cost class's front rank ahead
    done = [_e(0, 0.673, 74_498), _e(1, 0.582, 14_594), _e(2, 0.660, 35_330), _e(3, 0.596, 5_378),
            _e(4, 0.590, 900_000), _e(5, 0.620, 10_000), _e(6, 0.640, 12_000), _e(7, 0.530, 20_000),
            _e(8, 0.600, 16_000)] + [_e(9 + i, 0.46 + 0.005 * i, 1_000 + i) for i in range(6)]
    margin = chance_margin(500)
    baseline = {done[1].key, done[7].key, done[0].key}  # IA3, a baseline under the margin, LoRA (on the front)
    assert 0 < peer_rank(done[1], done) < 1 / 3  # eligible, not on the front

    def promoted(first: set[str]) -> list[int]:  # 15 configs: a quota of 5
        held: set[tuple[str, int]] = set()
        out = []
        while (nxt := next_promotion(done, held, 2, chance=0.5, margin=margin, first=first)) is not None:
            held.add((nxt[0].key, 1))
            out.append(nxt[0].number)
        return out

    assert promoted(set()) == [0, 2, 6, 5, 3]  # front configs by score fill the quota: the IA3 baseline never goes up
    # the eligible baselines first (LoRA on the front, then IA3), then the rest; #7 stays under the margin
    assert promoted(baseline) == [0, 1, 2, 6, 5]
    # a seeded config that is not eligible by peer rank (6 of its 15 cost peers score better) still never goes up
    assert peer_rank(done[4], done) >= 1 / 3 and 4 not in promoted({done[4].key})
    assert seeded_keys([("a", "baseline:ia3"), ("b", "enqueue:configs.yaml entry 1"), ("c", "warm-start:s#3"),
                        ("d", None)]) == {"a", "b"}


def test_a_search_ranks_its_seeded_configs_first(tiny_model: str, glue_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import autopeft
    import autopeft.promotion as promotion
    from autopeft.executors.simulated import RUNNER
    from autopeft.storage import A

    seen: list[frozenset[str]] = []
    real = promotion.next_promotion

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(frozenset(args[6] if len(args) > 6 else kwargs.get("first", ())))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(promotion, "next_promotion", spy)
    res = autopeft.search(model=tiny_model, data_dir=str(glue_dir), n_trials=8, executor="inline", runner=RUNNER,
                          storage=f"sqlite:///{tmp_path / 's.db'}", study_name="p", promote="64x2",
                          **{**SIM, "n_startup": 8})
    trials = res.study.get_trials()
    seeded = {t.user_attrs[A.CANDIDATE_KEY] for t in trials if str(t.user_attrs.get(A.SEEDED_BY)).startswith("baseline:")}
    assert seeded and seen and seen[-1] == seeded  # the default study's baselines, and only they


def test_a_search_promotes_scores_each_config_at_its_highest_rung_and_the_sampler_learns_rung_0(
        tiny_model: str, glue_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import autopeft
    from autopeft.executors.simulated import RUNNER
    from autopeft.sampler import CostAwareEHVISampler
    from autopeft.storage import A, complete_trials, rung_of

    res = autopeft.search(model=tiny_model, data_dir=str(glue_dir), n_trials=14, executor="inline", runner=RUNNER,
                          storage=f"sqlite:///{tmp_path / 's.db'}", study_name="p", promote="64x2,128x2",
                          trial_lines=True, **{**SIM, "n_startup": 14})  # our sampler, no model fit: this is about what it reads
    trials = res.study.get_trials()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 14  # --trials counts every evaluation
    up = [t for t in trials if rung_of(t) > 0]
    assert {rung_of(t) for t in up} == {1, 2}
    by_number = {t.number: t for t in trials}
    for t in up:  # a promoted trial: the same config, one rung up, at that rung's fidelity
        src = by_number[t.user_attrs[A.PROMOTED_FROM]]
        assert t.user_attrs[A.CANDIDATE_KEY] == src.user_attrs[A.CANDIDATE_KEY] and rung_of(t) == rung_of(src) + 1
        assert t.params == src.params and t.user_attrs[A.PARAMS] == src.user_attrs[A.PARAMS]
        assert (t.user_attrs[A.FIDELITY]["n_train"], t.user_attrs[A.FIDELITY]["epochs"]) == \
            ({1: 64, 2: 128}[rung_of(t)], 2.0)
        assert t.user_attrs[A.FIDELITY]["batch_size"] == 16  # the rest of the study's fidelity
    err = capsys.readouterr().err  # each promoted trial's line says its rung and the trial it promotes
    for t in up:
        n_train = {1: 64, 2: 128}[rung_of(t)]
        assert (f"autopeft: trial {t.number}: {t.user_attrs[A.SUMMARY]} | {n_train}x2 (rung {rung_of(t)}) from "
                f"trial {t.user_attrs[A.PROMOTED_FROM]} | ") in err
    pairs = [(t.user_attrs[A.CANDIDATE_KEY], rung_of(t)) for t in trials if t.state == TrialState.COMPLETE]
    assert len(pairs) == len(set(pairs))
    # the front and best take each config once, at its highest rung, and say which
    comp = complete_trials(res.study)
    keys = [t.user_attrs[A.CANDIDATE_KEY] for t in comp]
    assert len(keys) == len(set(keys)) == 14 - len(up)
    assert res.promotions() == len(up)  # what the CLI's last line counts: "N configs complete (14 evaluations, ...)"
    top = {t.user_attrs[A.CANDIDATE_KEY]: max(rung_of(u) for u in trials if u.user_attrs.get(A.CANDIDATE_KEY) ==
                                                t.user_attrs[A.CANDIDATE_KEY] and u.state == TrialState.COMPLETE)
           for t in comp}
    assert all(rung_of(t) == top[t.user_attrs[A.CANDIDATE_KEY]] for t in comp)
    front = res.pareto_front
    assert "fidelity" in front and any(f.endswith("(rung 2)") for f in front["fidelity"])
    best = res.best_config()
    d = best.to_dict()
    assert d["rung"] == rung_of(best.trial) and d["fidelity"]["n_train"] == {0: 32, 1: 64, 2: 128}[d["rung"]]
    from autopeft.plot import hypervolume_curve, plot_study

    assert hypervolume_curve(res)[-1] == pytest.approx(res.hypervolume())  # both at each config's highest rung
    html = plot_study(res, tmp_path / "plots")["html"].read_text()
    assert "fidelity 128x2 (rung 2)" in html
    # the sampler's models read the study's own fidelity only
    sampler = res.study.sampler
    assert isinstance(sampler, CostAwareEHVISampler)
    hist = sampler.history(res.study)
    assert len(hist) == len([t for t in trials if not rung_of(t)]) and not any(rung_of(t) for t, _ in hist)


def test_resuming_with_other_rungs_is_refused(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    import autopeft
    from autopeft.errors import StudyError
    from autopeft.executors.simulated import RUNNER

    opts = dict(model=tiny_model, data_dir=str(glue_dir), executor="inline", runner=RUNNER,
                storage=f"sqlite:///{tmp_path / 's.db'}", study_name="p", **SIM)
    autopeft.search(n_trials=2, promote="64x2", **opts)
    with pytest.raises(StudyError) as e:
        autopeft.search(n_trials=3, promote="96x2", **opts)
    assert str(e.value) == ("study 'p' was run with --promote 64x2, now 96x2; resume it with the same rungs or pass "
                            "another --study name")
    res = autopeft.search(n_trials=3, **opts)  # no --promote: the stored rungs go on
    assert res.laddered


_DRIVER = """
import sys, autopeft
from autopeft.executors.simulated import RUNNER
autopeft.search(model=sys.argv[1], data_dir=sys.argv[2], storage=sys.argv[3], study_name="kp", n_trials=int(sys.argv[4]),
                executor="inline", runner=RUNNER, fault=lambda n: "simulate:0.25", promote="64x2", collapse_stop=False,
                sampler="random",
                **{SIM!r})
"""


def test_a_driver_killed_while_a_promoted_trial_runs_resumes_with_no_config_trained_twice_at_one_rung(
        tiny_model: str, glue_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver is a real process, killed with SIGKILL while a promoted trial runs; it resumes in this process (so
    only one interpreter pays the imports), with the same short heartbeat grace."""
    import autopeft
    from autopeft import loop, storage as storage_mod
    from autopeft.executors.simulated import RUNNER
    from autopeft.proposer import CandidateIndex
    from autopeft.storage import A, rung_of

    storage = f"sqlite:///{tmp_path / 'k.db'}"
    env = {**os.environ, "AUTOPEFT_HEARTBEAT_S": "1", "AUTOPEFT_GRACE_S": "2"}
    cmd = [sys.executable, "-c", _DRIVER.format(SIM=SIM), tiny_model, str(glue_dir), storage, "9"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            s = optuna.load_study(study_name="kp", storage=storage)
            running = [t for t in s.get_trials(states=(TrialState.RUNNING,)) if rung_of(t) == 1]
        except Exception:  # the study is being created
            running = []
        if running:
            proc.send_signal(signal.SIGKILL)
            killed = running[0]
        time.sleep(0.05)
    proc.wait()
    assert killed is not None, proc.stderr.read() if proc.stderr else ""
    for mod, name, v in ((storage_mod, "HEARTBEAT_S", 1.0), (storage_mod, "GRACE_S", 2.0), (loop, "HEARTBEAT_S", 1.0)):
        monkeypatch.setattr(mod, name, v)
    time.sleep(2.5)  # its heartbeat goes stale
    autopeft.search(model=tiny_model, data_dir=str(glue_dir), storage=storage, study_name="kp", n_trials=9,
                    executor="inline", runner=RUNNER, promote="64x2", collapse_stop=False, sampler="random", **SIM)
    s = optuna.load_study(study_name="kp", storage=storage)
    trials = s.get_trials()
    dead = trials[killed.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs[A.STATUS] == "abandoned"
    comp = [t for t in trials if t.state == TrialState.COMPLETE]
    pairs = [(t.user_attrs[A.CANDIDATE_KEY], rung_of(t)) for t in comp]
    assert len(pairs) == len(set(pairs))  # no config trained twice at one rung
    # the abandoned promotion holds nothing: its config is held at rung 1 only if a finished trial holds it there (the
    # resumed driver may promote it again, or a config that ranks higher by then: the rule sees more finished trials)
    index = CandidateIndex()
    index.refresh(trials)
    key = killed.user_attrs[A.CANDIDATE_KEY]
    assert ((key, 1) in index.held()) == ((key, 1) in pairs)
    assert any(rung == 1 for _, rung in pairs)  # promotions went on after the resume
    assert len(comp) == 9 and not s.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
