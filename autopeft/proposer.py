"""Turns the sampler's proposals into :class:`~autopeft.contract.TrialSpec`s, and keeps the trials in flight.

De-duplication happens once, here, against an index of the study's candidates kept in memory and refreshed from
storage incrementally (only trials that are new or were still running are looked at again), so several drivers on
one study never train a candidate twice and a proposal never costs a scan of every stored trial.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

from autopeft.candidate import Candidate
from autopeft.contract import ABANDONED, DUPLICATE, FAILED, INFEASIBLE, SURPLUS, TrialSpec
from autopeft.errors import ConfigError, StudyError
from autopeft.storage import A, StudyStore, finished_meanwhile, level_of, optuna_quiet, rung_of, study_level

#: proposals in a row that may be rejected (duplicates, over budget) before the search gives up
MAX_REJECTIONS = 200
#: duplicates in a row after which a random config of the space is queued: a sampler that does not learn from the
#: proposals the study rejects (Optuna's GPSampler ignores PRUNED trials and is deterministic given the trials it
#: sees) would otherwise propose the same config until MAX_REJECTIONS; the random one gives it a new trial to learn from
RANDOM_AFTER = 10


def make_sampler(name: str, seed: int | None, space: Any = None, objectives: Sequence[str] = (), ref: Sequence[float] = (),
                 count: Callable[[Candidate], float] | None = None, max_params: float | None = None,
                 max_memory: float | None = None, n_startup: int = 8, learn_weight: float | None = None,
                 learn_band: float | None = None) -> Any:
    """The Optuna sampler called ``name`` (``autopeft`` is ours; ``learn_weight``: its acquisition's power of
    P(learns), None: :data:`autopeft.collapse_model.LEARN_WEIGHT`; ``learn_band``: the share of the best expected gain
    the weight chooses within, None: :data:`autopeft.collapse_model.LEARN_BAND`)."""
    import optuna

    if name == "autopeft":
        from autopeft.sampler import CostAwareEHVISampler

        s = CostAwareEHVISampler(space, objectives, ref, count, max_params=max_params,
                                 max_memory=max_memory, n_startup_trials=n_startup, seed=seed)
        if learn_weight is not None:
            s.learn_weight = float(learn_weight)
        if learn_band is not None:
            s.learn_band = float(learn_band)
        return s
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=n_startup,
                                          constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, n_startup))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)
    if name == "botorch":
        from optuna_integration import BoTorchSampler

        return BoTorchSampler(seed=seed, n_startup_trials=n_startup)
    from autopeft.config import SAMPLERS

    raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def rung_key(key: str, rung: int) -> str:
    """The index's key of a candidate at a rung of the ``--promote`` ladder (the candidate's own key at rung 0)."""
    return key if not rung else f"{key}@{rung}"


class CandidateIndex:
    """Which candidates the study holds at its fidelity ``level``, at which rung: running or queued, or finished in any
    way but abandoned (an abandoned trial was stopped, not found wanting, so its candidate may be proposed, or
    promoted, again; a trial of a lower level was measured at another fidelity, so its candidate may run again)."""

    def __init__(self, level: int = 0) -> None:
        self.level = level
        self._by_key: dict[str, set[int]] = {}
        self._key_of: dict[int, str] = {}
        self._open: set[int] = set()  # trials read while running: read again on refresh
        self._upto = -1  # every trial up to this number has been read

    def add(self, number: int, key: str) -> None:
        self._drop(number)
        self._key_of[number] = key
        self._by_key.setdefault(key, set()).add(number)

    def _drop(self, number: int) -> None:
        key = self._key_of.pop(number, None)
        if key is not None:
            self._by_key[key].discard(number)

    def refresh(self, trials: Sequence[Any]) -> None:
        from optuna.trial import TrialState

        for t in trials:
            if t.number <= self._upto and t.number not in self._open:
                continue
            self._upto = max(self._upto, t.number)
            key = t.user_attrs.get(A.CANDIDATE_KEY)
            if key is not None:
                key = rung_key(key, rung_of(t))
            running = t.state in (TrialState.RUNNING, TrialState.WAITING)
            if running:
                self._open.add(t.number)
            else:
                self._open.discard(t.number)
            if key is None:
                continue
            if level_of(t) != self.level and not running:  # a queued trial takes the level it runs at
                self._drop(t.number)
                continue
            if t.user_attrs.get(A.STATUS) == ABANDONED or (t.state == TrialState.PRUNED and
                                                           t.user_attrs.get(A.STATUS) in (DUPLICATE, SURPLUS)):
                self._drop(t.number)
            else:
                self.add(t.number, key)

    def holds(self, key: str, other_than: int) -> bool:
        return any(n != other_than for n in self._by_key.get(key, ()))

    def held(self) -> set[tuple[str, int]]:
        """Every (candidate key, rung) the study holds."""
        out = set()
        for k, ns in self._by_key.items():
            if ns:
                base, _, rung = k.rpartition("@")
                out.add((base, int(rung)) if rung.isdigit() and base.endswith("}") else (k, 0))  # keys are JSON objects
        return out


class Proposer:
    """Asks the study's sampler for candidates and turns them into specs; tracks the trials in flight."""

    def __init__(self, store: StudyStore, bound: Any, count: Callable[[Candidate], int], base_params: int,
                 spec_fields: dict[str, Any], fidelity: dict[str, Any],
                 fault: Callable[[int], str | None] | None = None,
                 prune_for: Callable[[int], dict[str, Any] | None] | None = None,
                 promote: Callable[[Sequence[Any], set[tuple[str, int]]], tuple[Any, int, float | None] | None] | None = None,
                 ladder: Sequence[dict[str, Any]] = ()) -> None:
        self.store, self.bound, self.count = store, bound, count
        #: ``--promote``/``--refine-rate``: the finished trial to run again, the rung, and None (a promotion) or the
        #: learning-rate multiplier to run its config at (a step of the rate line search); None: nothing to queue now
        self.promote = promote
        #: every rung's fidelity above the study's own (rung 1 first)
        self.ladder = [dict(f) for f in ladder]
        #: a trial's early-stopping spec from its param count (:func:`autopeft.pruner.prune_spec`); None: no pruning
        self.prune_for = prune_for
        self.base_params, self.spec_fields, self.fidelity, self.fault = base_params, spec_fields, fidelity, fault
        #: the study's fidelity level (:mod:`autopeft.escalation`): read again before each proposal, since any driver
        #: of the study may raise it
        self.level = study_level(store.study)
        if self.level:
            self.fidelity = dict(store.meta[A.FIDELITY])
        self.index = CandidateIndex(self.level)
        self.pending: dict[int, tuple[Any, Candidate, float]] = {}
        self._prepared_at: dict[int, int] = {}  # the fidelity level each trial in flight was prepared at
        #: the trial being prepared (asked, not yet in flight): the heartbeat thread beats it too, since a sampler fit
        #: can outlast the grace period on a loaded machine (CI: a live trial was failed as stale by another driver)
        self.preparing: Any | None = None
        self.rejections = 0
        self.repeats = 0  # duplicates in a row

    def ask(self) -> TrialSpec | None:
        """A new trial's spec, or None if the proposal was rejected without training (a duplicate, over the
        parameter budget).  Never leaves a RUNNING trial behind if preparing it fails."""
        study = self.store.study
        self._sync_level()
        if self.promote is not None:
            self._promote()
        with optuna_quiet():
            trial = study.ask()
        self.preparing = trial
        try:
            return self._prepare(trial)
        except BaseException as exc:  # a bad proposal, Ctrl-C, a storage error
            if finished_meanwhile(exc):
                # another driver failed it as stale before it started (this driver stalled past the grace period):
                # nothing was trained, nothing is lost; the next proposal goes on
                self.pending.pop(trial.number, None)
                return None
            if trial.number not in self.pending:
                self.store.fail(trial, ABANDONED if isinstance(exc, KeyboardInterrupt) else FAILED,
                                f"while preparing the trial: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.preparing = None

    def _sync_level(self) -> None:
        """Take the study's fidelity level and its fidelity, if a driver raised it since the last proposal."""
        level = study_level(self.store.study)
        if level != self.level:
            self.level, self.fidelity = level, dict(self.store.meta[A.FIDELITY])
            self.index = CandidateIndex(level)

    def _promote(self) -> None:
        """Queue the next promotion, if one is due and nothing else is queued (a queued config runs first; the next
        ask looks again)."""
        from optuna.trial import TrialState

        trials = self.store.trials()
        if any(t.state == TrialState.WAITING for t in trials):
            return
        self.index.refresh(trials)
        chosen = self.promote(trials, self.index.held())
        if chosen is None:
            return
        source, rung, lr = chosen
        if lr is None:
            self.store.enqueue_promotion(source, rung)
        else:  # --refine-rate: the source's config at another learning rate
            cand = Candidate.from_dict(source.user_attrs[A.CANDIDATE]).with_lr(lr)
            self.store.enqueue_rate_step(source, rung, self.bound.optuna_params(cand), cand)

    def _prepare(self, trial: Any) -> TrialSpec | None:
        self.store.heartbeat(trial)  # at once: a driver killed from here on leaves a trial resume can tell is stale
        rung = rung_of(trial)
        if rung > len(self.ladder):
            raise StudyError(f"trial {trial.number} was queued for rung {rung} of --promote, but this search has "
                             f"{len(self.ladder)} rung(s) above the study's fidelity; resume with the same --promote")
        fidelity = self.ladder[rung - 1] if rung else self.fidelity
        t0 = time.perf_counter()
        cand = self.bound.suggest(trial)
        sampler_s = time.perf_counter() - t0
        params = self.count(cand)
        key = rung_key(cand.key, rung)
        # written first, then compared: of two drivers proposing one candidate at the same moment, at least the later
        # writer sees the other (both may step back; neither trains a candidate the other trains)
        self.store.write_candidate(trial, cand, params, self.base_params, sampler_s, fidelity, rung, self.level)
        self.index.refresh(self.store.trials())
        spec = None
        mp = self.store.max_params
        if self.index.holds(key, trial.number):
            self.store.reject(trial, DUPLICATE, "candidate already evaluated in this study")
            self.rejections += 1
            self.repeats += 1
            if self.repeats % RANDOM_AFTER == 0:
                self._queue_random(trial.number)
        elif params <= 0:  # e.g. "head only" on a causal-LM task, which has no classification head
            self.store.reject(trial, INFEASIBLE, "it trains no parameter (this task has no classification head)")
            self.index.add(trial.number, key)
            self.rejections += 1
        elif mp is not None and params > mp:
            self.store.reject(trial, INFEASIBLE, f"{params} trainable params > budget {mp:.0f}")
            self.index.add(trial.number, key)
            self.rejections += 1
        else:
            self.rejections = self.repeats = 0
            self.index.add(trial.number, key)
            spec = TrialSpec(trial_id=trial.number, candidate=cand.to_dict(), fidelity=dict(fidelity), threads=0,
                             fault=self.fault(trial.number) if self.fault else None,
                             prune=self.prune_for(params) if self.prune_for and not rung else None, **self.spec_fields)
            self.pending[trial.number] = (trial, cand, time.monotonic())
            self._prepared_at[trial.number] = self.level
        if self.rejections >= MAX_REJECTIONS:
            raise StudyError(f"{MAX_REJECTIONS} proposals in a row were duplicates or over budget: the space is "
                             "exhausted or the budget too tight; widen the space or raise --max-params")
        return spec

    def _queue_random(self, seed: int) -> None:
        """Queue a random config of the space the study does not hold and the budget allows (none if 50 draws find
        none: the space may be exhausted, and MAX_REJECTIONS ends the search)."""
        import numpy as np

        mp = self.store.max_params
        for cand in self.bound.sample(np.random.default_rng(seed), 50):
            params = self.count(cand)
            if self.index.holds(cand.key, -1) or params <= 0 or (mp is not None and params > mp):
                continue
            self.store.enqueue(self.bound.optuna_params(cand), cand, f"random: {RANDOM_AFTER} duplicate proposals in a row")
            self.index.refresh(self.store.trials())
            return

    def withdraw(self, trial_id: int, reason: str) -> None:
        """Take back a spec not yet submitted: stored PRUNED with status ``surplus``; its candidate stays eligible."""
        trial, cand, _ = self.pending.pop(trial_id)
        self._prepared_at.pop(trial_id, None)
        self.store.reject(trial, SURPLUS, reason)
        self.index.refresh(self.store.trials())

    def finish(self, trial_id: int) -> Any | None:
        """The trial of a result, no longer in flight (None if it is not this proposer's)."""
        entry = self.pending.pop(trial_id, None)
        self._prepared_at.pop(trial_id, None)
        return entry[0] if entry is not None else None

    def started(self, trial_id: int) -> float | None:
        entry = self.pending.get(trial_id)
        return entry[2] if entry is not None else None

    def heartbeat(self) -> None:
        preparing = self.preparing
        trials = [trial for trial, _, _ in list(self.pending.values())]
        for trial in trials + ([preparing] if preparing is not None and preparing not in trials else []):
            try:
                self.store.heartbeat(trial)
            except Exception:  # the trial finished meanwhile, or the storage hiccuped: the next beat retries
                pass

    def heartbeats(self, interval: float) -> "Heartbeats":
        """A context in which the trials in flight get a heartbeat every ``interval`` seconds from a thread."""
        return Heartbeats(self, interval)

    def abandon(self, trial_ids: Sequence[int], why: str) -> None:
        """Mark these trials in flight FAIL with status ``abandoned`` and the reason (their configs may run again)."""
        for n in trial_ids:
            entry = self.pending.pop(n, None)
            self._prepared_at.pop(n, None)
            if entry is not None:
                self.store.fail(entry[0], ABANDONED, f"stopped before it finished ({why})")

    def lower_level(self) -> list[int]:
        """The trials in flight that were prepared at a lower fidelity level than the study's now."""
        level = study_level(self.store.study)
        return [n for n in self.pending if self._prepared_at.get(n, level) < level]

    def abandon_all(self, why: str) -> None:
        """Mark every trial in flight FAIL with status ``abandoned`` and the reason; completed work is untouched."""
        for trial, _, _ in list(self.pending.values()):
            self.store.fail(trial, ABANDONED, f"stopped before it finished ({why})")
        self.pending.clear()
        self._prepared_at.clear()


class Heartbeats:
    """Records the heartbeats of a proposer's trials in flight from a daemon thread, so a driver that is busy (a
    slow sampler fit, a slow storage write, a loaded machine) never looks dead to the other drivers of its study:
    only a driver that is really gone stops beating.  Found when a driver's result was refused because another
    driver had failed its trial as stale while its sampler was fitting (PostgreSQL, 3 drivers on 2 cores)."""

    def __init__(self, proposer: Proposer, interval: float) -> None:
        self.proposer, self.interval = proposer, max(0.05, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="autopeft-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.proposer.heartbeat()

    def __enter__(self) -> "Heartbeats":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
