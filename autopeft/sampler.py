"""autopeft's default sampler: cost-aware multi-objective Bayesian optimisation.

Only the task score is unknown before a trial.  Trainable parameters are counted exactly for any
candidate (:func:`autopeft.builder.count_params`); memory (and time, if it is an objective) are
measured by every trial and predicted for unseen candidates by a ridge regression on a few exact
features (backprop depth, adapted layers, parameters, methods), which is accurate because
training memory is close to linear in them.  A GP (botorch ``SingleTaskGP``, RBF with ARD
over the whole flat encoding, every dimension including per-layer switches and conditional ones)
models the score, and the acquisition is the **closed-form expected hypervolume improvement**
over [GP score, known costs] (``shared/notes/cost-aware-ehvi.md``): exact, no Monte Carlo,
vectorised over thousands of candidates.  Pending trials enter the front at their posterior mean
(kriging believer) so concurrent workers get different candidates.  Candidates over a budget
score zero and are never proposed; nor is any candidate already evaluated, failed or pending.  Once some trials
collapsed to the majority class and some learned, a logistic regression on a config's exact features predicts which
configs learn at the study's fidelity: model-based proposals skip those it expects to collapse, and the acquisition of
the others is weighted by P(learns) to the power :data:`autopeft.collapse_model.LEARN_WEIGHT` among the candidates
whose expected gain alone is within :data:`autopeft.collapse_model.LEARN_BAND` of the best (not while a warm start's
prior informs the model: :data:`autopeft.collapse_model.LEARN_WITH_PRIOR`).  With ``--warm-start`` another study's trials are a prior: they join the score GP's data with a task input
(:mod:`autopeft.sampler_prior`).  The GP's fit and predictions are in :mod:`autopeft.sampler_gp` (botorch's model and objective, fitted fast); what the
sampler keeps from ask to ask (each trial's candidate, encoding, counts, features) in :mod:`autopeft.sampler_memo`.

It plugs into Optuna as a ``BaseSampler`` with relative sampling: the relative search space is the
space's distributions, and ``sample_relative`` (called once, at a trial's first suggestion) plans a
whole candidate and returns it as Optuna params; :meth:`autopeft.space.BoundSpace.suggest` then gets
each active dimension from that plan.  Past trials are read from their params (decoded by the space),
so any trial of the study whose params form a candidate counts, whichever sampler proposed it.  A
parameter outside the plan (another name, or a value the asked distribution does not contain) is
sampled independently at random.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from autopeft.candidate import Candidate
from autopeft import collapse_model
from autopeft.collapse_model import P_LEARN
from autopeft.cost_model import KnownCosts, _features  # noqa: F401  (_features: the sampler's cost features)
from autopeft.contract import PRUNED
from autopeft.pareto import TASK_OBJECTIVES, closed_form_ehvi, to_max  # noqa: F401  (closed_form_ehvi: re-exported)
from autopeft import sampler_gp
from autopeft.sampler_prior import PRIOR_STARTUP, PRIOR_UNTIL, with_task
from autopeft.sampler_memo import SamplerMemo
from autopeft.sampler_seen import Seen as _Seen
from autopeft.space import BoundSpace
from autopeft.storage import A, level_of, study_level

CostFn = Callable[[Candidate], float]


#: the acquisition's score floor: hypervolume counts only above chance + this share of the gap between chance and the
#: best score so far (the study's own reference point is unchanged).  Off: in a real 40-trial SST-2 search a floor of
#: 0.25 left 20 of 32 model-based trials collapsed (18 without it); see BENCHMARKS "Collapse".
SCORE_FLOOR = 0.0


class CostAwareEHVISampler(BaseSampler):
    """Multi-objective BO over a :class:`BoundSpace`, modelling only the score (objective 0)."""

    def __init__(
        self,
        space: BoundSpace,
        objectives: Sequence[str],
        ref_point: Sequence[float],
        count_params: CostFn,
        max_params: float | None = None,
        max_memory: float | None = None,
        n_startup_trials: int = 8,
        n_candidates: int = 1024,
        seed: int | None = None,
        score_floor: float = SCORE_FLOOR,
        prior: Sequence[tuple[Candidate, float]] = (),
    ) -> None:
        if objectives[0] not in TASK_OBJECTIVES:
            raise ValueError("objective 0 must be the task's score or loss")
        self.space = space
        self.objectives = list(objectives)
        self.ref = np.asarray(ref_point, dtype=float)
        self.count_params = count_params
        self.max_params = max_params
        self.max_memory = max_memory
        self.n_startup = n_startup_trials
        self.n_candidates = n_candidates
        if not 0.0 <= score_floor < 1.0:
            raise ValueError(f"score_floor must be in [0, 1), got {score_floor!r}")
        self.score_floor = score_floor
        self.score_trend = sampler_gp.SCORE_TREND
        self.learn_weight = collapse_model.LEARN_WEIGHT
        self.learn_cap = collapse_model.LEARN_CAP
        self.learn_band = collapse_model.LEARN_BAND
        self.learn_with_prior = collapse_model.LEARN_WITH_PRIOR
        self._seed = 0 if seed is None else int(seed)
        self._rng = np.random.default_rng(seed)
        self._random = RandomSampler(seed=seed)
        self._gp_state: dict[str, Any] | None = None
        self._memo = SamplerMemo(space, count_params)  # per-trial and per-candidate values, computed once
        self._lock = threading.Lock()  # one proposal at a time (optimize(n_jobs>1) shares the sampler)
        self.last_info: dict[str, Any] = {}
        self._prior: tuple[np.ndarray, np.ndarray] | None = None
        self.prior_until = PRIOR_UNTIL
        self.set_prior(prior)

    def set_prior(self, prior: Sequence[tuple[Candidate, float]]) -> None:
        """Another study's trials, (candidate, score already on this study's scale), as a prior for the score model
        (:mod:`autopeft.sampler_prior`); candidates outside this space are left out.  Empty: no prior."""
        kept = [(c, float(y)) for c, y in prior if self.space.contains(c) and math.isfinite(float(y))]
        if kept and self.objectives[0] != "score":
            raise ValueError("a prior needs a score objective (a loss is not mapped between tasks)")
        self._prior = (with_task(np.stack([self.space.encode(c) for c, _ in kept]), 0.0),
                       np.array([y for _, y in kept])) if kept else None
        self._prior_cands = [c for c, _ in kept]  # also candidates of the pool (not yet evaluated here)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ optuna interface
    def reseed_rng(self) -> None:
        self._seed = int(np.random.SeedSequence().entropy % 2**31)
        self._rng = np.random.default_rng()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.space.distributions()

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """Plan the trial's whole candidate; its Optuna params, restricted to ``search_space``."""
        if not any(name in search_space for name in self.space.by_name):
            return {}
        with self._lock:
            # one stream per trial number: reproducible, and concurrent drivers on one study diverge
            self._rng = np.random.default_rng([self._seed, trial.number])
            cand = self.propose(study, trial)
        return {k: v for k, v in self.space.optuna_params(cand).items() if k in search_space}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        # a parameter outside the plan: not a dimension of the space, or the plan's value is not in the asked distribution
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    # ------------------------------------------------------------------ costs
    def _params(self, c: Candidate) -> int:
        return self._memo.params(c)

    def _feasible_params(self, c: Candidate) -> bool:
        p = self._params(c)
        return p > 0 and (self.max_params is None or p <= self.max_params)  # 0: nothing would train

    # ------------------------------------------------------------------ proposing
    def history(self, study: Study, trial: FrozenTrial | None = None) -> list[tuple[FrozenTrial, Candidate]]:
        """Every trial of ``study`` (but ``trial``) whose params form a candidate of the space, with that
        candidate.  Params outside the space are ignored; a trial lacking an active dimension is skipped; so is a
        trial promoted to a higher fidelity (``--promote``): the models learn the study's own fidelity."""
        out: list[tuple[FrozenTrial, Candidate]] = []
        level = study_level(study)  # a lower level's trials ran at another fidelity (autopeft.escalation)
        for t in study.get_trials(deepcopy=False):
            if ((trial is not None and t.number == trial.number) or t.user_attrs.get(A.RUNG)
                    or (level_of(t) != level and t.state != TrialState.WAITING)):
                continue
            c = self._memo.candidate(study.study_name, t.number, t.params)
            if c is not None:
                out.append((t, c))
        return out

    def propose(self, study: Study, trial: FrozenTrial | None = None) -> Candidate:
        """The next candidate for ``trial`` (not read as history) given the study's other trials."""
        t0 = time.perf_counter()
        seen = _Seen()
        done: list[tuple[Candidate, list[float]]] = []
        pending: list[Candidate] = []
        stopped: list[tuple[Candidate, float]] = []
        hist = self.history(study, trial)
        self._memo.keep_only([c for _, c in hist])
        for t, c in hist:
            seen.add(c, running=t.state in (TrialState.RUNNING, TrialState.WAITING))
            if t.state == TrialState.COMPLETE and t.values is not None:
                done.append((c, list(t.values)))
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                pending.append(c)
            elif (t.state == TrialState.PRUNED and t.user_attrs.get(A.STATUS) == PRUNED
                  and isinstance(t.user_attrs.get(A.SCORE), (int, float))):
                stopped.append((c, float(t.user_attrs[A.SCORE])))
        if len(done) < (min(self.n_startup, PRIOR_STARTUP) if self._prior is not None else self.n_startup):
            cand = self._random_candidate(seen)
            self.last_info = {"mode": "random", "s": time.perf_counter() - t0}
            return cand
        with sampler_gp.one_thread():  # small matrices: a second thread only waits for a busy core
            cand = self._bo_candidate(done, pending, seen, stopped)
        self.last_info["s"] = time.perf_counter() - t0
        return cand

    def _random_candidate(self, seen: _Seen) -> Candidate:
        last = None
        for _ in range(200):
            last = self.space.decode(self.space.random_vector(self._rng))
            if last not in seen and self._feasible_params(last):
                return last
        return last  # the space is (nearly) exhausted; the driver skips a duplicate

    def _bo_candidate(self, done: list[tuple[Candidate, list[float]]], pending: list[Candidate], seen: _Seen,
                      stopped: Sequence[tuple[Candidate, float]] = ()) -> Candidate:
        """``stopped``: trials the pruner stopped early, with their last rung score: the score model learns from
        them (a score reached with part of the training: pessimistic, as they are), the front does not."""
        self.last_info = {}
        memo = self._memo
        X = memo.encode_all([c for c, _ in done])
        y = np.array([to_max(self.objectives[:1], v[:1])[0] for _, v in done])  # a loss enters negated
        X_fit, y_fit = X, y
        if stopped:
            X_fit = np.concatenate([X, memo.encode_all([c for c, _ in stopped])])
            y_fit = np.concatenate([y, [to_max(self.objectives[:1], [v])[0] for _, v in stopped]])
        prior = self._prior if self.prior_until is None or len(done) < self.prior_until else None
        task = (lambda A: A) if prior is None else (lambda A: with_task(A, 1.0))  # the prior's task column
        if prior is not None:
            X_fit = np.concatenate([with_task(X_fit, 1.0), prior[0]])
            y_fit = np.concatenate([y_fit, prior[1]])
        known_coords = KnownCosts(self.objectives, memo.params, memo.features, done)  # params exact, memory by ridge

        # no trend while another study's trials inform the model: on the warm-start replays a trend fitted with them
        # cost the first 20 trials in both directions
        trend = self._trend([c for c, _ in done] + [c for c, _ in stopped] if prior is None else [], y_fit)
        gp = self._fit_gp(X_fit, y_fit - trend(None))
        # candidate pool: random points, plus neighbours of the current front
        pool: dict[str, Candidate] = {}
        for _ in range(self.n_candidates):
            c = self.space.decode(self.space.random_vector(self._rng))
            if c not in seen:
                pool.setdefault(c.key, c)
        Ymax = np.array([to_max(self.objectives, v) for _, v in done])
        from autopeft.pareto import non_dominated

        front_idx = np.flatnonzero(non_dominated(Ymax))
        for i in front_idx[:20]:
            for c in self._neighbours(X[i], 16):
                if c not in seen:
                    pool.setdefault(c.key, c)
        for c in (self._prior_cands if prior is not None else ()):
            if c not in seen:
                pool.setdefault(c.key, c)
        cands = [c for c in pool.values() if self._feasible_params(c)]
        learns = self._collapse_model(done, stopped)

        def likely_learners(cs: list[Candidate]) -> tuple[list[Candidate], np.ndarray | None]:
            """``cs`` but those the collapse model expects not to learn, and their P(learns) (None: no model yet)."""
            if learns is None or not cs:
                return cs, None
            p = learns(cs)
            keep = p >= P_LEARN
            return [c for c, k in zip(cs, keep) if k], p[keep]

        p_learn = None
        if learns is not None and cands:  # skip the configs the collapse model expects not to learn
            p_learn = learns(cands)
            keep = p_learn >= P_LEARN
            self.last_info["collapse_skipped"] = int((~keep).sum())
            if keep.any():  # else every candidate stays, weighted by its P(learns) as the mutations below are
                cands, p_learn = [c for c, k in zip(cands, keep) if k], p_learn[keep]
        if not cands:
            return self._random_candidate(seen)
        def predict(cs: list[Candidate]) -> tuple[np.ndarray, np.ndarray]:  # the score model: GP + trend
            mu, sd = self._posterior(gp, task(memo.encode_all(cs)))
            return mu + trend(cs), sd

        # kriging believer: pending trials join the front at their posterior mean
        front_Y = Ymax
        if pending:
            front_Y = np.concatenate([Ymax, np.column_stack([predict(pending)[0], known_coords(pending)])])
        floor = self._floor(float(y.max()))
        lower, upper = self._cells(front_Y, floor)

        weight = self.learn_weight if prior is None or self.learn_with_prior else 0.0  # none with a prior, if off
        band: list[float] = []  # with learn_band: the least unweighted EHVI a candidate needs for the weight to pick it

        def score(cs: list[Candidate], p: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
            """The acquisition: closed-form EHVI (times P(learns)^learn_weight, ``p``: a trial at chance adds no
            hypervolume; with ``learn_band``, among the candidates within that share of the pool's best EHVI only),
            and the EHVI alone."""
            mu, sd = predict(cs)
            kc = known_coords(cs)
            a = raw = closed_form_ehvi(mu, sd, kc, lower, upper)
            if self.max_memory is not None and "memory" in self.objectives:  # over the budget: no gain (nor a band)
                j = self.objectives.index("memory") - 1
                a = raw = np.where(-kc[:, j] > math.log10(self.max_memory), 0.0, raw)
            if p is not None and weight > 0:
                a = raw * np.minimum(1.0, p / self.learn_cap) ** weight
                if self.learn_band > 0:
                    if not band:  # set by the pool; 0 (no band) when every config in it has P(learns) 0 (retries)
                        floor = self.learn_band * float(raw.max())
                        band.append(floor if (a[raw >= floor] > 0).any() else 0.0)
                    a = np.where(raw >= band[0], a, 0.0)
            return a, raw

        a, raw = score(cands, p_learn)
        order = np.argsort(-a)
        # local search: mutate the best few, keep improvements
        best_c, best_a, best_raw = cands[order[0]], a[order[0]], raw[order[0]]
        for i in order[:4]:
            neigh, p_neigh = likely_learners([c for c in self._neighbours(self.space.encode(cands[i]), 24)
                                              if c not in seen and c.key not in pool and self._feasible_params(c)])
            if neigh:
                an, rn = score(neigh, p_neigh)
                j = int(np.argmax(an))
                if an[j] > best_a:
                    best_c, best_a, best_raw = neigh[j], an[j], rn[j]
        self.last_info = {**self.last_info, "mode": "bo" if best_a > 0 else "random", "ehvi": float(best_a),
                          "ehvi_unweighted": float(best_raw), "ehvi_pool_best": float(raw.max()), "pool": len(cands)}
        if best_a <= 0:  # nothing improves in expectation: explore
            return self._random_candidate(seen)
        return best_c

    def _collapse_model(self, done: Sequence[tuple[Candidate, list[float]]],
                        stopped: Sequence[tuple[Candidate, float]] = ()) -> Callable[[list[Candidate]], np.ndarray] | None:
        """P(a config learns) from the trials so far (:mod:`autopeft.collapse_model`; 0 for a structure that collapsed
        at a rate as high, :func:`~autopeft.collapse_model.retries_collapse`), or None before any trial collapsed."""
        trials = [c for c, _ in done] + [c for c, _ in stopped]
        scores = [to_max(self.objectives[:1], v[:1])[0] for _, v in done] + [to_max(self.objectives[:1], [v])[0]
                                                                            for _, v in stopped]
        chance = float(self.ref[0])
        gap = (1.0 - chance) if self.objectives[0] == "score" else abs(chance)
        return collapse_model.learner(lambda cs: np.array([self._memo.collapse_features(c) for c in cs]), trials,
                                      scores, chance, gap)

    def _neighbours(self, x: np.ndarray, n: int) -> list[Candidate]:
        out = []
        for _ in range(n):
            z = x.copy()
            k = max(1, int(self._rng.integers(1, 4)))
            for dim in self._rng.choice(len(self.space.dims), size=min(k, len(self.space.dims)), replace=False):
                D = self.space.dims[dim]
                o = self.space.offsets[D.name]
                z[o:o + D.width] = self._rng.random(D.width)
            out.append(self.space.decode(z))
        return out

    def _trend(self, fitted: Sequence[Candidate], y: np.ndarray) -> Callable[[Sequence[Candidate] | None], Any]:
        """The score's trend in log parameters (:func:`autopeft.sampler_gp.log_params_trend`, fitted on ``fitted``
        and their scores ``y``) at some candidates, or at ``fitted`` for None; 0 when :attr:`score_trend` is off."""
        line = sampler_gp.log_params_trend([self._params(c) for c in fitted], y) if self.score_trend and fitted else None
        return lambda cs: 0.0 if line is None else line([self._params(c) for c in (fitted if cs is None else cs)])

    def _floor(self, best: float) -> float:
        """The acquisition's reference score: chance + :attr:`score_floor` x (best so far - chance), in the
        maximised space (a loss enters negated, so the floor is then a loss below the untrained one)."""
        return float(self.ref[0]) + self.score_floor * max(0.0, best - float(self.ref[0]))

    def _cells(self, Y: np.ndarray, floor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        return sampler_gp.cells(self.ref, Y, floor)

    # ------------------------------------------------------------------ GP (autopeft.sampler_gp)
    def _fit_gp(self, X: np.ndarray, y: np.ndarray) -> Any:
        gp, self._gp_state = sampler_gp.fit_gp(X, y, self._gp_state, self._seed)
        return gp

    @staticmethod
    def _posterior(gp: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return sampler_gp.posterior(gp, X)
