"""CostAwareEHVISampler against Optuna's sampler contract (``optuna.testing.pytest_samplers``, where it applies)
and ours: relative sampling over the space, history read from params, identical proposals to the reading of the
``candidate`` user attribute it replaced."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)
from optuna.trial import TrialState

from autopeft.arch import ArchInfo
from autopeft.builder import ModelInfo, count_params
from autopeft.candidate import Candidate
from autopeft.sampler import CostAwareEHVISampler, _Seen
from autopeft.space import BoundSpace, SearchSpace

optuna.logging.set_verbosity(optuna.logging.ERROR)

ARCH = ArchInfo("bert", "bert.encoder.layer", {"q": "attention.self.query", "k": "attention.self.key",
                "v": "attention.self.value", "o": "attention.output.dense", "ffn_up": "intermediate.dense",
                "ffn_down": "output.dense"}, 4, 64, 128, 2, 64)
INFO = ModelInfo("fake", ARCH, 2, 200_000, 130, ("classifier",), 0)
OBJ = ["score", "params", "memory"]
DIRS = ["maximize", "minimize", "minimize"]
REF = [0.5, -math.log10(INFO.base_params), -math.log10(400.0)]


def _sampler(b: BoundSpace, seed: int | None = 0, n_startup: int = 3, objectives: list[str] = OBJ,
             ref: list[float] = REF) -> CostAwareEHVISampler:
    return CostAwareEHVISampler(b, objectives, ref, partial(count_params, info=INFO), n_startup_trials=n_startup,
                                n_candidates=64, seed=seed)


def _tiny(layers: int = 4) -> BoundSpace:
    return SearchSpace.load("tiny").bind(layers)


def synthetic(c: Candidate) -> list[float]:
    """A deterministic toy landscape over [score, params, memory]."""
    p = count_params(c, INFO)
    score = 0.5 + 0.05 * math.log10(max(p, 1)) + 0.02 * sum(1 for i in c.layers if i >= 2) - 0.01 * len(c.layers)
    mem = 100.0 + 40.0 * ((4 - min(c.layers)) if c.layers else 0) + p * 16 / 2**20
    return [score, float(p), mem]


def drive(study: optuna.Study, b: BoundSpace, n: int, pending: int = 1) -> list[Candidate]:
    """``n`` more trials by the driver's protocol: ask (``pending`` at a time), suggest the candidate, record it
    as the ``candidate`` user attr, tell."""
    out: list[Candidate] = []
    while len(out) < n:
        batch = []
        for _ in range(pending):
            t = study.ask()
            c = b.suggest(t)
            t.set_user_attr("candidate", c.to_dict())
            batch.append((t, c))
        for t, c in batch:
            study.tell(t, synthetic(c))
            out.append(c)
    return out


def _asked(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """A new running trial, as the sampler sees it."""
    number = study.ask().number
    return study.trials[number]


# ----------------------------------------------------------------------------- Optuna's own contract tests
class TestOptunaContract(BasicSamplerTestCase, MultiObjectiveSamplerTestCase):
    """Optuna's basic and multi-objective sampler tests.  They suggest names outside the space (``x``, ``y``):
    the sampler still plans a candidate of its space for every trial, and answers those names independently."""

    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: _sampler(_tiny(2), objectives=["score", "params"], ref=[0.0, -6.0])

    # RelativeSamplerTestCase's test_sample_relative_{numerical,categorical,mixed} call sample_relative with a
    # search space of their own ({x, y}) and expect values for it: our relative space is the bound space's
    # distributions (see test_sample_relative_plans_every_active_dimension); only this one applies.
    test_trial_relative_params = RelativeSamplerTestCase.test_trial_relative_params


# ----------------------------------------------------------------------------- relative sampling
def test_relative_search_space_is_the_space() -> None:
    b = _tiny()
    s = _sampler(b)
    study = optuna.create_study(directions=DIRS, sampler=s)
    ft = _asked(study)
    space = s.infer_relative_search_space(study, ft)
    assert space == b.distributions() and list(space) == [d.name for d in b.dims]
    space.clear()  # PartialFixedSampler deletes entries from it: each call returns a fresh dict
    assert s.infer_relative_search_space(study, ft) == b.distributions()


@pytest.mark.parametrize("name", ["tiny", "mixed", "autopeft"])
def test_sample_relative_plans_every_active_dimension(name: str) -> None:
    """As optuna's test_sample_relative_*: values inside each distribution, of Python types, for every active
    dimension; they decode to a candidate of the space that ``suggest`` then returns."""
    b = SearchSpace.load(name).bind(4)
    s = _sampler(b, n_startup=100)  # each call proposes: a model-based proposal would warm-start the next GP fit
    study = optuna.create_study(directions=DIRS, sampler=s)
    dists = b.distributions()
    for _ in range(10):
        trial = study.ask()
        plan = s.sample_relative(study, study.get_trials()[trial.number], dists)
        c = b.candidate_from_params(plan)
        assert plan == b.optuna_params(c) and b.contains(c)
        for k, v in plan.items():
            d = dists[k]
            assert d._contains(d.to_internal_repr(v)), (k, v)
            assert not isinstance(v, (np.floating, np.integer, np.bool_))
            if isinstance(d, IntDistribution):
                assert type(v) is int
            elif isinstance(d, FloatDistribution):
                assert type(v) is float
            else:
                assert isinstance(d, CategoricalDistribution) and v in d.choices
        assert b.suggest(trial) == c  # the relative plan answers every suggestion
        assert trial.params == plan
        study.tell(trial, synthetic(c))


def test_sample_relative_ignores_a_search_space_without_its_dimensions() -> None:
    b = _tiny()
    s = _sampler(b)
    study = optuna.create_study(directions=DIRS, sampler=s)
    ft = _asked(study)
    assert s.sample_relative(study, ft, {}) == {}
    assert s.sample_relative(study, ft, {"x": FloatDistribution(0, 1)}) == {}
    part = {"method": b.distributions()["method"]}
    assert set(s.sample_relative(study, ft, part)) == {"method"}  # PartialFixedSampler narrows the space


def test_names_outside_the_space_are_sampled_independently_and_never_raise() -> None:
    b = _tiny()
    s = _sampler(b, n_startup=3)
    study = optuna.create_study(directions=DIRS, sampler=s)

    def objective(t: optuna.Trial) -> list[float]:
        c = b.suggest(t)
        x = t.suggest_float("x", -3.0, -1.0)
        k = t.suggest_int("k", 5, 9, log=True)
        assert -3.0 <= x <= -1.0 and 5 <= k <= 9
        return synthetic(c)

    study.optimize(objective, n_trials=4)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len(s.history(study)) == 4  # the extra params do not hide the trials from the model


def test_a_planned_value_outside_the_asked_distribution_falls_back_to_random() -> None:
    b = SearchSpace.from_dict({"methods": {"lora": {"r": {"int": [50, 64]}}}}).bind(2)
    s = _sampler(b)
    study = optuna.create_study(directions=DIRS, sampler=s)
    for _ in range(5):
        t = study.ask()
        r = t.suggest_int("lora.r", 1, 8)  # a narrower range than the space's: the plan (>= 50) does not fit
        assert 1 <= r <= 8
        assert len(t.relative_params) == 1 and t.relative_params["lora.r"] >= 50
        study.tell(t, state=TrialState.FAIL)


# ----------------------------------------------------------------------------- the contract points we rely on
def test_seeded_sampler_is_reproducible_and_seeds_differ() -> None:
    def run(seed: int) -> list[str]:
        b = _tiny()
        s = _sampler(b, seed, n_startup=100)
        return [c.key for c in drive(optuna.create_study(directions=DIRS, sampler=s), b, 6, pending=2)]

    a = run(1)
    assert a == run(1)
    assert a != run(2)


# first proposals (random phase) of the tiny space at 4 layers, seed 7, recorded with the sampler before it moved
# to sample_relative (it planned in sample_independent and read the history from the "candidate" user attr)
GOLDEN_SEED7 = [
    '{"layers":[0,3],"lr_multiplier":1.0,"methods":{"serial_adapter":{"scaling":1.0,"size":2}},"sparsity":{}}',
    ('{"layers":[3],"lr_multiplier":1.0,"methods":{"lora":{"alpha_ratio":2.0,"dropout":0.1,"r":4,'
     '"targets":["q","k","v","o"]}},"sparsity":{}}'),
    '{"layers":[0,1],"lr_multiplier":1.0,"methods":{"serial_adapter":{"scaling":1.0,"size":8}},"sparsity":{}}',
    ('{"layers":[1,3],"lr_multiplier":1.0,"methods":{"lora":{"alpha_ratio":2.0,"dropout":0.1,"r":4,'
     '"targets":["q","k","v","o"]}},"sparsity":{}}'),
    ('{"layers":[1],"lr_multiplier":1.0,"methods":{"serial_adapter":{"scaling":1.0,"size":2}},'
     '"sparsity":{"criterion":"random","fraction":0.5,"warmup_steps":0}}'),
]


def test_random_phase_proposes_what_the_previous_sampler_proposed() -> None:
    b = _tiny()
    study = optuna.create_study(directions=DIRS, sampler=_sampler(b, seed=7, n_startup=100))
    assert [c.key for c in drive(study, b, 5)] == GOLDEN_SEED7


def test_same_seed_same_history_gives_the_identical_candidate_sequence() -> None:
    """Two fresh studies, same seed, same synthetic objective, pending trials: identical candidates through the
    random phase and the model-based one."""
    seqs = []
    infos = []
    for _ in range(2):
        b = _tiny()
        s = _sampler(b, seed=11, n_startup=3)
        study = optuna.create_study(directions=DIRS, sampler=s)
        seqs.append([c.key for c in drive(study, b, 6, pending=2)])
        infos.append(s.last_info["mode"])
    assert seqs[0] == seqs[1]
    assert len(set(seqs[0])) == 6
    assert infos == ["bo", "bo"]


def _old_history(study: optuna.Study) -> tuple[list[str], list[tuple[str, list[float]]], list[str]]:
    """The history reading the sampler had before: the ``candidate`` user attr (set by the driver)."""
    seen, done, pending = [], [], []
    for t in study.get_trials(deepcopy=False):
        cj = t.user_attrs.get("candidate")
        if cj is None:
            continue
        c = Candidate(cj)
        seen.append(c.key)
        if t.state == TrialState.COMPLETE and t.values is not None:
            done.append((c.key, list(t.values)))
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            pending.append(c.key)
    return seen, done, pending


def _new_history(s: CostAwareEHVISampler, study: optuna.Study) -> tuple[list[str], list[tuple[str, list[float]]], list[str]]:
    seen, done, pending = [], [], []
    for t, c in s.history(study):
        seen.append(c.key)
        if t.state == TrialState.COMPLETE and t.values is not None:
            done.append((c.key, list(t.values)))
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            pending.append(c.key)
    return seen, done, pending


@pytest.mark.parametrize("name", ["tiny", "mixed"])
def test_history_from_params_equals_history_from_the_candidate_attr(name: str) -> None:
    """Every kind of trial a study holds: complete, failed, pruned, pending (running with params), enqueued
    (waiting, no params), asked but not yet suggested, another sampler's, and one with foreign params only."""
    b = SearchSpace.load(name).bind(4)
    s = _sampler(b, seed=5, n_startup=6)
    study = optuna.create_study(directions=DIRS, sampler=s)
    drive(study, b, 4)
    for state in (TrialState.FAIL, TrialState.PRUNED):
        t = study.ask()
        t.set_user_attr("candidate", b.suggest(t).to_dict())
        study.tell(t, state=state)
    study.sampler = optuna.samplers.RandomSampler(seed=0)
    drive(study, b, 2)
    study.sampler = s
    t = study.ask()
    t.suggest_float("x", 0, 1)  # params, none of the space
    study.tell(t, synthetic(b.sample(np.random.default_rng(0))[0]))
    running = study.ask()
    running.set_user_attr("candidate", b.suggest(running).to_dict())  # pending
    study.ask()  # asked, nothing suggested yet
    study.enqueue_trial(b.optuna_params(b.sample(np.random.default_rng(1))[0]))  # waiting
    drive(study, b, 2)  # model-based steps over all of the above (the first consumes the enqueued trial)
    assert s.last_info["mode"] == "bo"
    study.enqueue_trial({"method": b.by_name["method"].choices[0]} if "method" in b.by_name else {})
    old, new = _old_history(study), _new_history(s, study)
    assert old == new
    seen, done, pending = new
    assert len(seen) == len(study.trials) - 3 and len(pending) == 1 and len(done) == len(seen) - 3
    assert {t.state for t in study.trials} == {TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED,
                                               TrialState.RUNNING, TrialState.WAITING}


def test_failed_and_pruned_trials_are_never_proposed_again_nor_counted_as_done() -> None:
    b = _tiny(2)
    s = _sampler(b, seed=0, n_startup=2)
    study = optuna.create_study(directions=DIRS, sampler=s)
    bad = []
    for state in (TrialState.FAIL, TrialState.PRUNED, TrialState.FAIL):
        t = study.ask()
        bad.append(b.suggest(t))
        study.tell(t, state=state)  # after_trial runs for every outcome
        assert s.last_info["mode"] == "random"  # failed and pruned trials are no data for the model
    later = drive(study, b, 3)
    assert s.last_info["mode"] == "bo"
    seen = _Seen()
    for c in bad:
        seen.add(c)
    assert not [c for c in later if c in seen]
    assert [c for _, c in s.history(study)] == bad + later


def test_multi_objective_optimize_with_one_job() -> None:
    b = _tiny()
    s = _sampler(b, seed=3, n_startup=3)
    study = optuna.create_study(directions=DIRS, sampler=s)
    study.optimize(lambda t: synthetic(b.suggest(t)), n_trials=5, n_jobs=1)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    cands = [c for _, c in s.history(study)]
    assert len({c.key for c in cands}) == 5 and all(b.contains(c) for c in cands)
    assert s.last_info["mode"] == "bo" and study.best_trials


def test_enqueued_params_are_respected() -> None:
    b = SearchSpace.load("mixed").bind(4)
    s = _sampler(b, seed=0)
    study = optuna.create_study(directions=DIRS, sampler=s)
    want = b.sample(np.random.default_rng(4), 3)
    for c in want:
        study.enqueue_trial(b.optuna_params(c))
    study.enqueue_trial({"method": "prefix"})  # partly fixed: the rest is planned or sampled
    got = drive(study, b, 4)
    assert got[:3] == want
    assert list(got[3].methods) == ["prefix"] and b.contains(got[3])


def test_reseed_rng_changes_the_stream() -> None:
    b = SearchSpace.load("mixed").bind(4)
    keys = []
    for reseed in (False, True, True):
        s = _sampler(b, seed=0, n_startup=100)
        if reseed:
            s.reseed_rng()
        keys.append([c.key for c in drive(optuna.create_study(directions=DIRS, sampler=s), b, 3)])
    assert keys[0] != keys[1] and keys[1] != keys[2]
    s = _sampler(b, seed=0)
    x = FloatDistribution(0.0, 1.0)
    study = optuna.create_study(sampler=s)
    ft = _asked(study)
    first = s.sample_independent(study, ft, "x", x)
    s.reseed_rng()
    assert s.sample_independent(study, ft, "x", x) != first  # the independent (fallback) sampler is reseeded too


def test_trials_of_another_sampler_count() -> None:
    """A study begun by another sampler: its trials are history (done or seen) for ours, without any user attr."""
    b = _tiny()
    study = optuna.create_study(directions=DIRS, sampler=optuna.samplers.RandomSampler(seed=2))
    study.optimize(lambda t: synthetic(b.suggest(t)), n_trials=4)
    s = _sampler(b, seed=0, n_startup=4)
    study.sampler = s
    study.optimize(lambda t: synthetic(b.suggest(t)), n_trials=1)
    assert s.last_info["mode"] == "bo"  # the other sampler's four trials are the startup
    hist = s.history(study)
    assert [t.number for t, _ in hist] == [0, 1, 2, 3, 4]
    assert hist[-1][1] not in {c for _, c in hist[:-1]}


def test_sampler_pickles() -> None:
    import pickle

    s = _sampler(_tiny(), seed=9)
    t = pickle.loads(pickle.dumps(s))
    b = t.space
    assert [c.key for c in drive(optuna.create_study(directions=DIRS, sampler=t), b, 2)] == \
           [c.key for c in drive(optuna.create_study(directions=DIRS, sampler=s), s.space, 2)]
