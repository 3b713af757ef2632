"""Task data for the search: local files, task folders (``<data_dir>/<task>/train.jsonl``, so the GLUE copy reads
with no options) or Hugging Face ``datasets`` names, loaded into a :class:`TaskData` (memoised per process); the
class weights a task trains with; the seeded held-out search split.  Reading files is :mod:`autopeft.tables`, the
columns and labels :mod:`autopeft.columns`, the metrics :mod:`autopeft.metrics`.

Every problem a user can cause raises :class:`~autopeft.errors.DataError` with a one-line message that
names the file/field and says what to do.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from autopeft.columns import (LM_PAIRS, LM_SINGLE, given_columns, infer_kind, infer_label, infer_text_columns,
                              label_map, raw_labels, texts)
from autopeft.config import METRICS, TASK_TYPES  # the options' choices live with the options
from autopeft.errors import DataError
from autopeft.metrics import LM_METRIC, choose_metric
from autopeft.tables import EXTS, Table, load_hub, read_table

__all__ = ["CLASSIFICATION", "CAUSAL_LM", "SEQ2SEQ", "TASK_TYPES", "DataSpec", "TaskData", "load_task", "search_split",
           "clear_cache", "auto_class_weights", "balanced_weights", "IMBALANCE_RATIO"]

#: what a task is: a sequence classification (labels, a head, a score to maximise), causal-LM fine-tuning (no
#: labels; the loss of the response tokens, minimised) or seq2seq (an encoder-decoder such as T5: source in, the loss
#: of the target tokens, minimised).  The columns tell a generative task from a classification; the model tells
#: seq2seq from causal LM (:func:`autopeft.seq2seq.fit_task_type`)
CLASSIFICATION, CAUSAL_LM, SEQ2SEQ = TASK_TYPES

#: the small demo tasks shipped in the package (see its README): used when no data dir is given
DEMO_DIR = Path(__file__).resolve().parent / "demo_data"


# ----------------------------------------------------------------------------- public types
@dataclass(frozen=True)
class DataSpec:
    """Where the task's data comes from; JSON-friendly (``DataSpec(**asdict(spec)) == spec``, also after a JSON
    round trip, which turns ``text_columns`` into a list)."""

    task: str | None = None  # <data_dir>/<task>/train.*, else a HF datasets name ("glue/sst2", "imdb")
    data_dir: str | None = None  # default: $AUTOPEFT_DATA_DIR
    train_file: str | None = None  # a local .jsonl/.json/.csv/.tsv file; overrides the task lookup
    validation_file: str | None = None
    text_columns: tuple[str, ...] | None = None  # inferred when None
    label_column: str | None = None  # inferred when None
    metric: str | None = None  # one of METRICS; chosen from the task and labels when None
    task_type: str | None = None  # one of TASK_TYPES; inferred from the columns when None

    def __post_init__(self) -> None:
        for name in ("task", "data_dir", "train_file", "validation_file", "label_column", "metric", "task_type"):
            v = getattr(self, name)
            if isinstance(v, os.PathLike):
                object.__setattr__(self, name, os.fspath(v))
            elif v is not None and not isinstance(v, str):
                raise DataError(f"data setting {name} must be a string, got {type(v).__name__} {v!r}")
            elif v == "":
                object.__setattr__(self, name, None)
        tc: Any = self.text_columns
        if tc is not None:
            if isinstance(tc, str):
                tc = tuple(c.strip() for c in tc.split(",") if c.strip())
            elif isinstance(tc, (list, tuple)):
                tc = tuple(tc)
            else:
                raise DataError(f"text_columns must be a list of column names, got {type(tc).__name__} {tc!r}")
            if not 1 <= len(tc) <= 2 or not all(isinstance(c, str) and c for c in tc):
                raise DataError(f"text_columns must name one or two columns (e.g. sentence or sentence1,sentence2), got {tc!r}")
            object.__setattr__(self, "text_columns", tc)
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise DataError(f"unknown task type {self.task_type!r}; choose {', '.join(TASK_TYPES[:-1])} or {TASK_TYPES[-1]}")


@dataclass
class TaskData:
    """A loaded task.  Shared by the load cache: treat it as read-only.

    A causal-LM task (``kind == CAUSAL_LM``) has no labels: ``text_columns`` is (prompt, response) or (text,),
    ``train_labels`` is empty, ``num_labels`` is 0 (no classification head) and ``metric`` is ``loss``; a seq2seq task
    (``SEQ2SEQ``) the same with (source, target) columns."""

    name: str  # task name ("sst2"), else the train file's stem (or its folder's name for train.jsonl)
    text_columns: tuple[str, ...]
    label_column: str
    train_texts: list[tuple[str, ...]] = field(repr=False)
    train_labels: list[int] = field(repr=False)
    validation_texts: list[tuple[str, ...]] | None = field(repr=False)
    validation_labels: list[int] | None = field(repr=False)
    num_labels: int
    label_names: list[str]  # label values as strings, in id order
    metric: str  # one of METRICS
    metric_reason: str  # why this metric: "by task name mrpc", "binary, minority class 31.5% < 40%", ...
    source: str = ""  # where the training rows came from: a file path, or "hub:<name>"
    kind: str = CLASSIFICATION  # one of TASK_TYPES
    validation_source: str = ""  # where the evaluation rows came from (a validation, dev or test file), or ""
    label_note: str = ""  # how the label column was found when not by its name (or given): shown to the user

    @property
    def n_train(self) -> int:
        return len(self.train_texts)

    @property
    def is_lm(self) -> bool:
        """A generative task (causal LM or seq2seq): no head, searched by its loss."""
        return self.kind in (CAUSAL_LM, SEQ2SEQ)

    @property
    def is_seq2seq(self) -> bool:
        return self.kind == SEQ2SEQ

    @property
    def embedded(self) -> bool:
        """Whether this is the small demo copy shipped in the package (autopeft/demo_data)."""
        return self.source.startswith(str(DEMO_DIR))


# ----------------------------------------------------------------------------- resolving a spec
@dataclass(frozen=True)
class _Source:
    name: str
    train: tuple[str, int, int] | None  # (path, mtime_ns, size): file changes invalidate the cache
    validation: tuple[str, int, int] | None
    hub: str | None = None


def _sig(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), 0, 0)  # read_table reports the missing file
    return (str(path), st.st_mtime_ns, st.st_size)


def _find(directory: Path, stems: Sequence[str]) -> Path | None:
    for stem in stems:
        for ext in EXTS:
            if (directory / f"{stem}{ext}").is_file():
                return directory / f"{stem}{ext}"
    return None


def _task_dir(d: Path) -> tuple[Path, Path | None]:
    tr = _find(d, ("train",))
    if tr is None:
        found = ", ".join(sorted(x.name for x in d.iterdir())[:10]) or "nothing"
        raise DataError(f"task folder {d} has no train.jsonl, train.csv, train.tsv or train.parquet (found: {found}); add one "
                        "or pass --train-file")
    return tr, _find(d, ("validation", "dev", "test"))  # train/test only (GSM8K): test is the evaluation split


def _file_name(path: Path) -> str:
    if path.stem.lower() in ("train", "training") and path.parent.name:
        return path.parent.name  # .../mrpc/train.jsonl is task "mrpc"
    return path.stem


def _resolve(spec: DataSpec) -> _Source:
    val = Path(spec.validation_file).expanduser() if spec.validation_file else None
    if spec.train_file:
        tr = Path(spec.train_file).expanduser()
        name = spec.task.rstrip("/").split("/")[-1] if spec.task else _file_name(tr)
        return _Source(name, _sig(tr), _sig(val) if val else None)
    if not spec.task:
        raise DataError("no data given: pass --task (a folder under --data-dir, or a Hugging Face datasets name) or --train-file")
    task = spec.task
    from_env = spec.data_dir is None
    data_dir = spec.data_dir if spec.data_dir is not None else os.environ.get("AUTOPEFT_DATA_DIR") or None
    name = (task.rsplit(":", 1)[-1] if ":" in task else task.rstrip("/").split("/")[-1]) or task  # NAME:CONFIG: CONFIG
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            how = "$AUTOPEFT_DATA_DIR" if from_env else "--data-dir"
            raise DataError(f"data dir not found: {root} (from {how}); point it at the folder that holds <task>/train.jsonl")
        for d in (root / task, root / name):  # "glue/mrpc" is <data dir>/glue/mrpc, else <data dir>/mrpc
            if d.is_dir():
                tr, va = _task_dir(d)
                v = val or va
                return _Source(name, _sig(tr), _sig(v) if v else None)
    elif "/" not in task and os.sep not in task and (DEMO_DIR / task).is_dir():  # no data dir at all: the demo copy shipped in the package (sst2)
        tr, va = _task_dir(DEMO_DIR / task)
        v = val or va
        return _Source(name, _sig(tr), _sig(v) if v else None)
    local = Path(task).expanduser()
    if ("/" in task or os.sep in task or task.startswith(".")) and local.is_dir() and _find(local, ("train",)):
        tr, va = _task_dir(local)  # --task given as a folder path
        v = val or va
        return _Source(local.resolve().name, _sig(tr), _sig(v) if v else None)
    return _Source(name, None, _sig(val) if val else None, hub=task)


# ----------------------------------------------------------------------------- class weights
#: auto class weights: a task scored by a metric that a constant prediction scores at its floor, whose largest class
#: is at least this many times its smallest, trains with balanced weights
IMBALANCE_RATIO = 1.5


def auto_class_weights(task: "TaskData") -> str:
    """``balanced`` for a classification task scored by Matthews or macro-F1 whose classes are imbalanced (largest /
    smallest >= :data:`IMBALANCE_RATIO` in the training rows), else ``none``.  Short trials of such a task settle on
    the majority class (the metric's floor) before they learn anything else (issue 17: 20 of 20 trials at Matthews ~0
    on a binary task with a 30 % minority); weighing the classes evenly removes that pull.  Tasks scored by accuracy
    or a positive-class F1, where the majority class is a fair answer, keep the plain loss."""
    if task.is_lm or task.metric not in ("matthews", "macro_f1"):
        return "none"
    counts = np.bincount(np.asarray(task.train_labels, dtype=np.int64), minlength=task.num_labels)
    counts = counts[counts > 0]
    return "balanced" if len(counts) >= 2 and counts.max() >= IMBALANCE_RATIO * counts.min() else "none"


def balanced_weights(labels: Sequence[int], num_labels: int) -> list[float]:
    """Per-class loss weights n / (classes x count): scikit-learn's ``compute_class_weight("balanced")`` over the
    classes present in ``labels``; a class absent from them gets weight 1."""
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(labels, dtype=np.int64)
    present = np.unique(y)
    out = np.ones(num_labels)
    out[present] = compute_class_weight("balanced", classes=present, y=y)
    return [float(w) for w in out]


# ----------------------------------------------------------------------------- building TaskData
def _build_lm(spec: DataSpec, src: _Source, train: Table, val: Table | None, kind: str = CAUSAL_LM) -> TaskData:
    what_task, how = ("a seq2seq", "SOURCE,TARGET") if kind == SEQ2SEQ else ("a causal-LM", "PROMPT,RESPONSE")
    if spec.metric is not None and spec.metric != LM_METRIC:
        raise DataError(f"metric {spec.metric!r} is for classification; {what_task} task is searched by its loss "
                        "(drop --metric)")
    if spec.label_column is not None:
        raise DataError(f"--label-column is for classification; {what_task} task has none (pass --text-columns {how})")
    if kind == SEQ2SEQ and spec.text_columns is not None and len(spec.text_columns) != 2:
        raise DataError(f"a seq2seq task needs a source and a target column, got --text-columns "
                        f"{','.join(spec.text_columns)}; pass --text-columns SOURCE,TARGET")
    if spec.text_columns is not None:
        cols = given_columns(train, spec.text_columns, "PROMPT,RESPONSE (or one TEXT column)")
    else:
        pair = next(((a, b) for a, b in LM_PAIRS if a in train.columns and b in train.columns), None)
        single = next((c for c in LM_SINGLE if c in train.columns), None)
        if pair is None and single is None:
            raise DataError(f"{train.where}: cannot tell the prompt and response columns (columns: "
                            f"{', '.join(train.columns)}); pass --text-columns PROMPT,RESPONSE (or one TEXT column)")
        cols = pair if pair is not None else (single,)  # type: ignore[assignment]
        if kind == SEQ2SEQ and pair is None:
            raise DataError(f"{train.where}: a seq2seq task needs a source and a target column, found only {single!r} "
                            f"(columns: {', '.join(train.columns)}); pass --text-columns SOURCE,TARGET")
    va_texts = None
    if val is not None:
        missing = [c for c in cols if c not in val.columns]
        if missing:
            raise DataError(f"{val.where}: column {missing[0]!r} not found (columns: {', '.join(val.columns)}); "
                            "the evaluation data needs the same columns as the train data")
        va_texts = texts(val, tuple(cols))
    what = "prompt and response" if len(cols) == 2 else "text"
    reason = f"causal LM ({what}: {', '.join(cols)}); loss of the {'response' if len(cols) == 2 else 'text'} tokens"
    if kind == SEQ2SEQ:
        reason = f"seq2seq (source and target: {', '.join(cols)}); loss of the target tokens"
    return TaskData(src.name, tuple(cols), "", texts(train, tuple(cols)), [], va_texts, None, 0, [], LM_METRIC,
                    reason, source=src.train[0] if src.train else f"hub:{src.hub}", kind=kind,
                    validation_source=src.validation[0] if src.validation else "")


def _build(spec: DataSpec, src: _Source, train: Table, val: Table | None) -> TaskData:
    kind = infer_kind(train, spec.task_type, spec.label_column)
    if kind != CLASSIFICATION:
        return _build_lm(spec, src, train, val, kind)
    label_note = ""
    if spec.label_column is not None:
        label = spec.label_column
        if label not in train.columns:
            raise DataError(f"{train.where}: label column {label!r} not found (columns: {', '.join(train.columns)}); "
                            "pass --label-column with one of them")
    else:
        label, label_note = infer_label(train)
    if spec.text_columns is not None:
        text_cols = given_columns(train, spec.text_columns, "with one or two of them")
        if label in text_cols:
            raise DataError(f"label column {label!r} is also a text column; pass --text-columns without it")
    else:
        text_cols = infer_text_columns(train, label)

    tr_raw = raw_labels(train, label)
    mapping = label_map(tr_raw)
    if len(mapping) < 2:
        raise DataError(f"{train.where}: label column {label!r} has a single value ({next(iter(mapping))!r}); "
                        "a classification task needs at least 2 labels")
    tr_labels = [mapping[v] for v in tr_raw]
    va_texts: list[tuple[str, ...]] | None = None
    va_labels: list[int] | None = None
    if val is not None:
        missing = [c for c in (label, *text_cols) if c not in val.columns]
        if missing:
            raise DataError(f"{val.where}: column {missing[0]!r} not found (columns: {', '.join(val.columns)}); "
                            "the validation data needs the same columns as the train data")
        va_raw = raw_labels(val, label)
        by_str = {str(k): v for k, v in mapping.items()}
        va_labels = []
        for v, line in zip(va_raw, val.lines):
            i = mapping.get(v)
            if i is None:
                i = by_str.get(str(v))
            if i is None:
                known = ", ".join(str(k) for k in list(mapping)[:10])
                raise DataError(f"{val.where}: line {line}: label {v!r} does not occur in the train data (labels: {known}); "
                                "fix the label or add train rows with it")
            va_labels.append(i)
        va_texts = texts(val, text_cols)
    names = [str(k) for k in sorted(mapping, key=mapping.__getitem__)]
    cls = train.class_names.get(label)
    if cls and all(type(k) is int and k == i for k, i in mapping.items()) and len(cls) >= len(mapping):
        names = [cls[i] for i in range(len(mapping))]
    metric, reason = choose_metric(src.name, tr_labels, len(mapping), spec.metric)
    return TaskData(src.name, tuple(text_cols), label, texts(train, text_cols), tr_labels, va_texts, va_labels,
                    len(mapping), names, metric, reason, source=src.train[0] if src.train else f"hub:{src.hub}",
                    validation_source=src.validation[0] if src.validation else "", label_note=label_note)


@functools.lru_cache(maxsize=8)
def _load_cached(spec: DataSpec, src: _Source) -> TaskData:
    val = read_table(Path(src.validation[0]), "validation") if src.validation else None
    if src.hub is not None:
        try:
            train, hub_val = load_hub(src.hub)
        except DataError as exc:
            data_dir = spec.data_dir or os.environ.get("AUTOPEFT_DATA_DIR")
            where = (f"in data dir {data_dir} (looked for {Path(data_dir) / src.hub}/train.jsonl)" if data_dir
                     else "locally (no --data-dir or $AUTOPEFT_DATA_DIR set)")
            raise DataError(f"task {src.hub!r} not found {where} and could not be loaded from the Hugging Face hub: "
                            f"{exc}; pass --data-dir or --train-file") from None
        val = val if val is not None else hub_val
    else:
        assert src.train is not None
        train = read_table(Path(src.train[0]), "train")
    return _build(spec, src, train, val)


def load_task(spec: DataSpec) -> TaskData:
    """Load a task, memoised per process by (spec, files' mtime/size): the same TaskData comes back, read-only."""
    if not isinstance(spec, DataSpec):
        raise DataError(f"load_task needs a DataSpec, got {type(spec).__name__}")
    if spec.metric is not None and spec.metric not in (*METRICS, LM_METRIC):  # fail before reading anything
        raise DataError(f"unknown metric {spec.metric!r}; choose one of {', '.join(METRICS)}")
    return _load_cached(spec, _resolve(spec))


def clear_cache() -> None:
    """Forget memoised tasks (e.g. after editing a file in place within the same mtime tick)."""
    _load_cached.cache_clear()


# ----------------------------------------------------------------------------- the search split
def search_split(task: TaskData, n_train: int | None, n_eval: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded held-out slice of the *training* rows: (search-train indices, search-eval indices).

    A ``numpy.random.default_rng(seed)`` permutation of the train rows: the first ``n_eval`` are the search-eval
    slice, the next ``n_train`` (None: all the rest) the search-train subset.  Disjoint and deterministic."""
    n = task.n_train
    if isinstance(n_eval, bool) or not isinstance(n_eval, (int, np.integer)) or n_eval < 0:
        raise DataError(f"n_eval must be a non-negative integer, got {n_eval!r}")
    if n_eval >= n:
        raise DataError(f"n_eval {n_eval} must be smaller than the {n} training rows of {task.name}; lower --n-eval")
    if n_train is not None and (isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1):
        raise DataError(f"n_train must be a positive integer or None (all remaining rows), got {n_train!r}")
    perm = np.random.default_rng(seed).permutation(n)
    ev = perm[:n_eval].tolist()
    rest = perm[n_eval:]
    tr = (rest if n_train is None else rest[:n_train]).tolist()
    return tr, ev
