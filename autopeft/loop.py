"""The search loop: proposer -> executor -> store, until a stop (as Optuna's ``_optimize_sequential`` /
``_run_trial`` split it).

:class:`StopPolicy` decides when to stop (trials, failures in a row, timeout, signals); callbacks see each
stored result (progress bar, collapse warning, and the hook early stopping will use).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Protocol

from autopeft.contract import FAILED, OK, PRUNED, TrialResult
from autopeft.escalation import FLAT_MARGIN, advice
from autopeft.errors import TrialsFailing
from autopeft.executors.base import Executor
from autopeft.proposer import Proposer
from autopeft.storage import HEARTBEAT_S, StudyStore


class Callback(Protocol):
    def __call__(self, store: StudyStore, result: TrialResult) -> None: ...


class StopPolicy:
    """When a search stops: the study holds ``n_trials`` evaluated trials (complete, or stopped early by the pruner),
    ``max_failures`` failed in a row,
    ``timeout`` seconds passed, or the user interrupted.  ``reason`` says which (None: not stopped)."""

    def __init__(self, n_trials: int, max_failures: int, timeout: float | None) -> None:
        self.n_trials, self.max_failures, self.timeout = n_trials, max_failures, timeout
        self.t_start = time.monotonic()
        self.reason: str | None = None
        self.message = ""  # why, for a stop the user must hear about (collapse)
        self.fails_in_row, self.last_failure = 0, ""

    def record(self, res: TrialResult) -> None:
        if res.status == FAILED:
            self.fails_in_row += 1
            self.last_failure = res.reason or "unknown"
            if self.fails_in_row >= self.max_failures:
                self.reason = "failures"
        elif res.status in (OK, PRUNED):
            self.fails_in_row = 0

    def timed_out(self) -> bool:
        if self.reason is None and self.timeout is not None and time.monotonic() - self.t_start > self.timeout:
            self.reason = "timeout"
        return self.reason == "timeout"

    def needs_more(self, n_complete: int, in_flight: int) -> bool:
        """Whether another trial should start now."""
        return self.reason is None and not self.timed_out() and n_complete + in_flight < self.n_trials

    def finished(self, n_complete: int) -> bool:
        return self.reason is not None or n_complete >= self.n_trials

    def raise_for_stop(self) -> None:
        if self.reason == "failures":
            raise TrialsFailing(f"{self.max_failures} trials failed in a row; last reason: {self.last_failure}")
        if self.reason == "interrupted":
            raise KeyboardInterrupt


class SearchLoop:
    """Runs the trials of one search on an executor; the proposer and the store do the bookkeeping."""

    def __init__(self, store: StudyStore, proposer: Proposer, policy: StopPolicy,
                 callbacks: list[Callable[[StudyStore, TrialResult], None]] | None = None,
                 after_stale: Callable[[], None] | None = None) -> None:
        self.store, self.proposer, self.policy = store, proposer, policy
        self.callbacks = list(callbacks or [])
        #: called when this loop failed a dead driver's trials (the session puts its queued configs back)
        self.after_stale = after_stale

    # ------------------------------------------------------------------ steps shared with other drivers (Ray Tune)
    def needs_more(self) -> bool:
        """Whether to start another trial: ``n_trials`` is a total that every driver of the study shares, so the
        running trials of other drivers count too."""
        return self.policy.needs_more(*self._counts())

    def _counts(self) -> tuple[int, int]:
        """(complete trials, running trials) of the whole study."""
        from optuna.trial import TrialState

        trials = self.store.finished_trials(running=True)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        return len(trials) - running, running

    def ask(self) -> Any | None:
        """The next spec to run, or None (a rejected proposal, or one over the shared total)."""
        spec = self.proposer.ask()
        if spec is None:
            return None
        # drivers asking at the same moment: the lowest trial numbers keep the places up to n_trials
        ahead = [t for t in self.store.finished_trials(running=True) if t.number < spec.trial_id]
        if len(ahead) >= self.policy.n_trials:
            self.proposer.withdraw(spec.trial_id, f"the study already had {self.policy.n_trials} trials running or complete")
            return None
        return spec

    def finished(self) -> bool:
        return self.policy.finished(len(self.store.finished_trials()))

    def complete(self, res: TrialResult) -> None:
        """Store a finished trial's result (through the store, the only writer) and tell the callbacks."""
        trial = self.proposer.finish(res.trial_id)
        if trial is None:
            return
        self.store.record(trial, res)
        self.policy.record(res)
        for cb in self.callbacks:
            cb(self.store, res)

    def close(self) -> None:
        """After a stop: trials still in flight are recorded abandoned, with the reason."""
        self.proposer.abandon_all(self.policy.reason or "error")

    # ------------------------------------------------------------------ the loop
    def run(self, executor: Executor) -> None:
        """Until the study holds enough complete trials or a stop; raises :class:`TrialsFailing` or
        ``KeyboardInterrupt`` for those stops after recording every trial's final state."""
        try:
            with self.proposer.heartbeats(HEARTBEAT_S / 2):
                self._run(executor)
        except KeyboardInterrupt:
            self.policy.reason = "interrupted"
        finally:
            self.close()
        self.policy.raise_for_stop()

    def _run(self, executor: Executor) -> None:
        last_hb = 0.0
        pending = self.proposer.pending
        # one proposal prepared ahead when several workers run, so a freed worker never waits for the sampler
        ahead = 1 if executor.capacity > 1 else 0
        while not self.finished():
            if self.policy.timed_out():
                break  # at once: running trials are abandoned, not waited for
            while len(pending) < executor.capacity + ahead and self.needs_more():
                spec = self.ask()
                if spec is not None:
                    executor.submit(spec)
            if not pending:
                if self.policy.reason is not None:
                    break
                # other drivers' trials fill the total: wait for them (or for their driver to be found dead)
                time.sleep(0.5)
                if time.monotonic() - last_hb >= HEARTBEAT_S / 2:
                    if self.store.fail_stale() and self.after_stale is not None:
                        self.after_stale()
                    last_hb = time.monotonic()
                continue
            results = executor.wait(timeout=min(5.0, HEARTBEAT_S))
            for res in results:
                self.complete(res)
            stale = self.proposer.lower_level() if results else []
            if stale:  # the study raised its fidelity (autopeft.escalation): a lower level's trial is of no use now
                executor.cancel(set(stale))
                self.proposer.abandon(stale, "the study raised its fidelity level")


# ----------------------------------------------------------------------------- callbacks
#: warn when at least this fraction of the complete trials (and at least this many) score at the majority-class level
COLLAPSE_FRACTION = 0.75
COLLAPSE_MIN_TRIALS = 6
#: stop the search when every one of at least this many complete trials (and two past the start-up design) is within
#: COLLAPSE_STOP_MARGIN of the majority-class score (of the untrained model's loss, for a causal LM): the budget left
#: would be spent on noise (issue 17: 20 of 20 trials at Matthews ~0, the last ones on the cheapest configs)
COLLAPSE_STOP_TRIALS = 10
COLLAPSE_STOP_MARGIN = FLAT_MARGIN


class CollapseWarning:
    """Warn once when most trials score no better than always predicting the majority class: the trials are
    then too short to tell configurations apart (measured: MiniLM on MRPC at 2,000 rows x 2 epochs, 14 of 15
    trials; with every learning rate x3 the hand-designed baselines all score above it), and the front only
    ranks parameter counts."""

    def __init__(self, chance: float, metric: str, num_labels: int, n_startup: int, fidelity: dict[str, Any],
                 warned: bool, policy: StopPolicy | None = None,
                 raise_to: Callable[[int, dict[str, Any]], dict[str, Any] | None] | None = None) -> None:
        self.chance, self.metric, self.num_labels, self.n_startup = chance, metric, num_labels, n_startup
        self.fidelity, self.warned = fidelity, warned
        #: set: stop the search (reason "collapse") once every trial is flat (see COLLAPSE_STOP_TRIALS)
        self.policy = policy
        #: set: before stopping, raise the study's fidelity to ``raise_to(level, fidelity)`` (the next level's; None
        #: when there is none) and go on (:mod:`autopeft.escalation`)
        self.raise_to = raise_to
        self.lm = num_labels == 0  # a causal-LM task: flat = no lower loss than the untrained model's

    def _flat(self, value: float, margin: float) -> bool:
        return value >= self.chance - margin if self.lm else value <= self.chance + margin

    def __call__(self, store: StudyStore, result: TrialResult) -> None:
        from autopeft.storage import complete_trials

        if result.status != OK:
            return
        comp = complete_trials(store.study)  # the current fidelity level's
        if self._maybe_stop(store, comp):
            return  # the study moved to a new level: its trials start afresh
        if self.warned or self.lm or len(comp) < max(COLLAPSE_MIN_TRIALS, self.n_startup):
            return
        flat = sum(1 for t in comp if self._flat(t.values[0], 1e-9))
        if flat < COLLAPSE_FRACTION * len(comp):
            return
        f = self.fidelity
        head = (f"{flat} of {len(comp)} trials score no better than always predicting the majority class "
                f"({self.metric} {self.chance:.3f}), so the trials ")
        if self.raise_to is not None and flat == len(comp):  # the search raises its fidelity itself if it stays so
            msg = head + (f"may be too short for this task; if all of the first "
                          f"{max(COLLAPSE_STOP_TRIALS, self.n_startup + 2)} stay there, the search raises their "
                          "fidelity (more rows, higher learning rates) itself")
        else:
            msg = head + (f"are too short to tell configurations apart on this task; start a new study with longer "
                          f"trials and higher learning rates, e.g. {advice(f, False)}"
                          + (", or rank by --metric auc, which does not need the argmax to move"
                             if self.num_labels == 2 and self.metric != "auc" else ""))
        self.warned = True
        store.set_notice("collapse", "collapse: " + msg)
        print(f"autopeft: warning: {msg}", file=sys.stderr, flush=True)

    def _maybe_stop(self, store: StudyStore, comp: list[Any]) -> bool:
        """Stop the search, or raise its fidelity level (then True), when every trial of the level is flat."""
        p = self.policy
        if p is None or p.reason is not None or len(comp) < max(COLLAPSE_STOP_TRIALS, self.n_startup + 2):
            return False
        if not all(self._flat(t.values[0], COLLAPSE_STOP_MARGIN) for t in comp):
            return False
        from autopeft.storage import A, study_level

        level = study_level(store.study)
        f = self.fidelity = dict(store.meta[A.FIDELITY])  # the current level's (any driver may have raised it)
        if self.lm:
            what = f"lowered the loss by {COLLAPSE_STOP_MARGIN} below the untrained model's ({self.chance:.4f})"
        else:
            what = f"scored {COLLAPSE_STOP_MARGIN} above always predicting the majority class ({self.metric} {self.chance:.3f})"
        how = advice(f, self.lm) + (" or --metric auc" if self.num_labels == 2 and self.metric != "auc" else "")
        new = self.raise_to(level, f) if self.raise_to is not None else None
        if new is not None:
            from autopeft.escalation import describe

            store.raise_level(level + 1, new)
            msg = (f"none of the {len(comp)} complete trials {what}: raising the trials' fidelity to level {level + 1} "
                   f"({describe(f, new)}); the trials so far stay in the study, apart (autopeft show --all), and "
                   "count towards --trials (--no-escalate stops instead)")
            store.set_notice(f"level_{level + 1}", "collapse: " + msg)
            print(f"autopeft: {msg}", file=sys.stderr, flush=True)
            self.fidelity, self.warned = new, False
            return True
        raised = f" at fidelity level {level} (raised {level} time(s))" if level else ""
        p.reason = "collapse"
        p.message = (f"stopped early: none of the {len(comp)} complete trials{raised} {what}, so the rest of the budget "
                     f"would be spent on noise; start a new study (--study NAME) with longer trials, e.g. {how} "
                     "(--no-collapse-stop runs the budget anyway)")
        store.set_notice("collapse_stop", "collapse: " + p.message)
        return False


class TrialLog:
    """One line per finished trial: its number, status, configuration, score and costs (or why it failed), written
    above the progress bar if there is one."""

    def __init__(self, metric: str, bar: "ProgressBar | None" = None) -> None:
        self.metric, self.bar = metric, bar

    def __call__(self, store: StudyStore, result: TrialResult) -> None:
        import sys

        from autopeft.result import fidelity_label
        from autopeft.storage import A, rung_of

        try:
            trial = store.trial(result.trial_id)
            summary = trial.user_attrs.get(A.SUMMARY, "")
            if A.RATE_FROM in trial.user_attrs:  # --refine-rate: another trial's config at another rate
                summary += f" | {fidelity_label(trial)}, trial {trial.user_attrs[A.RATE_FROM]}'s config at another rate"
            elif rung_of(trial):  # a promoted evaluation: which rung, and of which trial's config
                summary += f" | {fidelity_label(trial)} from trial {trial.user_attrs.get(A.PROMOTED_FROM, '?')}"
        except Exception:
            summary = ""
        if result.status == OK:
            se = f" ± {result.score_se:.4f}" if result.score_se else ""  # a loss's standard error over the rows
            line = (f"trial {result.trial_id}: {summary} | {self.metric} {result.score:.4f}{se} | {result.params:,} params | "
                    f"{(result.memory_bytes or 0) / 2**20:.0f} MiB | {result.wall_s:.0f} s")
        else:
            line = f"trial {result.trial_id} {result.status}: {summary} | {result.reason or ''}"
        if self.bar is not None:
            self.bar.bar.write(f"autopeft: {line}", file=sys.stderr)
        else:
            print(f"autopeft: {line}", file=sys.stderr, flush=True)


class ProgressBar:
    """A tqdm bar of complete trials, with the best score and the front's size."""

    def __init__(self, total: int, start: int, desc: str, objectives: list[str]) -> None:
        from tqdm import tqdm

        self.total, self.objectives = total, objectives
        self.bar = tqdm(total=total, initial=min(start, total), desc=desc, unit="trial", dynamic_ncols=True)

    def __call__(self, store: StudyStore, result: TrialResult) -> None:
        import numpy as np

        from autopeft.pareto import non_dominated, to_max
        from autopeft.storage import complete_trials

        comp = complete_trials(store.study)
        self.bar.n = min(len(store.finished_trials()), self.total)  # pruned trials count, as --trials counts them
        if comp:
            Y = np.array([to_max(self.objectives, t.values) for t in comp])
            best = comp[int(np.argmax(Y[:, 0]))].values[0]  # the highest score, or the lowest loss
            self.bar.set_postfix(best=f"{best:.3f}", front=int(non_dominated(Y).sum()))
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
