"""Every option of a search, parsed and validated once: :class:`SearchConfig`.

The API (``autopeft.search(**options)``), the CLI and study spec files (through the CLI's options) all build
one ``SearchConfig``; nothing downstream re-validates or re-lists the options.  No torch/optuna import.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from autopeft.errors import ConfigError

EXECUTORS = ("local", "ray", "ray-tune", "inline")
SAMPLERS = ("autopeft", "random", "tpe", "nsga2", "gp", "botorch")
OBJECTIVES = ("score", "params", "memory", "time")
DEFAULT_SPACE = "lora"  # a shipped search space
METRICS: tuple[str, ...] = ("accuracy", "f1", "matthews", "macro_f1", "auc")
#: what a task is (autopeft.data): sequence classification, or causal-LM / seq2seq (T5) fine-tuning searched by its loss
TASK_TYPES: tuple[str, ...] = ("classification", "causal-lm", "seq2seq")
DEFAULT_OBJECTIVES = ("score", "params", "memory")
FIDELITY_KEYS = ("n_train", "n_eval", "epochs", "max_length", "batch_size", "memory_batch_size", "lr_scale", "dtype",
                 "gradient_checkpointing", "class_weights", "head_lr", "head_lr_after_scale")
DATA_KEYS = ("task", "data_dir", "train_file", "validation_file", "text_columns", "label_column", "metric", "task_type")
RAY_KEYS = ("address", "cpus_per_trial", "gpus_per_trial", "num_cpus")
#: other spellings accepted for a few options (the CLI's names)
ALIASES = {"trials": "n_trials", "study": "study_name", "ray_address": "address"}


def hub_task(dataset: str | None, config: str | None) -> str | None:
    """``--dataset NAME [--dataset-config CONFIG]`` as a task: ``NAME`` or ``NAME:CONFIG`` (the hub's name)."""
    if config and not dataset:
        raise ConfigError("--dataset-config needs --dataset (the Hugging Face datasets name it configures)")
    if not dataset:
        return None
    return f"{dataset}:{config}" if config else dataset


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_budget(value: Any, base: float | None, what: str) -> float | None:
    """``None``, a number, ``"1.5%"`` (of ``base``) or, for memory, ``"512MiB"``/``"2GiB"``."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value > 0 or not math.isfinite(value):
            raise ConfigError(f"--{what} must be a finite number > 0, got {value}")
        return float(value)
    s = str(value).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|[kKmMgG]i?[bB]?|[kKmMgG])?", s)
    if not m:
        raise ConfigError(f"--{what}: cannot read {str(value)[:40]!r}; use a number, a percentage of the base model like "
                          "1%, or (memory) a size like 512MiB")
    num, unit = float(m.group(1)), (m.group(2) or "")
    if not num > 0 or not math.isfinite(num):
        raise ConfigError(f"--{what} must be a finite number > 0, got {str(value)[:40]!r}")
    if unit == "%":
        if base is None:
            raise ConfigError(f"--{what}: a percentage needs a base value")
        return num / 100.0 * base
    u = unit.lower()
    if what == "max-memory":
        if u in ("", "m", "mib", "mb"):
            return num  # MiB by default
        if u in ("k", "kib", "kb"):
            return num / 1024
        return num * 1024  # g, gib, gb
    if u.endswith("b"):
        raise ConfigError(f"--{what}: {str(value)[:40]!r} is a size in bytes, not a parameter count; use a count "
                          "such as 50000 or 5M, or a percentage like 1%")
    out = num * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[u[:1]]
    if not math.isfinite(out):
        raise ConfigError(f"--{what} must be finite, got {str(value)[:40]!r}")
    return out


@dataclass(frozen=True)
class SearchConfig:
    """One search, fully specified. Build it with :meth:`from_options`."""

    model: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # autopeft.data.DataSpec as a dict
    space: str = DEFAULT_SPACE
    n_trials: int = 30
    sampler: str = "autopeft"
    study_name: str | None = None
    storage: str | None = None
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    max_params: Any = None  # parsed against the model's size when the search opens
    max_memory_mib: float | None = None
    fidelity: dict[str, Any] = field(default_factory=dict)  # only the keys the user set
    workers: int | None = None
    executor: str = "local"
    ray: dict[str, Any] = field(default_factory=dict)  # address, cpus_per_trial, gpus_per_trial, num_cpus
    seed: int = 0
    timeout: float | None = None
    trial_timeout: float | None = None
    max_failures: int = 5
    #: stop early when every trial so far scored at the majority-class level (autopeft.loop.COLLAPSE_STOP_TRIALS)
    collapse_stop: bool = True
    #: on such a collapse, first raise the trials' fidelity inside the study (up to autopeft.escalation.MAX_LEVELS
    #: times), then stop
    escalate: bool = True
    #: early stopping on learning curves (:mod:`autopeft.pruner`): ``none`` or ``cost-sh``
    pruner: str = "none"
    #: score the search split at this many evenly spaced points of training (the learning curve; 0: none)
    curve_points: int = 0
    #: rungs of higher fidelity that the best configs are promoted to (:mod:`autopeft.promotion`): ``[{"n_train": 2000
    #: or "all", "epochs": 2.0}, ...]`` (``--promote 2000x2,allx3``); empty: every trial at the study's fidelity
    promote: tuple[Any, ...] = ()
    #: the share of a rung's finished configs that may go up
    promote_fraction: float = 1.0 / 3.0
    #: a learning-rate line search at the top rung (:func:`autopeft.promotion.next_rate_step`): ``none``, ``best`` (the
    #: best config's) or ``front`` (every front config's there)
    refine_rate: str = "none"
    n_startup: int = 8
    #: the default sampler's acquisition x P(learns)^learn_weight once its collapse model exists, among the candidates
    #: within :data:`autopeft.collapse_model.LEARN_BAND` of the best gain: fewer collapsed trials (0: off; None:
    #: :data:`autopeft.collapse_model.LEARN_WEIGHT`, 10, for a new study; the study's own on a resume)
    learn_weight: float | None = None
    progress: bool = False
    #: one line per finished trial on stderr (above the progress bar when there is one); the CLI turns it on
    trial_lines: bool = False
    trust_remote_code: bool = False
    #: where the model's layers and projections are, for a model autopeft cannot read (:func:`autopeft.arch.parse_layout`)
    layers_pattern: str | None = None
    target_modules: Any = None
    #: configs evaluated first (:mod:`autopeft.seeding`): files, export folders, ``baselines``, candidate dicts;
    #: None (not given): a new study without ``warm_start`` evaluates the baselines its space can express first
    enqueue: tuple[Any, ...] | None = None
    #: another study (``NAME`` or ``NAME@STORAGE_URL``) whose Pareto front is evaluated first
    warm_start: str | None = None
    #: the function that runs a trial, ``module:function`` (benchmarks: ``autopeft.executors.simulated:run``)
    runner: str = "autopeft.trial:run_trial"
    #: fault injection for tests: trial number -> fault string of its spec
    fault: Callable[[int], str | None] | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_options(cls, **options: Any) -> "SearchConfig":
        """Validate keyword options (the API's names; the aliases in :data:`ALIASES` too)."""
        opts = {ALIASES.get(k, k): v for k, v in options.items()}
        for neg in ("no_escalate", "no_collapse_stop"):  # the CLI's switches by their own names
            if neg in opts:
                v = opts.pop(neg)
                if not isinstance(v, bool):
                    raise ConfigError(f"{neg} must be true or false, got {v!r}")
                if neg[3:] in opts and opts[neg[3:]] is v:
                    raise ConfigError(f"{neg}={v} contradicts {neg[3:]}={opts[neg[3:]]}; give one of them")
                opts[neg[3:]] = not v
        if "dataset" in opts or "dataset_config" in opts:
            hub = hub_task(opts.pop("dataset", None), opts.pop("dataset_config", None))
            if hub is not None and opts.get("task") not in (None, hub):
                raise ConfigError(f"give task={opts['task']!r} or dataset={hub!r}, not both")
            if hub is not None:
                opts["task"] = hub
        data = {k: opts.pop(k) for k in DATA_KEYS if k in opts}
        fid = {k: v for k, v in ((k, opts.pop(k)) for k in FIDELITY_KEYS if k in opts) if v is not None}
        ray = {k: v for k, v in ((k, opts.pop(k)) for k in RAY_KEYS if k in opts) if v is not None}
        if "max_memory" in opts:
            opts["max_memory_mib"] = parse_budget(opts.pop("max_memory"), None, "max-memory")
        promote_lr_scale = opts.pop("promote_lr_scale", None)  # merged into the rungs of promote
        names = {f.name for f in fields(cls)} - {"data", "fidelity", "ray"}
        unknown = sorted(set(opts) - names)
        if unknown:
            allowed = sorted(names | set(DATA_KEYS) | set(FIDELITY_KEYS) | set(RAY_KEYS) | {"max_memory", "promote_lr_scale"})
            raise ConfigError(f"unknown search option {unknown[0]!r}; allowed: {', '.join(allowed)}")
        if opts.get("objectives") is not None:
            obj = opts["objectives"]
            opts["objectives"] = tuple(o.strip() for o in obj.split(",") if o.strip()) if isinstance(obj, str) else tuple(obj)
        else:
            opts.pop("objectives", None)
        if opts.get("enqueue") is not None:
            opts["enqueue"] = _enqueue_sources(opts["enqueue"])
        else:
            opts.pop("enqueue", None)
        if "promote" in opts or promote_lr_scale is not None:
            from autopeft.promotion import parse_ladder, with_lr_scale

            opts["promote"] = tuple(with_lr_scale(parse_ladder(opts.get("promote")), promote_lr_scale))
        if opts.get("promote_fraction") is None:
            opts.pop("promote_fraction", None)
        for k in ("executor", "sampler", "space", "warm_start", "pruner"):
            if opts.get(k) is None:
                opts.pop(k, None)
        cfg = cls(data=data_spec_dict(**data), fidelity=fid, ray=ray, **opts)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        n = self.n_trials
        if not _is_int(n) or n < 1:
            raise ConfigError(f"--trials must be an integer >= 1, got {n!r}")
        if not _is_int(self.max_failures) or self.max_failures < 1:
            raise ConfigError(f"--max-failures must be an integer >= 1, got {self.max_failures!r}")
        if not isinstance(self.collapse_stop, bool):
            raise ConfigError(f"collapse-stop must be true or false, got {self.collapse_stop!r}")
        if not isinstance(self.escalate, bool):
            raise ConfigError(f"escalate must be true or false, got {self.escalate!r}")
        from autopeft.promotion import REFINE_MODES

        if self.refine_rate not in REFINE_MODES:
            raise ConfigError(f"--refine-rate must be one of {', '.join(REFINE_MODES)}, got {self.refine_rate!r}")
        from autopeft.arch import parse_layout
        from autopeft.pruner import check_curve_points, check_pruner

        check_pruner(self.pruner)
        check_curve_points(self.curve_points)
        from autopeft.promotion import check_fraction

        check_fraction(self.promote_fraction)
        parse_layout(self.layers_pattern, self.target_modules)
        if not _is_int(self.n_startup) or self.n_startup < 1:
            raise ConfigError(f"--n-startup must be an integer >= 1, got {self.n_startup!r}")
        w = self.learn_weight
        if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < math.inf):
            raise ConfigError(f"--learn-weight must be a finite number >= 0, got {w!r}")
        if self.workers is not None and (not _is_int(self.workers) or self.workers < 1):
            raise ConfigError(f"--workers must be an integer >= 1, got {self.workers!r}")
        for name in ("timeout", "trial_timeout"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number of seconds > 0, got {v!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be an integer in 0..{2**32 - 1}, got {self.seed!r}")
        if self.study_name is not None:
            from autopeft.storage import check_name

            check_name(self.study_name)
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.learn_weight and self.sampler != "autopeft":
            raise ConfigError(f"--learn-weight applies to the default sampler (autopeft), not --sampler {self.sampler}; "
                              "drop one of the two")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.executor!r}; choose one of {', '.join(EXECUTORS)}")
        for o in self.objectives:
            if o not in OBJECTIVES:
                raise ConfigError(f"unknown objective {o!r}; choose from {', '.join(OBJECTIVES)}")
        if not self.objectives or self.objectives[0] != "score" or len(set(self.objectives)) != len(self.objectives):
            raise ConfigError("objectives must start with 'score' and list each objective once, e.g. score,params,memory")
        if self.ray and self.executor not in ("ray", "ray-tune"):
            raise ConfigError(f"{', '.join(sorted(self.ray))} apply to --executor ray or ray-tune, not {self.executor}")
        cpus, gpus = self.ray.get("cpus_per_trial", 1.0), self.ray.get("gpus_per_trial", 0.0)
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 < cpus < math.inf:
            raise ConfigError(f"--cpus-per-trial must be a finite number > 0, got {cpus!r}")
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not 0 <= gpus < math.inf:
            raise ConfigError(f"--gpus-per-trial must be a finite number >= 0, got {gpus!r}")
        if self.executor == "ray-tune" and self.trial_timeout is not None:
            raise ConfigError("--trial-timeout is not supported with --executor ray-tune; use --executor ray")
        if self.warm_start is not None:
            if not isinstance(self.warm_start, str):
                raise ConfigError(f"--warm-start must be a study name or NAME@STORAGE_URL, got {self.warm_start!r}")
            split_ref(self.warm_start)
        from autopeft.contract import Fidelity

        auto = {"class_weights": "none"} if self.fidelity.get("class_weights") == "auto" else {}  # resolved later
        Fidelity(**{**Fidelity().to_dict(), **self.fidelity, **auto})  # the user's keys alone must be valid

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("fault")
        return d

    @property
    def trials_on_gpu_hint(self) -> bool | None:
        """True/False when the executor settles whether trials get a GPU (Ray resources); None: ask torch."""
        if self.executor in ("ray", "ray-tune"):
            return float(self.ray.get("gpus_per_trial") or 0) > 0
        return None


def split_ref(ref: str) -> tuple[str, str | None]:
    """``--warm-start``'s ``NAME`` or ``NAME@STORAGE_URL`` (a study name has no ``@``: the first one splits)."""
    from autopeft.storage import check_name

    name, at, url = str(ref).partition("@")
    if at and not url:
        raise ConfigError(f"--warm-start {str(ref)[:60]!r}: give NAME or NAME@STORAGE_URL")
    check_name(name)
    return name, url or None


def _enqueue_sources(value: Any) -> tuple[Any, ...]:
    """``--enqueue``'s sources: a comma-separated string, or a list of paths, ``baselines`` and (API) candidates
    (dicts, or :class:`~autopeft.candidate.Candidate` objects); ``none`` (or an empty list): nothing first, not even
    the baselines a new study runs first by default."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"enqueue must be a path, 'baselines', or a list of paths and configs, got {type(value).__name__}")
    out: list[Any] = []
    for v in items:
        if hasattr(v, "to_dict") and hasattr(v, "key"):  # a Candidate
            v = v.to_dict()
        if isinstance(v, (str, os.PathLike)) and str(v).strip():
            out.append(str(v).strip())
        elif isinstance(v, dict):
            out.append(v)
        elif not (isinstance(v, str) and isinstance(value, str)):  # an empty piece of "a.yaml,,b.yaml" is skipped
            raise ConfigError(f"enqueue: each item must be a path, 'baselines' or a config mapping, got {str(v)[:60]!r}")
    return tuple(out)


def data_spec_dict(task: str | None = "sst2", data_dir: str | None = None, train_file: str | None = None,
                   validation_file: str | None = None, text_columns: Sequence[str] | str | None = None,
                   label_column: str | None = None, metric: str | None = None,
                   task_type: str | None = None) -> dict[str, Any]:
    """A task as a plain dict of :class:`autopeft.data.DataSpec` (paths made absolute)."""
    if train_file:
        task = None
    if data_dir is None and task and not train_file:
        data_dir = os.environ.get("AUTOPEFT_DATA_DIR")
    from dataclasses import asdict as _asdict

    from autopeft.data import DataSpec

    spec = DataSpec(task=task, data_dir=str(Path(data_dir).resolve()) if data_dir else None,
                    train_file=str(Path(train_file).resolve()) if train_file else None,
                    validation_file=str(Path(validation_file).resolve()) if validation_file else None,
                    text_columns=tuple(text_columns) if isinstance(text_columns, (list, tuple)) else text_columns,
                    label_column=label_column, metric=metric, task_type=task_type)
    d = {k: v for k, v in _asdict(spec).items() if k != "task_type" or v is not None}  # old studies' identity
    if d.get("text_columns") is not None:
        d["text_columns"] = list(d["text_columns"])
    return d
