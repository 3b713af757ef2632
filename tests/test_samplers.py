"""Every sampler by name proposes valid, in-space candidates through define-by-run, respects pending trials and
seeds; the autopeft sampler's search behaviour; the closed-form EHVI.  (Optuna's own sampler contract tests, run
on the autopeft sampler, are in test_sampler_contract.py.)"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from autopeft.builder import ModelInfo, count_params
from autopeft.arch import ArchInfo
from autopeft.candidate import Candidate
from autopeft.pareto import to_max
from autopeft.sampler import closed_form_ehvi
from autopeft.space import SearchSpace
from autopeft.config import SAMPLERS
from autopeft.proposer import make_sampler

optuna.logging.set_verbosity(optuna.logging.ERROR)

ARCH = ArchInfo("bert", "bert.encoder.layer", {"q": "attention.self.query", "k": "attention.self.key",
                "v": "attention.self.value", "o": "attention.output.dense", "ffn_up": "intermediate.dense",
                "ffn_down": "output.dense"}, 6, 384, 1536, 12, 512)
INFO = ModelInfo("fake", ARCH, 2, 22_713_986, 770, ("classifier",), 0)
OBJ = ["score", "params", "memory"]
REF = [0.5, -math.log10(INFO.base_params), -math.log10(400.0)]


def synthetic(c: Candidate) -> list[float]:
    """A deterministic toy landscape: more parameters help, with diminishing returns; upper layers matter."""
    p = count_params(c, INFO)
    top = sum(1 for i in c.layers if i >= 3)
    score = 0.5 + 0.05 * math.log10(max(p, 1)) + 0.02 * top - 0.01 * len(c.layers)
    mem = 100.0 + 40.0 * ((6 - min(c.layers)) if c.layers else 0) + p * 16 / 2**20
    return [score, float(p), mem]


def run_study(sampler_name: str, n: int, seed: int = 0, space: str = "mixed", pending: int = 1) -> optuna.Study:
    b = SearchSpace.load(space).bind(6)
    sampler = make_sampler(sampler_name, seed, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    while len(study.trials) < n:
        batch = []
        for _ in range(pending):  # several asks before any tell: pending trials
            t = study.ask()
            c = b.suggest(t)
            t.set_user_attr("candidate", c.to_dict())
            batch.append((t, c))
        for t, c in batch:
            assert b.contains(c), c
            study.tell(t, synthetic(c))
    return study


@pytest.mark.parametrize("name", [s for s in SAMPLERS if s != "botorch"])
def test_every_sampler_proposes_valid_candidates(name: str) -> None:
    study = run_study(name, 10, pending=2)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 10
    b = SearchSpace.load("mixed").bind(6)
    for t in study.trials:
        c = Candidate.from_dict(t.user_attrs["candidate"])
        assert b.candidate_from_params(t.params) == c  # the trial's params are the candidate
        replay = optuna.trial.FixedTrial(t.params)
        assert b.suggest(replay) == c and replay.params == t.params  # define-by-run asked the active dimensions only


@pytest.mark.parametrize("name", ["autopeft", "random", "tpe"])
def test_seeded_samplers_are_reproducible(name: str) -> None:
    a = [t.user_attrs["candidate"] for t in run_study(name, 8, seed=3).trials]
    b = [t.user_attrs["candidate"] for t in run_study(name, 8, seed=3).trials]
    assert a == b


def test_botorch_sampler_by_name_is_seeded() -> None:
    """Its startup trials (run_study: 4) are sampled independently from the seed make_sampler passes on; a model
    step costs minutes on CPU, so only the startup runs here."""
    def startup(seed: int) -> list[dict[str, object]]:
        return [t.user_attrs["candidate"] for t in run_study("botorch", 3, seed=seed, space="lora").trials]

    a = startup(3)
    assert a == startup(3)
    assert a != startup(4)


def test_autopeft_sampler_never_repeats_and_spreads_pending_trials() -> None:
    study = run_study("autopeft", 16, space="tiny", pending=3)
    keys = [Candidate.from_dict(t.user_attrs["candidate"]).key for t in study.trials]
    assert len(set(keys)) == len(keys)
    assert all("sampler_s" not in t.user_attrs for t in study.trials)  # the driver, not the sampler, records timing


def test_autopeft_sampler_respects_param_budget() -> None:
    b = SearchSpace.load("mixed").bind(6)
    budget = 20_000
    sampler = make_sampler("autopeft", 0, b, OBJ, REF, lambda c: count_params(c, INFO), max_params=budget, n_startup=3)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    for _ in range(10):
        t = study.ask()
        c = b.suggest(t)
        t.set_user_attr("candidate", c.to_dict())
        assert count_params(c, INFO) <= budget
        study.tell(t, synthetic(c))


def test_autopeft_beats_random_on_a_toy_landscape() -> None:
    """Hypervolume after 24 trials, 3 seeds each: the model-based sampler must not lose to random."""
    from autopeft.pareto import hypervolume

    def hv(study: optuna.Study) -> float:
        Y = np.array([to_max(OBJ, t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))])
        return hypervolume(Y, REF)

    ours = np.median([hv(run_study("autopeft", 24, seed=s, space="lora")) for s in range(3)])
    rand = np.median([hv(run_study("random", 24, seed=s, space="lora")) for s in range(3)])
    assert ours >= rand


def test_closed_form_ehvi_matches_monte_carlo() -> None:
    from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning
    import torch

    rng = np.random.default_rng(0)
    front = rng.random((12, 3))
    ref = np.zeros(3)
    b = FastNondominatedPartitioning(ref_point=torch.zeros(3, dtype=torch.double),
                                     Y=torch.as_tensor(front)).get_hypercell_bounds().numpy()
    mu, sd, known = np.array([0.6, 0.9]), np.array([0.2, 0.05]), np.array([[0.7, 0.5], [0.3, 0.95]])
    ehvi = closed_form_ehvi(mu, sd, known, b[0], b[1])
    from autopeft.pareto import hypervolume

    base = hypervolume(front, ref)
    for i in range(2):
        ys = rng.normal(mu[i], sd[i], 4000)
        mc = np.mean([hypervolume(np.vstack([front, [y, *known[i]]]), ref) - base for y in ys])
        assert ehvi[i] == pytest.approx(mc, rel=0.08, abs=1e-3)


def test_autopeft_sampler_skips_candidates_that_differ_only_by_a_near_learning_rate() -> None:
    from autopeft.sampler import _Seen

    lora = {"lora": {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}}
    seen = _Seen()
    seen.add(Candidate.make(lora, [5], lr_multiplier=1.86))
    assert Candidate.make(lora, [5], lr_multiplier=1.87) in seen  # within 5 %: same proposal
    assert Candidate.make(lora, [5], lr_multiplier=1.79) in seen
    assert Candidate.make(lora, [5], lr_multiplier=1.96) not in seen  # 5.4 % away
    assert Candidate.make(lora, [4], lr_multiplier=1.86) not in seen  # another structure
    study = run_study("autopeft", 20, space="mixed", pending=2)
    cands = [Candidate.from_dict(t.user_attrs["candidate"]) for t in study.trials]
    for i, a in enumerate(cands):
        for b in cands[:i]:
            da, db = a.to_dict(), b.to_dict()
            la, lb = da.pop("lr_multiplier"), db.pop("lr_multiplier")
            assert da != db or abs(math.log(la / lb)) >= math.log(1.05), (a.summary(), b.summary())


def test_the_score_floor_gives_no_acquisition_to_a_cheap_config_that_barely_beats_chance() -> None:
    """The acquisition counts hypervolume above chance + a quarter of the gap to the best score (the study's own
    reference point is unchanged; off by default): a config 3 % of the gap above chance adds a wide slice of hypervolume when it is
    cheap, and earns nothing with the floor; one well above the floor keeps most of what it earned (it loses only the
    slice between chance and the floor)."""
    from autopeft.sampler import SCORE_FLOOR

    b = SearchSpace.load("tiny").bind(6)
    sampler = make_sampler("autopeft", 0, b, OBJ, REF, lambda c: count_params(c, INFO))
    assert sampler.score_floor == SCORE_FLOOR == 0.0  # off by default (a measured miss); the mechanism:
    sampler.score_floor = 0.25
    front = np.array([[0.9, -5.0, -2.6], [0.8, -4.0, -2.5]])  # score, -log10 params, -log10 MiB (to_max space)
    best = float(front[:, 0].max())
    assert sampler._floor(best) == pytest.approx(0.5 + 0.25 * 0.4)
    cheap = (np.array([0.512]), np.array([0.004]), np.array([[-3.0, -2.2]]))  # barely above chance, 1,000 params
    good = (np.array([0.85]), np.array([0.004]), np.array([[-4.5, -2.4]]))

    def acq(point: tuple, floor: float | None) -> float:
        lower, upper = sampler._cells(front, floor)
        return float(closed_form_ehvi(*point, lower, upper)[0])

    assert acq(cheap, None) > 0.01 and acq(cheap, sampler._floor(best)) < 1e-12
    assert acq(good, None) > acq(good, sampler._floor(best)) > 0.5 * acq(good, None) > 0.01


def collapsing(c: Candidate) -> list[float]:
    """The toy landscape with a collapsing corner: configs under 10,000 trainable parameters (a third of the mixed
    space's random configs: head only, IA3, 1-layer adapters, heavy sparsity) do not learn at this fidelity and score
    the majority class (0.5, the reference)."""
    score, p, mem = synthetic(c)
    return [0.5 if p < 10_000 else score, p, mem]


def test_the_collapse_model_learns_which_configs_collapse_and_proposals_skip_them() -> None:
    """Once a trial collapsed and one learned, a logistic regression on exact config features predicts which configs
    learn (AUC on 200 unseen configs), and model-based proposals skip those it expects to collapse."""
    from sklearn.metrics import roc_auc_score

    b = SearchSpace.load("mixed").bind(6)
    sampler = make_sampler("autopeft", 0, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
    rng = np.random.default_rng(1)
    pool = [b.decode(b.random_vector(rng)) for _ in range(400)]
    done = [(c, collapsing(c)) for c in pool[:24]]
    assert sum(v[0] == 0.5 for _, v in done) >= 3 and sum(v[0] > 0.5 for _, v in done) >= 3
    first_learner = next(i for i, (_, v) in enumerate(done) if v[0] > 0.5)
    first_collapsed = next(i for i, (_, v) in enumerate(done) if v[0] == 0.5)
    k = max(first_learner, first_collapsed)
    from autopeft import collapse_model

    def fitted(d: list) -> bool:
        X = np.array([sampler._memo.collapse_features(c) for c, _ in d])
        return collapse_model.fit(X, [v[0] for _, v in d], 0.5, 0.5) is not None

    assert not fitted(done[:k]) and fitted(done[:k + 1])  # one class only: no regression yet; one of each: fitted
    assert sampler._collapse_model([d for d in done if d[1][0] > 0.5]) is None  # nothing collapsed: nothing to skip
    learns = sampler._collapse_model(done)
    unseen = pool[200:]
    p = learns(unseen)
    truth = np.array([collapsing(c)[0] > 0.5 for c in unseen])
    assert roc_auc_score(truth, p) > 0.85  # 0.896 here; chance 0.5
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    dists = b.distributions()
    for c, v in done:
        params = b.optuna_params(c)
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params}, values=v))
    from autopeft.collapse_model import P_LEARN

    for _ in range(2):
        c = sampler.propose(study)
        assert sampler.last_info["mode"] == "bo" and sampler.last_info["collapse_skipped"] > 0
        assert learns([c])[0] >= P_LEARN, c.summary()


def _weighted_study(seed: int, weight: float, **knobs: float) -> tuple[Any, Any, Any]:
    """The default sampler with ``learn_weight`` = ``weight`` (and other attributes, e.g. ``learn_band``) over 12
    random trials of the toy collapsing landscape; (bound space, sampler, study)."""
    b = SearchSpace.load("mixed").bind(6)
    dists = b.distributions()
    rng = np.random.default_rng(seed)
    sampler = make_sampler("autopeft", seed, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
    sampler.learn_weight = weight
    for k, v in knobs.items():
        setattr(sampler, k, v)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    for c in (b.decode(b.random_vector(rng)) for _ in range(12)):
        params = b.optuna_params(c)
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                  values=collapsing(c)))
    return b, sampler, study


def test_the_learn_weight_steers_proposals_away_from_configs_likely_to_collapse() -> None:
    """With ``learn_weight`` k > 0 the acquisition is EHVI x P(learns)^k (a trial at chance adds no hypervolume): on
    the toy landscape whose configs under 10,000 parameters collapse, after 12 random trials, six proposals (two at a
    time) over four seeds: without it 9 of 24 collapse, with k = 10 over the whole pool 1, within half the best gain
    (the default band) 5 (measured); the proposals stay model-based."""
    counts: dict[tuple[float, float], int] = {}
    for weight, band in ((0.0, 0.0), (10.0, 0.0), (10.0, 0.5)):
        counts[weight, band] = 0
        for seed in range(4):
            b, sampler, study = _weighted_study(seed, weight, learn_band=band)
            for _ in range(3):
                asked = [study.ask() for _ in range(2)]
                for t in asked:
                    c = b.suggest(t)  # Optuna plans a trial's relative params at its first suggest
                    assert sampler.last_info["mode"] == "bo"
                    counts[weight, band] += collapsing(c)[0] == 0.5
                for t in asked:
                    study.tell(t, collapsing(b.suggest(t)))
    assert counts[0.0, 0.0] >= 6 and counts[10.0, 0.0] <= counts[0.0, 0.0] - 5, counts
    assert counts[10.0, 0.5] < counts[0.0, 0.0], counts


def test_the_learn_cap_leaves_configs_the_model_trusts_unweighted() -> None:
    """``learn_cap``: P(learns) counts as min(1, P / cap), so with the cap at the skip threshold (P_LEARN) every kept
    candidate weighs 1 and the proposals are exactly those without a weight; without a cap (1) the weight changes
    them."""
    from autopeft.collapse_model import P_LEARN

    def proposals(weight: float, cap: float) -> list[str]:
        b, sampler, study = _weighted_study(0, weight, learn_cap=cap, learn_band=0.0)
        keys = []
        for _ in range(4):
            t = study.ask()
            c = b.suggest(t)
            keys.append(c.key)
            study.tell(t, collapsing(c))
        return keys

    plain = proposals(0.0, 1.0)
    assert proposals(10.0, P_LEARN) == plain
    assert proposals(10.0, 1.0) != plain


def test_the_learn_band_keeps_the_weighted_choice_near_the_best_unweighted_gain() -> None:
    """``learn_band`` b: the weight picks only among candidates whose EHVI alone is at least b x the pool's best, so
    every model-based proposal keeps that share of the best gain; without a band the weight goes below it (measured on
    the toy landscape: the weight alone took proposals at 0.16-0.69 of the pool's best, with b = 0.5 at 0.50-0.82)."""
    def shares(band: float) -> list[float]:
        out = []
        for seed in range(3):
            b, sampler, study = _weighted_study(seed, 10.0, learn_band=band)
            for _ in range(4):
                t = study.ask()
                c = b.suggest(t)
                info = sampler.last_info
                assert info["mode"] == "bo"
                out.append(info["ehvi_unweighted"] / info["ehvi_pool_best"])
                study.tell(t, collapsing(c))
        return out

    banded, free = shares(0.5), shares(0.0)
    assert min(banded) >= 0.5 - 1e-12, banded
    assert min(free) < 0.5, free


def test_the_learn_band_is_taken_from_candidates_within_the_memory_budget() -> None:
    """Under ``max_memory`` the band is a share of the best gain among candidates within the budget: taken from the
    whole pool, an over-budget candidate's gain set a floor no feasible one reached, and on the toy landscape (budget 150
    MiB, four seeds x four proposals) 6 of 16 proposals fell back to random configs, against 2 without a weight
    (measured); now as many as without a weight."""
    def randoms(weight: float, band: float) -> int:
        n = 0
        for seed in range(4):
            b, sampler, study = _weighted_study(seed, weight, learn_band=band, max_memory=150.0)
            for _ in range(4):
                t = study.ask()
                c = b.suggest(t)
                n += sampler.last_info["mode"] == "random"
                study.tell(t, collapsing(c))
        return n

    assert randoms(10.0, 0.5) <= randoms(0.0, 0.0)


def test_a_structure_that_collapsed_is_not_proposed_again_at_a_rate_as_low() -> None:
    """"head only" collapsed at x1.88: the same structure at x1.58 or x1.98 (within x1.25) gets P(learns) 0, at x2.4
    it is judged by the regression again; other structures are untouched; with no learner yet (no regression), the
    rule alone applies."""
    from autopeft.candidate import Candidate, structure_key

    b = SearchSpace.load("mixed").bind(6)
    sampler = make_sampler("autopeft", 0, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
    head = [Candidate.make({}, [], {}, lr_multiplier=m) for m in (1.88, 1.58, 1.98, 2.4)]
    lora = Candidate.make({"lora": {"r": 8, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}}, [0, 1, 2, 3, 4, 5],
                          {}, lr_multiplier=1.5)
    assert structure_key(head[0].to_dict()) == structure_key(head[1].to_dict()) != structure_key(lora.to_dict())
    only_collapse = [(head[0], [0.5, 770, 87.0])]
    learns = sampler._collapse_model(only_collapse)
    assert list(learns(head[1:] + [lora])) == [0.0, 0.0, 1.0, 1.0]
    rng = np.random.default_rng(1)
    done = only_collapse + [(c, collapsing(c)) for c in (b.decode(b.random_vector(rng)) for _ in range(24))]
    p = sampler._collapse_model(done)(head[1:] + [lora])
    assert p[0] == 0.0 and p[1] == 0.0 and 0.0 < p[2] < 1.0 and 0.0 < p[3] < 1.0  # x2.4 and LoRA: the regression's


def test_the_score_trend_is_least_squares_in_log_params_and_never_falls() -> None:
    """The score GP's trend (``score_trend``): the least-squares line of the score in log10 of the exact parameter
    count, at the fitted configs and at any other; flat at the mean when the scores fall with size (more parameters
    are never predicted to score less); zero when off or with fewer than 3 trials."""
    from autopeft.candidate import Candidate

    b = SearchSpace.load("mixed").bind(6)
    sampler = make_sampler("autopeft", 0, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
    rng = np.random.default_rng(3)
    cands = [b.decode(b.random_vector(rng)) for _ in range(12)]
    lp = np.log10([count_params(c, INFO) for c in cands])
    assert np.ptp(lp) > 1.5
    y = 0.6 + 0.04 * lp + rng.normal(0, 0.01, len(cands))
    head = Candidate.make({}, [], {}, lr_multiplier=1.0)  # 770 parameters: the classifier
    sampler.score_trend = False
    assert sampler._trend(cands, y)([head]) == 0.0
    sampler.score_trend = True
    trend = sampler._trend(cands, y)
    slope, icpt = np.polyfit(lp, y, 1)
    assert 0.03 < slope < 0.05
    np.testing.assert_allclose(trend(None), icpt + slope * lp)
    assert trend([head])[0] == pytest.approx(icpt + slope * math.log10(770))
    assert trend([head])[0] < y.min()  # the smallest config: predicted under every trial
    falling = sampler._trend(cands, 1.5 - y)
    np.testing.assert_allclose(falling([head] + cands[:2]), np.mean(1.5 - y))
    assert sampler._trend(cands[:2], y[:2])([head]) == 0.0


def test_the_score_trend_waits_while_another_studys_trials_are_the_prior() -> None:
    """While a warm start's prior informs the model (its first PRIOR_UNTIL trials), the trend is not used (fitted with
    the prior it cost the warm-start replays their first 20 trials): the same proposals with it on and off; once the
    prior is dropped, the trend is back."""
    b = SearchSpace.load("mixed").bind(6)
    rng = np.random.default_rng(7)
    source = [b.decode(b.random_vector(rng)) for _ in range(40)]
    prior = [(c, 0.1 + 0.9 * collapsing(c)[0]) for c in source]
    done = [b.decode(b.random_vector(rng)) for _ in range(8)]
    dists = b.distributions()

    def proposals(trend: bool, until: int | None) -> list[str]:
        sampler = make_sampler("autopeft", 0, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
        sampler.set_prior(prior)
        sampler.prior_until, sampler.score_trend = until, trend
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
        keys = []
        for i in range(len(done) + 3):
            c = done[i] if i < len(done) else sampler.propose(study)
            keys += [c.key] if i >= len(done) else []
            params = b.optuna_params(c)
            study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                      values=collapsing(c)))
        return keys

    assert proposals(True, 20) == proposals(False, 20)
    assert proposals(True, 4) != proposals(False, 4)  # the prior dropped after 4 trials: the trend changes them


def test_the_learn_weight_can_wait_while_another_studys_trials_are_the_prior() -> None:
    """``learn_with_prior`` off: while a warm start's prior informs the model (its first PRIOR_UNTIL trials), the
    acquisition is not weighted by P(learns) (the proposals are those of weight 0, each with its unweighted gain), the
    collapse model still skipping configs it expects to collapse; once the prior is dropped, the weight is back.  On,
    the weight applies with the prior too.  Off is the default."""
    from autopeft.collapse_model import LEARN_WITH_PRIOR

    assert LEARN_WITH_PRIOR is False
    b = SearchSpace.load("mixed").bind(6)
    rng = np.random.default_rng(7)
    source = [b.decode(b.random_vector(rng)) for _ in range(40)]
    prior = [(c, 0.1 + 0.9 * collapsing(c)[0]) for c in source]
    done = [b.decode(b.random_vector(rng)) for _ in range(12)]
    assert 0 < sum(collapsing(c)[0] == 0.5 for c in done) < 12  # a collapse model exists from the start
    dists = b.distributions()

    def proposals(weight: float, with_prior: bool, until: int | None) -> tuple[list[str], list[bool]]:
        sampler = make_sampler("autopeft", 0, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
        sampler.set_prior(prior)
        sampler.prior_until, sampler.learn_weight, sampler.learn_with_prior = until, weight, with_prior
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
        keys, unweighted = [], []
        for i in range(len(done) + 3):
            c = done[i] if i < len(done) else sampler.propose(study)
            if i >= len(done):
                info = sampler.last_info
                keys.append(c.key)
                unweighted.append(info["mode"] == "bo" and info["ehvi"] == info["ehvi_unweighted"])
            params = b.optuna_params(c)
            study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                      values=collapsing(c)))
        return keys, unweighted

    plain, _ = proposals(0.0, True, 40)
    waiting, unweighted = proposals(10.0, False, 40)
    assert waiting == plain and all(unweighted)
    assert proposals(10.0, True, 40)[0] != plain  # on: weighted with the prior
    assert proposals(10.0, False, 4)[0] != proposals(0.0, False, 4)[0]  # the prior dropped: the weight is back


def test_the_score_trend_steers_proposals_out_of_a_collapsing_corner() -> None:
    """On the toy landscape whose configs under 10,000 parameters collapse to the majority class, after 10 trials that
    all learned, the sampler proposes four configs, two at a time (the first pending while the second is planned), each
    from its model with a positive expected improvement: without the trend 15 of the 16 proposals over four seeds are
    small ones that collapse (a config far from every trial is predicted at the trials' mean, and a small one adds a
    wide slice of hypervolume); with it, 11 (measured: 15 and 11; without the trend added back to the GP's mean the
    expected improvement is 0 everywhere and the sampler falls back to random proposals)."""
    b = SearchSpace.load("mixed").bind(6)
    dists = b.distributions()
    small = {False: 0, True: 0}
    for trend in (False, True):
        for seed in range(4):
            rng = np.random.default_rng(seed)
            done = [c for c in (b.decode(b.random_vector(rng)) for _ in range(200))
                    if count_params(c, INFO) >= 10_000][:10]
            sampler = make_sampler("autopeft", seed, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
            sampler.score_trend, sampler.learn_weight = trend, 0.0  # the trend alone, as measured
            study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
            for c in done:
                params = b.optuna_params(c)
                study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                          values=collapsing(c)))
            for _ in range(2):  # two proposals at a time: the first is pending (kriging believer) for the second
                asked = [study.ask() for _ in range(2)]
                for t in asked:
                    c = b.suggest(t)
                    assert sampler.last_info["mode"] == "bo" and sampler.last_info["ehvi"] > 0
                    small[trend] += count_params(c, INFO) < 10_000
                for t in asked:
                    study.tell(t, collapsing(b.suggest(t)))
    assert small[True] <= small[False] - 3, small


@pytest.mark.parametrize("n_startup", [10, 2])  # random start-up, then the model-based step
def test_a_running_config_is_not_proposed_again_at_any_rate(n_startup: int) -> None:
    """While a trial trains, its config is not proposed again at any learning rate (in real SST-2 searches "head only"
    was proposed at x1.58 and x1.98 beside a running x1.88, all three at the majority class); once it is done, only
    rates within LR_NEAR of the finished one are skipped.  Two structures (LoRA r=4 or r=8 on every layer): while r=8
    runs every proposal is r=4; before and after, r=8 comes up."""
    from autopeft.space import SearchSpace

    b = SearchSpace.from_dict({"version": 1, "name": "two", "select": "one", "methods": {"lora": {
        "r": {"choices": [4, 8]}, "targets": ["q", "v"]}}, "training": {"lr_multiplier": {"float": [0.5, 2.0],
        "log": True}}}).bind(6)
    sampler = make_sampler("autopeft", 0, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=n_startup)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    done = [Candidate.make({"lora": {"r": r, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}},
                           range(6), {}, lr_multiplier=m) for r, m in ((4, 0.6), (8, 0.7), (4, 1.9))]
    for c in done:
        study.enqueue_trial(b.optuna_params(c))
        t = study.ask()
        study.tell(t, synthetic(b.suggest(t)))
    def ranks() -> set[int]:
        return {sampler.propose(study).methods["lora"]["r"] for _ in range(12)}

    assert 8 in ranks()  # the toy landscape favours more parameters: the model-based step proposes r=8
    study.enqueue_trial(b.optuna_params(done[1]))
    running = study.ask()  # r=8 at x0.7, left running
    assert b.suggest(running) == done[1]
    assert ranks() == {4}
    study.tell(running, synthetic(done[1]))
    assert 8 in ranks()


def test_the_gp_fit_minimises_botorchs_own_objective() -> None:
    """autopeft.sampler_gp hands botorch's optimiser a closed-form closure: the same loss (negative MAP marginal log
    likelihood over n) and the same gradients as botorch's autograd closure, at any hyperparameters."""
    import torch
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim.closures import get_loss_closure_with_grads
    from botorch.optim.utils import get_parameters_and_bounds
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from autopeft.sampler_gp import _exact_closure

    g = torch.Generator().manual_seed(0)
    X = torch.rand(40, 7, dtype=torch.double, generator=g)
    y = (X[:, :2].sum(-1) + 0.1 * torch.randn(40, generator=g, dtype=torch.double)).unsqueeze(-1)
    gp = SingleTaskGP(X, y, outcome_transform=Standardize(m=1))
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp).train()
    params = {k: p for k, p in get_parameters_and_bounds(mll)[0].items() if p.requires_grad}
    ours, theirs = _exact_closure(mll), get_loss_closure_with_grads(mll, params)
    assert ours is not None
    for ls, noise, c in ((0.7, 0.03, 0.2), (2.5, 0.5, -0.4)):
        with torch.no_grad():
            gp.covar_module.raw_lengthscale.copy_(ls + torch.rand(1, 7, dtype=torch.double, generator=g))
            gp.likelihood.noise_covar.raw_noise.fill_(noise)
            gp.mean_module.raw_constant.fill_(c)
        (a, ga), (b, gb) = ours(), theirs()
        assert float(a) == pytest.approx(float(b.detach()), rel=1e-7)
        for u, v in zip(ga, gb):
            assert np.allclose(u.numpy(), v.numpy(), rtol=1e-6, atol=1e-9)


def test_the_numpy_posterior_equals_botorchs() -> None:
    """sampler_gp.posterior predicts in numpy from the fitted model's Cholesky factor: the same mean and standard
    deviation as botorch's ``gp.posterior`` (latent, un-standardised), at new points and at the training points
    (where the variance is smallest), for a fit from scratch, a fit on a subset (beyond FIT_POINTS) and a model
    that reuses the last fit's hyperparameters."""
    from autopeft import sampler_gp

    rng = np.random.default_rng(0)
    state = None
    for n in (9, 60, 300, 303):
        X = rng.random((n, 12))
        y = np.sin(X @ rng.normal(size=12)) + 0.05 * rng.normal(size=n)
        gp, state = sampler_gp.fit_gp(X, y, state, 0)
        Xs = np.concatenate([rng.random((200, 12)), X[:8]])
        mu, sd = sampler_gp.posterior(gp, Xs)
        assert getattr(gp, "_autopeft_predictor", None) is not None  # the numpy path ran
        mu_b, sd_b = sampler_gp._botorch_posterior(gp, Xs)
        assert np.allclose(mu, mu_b, rtol=0, atol=1e-9) and np.allclose(sd, sd_b, rtol=1e-7, atol=1e-10)
        assert np.median(sd[-8:]) < np.median(sd[:200])  # not a constant: surer at the training points


def test_a_candidate_made_without_the_json_copy_equals_one_built_from_its_json() -> None:
    """Candidate.make keeps the data it built instead of copying it through JSON: for every shipped space's random
    candidates its data equals its key's JSON and it equals (by key, hash and accessors) the candidate read back."""
    import glob
    import json
    import os

    rng = np.random.default_rng(0)
    for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "search_spaces", "*.yaml"))):
        b = SearchSpace.load(os.path.basename(path)[:-5]).bind(6)
        for _ in range(100):
            c = b.decode(b.random_vector(rng))
            again = Candidate.from_dict(json.loads(c.key))
            assert c._data == json.loads(c.key) and type(c._data["lr_multiplier"]) is float
            assert again == c and hash(again) == hash(c) and again.key == c.key
            assert (again.methods, again.layers, again.sparsity) == (c.methods, c.layers, c.sparsity)


def test_reused_per_trial_values_change_no_proposal() -> None:
    """The sampler keeps each trial's candidate, encoding, counts and features from ask to ask: a sampler that reuses
    them proposes exactly what a copy that computes everything afresh proposes (same seed, GP state and history)."""
    import copy

    b = SearchSpace.load("mixed").bind(6)
    sampler = make_sampler("autopeft", 0, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    for _ in range(14):  # collapsing configs, so the collapse model is on
        t = study.ask()
        study.tell(t, collapsing(b.suggest(t)))
    for _ in range(2):
        fresh = copy.deepcopy(sampler)  # a copy carries no remembered values
        assert not fresh._memo._entries and sampler._memo._entries
        sampler._rng, fresh._rng = np.random.default_rng(7), np.random.default_rng(7)
        a, c = sampler.propose(study), fresh.propose(study)
        assert a == c and sampler.last_info["mode"] == "bo"
        t = study.ask()
        study.tell(t, collapsing(b.suggest(t)))


def test_beyond_fit_points_the_gp_fits_on_a_subset_and_conditions_on_every_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    from autopeft import sampler_gp

    monkeypatch.setattr(sampler_gp, "FIT_POINTS", 16)
    rng = np.random.default_rng(0)
    X = rng.random((40, 5))
    y = X[:, 0] + 0.05 * rng.standard_normal(40)
    gp, state = sampler_gp.fit_gp(X, y, None, seed=0)
    assert gp.train_inputs[0].shape == (40, 5) and state["d"] == 5
    mu, sd = sampler_gp.posterior(gp, X[:5])
    assert np.all(np.abs(mu - y[:5]) < 0.3) and np.all(sd > 0)
    gp2, _ = sampler_gp.fit_gp(X, y, state, seed=0)  # warm-started from the last fit
    assert gp2.train_inputs[0].shape == (40, 5)


def test_the_gp_refits_its_hyperparameters_only_once_the_trials_grew(monkeypatch: pytest.MonkeyPatch) -> None:
    """From REFIT_FROM trials on, a few more trials keep the last fit's hyperparameters (the GP still conditions on every
    trial: its posterior at a new trial moves to that trial's score); 10 % more trials fit them again."""
    from autopeft import sampler_gp

    fits: list[int] = []
    real_fit = sampler_gp._fit
    monkeypatch.setattr(sampler_gp, "_fit", lambda gp: (fits.append(len(gp.train_inputs[0])), real_fit(gp)))
    rng = np.random.default_rng(1)
    X = rng.random((60, 4))
    y = np.sin(6 * X[:, 0]) + 0.02 * rng.standard_normal(60)
    y[53] += 1.0  # a surprise the model has not seen
    gp, state = sampler_gp.fit_gp(X[:50], y[:50], None, seed=0)
    mu_before, _ = sampler_gp.posterior(gp, X[53:54])
    gp2, state2 = sampler_gp.fit_gp(X[:54], y[:54], state, seed=0)  # 54 < 50 x 1.1: no new fit
    assert fits == [50] and state2 is state and gp2.train_inputs[0].shape == (54, 4)
    ls = lambda g: g.covar_module.lengthscale.detach().numpy()  # noqa: E731
    assert np.allclose(ls(gp2), ls(gp))
    mu_after, _ = sampler_gp.posterior(gp2, X[53:54])
    assert abs(mu_before[0] - y[53]) > 0.8 and mu_after[0] - mu_before[0] > 0.1  # conditioned on the new trial
    _, state3 = sampler_gp.fit_gp(X[:55], y[:55], state2, seed=0)  # 55 >= 50 x 1.1: fitted again
    assert fits == [50, 55] and state3["n"] == 55
    sampler_gp.fit_gp(X[:30], y[:30], state3, seed=0)  # fewer trials than the last fit (a new level): fitted
    assert fits == [50, 55, 30]


def test_a_prior_from_a_related_task_gives_a_better_front_early() -> None:
    """Another study's trials as the sampler's prior (autopeft.sampler_prior): 60 configs scored on a related task
    (the toy landscape's score on another scale: same ranking) make 8 trials reach a larger hypervolume than 8 trials
    without them (3 seeds each, median), and the prior shortens the random start-up to PRIOR_STARTUP trials."""
    from autopeft.pareto import hypervolume
    from autopeft.sampler_prior import PRIOR_STARTUP, map_scores, select

    b = SearchSpace.load("lora").bind(6)
    rng = np.random.default_rng(7)
    source = [b.decode(b.random_vector(rng)) for _ in range(60)]
    related = [(c, float(s)) for c, s in zip(source, map_scores([0.2 + 0.8 * synthetic(c)[0] for c in source],
                                                                0.55, 0.5))]
    assert map_scores([0.775], 0.55, 0.5).tolist() == [pytest.approx(0.75)]  # half of the gap to 1 on both scales

    def hv_after(n: int, seed: int, prior: list) -> tuple[float, list[str]]:
        sampler = make_sampler("autopeft", seed, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
        sampler.set_prior(prior)
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
        modes = []
        for _ in range(n):
            t = study.ask()
            c = b.suggest(t)
            modes.append(sampler.last_info.get("mode", "random"))
            study.tell(t, synthetic(c))
        Y = np.array([to_max(OBJ, t.values) for t in study.trials])
        return hypervolume(Y, REF), modes

    warm = [hv_after(8, s, related) for s in range(3)]
    cold = [hv_after(8, s, []) for s in range(3)]
    assert all(m[:PRIOR_STARTUP] == ["random"] * PRIOR_STARTUP and m[PRIOR_STARTUP] == "bo" for _, m in warm)
    assert all(m[:4] == ["random"] * 4 for _, m in cold)
    assert np.median([h for h, _ in warm]) > np.median([h for h, _ in cold])
    # a prior larger than MAX_PRIOR_POINTS keeps the front first
    pts = [(c, *synthetic(c)) for c in source] * 3
    keep = select(pts, limit=50)
    from autopeft.pareto import non_dominated

    front = np.flatnonzero(non_dominated(np.array([to_max(OBJ, p[1:]) for p in pts])))
    assert len(keep) == 50 and set(front.tolist()) <= set(keep)


def test_known_costs_are_the_exact_params_and_a_ridge_fit_of_the_measured_memory() -> None:
    """The sampler's cost coordinates of unseen candidates: minus log10 of the exact parameter count, and minus the
    log10 memory a ridge regression on the exact features predicts; memory made exactly linear in those features
    (in log10) is recovered on configs the fit never saw."""
    from autopeft.cost_model import KnownCosts

    b = SearchSpace.load("mixed").bind(6)
    sampler = make_sampler("autopeft", 0, b, OBJ, REF, lambda c: count_params(c, INFO), n_startup=4)
    memo = sampler._memo
    rng = np.random.default_rng(4)
    pool = [c for c in (b.decode(b.random_vector(rng)) for _ in range(200)) if memo.params(c) > 0]
    w = np.random.default_rng(5).normal(scale=0.1, size=len(memo.features(pool[0])))

    def memory(c: Candidate) -> float:
        return float(10 ** (2.0 + np.dot(w, memo.features(c))))

    done = [(c, [0.7, float(memo.params(c)), memory(c)]) for c in pool[:120]]
    known = KnownCosts(OBJ, memo.params, memo.features, done)
    unseen = pool[120:]
    got = known(unseen)
    assert got.shape == (len(unseen), 2)
    assert np.array_equal(got[:, 0], -np.log10([float(memo.params(c)) for c in unseen]))  # params: exact
    assert np.allclose(got[:, 1], [-math.log10(memory(c)) for c in unseen], atol=1e-3)  # memory: the ridge, linear
    assert KnownCosts(["score"], memo.params, memo.features, done)(unseen).shape == (len(unseen), 0)
