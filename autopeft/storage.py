"""The study store: opening, creating and adopting studies, heartbeats, the schema, and the **only** writer of
trial and study attributes.

Readers (result, sampler, plots, commands) import the attribute names from :class:`A` instead of spelling
strings.  It is over 400 lines on purpose: every write to a study is here, so there is one place to audit what a study
holds and how a crash, a race or a full disk leaves it.  Optuna is imported inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from autopeft.contract import ABANDONED, DUPLICATE, FAILED, INFEASIBLE, OK, PRUNED, TrialResult
from autopeft.errors import StudyError
from autopeft.pareto import DIRECTIONS

SCHEMA_VERSION = 1
HEARTBEAT_S = float(os.environ.get("AUTOPEFT_HEARTBEAT_S", "10"))
GRACE_S = float(os.environ.get("AUTOPEFT_GRACE_S", "30"))
ADOPT_WAIT_S = 10.0  # how long to wait for another driver to finish creating an empty study before adopting it
METRIC_LABELS = {"score": "score", "loss": "loss", "params": "trainable params", "memory": "memory (MiB)", "time": "time (s)"}


class A:
    """Names of the attributes a study and its trials carry (user attributes unless said otherwise)."""

    # trial
    CANDIDATE = "candidate"
    CANDIDATE_KEY = "candidate_key"
    SUMMARY = "summary"
    METHOD = "method"
    LAYERS = "layers"
    SPARSITY = "sparsity"
    PARAMS = "params"
    TRAINABLE_PCT = "trainable_pct"
    SAMPLER_S = "sampler_s"
    FIDELITY = "fidelity"
    STATUS = "status"
    REASON = "reason"
    WALL_S = "wall_s"
    TRAIN_S = "train_s"
    STEPS = "steps"
    LOSS = "loss"
    METRIC = "metric"
    MEMORY_MIB = "memory_mib"
    SCORE = "score"
    SCORE_SE = "score_se"  # the score's standard error over the search rows (a loss's; autopeft.result.margins)
    CURVE = "curve"  # [[fraction of training, step, score], ...] at each rung and the end (autopeft.pruner)
    RUNG = "rung"  # the rung of --promote's ladder a trial ran at (absent: 0, the study's own fidelity)
    LEVEL = "level"  # the study's fidelity level a trial ran at (absent: 0; autopeft.escalation)
    PROMOTED_FROM = "promoted_from"  # a promoted trial's evaluation one rung below (its trial number)
    RATE_FROM = "rate_from"  # --refine-rate: the trial whose config this one runs at another learning rate
    SEEDED_BY = "seeded_by"  # a queued config's source: enqueue:FILE entry N, baseline:NAME, warm-start:STUDY#TRIAL
    HEARTBEAT = "autopeft_heartbeat"  # a system attribute (journal storages; autopeft.backends.HEARTBEAT_ATTR)
    # study
    SCHEMA = "autopeft_schema"
    MODEL = "model"
    LAYOUT = "layout"  # the user's --layers-pattern / --target-modules (autopeft.arch.Layout as lists), if given
    TASK = "task"
    SPACE = "space"
    SPACE_HASH = "space_hash"
    SPACE_DEF = "space_def"
    TASK_NAME = "task_name"
    METRIC_REASON = "metric_reason"
    NUM_LABELS = "num_labels"
    OBJECTIVES = "objectives"
    REF_POINT = "ref_point"
    BASE_PARAMS = "base_params"
    HEAD_PARAMS = "head_params"
    NUM_LAYERS = "num_layers"
    FULL_MEMORY_MIB = "full_memory_mib"
    CHANCE_SCORE = "chance_score"
    SEED = "seed"
    LADDER = "ladder"  # --promote's rungs above the study's fidelity ([{"n_train", "epochs"}, ...]; absent: none)
    LEVEL_NOW = "level"  # the study's current fidelity level (absent: 0); ``fidelity`` is that level's
    LEVELS = "fidelity_levels"  # every level's fidelity, the first as created (absent: one level, ``fidelity``)
    NOTICE_PREFIX = "notice_"
    LEARN_WEIGHT = "learn_weight"  # the default sampler's power of P(learns) (autopeft.collapse_model); null: another sampler
    LEARN_BAND = "learn_band"  # ... and the share of the best expected gain it chooses within (absent: study predates them)
    WARM_PRIOR = "warm_prior"  # the default sampler's --warm-start prior (autopeft.sampler_prior.resume_prior; absent: none)


REQUIRED_ATTRS = (A.MODEL, A.TASK, A.SPACE_HASH, A.OBJECTIVES, A.REF_POINT, A.FIDELITY, A.METRIC, A.NUM_LABELS,
                  A.BASE_PARAMS)
_RESULT_ATTRS = (A.STATUS, A.REASON, A.WALL_S, A.TRAIN_S, A.STEPS, A.LOSS, A.METRIC)


# ----------------------------------------------------------------------------- where studies live
def studies_dir() -> Path:
    """``$AUTOPEFT_STUDIES_DIR``; else ``studies/`` here, or the project's when run from inside a project (a notebook
    in ``notebooks/`` finds ``../studies``: the nearest folder up to the one holding pyproject.toml or .git)."""
    env = os.environ.get("AUTOPEFT_STUDIES_DIR")
    if env:
        return Path(env)
    here = Path.cwd()
    if not (here / "studies").is_dir():
        for parent in here.parents:
            if (parent / "studies").is_dir():
                return parent / "studies"
            if (parent / "pyproject.toml").exists() or (parent / ".git").exists():
                break  # the project's root: look no higher
    return Path("studies")


#: a study name that is also a safe file name (default storage is ``<studies dir>/<name>.db``)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


def check_name(name: str) -> str:
    """``name`` if it is a plain study name, else a StudyError (a path belongs in --storage)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        shown = str(name)[:60] + ("..." if len(str(name)) > 60 else "")
        raise StudyError(f"study name {shown!r} must be 1-200 letters, digits, '_', '.' or '-' (no path separators, "
                         "not starting with '.' or '-'); to store a study elsewhere, pass --storage")
    return name


def default_storage(name: str) -> str:
    return f"sqlite:///{studies_dir() / (check_name(name) + '.db')}"


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "study"


def space_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's warnings about features autopeft uses on purpose (heartbeats outside ``Study.optimize``, experimental
    arguments and metric names) stay out of the user's output, the API's too."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(is experimental|is an experimental feature).*")
        warnings.filterwarnings("ignore", message=r"Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def get_storage(url: str, create: bool = True) -> Any:
    """An Optuna storage for ``url`` (RDB with heartbeats, or a journal file ``*.log``/``journal://``); with
    ``create=False`` it must exist and hold Optuna's tables (nothing is created or migrated)."""
    from autopeft.backends import open_storage

    with optuna_quiet():
        return open_storage(url, create, HEARTBEAT_S, GRACE_S)


def check_schema(study: Any) -> None:
    """Refuse studies that autopeft did not write, or that an incompatible version wrote."""
    v = study.user_attrs.get(A.SCHEMA)
    if v is None:
        raise StudyError(f"study {study.study_name!r} was not written by autopeft (no autopeft_schema attribute)")
    if v != SCHEMA_VERSION:
        raise StudyError(
            f"study {study.study_name!r} has autopeft schema {v}, this autopeft reads schema {SCHEMA_VERSION}; "
            "use the autopeft version that wrote it"
        )
    missing = [k for k in REQUIRED_ATTRS if k not in study.user_attrs]
    if missing:
        raise StudyError(f"study {study.study_name!r} lacks the attribute {missing[0]!r}: it is damaged or was not written "
                         "by a compatible autopeft")


def load_optuna_study(name: str, storage: str | None) -> Any:
    """An existing study; never creates one."""
    import optuna

    url = storage or default_storage(name)
    st = get_storage(url, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st)]
        hint = f"; studies there: {', '.join(names)}" if names else "; that storage holds no study"
        raise StudyError(f"no study named {name!r} in {url}{hint}") from None
    check_schema(study)
    return study


def list_studies(urls: Sequence[str]) -> list[tuple[str, int, int, str]]:
    """(name, complete trials, all trials, storage URL) of every study in these storages."""
    import optuna
    from optuna.trial import TrialState

    out = []
    for url in urls:
        st = get_storage(url, create=False)
        for s in optuna.get_all_study_summaries(st, include_best_trial=False):
            study = optuna.load_study(study_name=s.study_name, storage=st)
            n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            out.append((s.study_name, n, s.n_trials, url))
    return out


def rung_of(trial: Any) -> int:
    """A stored trial's rung of the ``--promote`` ladder (0: the study's own fidelity)."""
    return int((trial.user_attrs or {}).get(A.RUNG, 0) or 0)


def level_of(trial: Any) -> int:
    """The study's fidelity level a stored trial ran at (0: the study's first; :mod:`autopeft.escalation`)."""
    return int((trial.user_attrs or {}).get(A.LEVEL, 0) or 0)


def study_level(study: Any) -> int:
    """The fidelity level a study runs its trials at now (0 until it raised its fidelity)."""
    return int(study.user_attrs.get(A.LEVEL_NOW, 0) or 0)


def current_level(trials: Sequence[Any], level: int) -> list[Any]:
    """The trials run at the study's current ``level`` (those of lower levels are kept, but not compared)."""
    return [t for t in trials if level_of(t) == level]


def complete_trials(study: Any, every_rung: bool = False) -> list[Any]:
    """The complete trials at the study's current fidelity level, in trial order; in a study with promotions, each
    config once, at the highest rung it finished (``every_rung``: every evaluation, of every level)."""
    from optuna.trial import TrialState

    comp = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values is not None]
    if not every_rung:
        comp = current_level(comp, study_level(study))
    if every_rung or not any(rung_of(t) for t in comp):
        return comp
    top: dict[str, Any] = {}
    for t in comp:
        key = t.user_attrs.get(A.CANDIDATE_KEY) or f"#{t.number}"
        if key not in top or rung_of(t) >= rung_of(top[key]):
            top[key] = t
    return sorted(top.values(), key=lambda t: t.number)


# ----------------------------------------------------------------------------- the writer
class StudyStore:
    """One search's handle on its study: every write to it goes through here."""

    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url
        self.study: Any = None
        self.objectives: list[str] = []
        self.max_params: float | None = None
        self.max_memory_mib: float | None = None

    # ------------------------------------------------------------------ opening
    def open(self, identity: dict[str, Any], check_resume: Callable[[dict[str, Any]], None],
             new_meta: Callable[[], dict[str, Any]]) -> bool:
        """Open the study, or create it with ``new_meta()``'s attributes (which must include ``objectives``).

        ``identity`` (model, task, space hash, ...) must match a stored study's; ``check_resume(user_attrs)``
        refuses other mismatches.  An empty study without our attributes is being created by another driver
        (waited for) or was left by one that died while creating it (adopted).  Returns True if it existed."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        st = get_storage(self.url)
        complete_attrs = (A.SCHEMA, *REQUIRED_ATTRS)
        for _ in range(100):  # another driver may create it at the same moment: then join it
            try:
                study = optuna.load_study(study_name=self.name, storage=st)
                existing = True
            except KeyError:
                study, existing = None, False
            adopt = None
            if existing and not study.trials and not all(k in study.user_attrs for k in complete_attrs):
                for _ in range(int(ADOPT_WAIT_S / 0.25)):
                    time.sleep(0.25)
                    if all(k in study.user_attrs for k in complete_attrs):
                        break
                else:
                    existing, adopt = False, study
            if existing:
                check_schema(study)
                ua = study.user_attrs
                for k, what in ((A.MODEL, "model"), (A.TASK, "task"), (A.SPACE_HASH, "search space")):
                    if ua.get(k) != identity[k]:
                        raise StudyError(
                            f"study {self.name!r} in {self.url} was run with a different {what} "
                            f"({ua.get(k)!r}, now {identity[k]!r}); pass another --study name to start a new study")
                check_resume(dict(ua))
                self.study, self.objectives = study, list(ua[A.OBJECTIVES])
                return True
            meta = {**identity, **new_meta(), A.SCHEMA: SCHEMA_VERSION}
            want = [DIRECTIONS[o] for o in meta[A.OBJECTIVES]]
            if adopt is not None:
                if [d.name.lower() for d in adopt.directions] != want:
                    raise StudyError(f"study {self.name!r} in {self.url} is empty but has directions "
                                     f"{[d.name.lower() for d in adopt.directions]}, not autopeft's {want}; "
                                     "pass another --study name")
                study = adopt
            else:
                try:
                    study = optuna.create_study(study_name=self.name, storage=st, directions=want)
                except optuna.exceptions.DuplicatedStudyError:
                    time.sleep(0.2)
                    continue
            for k, v in meta.items():
                study.set_user_attr(k, v)
            with optuna_quiet():
                study.set_metric_names([METRIC_LABELS[o] if o != "score" else f"score ({meta[A.METRIC]})"
                                        for o in meta[A.OBJECTIVES]])
            self.study, self.objectives = study, list(meta[A.OBJECTIVES])
            return False
        raise StudyError(f"study {self.name!r} in {self.url} could not be opened: another driver keeps re-creating it")

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.study.user_attrs)

    def set_budgets(self, max_params: float | None, max_memory_mib: float | None) -> None:
        self.max_params, self.max_memory_mib = max_params, max_memory_mib

    # ------------------------------------------------------------------ reading
    def trials(self, states: Sequence[Any] | None = None) -> list[Any]:
        return self.study.get_trials(deepcopy=False, states=tuple(states) if states is not None else None)

    def trial(self, number: int) -> Any:
        """One trial by its number (a FrozenTrial), without reading every trial."""
        st = self.study._storage
        return st.get_trial(st.get_trial_id_from_study_id_trial_number(self.study._study_id, number))

    def n_complete(self) -> int:
        from optuna.trial import TrialState

        return len(self.trials((TrialState.COMPLETE,)))

    def finished_trials(self, running: bool = False) -> list[Any]:
        """Trials that count toward ``n_trials``: complete, or stopped early by the pruner (evaluated configs); with
        ``running``, the running ones too (one read of the storage)."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED) + ((TrialState.RUNNING,) if running else ())
        return [t for t in self.trials(states) if t.state != TrialState.PRUNED or t.user_attrs.get(A.STATUS) == PRUNED]

    # ------------------------------------------------------------------ writing trials
    def heartbeat(self, trial: Any) -> None:
        try:
            self.study._storage.record_heartbeat(trial._trial_id)
        except (AttributeError, NotImplementedError):
            pass

    def write_candidate(self, trial: Any, cand: Any, params: int, base_params: int, sampler_s: float,
                        fidelity: dict[str, Any], rung: int = 0, level: int = 0) -> None:
        d = cand.to_dict()
        if level:
            trial.set_user_attr(A.LEVEL, level)  # first: never read as a trial of an earlier level
        if rung:
            trial.set_user_attr(A.RUNG, rung)  # first: a promoted trial is never read as its config's base rung
        trial.set_user_attr(A.CANDIDATE, d)
        trial.set_user_attr(A.CANDIDATE_KEY, cand.key)
        trial.set_user_attr(A.SUMMARY, cand.summary())
        trial.set_user_attr(A.METHOD, "+".join(d["methods"]) or "head")
        trial.set_user_attr(A.LAYERS, ",".join(map(str, d["layers"])))
        trial.set_user_attr(A.SPARSITY, d["sparsity"].get("fraction", 0.0))
        trial.set_user_attr(A.PARAMS, params)
        trial.set_user_attr(A.TRAINABLE_PCT, round(100.0 * params / base_params, 4))
        trial.set_user_attr(A.SAMPLER_S, round(sampler_s, 4))
        trial.set_user_attr(A.FIDELITY, fidelity)
        if self.max_params is not None:
            trial.set_constraint("max_params", float(params - self.max_params))

    def enqueue(self, params: dict[str, Any], cand: Any, source: str) -> None:
        """Queue a config to run before any proposal (a WAITING trial with fixed params; see :mod:`autopeft.seeding`),
        carrying its candidate and key (so de-duplication counts it as held while it waits) and its source."""
        with optuna_quiet():
            self.study.enqueue_trial(params, user_attrs={A.CANDIDATE: cand.to_dict(), A.CANDIDATE_KEY: cand.key,
                                                         A.SUMMARY: cand.summary(), A.SEEDED_BY: source})

    def enqueue_promotion(self, source: Any, rung: int) -> None:
        """Queue ``source`` (a finished trial) to run again at ``rung`` (a WAITING trial with its params, carrying its
        candidate, key and rung, so de-duplication holds it at that rung while it waits)."""
        ua = source.user_attrs
        with optuna_quiet():
            self.study.enqueue_trial(source.params, user_attrs={
                A.CANDIDATE: ua[A.CANDIDATE], A.CANDIDATE_KEY: ua[A.CANDIDATE_KEY], A.SUMMARY: ua.get(A.SUMMARY),
                A.RUNG: rung, A.PROMOTED_FROM: source.number})

    def enqueue_rate_step(self, source: Any, rung: int, params: dict[str, Any], cand: Any) -> None:
        """Queue ``cand`` (``source``'s config at another learning rate, ``--refine-rate``) to run at ``rung``, like a
        promotion; ``rate_from`` names the source."""
        with optuna_quiet():
            self.study.enqueue_trial(params, user_attrs={
                A.CANDIDATE: cand.to_dict(), A.CANDIDATE_KEY: cand.key, A.SUMMARY: cand.summary(), A.RUNG: rung,
                A.RATE_FROM: source.number})

    def reject(self, trial: Any, status: str, reason: str) -> None:
        """A proposal not trained: a duplicate or over the parameter budget (stored as PRUNED).  A trial another
        driver failed as stale meanwhile stays failed (nothing was trained)."""
        from optuna.trial import TrialState

        try:
            trial.set_user_attr(A.STATUS, status)
            trial.set_user_attr(A.REASON, reason)
            self.study.tell(trial, state=TrialState.PRUNED)
        except Exception as exc:
            if not finished_meanwhile(exc):
                raise

    def fail(self, trial: Any, status: str, reason: str) -> None:
        """Mark a trial failed (``FAILED``) or stopped (``ABANDONED``); never raises (storage may be gone: stale
        detection marks it on resume)."""
        from optuna.trial import TrialState

        try:
            trial.set_user_attr(A.STATUS, status)
            trial.set_user_attr(A.REASON, reason[:500])
            self.study.tell(trial, state=TrialState.FAIL)
        except Exception:
            pass

    def record(self, trial: Any, res: TrialResult) -> None:
        """Record a finished trial's result.  If its trial was meanwhile failed as stale (this driver looked dead to
        another one, e.g. its machine stalled past the grace period), the result is stored as a new trial rather
        than lost, unless the candidate has a complete trial by then."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        attrs: dict[str, Any] = {}
        for k in _RESULT_ATTRS:
            v = getattr(res, k)
            if v is not None:
                attrs[k] = round(v, 3) if isinstance(v, float) else v
        if res.memory_bytes is not None:
            attrs[A.MEMORY_MIB] = round(res.memory_bytes / 2**20, 3)
        if res.score is not None:
            attrs[A.SCORE] = res.score
        if res.score_se is not None:
            attrs[A.SCORE_SE] = round(res.score_se, 6)
        mm = self.max_memory_mib
        constraints: dict[str, float] = {}
        values: list[float] | None = None
        if res.curve:
            attrs[A.CURVE] = res.curve
        if res.status == OK:
            values = [{"score": res.score, "loss": res.score, "params": float(res.params), "memory": res.memory_bytes / 2**20,
                       "time": res.wall_s}[o] for o in self.objectives]
            state = TrialState.COMPLETE
        elif res.status == PRUNED:  # stopped early: its last rung score stays, as Optuna keeps a pruned trial's
            state = TrialState.PRUNED
        else:
            state = TrialState.PRUNED if res.status == INFEASIBLE else TrialState.FAIL
        if mm is not None and res.memory_bytes is not None and res.status in (OK, INFEASIBLE):
            constraints["max_memory"] = res.memory_bytes / 2**20 - mm
        try:
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            for k, c in constraints.items():
                trial.set_constraint(k, c)
            for _, step, value in res.curve or ():  # the dashboard draws these (Trial.report refuses multi-objective)
                self.study._storage.set_trial_intermediate_value(trial._trial_id, int(step), float(value))
            if values is not None:
                self.study.tell(trial, values)
            else:
                self.study.tell(trial, state=state)
        except (UpdateFinishedTrialError, ValueError) as exc:
            if not finished_meanwhile(exc):
                raise
            self._record_late(trial, attrs, constraints, values, state)

    def _record_late(self, trial: Any, attrs: dict[str, Any], constraints: dict[str, float],
                     values: list[float] | None, state: Any) -> None:
        import optuna
        from optuna.trial import TrialState

        old = self.study._storage.get_trial(trial._trial_id)
        key, rung = old.user_attrs.get(A.CANDIDATE_KEY), rung_of(old)
        if state == TrialState.FAIL or any(t.user_attrs.get(A.CANDIDATE_KEY) == key and rung_of(t) == rung
                                           for t in self.trials((TrialState.COMPLETE,))):
            return
        user = {k: v for k, v in old.user_attrs.items() if k not in (A.STATUS, A.REASON)}
        user.update(attrs)
        user[A.REASON] = f"result of trial {old.number}, which was failed as stale while it ran"
        system = {k: v for k, v in old.system_attrs.items() if k.startswith("constraints:")}
        system.update({f"constraints:{k}": c for k, c in constraints.items()})
        self.study.add_trial(optuna.trial.create_trial(params=old.params, distributions=old.distributions,
                                                        user_attrs=user, system_attrs=system, values=values,
                                                        state=state))

    def set_learn(self, weight: float, band: float) -> None:
        """Store the default sampler's collapse weight and band with the study (set at creation; changed by a resume
        with another ``--learn-weight``, or stored with a study that predates them)."""
        self.study.set_user_attr(A.LEARN_WEIGHT, weight)
        self.study.set_user_attr(A.LEARN_BAND, band)

    def set_warm_prior(self, prior: dict[str, Any] | None) -> None:
        """Store the default sampler's warm-start prior settings with the study (:func:`autopeft.sampler_prior.resume_prior`)."""
        self.study.set_user_attr(A.WARM_PRIOR, prior)

    def set_ladder(self, rungs: list[dict[str, Any]]) -> None:
        """Store ``--promote``'s rungs with a study that had none (a study may start promoting when resumed)."""
        self.study.set_user_attr(A.LADDER, rungs)

    def raise_level(self, level: int, fidelity: dict[str, Any]) -> None:
        """Move the study to fidelity ``level`` (:mod:`autopeft.escalation`): new trials run at ``fidelity``; the
        first level's fidelity stays in ``fidelity_levels``."""
        ua = self.study.user_attrs
        levels = list(ua.get(A.LEVELS) or [ua[A.FIDELITY]])
        self.study.set_user_attr(A.LEVELS, levels + [fidelity])
        self.study.set_user_attr(A.FIDELITY, fidelity)
        self.study.set_user_attr(A.LEVEL_NOW, level)  # last: a reader seeing the level finds its fidelity

    def set_notice(self, key: str, message: str) -> None:
        self.study.set_user_attr(A.NOTICE_PREFIX + key, message)

    def fail_stale(self) -> list[int]:
        """Mark RUNNING trials of dead drivers failed, with the reason: those whose heartbeat (recorded
        right after ``ask``) is older than the grace period.  A live driver's trials are never touched."""
        return fail_stale(self.study)


def finished_meanwhile(exc: BaseException) -> bool:
    """Whether ``exc`` says a trial this driver still held was finished by someone else (another driver failed it as
    stale): Optuna's ``UpdateFinishedTrialError`` from a write, or ``study.tell``'s "Cannot tell a FAIL trial"."""
    from optuna.exceptions import UpdateFinishedTrialError

    return isinstance(exc, UpdateFinishedTrialError) or (isinstance(exc, ValueError)
                                                         and str(exc).startswith("Cannot tell a "))


def fail_stale(study: Any) -> list[int]:
    """See :meth:`StudyStore.fail_stale`."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        stale = storage._get_stale_trial_ids(study._study_id)
    except (AttributeError, NotImplementedError):
        return []
    failed = []
    for tid in stale:
        try:
            storage.set_trial_user_attr(tid, A.STATUS, ABANDONED)
            storage.set_trial_user_attr(tid, A.REASON, f"its driver died (no heartbeat for over {GRACE_S:g} s); "
                                                       "the candidate may be proposed again")
            if storage.set_trial_state_values(tid, TrialState.FAIL):
                failed.append(tid)
        except (UpdateFinishedTrialError, KeyError, RuntimeError):
            pass  # another driver got there first, or it finished meanwhile
    return failed


__all__ = ["A", "StudyStore", "SCHEMA_VERSION", "HEARTBEAT_S", "GRACE_S", "REQUIRED_ATTRS", "DIRECTIONS", "OK",
           "FAILED", "INFEASIBLE", "ABANDONED", "DUPLICATE", "studies_dir", "default_storage", "sanitize", "space_hash",
           "get_storage", "check_schema", "load_optuna_study", "list_studies", "complete_trials", "rung_of", "fail_stale",
           "finished_meanwhile"]
