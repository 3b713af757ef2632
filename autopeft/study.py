"""The study owns Optuna: the driver that asks, dispatches to an executor, and tells.

Only this driver writes to storage.  Each trial stores its full candidate, measured values,
fidelity, status and failure reason as attributes, so a study alone rebuilds every result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from autopeft.candidate import Candidate
from autopeft.errors import ConfigError, StudyError
from autopeft.pareto import DIRECTIONS, OBJECTIVES, to_max
from autopeft.trial import FAILED, INFEASIBLE, OK, Fidelity, TrialResult, TrialSpec, default_fidelity

SCHEMA_VERSION = 1
ABANDONED = "abandoned"  # status of a trial stopped before it finished (Ctrl-C, --timeout, a dead driver)
EXECUTORS = ("local", "ray", "ray-tune", "inline")
SAMPLERS = ("autopeft", "random", "tpe", "nsga2", "gp", "botorch")
METRIC_LABELS = {"score": "score", "params": "trainable params", "memory": "memory (MiB)", "time": "time (s)"}
HEARTBEAT_S = float(os.environ.get("AUTOPEFT_HEARTBEAT_S", "10"))
GRACE_S = float(os.environ.get("AUTOPEFT_GRACE_S", "30"))
ADOPT_WAIT_S = 10.0  # how long to wait for another driver to finish creating an empty study before adopting it


# ----------------------------------------------------------------------------- storage
def studies_dir() -> Path:
    return Path(os.environ.get("AUTOPEFT_STUDIES_DIR", "studies"))


def default_storage(name: str) -> str:
    return f"sqlite:///{studies_dir() / (name + '.db')}"


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "study"


def get_storage(url: str, create: bool = True) -> Any:
    """An Optuna storage for ``url`` (RDB with heartbeats, or a journal file ``*.log``/``journal://``)."""
    import optuna

    if not isinstance(url, str) or not url:
        raise StudyError("storage must be a URL such as sqlite:///studies/x.db or postgresql://user@host/db")
    if url.startswith("journal://") or url.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal://"):] if url.startswith("journal://") else url
        if not create and not Path(path).exists():
            raise StudyError(f"storage file not found: {path}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return _journal_storage_class()(JournalFileBackend(path))
    if "://" not in url:
        raise StudyError(f"bad storage URL {url!r}: expected e.g. sqlite:///studies/x.db, postgresql://user@host/db or journal://file.log")
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not create and not path.exists():
            raise StudyError(f"storage file not found: {path} (no study has been stored there)")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=int(max(1, HEARTBEAT_S)), grace_period=int(max(2, GRACE_S)),
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
        )
    except Exception as exc:  # sqlalchemy raises many types for bad URLs / unreachable servers
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise StudyError(f"cannot open storage {url!r}: {msg}") from None


_HB_ATTR = "autopeft_heartbeat"


@functools.lru_cache(maxsize=None)
def _journal_storage_class() -> type:
    """A journal storage with the heartbeats Optuna only gives RDB storages, so a dead driver's running trials
    are told from a live driver's on a shared journal file too.  A heartbeat is the wall-clock time written as a
    trial system attribute (one journal line per running trial every ``HEARTBEAT_S / 2`` s); a RUNNING trial whose
    newest heartbeat (or, before its first, its start) is older than ``GRACE_S`` is stale.  Machines sharing one
    journal file need clocks that agree to well under ``GRACE_S`` (NTP does)."""
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.storages.journal import JournalStorage
    from optuna.trial import TrialState

    class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, _HB_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            stale = []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                last = t.system_attrs.get(_HB_ATTR)
                if last is None and t.datetime_start is not None:
                    last = t.datetime_start.timestamp()
                if last is not None and now - float(last) > GRACE_S:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return int(max(1, HEARTBEAT_S))

        def get_failed_trial_callback(self) -> Any:
            return None

        def get_heartbeat_stale_trial_callback(self) -> Any:
            return None

    return JournalHeartbeatStorage


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


#: warn when at least this fraction of the complete trials (and at least this many) score at the majority-class level
COLLAPSE_FRACTION = 0.75
COLLAPSE_MIN_TRIALS = 6
REQUIRED_ATTRS = ("model", "task", "space_hash", "objectives", "ref_point", "fidelity", "metric", "num_labels", "base_params")


def check_schema(study: Any) -> None:
    """Refuse studies that autopeft did not write, or that an incompatible version wrote."""
    v = study.user_attrs.get("autopeft_schema")
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


# ----------------------------------------------------------------------------- budgets
def parse_budget(value: Any, base: float | None, what: str) -> float | None:
    """``None``, a number, ``"1.5%"`` (of ``base``) or, for memory, ``"512MiB"``/``"2GiB"``."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(f"--{what} must be > 0, got {value}")
        return float(value)
    s = str(value).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|[kKmMgG]i?[bB]?|[kKmMgG])?", s)
    if not m:
        raise ConfigError(f"--{what}: cannot read {value!r}; use a number, a percentage of the base model like 1%, "
                          "or (memory) a size like 512MiB")
    num, unit = float(m.group(1)), (m.group(2) or "")
    if num <= 0:
        raise ConfigError(f"--{what} must be > 0, got {value!r}")
    if unit == "%":
        if base is None:
            raise ConfigError(f"--{what}: a percentage needs a base value")
        return num / 100.0 * base
    mult = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}
    u = unit.lower()
    if what == "max-memory":
        if u in ("", "m", "mib", "mb"):
            return num  # MiB by default
        if u in ("k", "kib", "kb"):
            return num / 1024
        if u in ("g", "gib", "gb"):
            return num * 1024
    return num * mult.get(u[:1], 1)


# ----------------------------------------------------------------------------- samplers
def make_sampler(name: str, seed: int | None, space: Any = None, objectives: Sequence[str] = (), ref: Sequence[float] = (),
                 count: Callable[[Candidate], float] | None = None, max_params: float | None = None,
                 max_memory: float | None = None, n_startup: int = 8) -> Any:
    import optuna

    if name == "autopeft":
        from autopeft.sampler import CostAwareEHVISampler

        return CostAwareEHVISampler(space, objectives, ref, count, max_params=max_params,
                                    max_memory=max_memory, n_startup_trials=n_startup, seed=seed)
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
    raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def space_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- the driver
class Driver:
    """Runs one search: opens or resumes the study, loops ask -> execute -> tell."""

    def __init__(
        self,
        *,
        model: str | None,
        data: dict[str, Any],
        space: str,
        n_trials: int,
        sampler: str = "autopeft",
        study_name: str | None = None,
        storage: str | None = None,
        fidelity: dict[str, Any] | None = None,
        objectives: Sequence[str] | None = None,
        max_params: Any = None,
        max_memory: Any = None,
        workers: int | None = None,
        executor: str = "local",
        seed: int = 0,
        timeout: float | None = None,
        max_failures: int = 5,
        trial_timeout: float | None = None,
        n_startup: int = 8,
        progress: bool = False,
        executor_kwargs: dict[str, Any] | None = None,
        fault: Callable[[int], str | None] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from autopeft.builder import DEFAULT_MODEL, model_info
        from autopeft.space import SearchSpace
        from autopeft.trial import task_of

        if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
            raise ConfigError(f"--trials must be an integer >= 1, got {n_trials!r}")
        if not isinstance(max_failures, int) or max_failures < 1:
            raise ConfigError(f"--max-failures must be an integer >= 1, got {max_failures!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {timeout}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
        objectives = list(objectives or ("score", "params", "memory"))
        for o in objectives:
            if o not in OBJECTIVES:
                raise ConfigError(f"unknown objective {o!r}; choose from {', '.join(OBJECTIVES)}")
        if objectives[0] != "score" or len(set(objectives)) != len(objectives):
            raise ConfigError("objectives must start with 'score' and list each objective once, e.g. score,params,memory")
        self.space_def = SearchSpace.load(space)
        self.task = task_of(data)
        self.info = model_info(model, self.task.num_labels, trust_remote_code)
        self.bound = self.space_def.bind(self.info.arch.num_layers)
        self.model, self.data = model, data
        self.model_label = model or DEFAULT_MODEL
        task_label = data.get("task") or Path(data.get("train_file") or "data").stem
        self.name = study_name or sanitize(f"{Path(self.model_label).name}-{task_label}-{self.space_def.name}")
        self.storage_url = storage or default_storage(self.name)
        self.n_trials, self.sampler_name, self.seed = n_trials, sampler, seed
        self.timeout, self.max_failures, self.trial_timeout = timeout, max_failures, trial_timeout
        self.workers_arg = workers  # Ray sizes its pool from the cluster when None
        self.workers = workers or os.cpu_count() or 1
        self.executor_name, self.executor_kwargs = executor, executor_kwargs or {}
        self.progress, self.fault, self.n_startup = progress, fault, n_startup
        self.notices: list[str] = []
        self.trust_remote_code = trust_remote_code
        self._fidelity_arg = fidelity
        self._objectives_arg = objectives
        self.max_params = parse_budget(max_params, self.info.base_params, "max-params")
        mm = parse_budget(max_memory, None, "max-memory")
        self.max_memory_mib = mm
        self.study: Any = None
        self.bar: Any = None
        self.stop_reason = None

    # ------------------------------------------------------------------ study set-up
    def _identity(self) -> dict[str, Any]:
        d = {k: v for k, v in self.data.items() if v is not None and k != "data_dir"}
        return {"model": self.model_label, "task": d, "space": self.space_def.name, "space_hash": space_hash(self.space_def.raw)}

    def open(self) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        st = get_storage(self.storage_url)
        ident = self._identity()
        try:
            study = optuna.load_study(study_name=self.name, storage=st)
            existing = True
        except KeyError:
            existing = False
        adopt = None
        complete_attrs = ("autopeft_schema", *REQUIRED_ATTRS)
        if existing and not study.trials and not all(k in study.user_attrs for k in complete_attrs):
            # an empty study without our attributes: another driver is creating it right now (wait for it),
            # or one died between creating it and writing them (adopt it)
            for _ in range(int(ADOPT_WAIT_S / 0.25)):
                time.sleep(0.25)
                if all(k in study.user_attrs for k in complete_attrs):
                    break
            else:
                existing, adopt = False, study
        if existing:
            check_schema(study)
            ua = study.user_attrs
            for k in ("model", "task", "space_hash"):
                if ua.get(k) != ident[k]:
                    what = {"model": "model", "task": "task", "space_hash": "search space"}[k]
                    raise StudyError(
                        f"study {self.name!r} in {self.storage_url} was run with a different {what} "
                        f"({ua.get(k)!r}, now {ident[k]!r}); pass another --study name to start a new study"
                    )
            stored_fid = Fidelity.from_stored(ua["fidelity"]).to_dict()
            if self._fidelity_arg is not None and Fidelity(**{**stored_fid, **self._fidelity_arg}).to_dict() != stored_fid:
                raise StudyError(f"study {self.name!r} was run with fidelity {stored_fid}; "
                                 "resume it with the same fidelity or pass another --study name")
            if self._objectives_arg != ua["objectives"] and self._objectives_arg != ["score", "params", "memory"]:
                raise StudyError(f"study {self.name!r} has objectives {ua['objectives']}; resume with the same objectives")
            self.fidelity = Fidelity(**stored_fid)
            self.objectives = list(ua["objectives"])
            self.ref = list(ua["ref_point"])
        else:
            self.fidelity = default_fidelity(self._fidelity_arg, self._trials_on_gpu())
            self.objectives = self._objectives_arg
            self.ref = self._reference_point()
            if adopt is not None:
                want = [DIRECTIONS[o] for o in self.objectives]
                if [d.name.lower() for d in adopt.directions] != want:
                    raise StudyError(f"study {self.name!r} in {self.storage_url} is empty but has directions "
                                     f"{[d.name.lower() for d in adopt.directions]}, not autopeft's {want}; "
                                     "pass another --study name")
                study = adopt
            else:
                try:
                    study = optuna.create_study(study_name=self.name, storage=st,
                                                directions=[DIRECTIONS[o] for o in self.objectives])
                except optuna.exceptions.DuplicatedStudyError:  # another driver created it just now: join it
                    for _ in range(100):
                        study = optuna.load_study(study_name=self.name, storage=st)
                        if all(k in study.user_attrs for k in REQUIRED_ATTRS):
                            break
                        time.sleep(0.2)
                    self.study = None
                    return self.open()
            meta = {
                **ident,
                "autopeft_schema": SCHEMA_VERSION,
                "task_name": self.task.name,
                "metric": self.task.metric,
                "metric_reason": self.task.metric_reason,
                "num_labels": self.task.num_labels,
                "objectives": self.objectives,
                "ref_point": self.ref,
                "fidelity": self.fidelity.to_dict(),
                "base_params": self.info.base_params,
                "head_params": self.info.head_params,
                "num_layers": self.info.arch.num_layers,
                "full_memory_mib": self._full_memory_mib,
                "chance_score": self._chance,
                "space_def": self.space_def.raw,
                "seed": self.seed,
            }
            for k, v in meta.items():
                study.set_user_attr(k, v)
            study.set_metric_names([METRIC_LABELS[o] if o != "score" else f"score ({self.task.metric})" for o in self.objectives])
        self.study = study
        return study

    def _trials_on_gpu(self) -> bool:
        """Whether trials will run on a GPU: Ray trials that ask for GPUs, or a local CUDA device."""
        if self.executor_name in ("ray", "ray-tune"):
            return float(self.executor_kwargs.get("gpus_per_trial") or 0) > 0
        import torch

        return bool(torch.cuda.is_available())

    def _reference_point(self) -> list[float]:
        """Fixed per study: chance score, base model's parameter count, full fine-tuning's memory."""
        from autopeft.builder import build_model, load_base
        from autopeft.data import chance_score, search_split
        from autopeft.trial import measure_memory

        _, ev = search_split(self.task, self.fidelity.n_train, self.fidelity.n_eval, self.seed)
        self._chance = float(chance_score(self.task.metric, [self.task.train_labels[i] for i in ev]))
        base, tok = load_base(self.model, self.task.num_labels, self.trust_remote_code)
        full = build_model(Candidate.make({"full": {}}, []), base, self.info)
        tb = sum(p.numel() * p.element_size() for p in full.model.parameters() if p.requires_grad)
        max_len = min(self.fidelity.max_length, self.info.arch.max_positions)
        mem = measure_memory(full.model, self.fidelity.memory_batch_size, max_len, int(base.config.vocab_size), tb,
                             "token_type_ids" in tok.model_input_names)
        self._full_memory_mib = mem / 2**20
        ref = []
        for o in self.objectives:
            if o == "score":
                ref.append(self._chance)
            elif o == "params":
                ref.append(-math.log10(self.info.base_params))
            elif o == "memory":
                ref.append(-math.log10(self._full_memory_mib))
            else:
                ref.append(-math.log10(3600.0))  # time: one hour per trial
        return ref

    # ------------------------------------------------------------------ the loop
    # ------------------------------------------------------------------ the loop, in steps
    def prepare(self) -> None:
        """Open the study, fail stale trials of dead drivers, install the sampler."""
        from optuna.trial import TrialState

        from autopeft.builder import count_params

        study = self.open() if self.study is None else self.study
        self.fail_stale(study)
        info = self.info
        self.sampler = make_sampler(self.sampler_name, self.seed + len(study.trials), self.bound, self.objectives, self.ref,
                                    lambda c: count_params(c, info), self.max_params, self.max_memory_mib, self.n_startup)
        study.sampler = self.sampler
        # candidates never to propose again: evaluated ones (complete, failed, over budget), not abandoned ones
        self.evaluated = {t.user_attrs["candidate_key"] for t in study.get_trials(deepcopy=False)
                          if "candidate_key" in t.user_attrs and t.state != TrialState.RUNNING
                          and t.user_attrs.get("status") != ABANDONED}
        self.pending: dict[int, tuple[Any, Candidate, float]] = {}
        self.fails_in_row, self.last_reason, self.rejections = 0, "", 0
        self.t_start = time.monotonic()
        self.stop_reason: str | None = None

    @staticmethod
    def fail_stale(study: Any) -> list[int]:
        """Mark RUNNING trials of dead drivers failed, with the reason: those whose heartbeat (recorded
        right after ``ask``) is older than the grace period.  A live driver's trials are never touched."""
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
                storage.set_trial_user_attr(tid, "status", ABANDONED)
                storage.set_trial_user_attr(tid, "reason", f"its driver died (no heartbeat for over {GRACE_S:g} s); "
                                                           "the candidate may be proposed again")
                if storage.set_trial_state_values(tid, TrialState.FAIL):
                    failed.append(tid)
            except (UpdateFinishedTrialError, KeyError, RuntimeError):
                pass  # another driver got there first, or it finished meanwhile
        return failed

    def n_complete(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def needs_more(self) -> bool:
        """Whether another trial should be started now (budget, timeout, failures)."""
        if self.stop_reason is not None:
            return False
        if self.timeout is not None and time.monotonic() - self.t_start > self.timeout:
            self.stop_reason = "timeout"
            return False
        return self.n_complete() + len(self.pending) < self.n_trials

    def finished(self) -> bool:
        return self.stop_reason is not None or (self.n_complete() >= self.n_trials)

    def ask_spec(self) -> TrialSpec | None:
        """Ask the sampler for a new candidate; return its TrialSpec, or None if it was rejected
        without training (duplicate, over the parameter budget)."""
        from optuna.trial import TrialState

        study = self.study
        trial = study.ask()
        try:
            return self._prepare_spec(study, trial)
        except BaseException as exc:  # never leave a RUNNING trial behind (a bad proposal, Ctrl-C, storage error)
            if trial.number not in self.pending:
                try:
                    trial.set_user_attr("status", ABANDONED if isinstance(exc, KeyboardInterrupt) else FAILED)
                    trial.set_user_attr("reason", f"while preparing the trial: {type(exc).__name__}: {exc}"[:500])
                    study.tell(trial, state=TrialState.FAIL)
                except Exception:  # storage gone: stale detection marks it on resume
                    pass
            raise

    def _prepare_spec(self, study: Any, trial: Any) -> TrialSpec | None:
        from optuna.trial import TrialState

        from autopeft.builder import count_params

        try:  # at once, so a driver killed from here on leaves a trial that resume can tell is stale
            study._storage.record_heartbeat(trial._trial_id)
        except (AttributeError, NotImplementedError):
            pass
        t0 = time.perf_counter()
        cand = self.bound.suggest(trial)
        sampler_s = time.perf_counter() - t0
        key = cand.key
        params = count_params(cand, self.info)
        self._set_attrs(trial, cand, params, sampler_s)
        spec = None
        if key in self.evaluated or any(c.key == key for _, c, _ in self.pending.values()) or self._in_storage(key, trial):
            trial.set_user_attr("status", "duplicate")
            trial.set_user_attr("reason", "candidate already evaluated in this study")
            study.tell(trial, state=TrialState.PRUNED)
            self.rejections += 1
        elif self.max_params is not None and params > self.max_params:
            trial.set_user_attr("status", INFEASIBLE)
            trial.set_user_attr("reason", f"{params} trainable params > budget {self.max_params:.0f}")
            study.tell(trial, state=TrialState.PRUNED)
            self.evaluated.add(key)
            self.rejections += 1
        else:
            self.rejections = 0
            spec = TrialSpec(
                trial_id=trial.number, candidate=cand.to_dict(), model=self.model, data=self.data,
                fidelity=self.fidelity.to_dict(), seed=self.seed,
                max_memory=self.max_memory_mib * 2**20 if self.max_memory_mib else None,
                threads=0, trust_remote_code=self.trust_remote_code,
                fault=self.fault(trial.number) if self.fault else None,
            )
            self.pending[trial.number] = (trial, cand, time.monotonic())
        if self.rejections >= 200:
            raise StudyError("200 proposals in a row were duplicates or over budget: the space is exhausted "
                             "or the budget too tight; widen the space or raise --max-params")
        return spec

    def _in_storage(self, key: str, trial: Any) -> bool:
        """Whether another driver on the same study already runs or ran this candidate."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False):
            if (t.number != trial.number and t.user_attrs.get("candidate_key") == key and t.state != TrialState.PRUNED
                    and t.user_attrs.get("status") != ABANDONED):
                return True
        return False

    def complete(self, res: TrialResult) -> None:
        """Record a finished trial in the study (the only place results are written)."""
        trial, cand, _ = self.pending.pop(res.trial_id)
        self.evaluated.add(cand.key)
        self._tell(self.study, trial, res)
        if res.status == FAILED:
            self.fails_in_row += 1
            self.last_reason = res.reason or "unknown"
        elif res.status == OK:
            self.fails_in_row = 0
            self._check_collapse()
        if self.fails_in_row >= self.max_failures:
            self.stop_reason = "failures"
        if self.bar is not None:
            self._bar_update(self.bar, self.study, self.n_complete())

    def _check_collapse(self) -> None:
        """Warn once when most trials score no better than always predicting the majority class: the trials are
        then too short to tell configurations apart (measured: MiniLM on MRPC at 2,000 rows x 2 epochs, 14 of 15
        trials; with every learning rate x3 the hand-designed baselines all score above it), and the front only
        ranks parameter counts."""
        from optuna.trial import TrialState

        if any(n.startswith("collapse") for n in self.notices):
            return
        comp = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(comp) < max(COLLAPSE_MIN_TRIALS, self.n_startup):
            return
        chance = float(self.ref[0])
        flat = sum(1 for t in comp if t.values[0] <= chance + 1e-9)
        if flat < COLLAPSE_FRACTION * len(comp):
            return
        msg = (f"collapse: {flat} of {len(comp)} trials score no better than always predicting the majority class "
               f"({self.task.metric} {chance:.3f}), so the trials are too short to tell configurations apart on this task; "
               f"start a new study with longer trials and higher learning rates, e.g. --n-train "
               f"{max(2000, 2 * self.fidelity.n_train)} --batch-size 32 --lr-scale {max(3.0, 2 * self.fidelity.lr_scale):g}"
               + (", or rank by --metric auc, which does not need the argmax to move" if self.task.num_labels == 2
                  and self.task.metric != "auc" else ""))
        self.notices.append(msg)
        self.study.set_user_attr("notice_collapse", msg)
        print(f"autopeft: warning: {msg[len('collapse: '):]}", file=sys.stderr, flush=True)

    def heartbeat(self) -> None:
        for trial, _, _ in self.pending.values():
            try:
                self.study._storage.record_heartbeat(trial._trial_id)
            except (AttributeError, NotImplementedError):
                pass

    def abandon_pending(self) -> None:
        """Mark trials still running at a stop (Ctrl-C, --timeout, too many failures, an error) as FAIL with
        status ``abandoned`` and the reason; completed work is untouched, and the sampler may propose an
        abandoned candidate again (it was stopped, not found wanting)."""
        from optuna.trial import TrialState

        for trial, _, _ in list(self.pending.values()):
            try:
                trial.set_user_attr("status", ABANDONED)
                trial.set_user_attr("reason", f"stopped before it finished ({self.stop_reason or 'error'})")
                self.study.tell(trial, state=TrialState.FAIL)
            except Exception:  # storage may be gone; stale-trial detection marks it failed on resume
                pass
        self.pending.clear()

    def run(self) -> "Any":
        """Run until the study holds ``n_trials`` complete trials (or a stop); return the result."""
        self.prepare()
        self.bar = self._bar(self.n_complete())
        try:
            if self.executor_name == "ray-tune":
                from autopeft.ray_executor import run_with_ray

                run_with_ray(self, **self.executor_kwargs)
            else:
                self._run_local()
        except KeyboardInterrupt:
            self.stop_reason = "interrupted"
        finally:
            self.abandon_pending()
            if self.bar is not None:
                self.bar.close()
        if self.stop_reason == "failures":
            raise TrialsFailing(f"{self.max_failures} trials failed in a row; last reason: {self.last_reason}")
        if self.stop_reason == "interrupted":
            raise KeyboardInterrupt
        from autopeft.result import SearchResult

        return SearchResult(self.study, self.storage_url)

    def _run_local(self) -> None:
        from autopeft.executors import make_executor

        workers = self.workers_arg if self.executor_name == "ray" else self.workers
        ex = make_executor(self.executor_name, workers, self.trial_timeout, **self.executor_kwargs)
        last_hb = 0.0
        try:
            # one proposal prepared ahead when several workers run, so a freed worker never waits for the sampler
            ahead = 1 if ex.capacity > 1 else 0
            while not self.finished():
                if self.timeout is not None and time.monotonic() - self.t_start > self.timeout:
                    self.stop_reason = "timeout"  # at once: running trials are abandoned, not waited for
                    break
                while len(self.pending) < ex.capacity + ahead and self.needs_more():
                    spec = self.ask_spec()
                    if spec is not None:
                        ex.submit(spec)
                if not self.pending:
                    if self.stop_reason is not None:
                        break
                    continue
                results = ex.wait(timeout=min(5.0, HEARTBEAT_S))
                if time.monotonic() - last_hb >= HEARTBEAT_S / 2:
                    self.heartbeat()
                    last_hb = time.monotonic()
                for res in results:
                    self.complete(res)
        finally:
            ex.shutdown()

    def _set_attrs(self, trial: Any, cand: Candidate, params: int, sampler_s: float) -> None:
        d = cand.to_dict()
        trial.set_user_attr("candidate", d)
        trial.set_user_attr("candidate_key", cand.key)
        trial.set_user_attr("summary", cand.summary())
        trial.set_user_attr("method", "+".join(d["methods"]) or "head")
        trial.set_user_attr("layers", ",".join(map(str, d["layers"])))
        trial.set_user_attr("sparsity", d["sparsity"].get("fraction", 0.0))
        trial.set_user_attr("params", params)
        trial.set_user_attr("trainable_pct", round(100.0 * params / self.info.base_params, 4))
        trial.set_user_attr("sampler_s", round(sampler_s, 4))
        trial.set_user_attr("fidelity", self.fidelity.to_dict())
        if self.max_params is not None:
            trial.set_constraint("max_params", float(params - self.max_params))

    def _tell(self, study: Any, trial: Any, res: TrialResult) -> None:
        from optuna.trial import TrialState

        for k in ("status", "reason", "wall_s", "train_s", "steps", "loss", "metric"):
            v = getattr(res, k)
            if v is not None:
                trial.set_user_attr(k, round(v, 3) if isinstance(v, float) else v)
        if res.memory_bytes is not None:
            trial.set_user_attr("memory_mib", round(res.memory_bytes / 2**20, 3))
        if res.score is not None:
            trial.set_user_attr("score", res.score)
        if res.status == OK:
            vals = []
            for o in self.objectives:
                vals.append({"score": res.score, "params": float(res.params), "memory": res.memory_bytes / 2**20,
                             "time": res.wall_s}[o])
            if self.max_memory_mib is not None:
                trial.set_constraint("max_memory", res.memory_bytes / 2**20 - self.max_memory_mib)
            study.tell(trial, vals)
        elif res.status == INFEASIBLE:
            if self.max_memory_mib is not None and res.memory_bytes is not None:
                trial.set_constraint("max_memory", res.memory_bytes / 2**20 - self.max_memory_mib)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, state=TrialState.FAIL)

    # ------------------------------------------------------------------ progress
    def _bar(self, start: int) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=self.n_trials, initial=min(start, self.n_trials), desc=self.name, unit="trial", dynamic_ncols=True)

    def _bar_update(self, bar: Any, study: Any, done: int) -> None:
        from optuna.trial import TrialState

        bar.n = min(done, self.n_trials)
        comp = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if comp:
            best = max(t.values[0] for t in comp)
            import numpy as np

            from autopeft.pareto import non_dominated

            Y = np.array([to_max(self.objectives, t.values) for t in comp])
            bar.set_postfix(best=f"{best:.3f}", front=int(non_dominated(Y).sum()))
        bar.refresh()


class TrialsFailing(StudyError):
    """Too many trials failed in a row (CLI exit code 1)."""


# ----------------------------------------------------------------------------- public API
def search(
    model: str | None = None,
    task: str | None = "sst2",
    space: str = "lora",
    n_trials: int = 30,
    sampler: str = "autopeft",
    storage: str | None = None,
    study_name: str | None = None,
    *,
    data_dir: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    metric: str | None = None,
    n_train: int | None = None,
    n_eval: int | None = None,
    epochs: float | None = None,
    max_length: int | None = None,
    batch_size: int | None = None,
    memory_batch_size: int | None = None,
    lr_scale: float | None = None,
    objectives: Sequence[str] | None = None,
    max_params: Any = None,
    max_memory: Any = None,
    workers: int | None = None,
    executor: str = "local",
    seed: int = 0,
    timeout: float | None = None,
    max_failures: int = 5,
    trial_timeout: float | None = None,
    n_startup: int = 8,
    progress: bool = False,
    **executor_kwargs: Any,
) -> Any:
    """Run (or resume) a search and return its :class:`autopeft.result.SearchResult`."""
    data = data_spec_dict(task, data_dir, train_file, validation_file, text_columns, label_column, metric)
    fid = {k: v for k, v in dict(n_train=n_train, n_eval=n_eval, epochs=epochs, max_length=max_length,
                                 batch_size=batch_size, memory_batch_size=memory_batch_size,
                                 lr_scale=lr_scale).items() if v is not None}
    drv = Driver(model=model, data=data, space=space, n_trials=n_trials, sampler=sampler, study_name=study_name,
                 storage=storage, fidelity=fid or None, objectives=objectives, max_params=max_params,
                 max_memory=max_memory, workers=workers, executor=executor, seed=seed, timeout=timeout,
                 max_failures=max_failures, trial_timeout=trial_timeout, n_startup=n_startup, progress=progress,
                 executor_kwargs=executor_kwargs)
    return drv.run()


def data_spec_dict(task: str | None, data_dir: str | None, train_file: str | None, validation_file: str | None,
                   text_columns: Sequence[str] | None, label_column: str | None, metric: str | None) -> dict[str, Any]:
    from autopeft.data import DataSpec

    if train_file:
        task = None
    if data_dir is None and task and not train_file:
        data_dir = os.environ.get("AUTOPEFT_DATA_DIR")
    spec = DataSpec(task=task, data_dir=str(Path(data_dir).resolve()) if data_dir else None,
                    train_file=str(Path(train_file).resolve()) if train_file else None,
                    validation_file=str(Path(validation_file).resolve()) if validation_file else None,
                    text_columns=tuple(text_columns) if text_columns else None, label_column=label_column, metric=metric)
    d = asdict(spec)
    if d.get("text_columns") is not None:
        d["text_columns"] = list(d["text_columns"])
    return d
