"""Task data for the search: local JSONL/CSV/TSV files, task folders (``<data_dir>/<task>/train.jsonl``,
so the GLUE copy reads with no options) or Hugging Face ``datasets`` names; text/label column inference,
label ids, the metric choice, the seeded held-out search split, and the metrics themselves.

Every problem a user can cause raises :class:`~autopeft.errors.DataError` with a one-line message that
names the file/field and says what to do.

It runs over 400 lines because reading, inference, the search split and the metrics share one set of exact error
messages; the reader and the metrics are to move onto ``datasets`` and scikit-learn (the ecosystem issue), which
will split it.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from autopeft.config import METRICS, TASK_TYPES  # the options' choices live with the options
from autopeft.errors import DataError

__all__ = ["CLASSIFICATION", "CAUSAL_LM", "SEQ2SEQ", "TASK_TYPES", "LM_METRIC", "METRICS", "SCORE_METRICS", "TASK_METRICS", "DataSpec", "TaskData", "load_task", "search_split", "compute_metric",
           "chance_score", "choose_metric", "final_answer", "exact_match", "read_rows", "clear_cache",
           "auto_class_weights", "balanced_weights", "IMBALANCE_RATIO"]

IntLabels = Union[Sequence[int], "np.ndarray[Any, Any]"]  # label/prediction ids: a list or a 1-D numpy array
# Binary tasks only: ROC AUC of the positive class's margin; threshold-free, so it still ranks models whose argmax is
# still the majority class everywhere (short MRPC trials), where F1 and accuracy are flat.
SCORE_METRICS: frozenset[str] = frozenset({"auc"})
# The metric GLUE reports for a task (MRPC/QQP: F1 of the positive class; CoLA: Matthews correlation).
TASK_METRICS: dict[str, str] = {"sst2": "accuracy", "rte": "accuracy", "qnli": "accuracy", "wnli": "accuracy",
                                "mnli": "accuracy", "mrpc": "f1", "qqp": "f1", "cola": "matthews"}
_PAIRS: tuple[tuple[str, str], ...] = (("sentence1", "sentence2"), ("question", "sentence"), ("premise", "hypothesis"),
                                       ("question1", "question2"), ("question", "passage"))
_SINGLE: tuple[str, ...] = ("sentence", "text", "review", "content", "document")
_LABELS: tuple[str, ...] = ("label", "labels", "target", "class", "category", "y")
_ID_COLUMNS: frozenset[str] = frozenset({"id", "idx", "guid", "index", "uid", "uuid"})
_EXTS: tuple[str, ...] = (".jsonl", ".json", ".csv", ".tsv")
# causal-LM data: (prompt, response) column pairs, else one text column trained on whole
_LM_PAIRS: tuple[tuple[str, str], ...] = (("question", "answer"), ("prompt", "response"), ("prompt", "completion"),
                                          ("instruction", "output"), ("input", "output"), ("query", "response"),
                                          ("source", "target"))
_LM_SINGLE: tuple[str, ...] = ("text", "content", "document")
#: what a task is: a sequence classification (labels, a head, a score to maximise), causal-LM fine-tuning (no
#: labels; the loss of the response tokens, minimised) or seq2seq (an encoder-decoder such as T5: source in, the loss
#: of the target tokens, minimised).  The columns tell a generative task from a classification; the model tells
#: seq2seq from causal LM (:func:`autopeft.seq2seq.fit_task_type`)
CLASSIFICATION, CAUSAL_LM, SEQ2SEQ = TASK_TYPES
#: the search metric of a causal-LM task: mean cross-entropy of the response tokens on the search split (minimised)
LM_METRIC = "loss"
_MINORITY = 0.40  # binary tasks whose minority class is rarer than this are scored with Matthews correlation
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

#: the longest row (a JSONL line, a CSV field) read: one 30 MB line took 5.5 GB to load
MAX_ROW_CHARS = 1 << 20
csv.field_size_limit(MAX_ROW_CHARS)  # long documents exceed the csv module's 128 KiB default

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


# ----------------------------------------------------------------------------- reading files
@dataclass
class _Table:
    rows: list[dict[str, Any]]
    lines: list[int]  # 1-based line (or item) number of each row, for messages
    where: str  # the file path or hub name, for messages
    columns: list[str]
    class_names: dict[str, list[str]] = field(default_factory=dict)  # HF ClassLabel names per column


def read_rows(path: str | Path, role: str = "data") -> list[dict[str, Any]]:
    """Rows of a JSON-lines (``.jsonl``/``.json``), CSV or TSV file, as dicts."""
    return _read_table(Path(path), role).rows


def _read_table(p: Path, role: str) -> _Table:
    if not p.exists():
        raise DataError(f"{role} file not found: {p}")
    if not p.is_file():
        raise DataError(f"{role} file {p} is not a file; pass a .jsonl, .csv or .tsv file")
    ext = p.suffix.lower()
    if ext not in _EXTS:
        raise DataError(f"{role} file {p} has an unsupported extension {p.suffix or '(none)'!r}; use .jsonl, .json, .csv or .tsv")
    try:
        with open(p, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"{role} file {p} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"cannot read {role} file {p}: {exc.strerror or exc}") from None
    if not text.strip():
        raise DataError(f"{role} file {p} is empty; it needs at least one row")
    if ext in (".jsonl", ".json"):
        rows, lines = _parse_json(text, p, role, ext)
    else:
        rows, lines = _parse_delimited(text, p, role, "\t" if ext == ".tsv" else ",")
    if not rows:
        raise DataError(f"{role} file {p} has a header but no rows")
    columns: dict[str, None] = {}
    for r in rows:
        if len(r) != len(columns) or any(k not in columns for k in r):
            columns.update(dict.fromkeys(r))
    return _Table(rows, lines, str(p), list(columns))


def _parse_json(text: str, p: Path, role: str, ext: str) -> tuple[list[dict[str, Any]], list[int]]:
    if ext == ".json" and text.lstrip().startswith("["):  # a whole-file JSON array of objects
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{role} file {p}: line {exc.lineno} is not valid JSON ({exc.msg})") from None
        items: list[dict[str, Any]] = []
        for i, obj in enumerate(data, 1):
            if not isinstance(obj, dict):
                raise DataError(f"{role} file {p}: item {i} of the JSON array is not an object")
            items.append(obj)
        return items, list(range(1, len(items) + 1))
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    loads = json.loads
    for i, line in enumerate(text.split("\n"), 1):
        if len(line) > MAX_ROW_CHARS:
            raise DataError(f"{role} file {p}: line {i} has {len(line):,} characters, over the limit of {MAX_ROW_CHARS:,} "
                            "per row; shorten or split the text")
        try:
            obj = loads(line)
        except RecursionError:
            raise DataError(f"{role} file {p}: line {i} nests too deeply; expected one flat JSON object per line") from None
        except ValueError as exc:  # JSONDecodeError, or an integer of over 4,300 digits
            if not line.strip():
                continue
            why = getattr(exc, "msg", None) or str(exc).split(";")[0][:100]
            raise DataError(f"{role} file {p}: line {i} is not valid JSON ({why}); expected one JSON object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{role} file {p}: line {i} is not a JSON object; expected one object per line")
        rows.append(obj)
        lines.append(i)
    return rows, lines


def _parse_delimited(text: str, p: Path, role: str, delim: str) -> tuple[list[dict[str, Any]], list[int]]:
    def parse(quoting: Any) -> tuple[list[str], list[dict[str, Any]], list[int], int | None]:
        reader = csv.reader(text.splitlines(keepends=True), delimiter=delim, quoting=quoting)
        try:
            header = next(reader)
        except StopIteration:
            return [], [], [], None
        header = [h.strip() for h in header]
        rows: list[dict[str, Any]] = []
        lines: list[int] = []
        bad: int | None = None
        for rec in reader:
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            if len(rec) > len(header) and bad is None:
                bad = reader.line_num
            rows.append(dict(zip(header, rec)))
            lines.append(reader.line_num)
        return header, rows, lines, bad

    try:
        header, rows, lines, bad = parse(csv.QUOTE_MINIMAL)
        if delim == "\t" and (bad is not None or len(rows) < sum(1 for ln in text.splitlines()[1:] if ln.strip())):
            # GLUE-style TSV: quotes are literal characters (a sentence starting with '"' would swallow lines)
            h2, r2, l2, bad2 = parse(csv.QUOTE_NONE)
            if bad2 is None:
                header, rows, lines, bad = h2, r2, l2, None
    except csv.Error as exc:
        raise DataError(f"{role} file {p}: {exc}; check the quoting") from None
    if not header or not any(header):
        raise DataError(f"{role} file {p} has no header line; the first line must name the columns")
    if bad is not None:
        raise DataError(f"{role} file {p}: line {bad} has more fields than the header ({len(header)}); quote fields that contain '{delim}'")
    return rows, lines


def _load_hub(task: str) -> tuple[_Table, _Table | None]:
    """``task`` from the Hugging Face hub: "NAME:CONFIG" (``--dataset NAME --dataset-config CONFIG``) ->
    load_dataset(NAME, CONFIG); "glue/sst2" -> load_dataset("nyu-mll/glue", "sst2"), "owner/name/config" ->
    load_dataset("owner/name", "config"), anything else -> load_dataset(task).  Raises DataError(short reason)."""
    parts = [s for s in task.split("/") if s]
    args: tuple[str, ...]
    if ":" in task:
        name, _, config = task.rpartition(":")
        args = ("nyu-mll/glue" if name == "glue" else name, config)
    elif len(parts) == 2 and parts[0] in ("glue", "super_glue"):
        args = ("nyu-mll/glue" if parts[0] == "glue" else parts[0], parts[1])
    elif len(parts) == 3:
        args = ("/".join(parts[:2]), parts[2])
    else:
        args = (task,)
    try:
        import datasets

        ds = datasets.load_dataset(*args)
        if "train" not in ds:
            raise DataError(f"it has no 'train' split (splits: {', '.join(ds)})")
        val_name = next((s for s in ("validation", "dev") if s in ds), None)
        val_name = val_name or next((s for s in sorted(ds) if s.startswith("validation")), None)
        val_name = val_name or ("test" if "test" in ds else None)
        features = ds["train"].features
        names = {c: list(f.names) for c, f in features.items() if isinstance(f, datasets.ClassLabel)}
        tables: list[_Table | None] = []
        for split in ("train", val_name):
            if split is None:
                continue
            rows = ds[split].to_list()
            if names:  # ClassLabel -1 marks an unlabelled row (e.g. GLUE test splits)
                rows = [r for r in rows if all(r.get(c) != -1 for c in names)]
            tables.append(_Table(rows, list(range(1, len(rows) + 1)), f"{task} ({split} split)",
                                 list(features), names) if rows else None)
    except DataError:
        raise
    except Exception as exc:  # the hub client raises many types (offline, not found, gated, ...)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise DataError(f"{type(exc).__name__}: {first}" if first else type(exc).__name__) from None
    if tables[0] is None:
        raise DataError("its train split has no labelled rows")
    return tables[0], (tables[1] if len(tables) > 1 else None)


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
        return (str(path), 0, 0)  # _read_table reports the missing file
    return (str(path), st.st_mtime_ns, st.st_size)


def _find(directory: Path, stems: Sequence[str]) -> Path | None:
    for stem in stems:
        for ext in _EXTS:
            if (directory / f"{stem}{ext}").is_file():
                return directory / f"{stem}{ext}"
    return None


def _task_dir(d: Path) -> tuple[Path, Path | None]:
    tr = _find(d, ("train",))
    if tr is None:
        found = ", ".join(sorted(x.name for x in d.iterdir())[:10]) or "nothing"
        raise DataError(f"task folder {d} has no train.jsonl, train.csv or train.tsv (found: {found}); add one or pass --train-file")
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


# ----------------------------------------------------------------------------- labels and metric
_MISSING = frozenset({"nan", "na", "n/a", "null", "none"})


def _norm_label(v: Any, where: str, line: int, column: str) -> Any:
    """A hashable, comparable label value: ints (also from "3" / 3.0), bools, or strings."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        if abs(v) >= 10**18:
            raise DataError(f"{where}: line {line}: label column {column!r} holds a huge number; labels must be classes "
                            "(short ints or strings)")
        return v
    if isinstance(v, float):
        if v != v:
            raise DataError(f"{where}: line {line} has no value (NaN) in label column {column!r}; every row needs a label")
        if v.is_integer():
            return int(v)
        raise DataError(f"{where}: line {line}: label column {column!r} holds the number {v}; autopeft does "
                        "classification only, so labels must be classes (ints or strings)")
    if isinstance(v, str):
        s = v.strip()
        if not s:
            raise DataError(f"{where}: line {line} has no value in label column {column!r}; every row needs a label")
        if s.lower() in _MISSING:
            raise DataError(f"{where}: line {line} has no value ({s}) in label column {column!r}; every row needs a label")
        if s.lstrip("+-").isdigit():
            if len(s) > 18:
                raise DataError(f"{where}: line {line}: label column {column!r} holds a {len(s)}-digit number; labels "
                                "must be classes (short ints or strings)")
            return int(s)
        if _FLOAT_RE.fullmatch(s):
            return _norm_label(float(s), where, line, column)
        return s
    if v is None:
        raise DataError(f"{where}: line {line} has no value in label column {column!r}; every row needs a label")
    raise DataError(f"{where}: line {line}: label column {column!r} holds a {type(v).__name__} ({str(v)[:40]}); "
                    "autopeft does single-label classification, so each label must be one int or string")


def _label_map(values: Sequence[Any]) -> dict[Any, int]:
    """Ints 0..K-1 keep their ids (GLUE convention); anything else gets ids by sorted unique value."""
    uniq = set(values)
    if all(type(v) is int for v in uniq) and uniq == set(range(len(uniq))):
        return {v: v for v in sorted(uniq)}
    order = sorted(uniq, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))
    return {v: i for i, v in enumerate(order)}


def choose_metric(task: str, labels: IntLabels, num_labels: int, override: str | None) -> tuple[str, str]:
    """(metric, reason): the override, else GLUE's metric by task name, else from the label distribution."""
    if override is not None:
        if override not in METRICS:
            raise DataError(f"unknown metric {override!r}; choose one of {', '.join(METRICS)}")
        if override in SCORE_METRICS and num_labels != 2:
            raise DataError(f"metric {override!r} needs a binary task, but {task} has {num_labels} classes; "
                            "choose accuracy, macro_f1 or matthews")
        return override, "--metric override"
    key = task.lower().replace("-", "").replace("_", "")
    if key in TASK_METRICS:
        return TASK_METRICS[key], f"by task name {key}"
    if num_labels >= 3:
        return "macro_f1", f"{num_labels} classes"
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2)
    share = float(counts.min() / counts.sum())
    if share < _MINORITY:
        return "matthews", f"binary, minority class {share:.1%} < {_MINORITY:.0%}"
    return "accuracy", f"binary, minority class {share:.1%} >= {_MINORITY:.0%}"


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
def _infer_label(t: _Table) -> str:
    found = next((c for c in _LABELS if c in t.columns), None)
    if found is None:
        lower = {c.lower(): c for c in t.columns}
        found = next((lower[c] for c in _LABELS if c in lower), None)
    if found is None:
        raise DataError(f"{t.where}: no label column found (columns: {', '.join(t.columns)}); pass --label-column")
    return found


def _infer_text_columns(t: _Table, label: str) -> tuple[str, ...]:
    cols = t.columns
    for a, b in _PAIRS:
        if a in cols and b in cols:
            return (a, b)
    for c in _SINGLE:
        if c in cols:
            return (c,)
    sample = t.rows[:200]

    def is_text(c: str) -> bool:
        vals = [r.get(c) for r in sample if r.get(c) not in (None, "")]
        return bool(vals) and all(isinstance(v, str) and not _FLOAT_RE.fullmatch(v.strip()) for v in vals)

    strs = [c for c in cols if c != label and c.lower() not in _ID_COLUMNS and is_text(c)]
    if strs:
        return tuple(strs[:2])
    raise DataError(f"{t.where}: cannot tell which columns hold the text (columns: {', '.join(cols)}); "
                    "pass --text-columns (e.g. --text-columns sentence1,sentence2)")


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return " ".join(_as_text(x) for x in v)
    return str(v).rstrip()


def _texts(t: _Table, cols: tuple[str, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    append = out.append
    try:
        if len(cols) == 1:
            (a,) = cols
            for r in t.rows:
                x = r[a]
                append((x.rstrip() if type(x) is str else _as_text(x),))
        else:
            for r in t.rows:
                append(tuple(r[c].rstrip() if type(r[c]) is str else _as_text(r[c]) for c in cols))
    except KeyError as exc:
        i = len(out)
        raise DataError(f"{t.where}: line {t.lines[i]} has no column {exc.args[0]!r}; every row needs the text columns "
                        f"{', '.join(cols)}") from None
    return out


def _raw_labels(t: _Table, label: str) -> list[Any]:
    out: list[Any] = []
    for r, line in zip(t.rows, t.lines):
        if label not in r:
            raise DataError(f"{t.where}: line {line} has no label column {label!r}; every row needs a label")
        out.append(_norm_label(r[label], t.where, line, label))
    return out


def _given_columns(t: _Table, cols: tuple[str, ...], how: str) -> tuple[str, ...]:
    for c in cols:
        if c not in t.columns:
            raise DataError(f"{t.where}: text column {c!r} not found (columns: {', '.join(t.columns)}); "
                            f"pass --text-columns {how}")
    return cols


def _infer_kind(spec: DataSpec, t: _Table) -> str:
    """Classification when a label column is given or found; causal LM when none is but the rows hold a prompt and
    a response (GSM8K's question/answer) or one text column; else the missing-label error, naming both ways."""
    if spec.task_type is not None:
        return spec.task_type
    if spec.label_column is not None:
        return CLASSIFICATION
    lower = {c.lower() for c in t.columns}
    if any(c in lower for c in _LABELS):
        return CLASSIFICATION
    pair = next(((a, b) for a, b in _LM_PAIRS if a in t.columns and b in t.columns), None)
    cols = pair or next(((c,) for c in _LM_SINGLE if c in t.columns), ())
    # only when nothing else is left: {"text", "stars"} is a classification whose label has another name
    if cols and not [c for c in t.columns if c not in cols and c.lower() not in _ID_COLUMNS]:
        return CAUSAL_LM
    raise DataError(f"{t.where}: no label column found (columns: {', '.join(t.columns)}); pass --label-column for "
                    "classification, or --task-type causal-lm --text-columns PROMPT,RESPONSE for language modelling")


def _build_lm(spec: DataSpec, src: _Source, train: _Table, val: _Table | None, kind: str = CAUSAL_LM) -> TaskData:
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
        cols = _given_columns(train, spec.text_columns, "PROMPT,RESPONSE (or one TEXT column)")
    else:
        pair = next(((a, b) for a, b in _LM_PAIRS if a in train.columns and b in train.columns), None)
        single = next((c for c in _LM_SINGLE if c in train.columns), None)
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
        va_texts = _texts(val, tuple(cols))
    what = "prompt and response" if len(cols) == 2 else "text"
    reason = f"causal LM ({what}: {', '.join(cols)}); loss of the {'response' if len(cols) == 2 else 'text'} tokens"
    if kind == SEQ2SEQ:
        reason = f"seq2seq (source and target: {', '.join(cols)}); loss of the target tokens"
    return TaskData(src.name, tuple(cols), "", _texts(train, tuple(cols)), [], va_texts, None, 0, [], LM_METRIC,
                    reason, source=src.train[0] if src.train else f"hub:{src.hub}", kind=kind,
                    validation_source=src.validation[0] if src.validation else "")


def _build(spec: DataSpec, src: _Source, train: _Table, val: _Table | None) -> TaskData:
    kind = _infer_kind(spec, train)
    if kind != CLASSIFICATION:
        return _build_lm(spec, src, train, val, kind)
    if spec.label_column is not None:
        label = spec.label_column
        if label not in train.columns:
            raise DataError(f"{train.where}: label column {label!r} not found (columns: {', '.join(train.columns)}); "
                            "pass --label-column with one of them")
    else:
        label = _infer_label(train)
    if spec.text_columns is not None:
        text_cols = _given_columns(train, spec.text_columns, "with one or two of them")
        if label in text_cols:
            raise DataError(f"label column {label!r} is also a text column; pass --text-columns without it")
    else:
        text_cols = _infer_text_columns(train, label)

    tr_raw = _raw_labels(train, label)
    mapping = _label_map(tr_raw)
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
        va_raw = _raw_labels(val, label)
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
        va_texts = _texts(val, text_cols)
    names = [str(k) for k in sorted(mapping, key=mapping.__getitem__)]
    cls = train.class_names.get(label)
    if cls and all(type(k) is int and k == i for k, i in mapping.items()) and len(cls) >= len(mapping):
        names = [cls[i] for i in range(len(mapping))]
    metric, reason = choose_metric(src.name, tr_labels, len(mapping), spec.metric)
    return TaskData(src.name, tuple(text_cols), label, _texts(train, text_cols), tr_labels, va_texts, va_labels,
                    len(mapping), names, metric, reason, source=src.train[0] if src.train else f"hub:{src.hub}",
                    validation_source=src.validation[0] if src.validation else "")


@functools.lru_cache(maxsize=8)
def _load_cached(spec: DataSpec, src: _Source) -> TaskData:
    val = _read_table(Path(src.validation[0]), "validation") if src.validation else None
    if src.hub is not None:
        try:
            train, hub_val = _load_hub(src.hub)
        except DataError as exc:
            data_dir = spec.data_dir or os.environ.get("AUTOPEFT_DATA_DIR")
            where = (f"in data dir {data_dir} (looked for {Path(data_dir) / src.hub}/train.jsonl)" if data_dir
                     else "locally (no --data-dir or $AUTOPEFT_DATA_DIR set)")
            raise DataError(f"task {src.hub!r} not found {where} and could not be loaded from the Hugging Face hub: "
                            f"{exc}; pass --data-dir or --train-file") from None
        val = val if val is not None else hub_val
    else:
        assert src.train is not None
        train = _read_table(Path(src.train[0]), "train")
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


# ----------------------------------------------------------------------------- split and metrics
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


def _check(metric: str) -> None:
    if metric not in METRICS:
        raise DataError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def compute_metric(metric: str, preds: IntLabels, labels: IntLabels, scores: Sequence[float] | None = None) -> float:
    """accuracy; f1 of the positive class (id 1); matthews (multiclass MCC); macro_f1 over the classes present in
    labels or predictions; auc: ROC AUC of ``scores`` (the positive class's margin, logit 1 - logit 0) against
    binary labels, ties counted half.  Ill-defined values are 0.0 (auc: 0.5), as in scikit-learn."""
    _check(metric)
    p, y = np.asarray(preds, dtype=np.int64).ravel(), np.asarray(labels, dtype=np.int64).ravel()
    if len(p) != len(y):
        raise DataError(f"cannot score {len(p)} predictions against {len(y)} labels; they must have the same length")
    if len(y) == 0:
        raise DataError("cannot score an empty evaluation set; use a larger --n-eval")
    if metric == "auc":
        return _auc(y, scores)
    import warnings

    from sklearn import metrics as skm  # scikit-learn's definitions; ill-defined values are 0.0

    with warnings.catch_warnings():  # one class predicted (a collapsed trial) is a normal case here, not a warning
        warnings.simplefilter("ignore")
        if metric == "accuracy":
            return float(skm.accuracy_score(y, p))
        if metric == "f1":
            return float(skm.f1_score(y, p, labels=[1], average="macro", zero_division=0.0))
        if metric == "macro_f1":
            return float(skm.f1_score(y, p, average="macro", zero_division=0.0))
        return float(skm.matthews_corrcoef(y, p))


def _auc(y: np.ndarray, scores: Sequence[float] | None) -> float:
    if scores is None:
        raise DataError("metric auc needs the model's scores, not only its predictions")
    sc = np.asarray(scores, dtype=np.float64).ravel()
    if len(sc) != len(y):
        raise DataError(f"cannot score {len(sc)} scores against {len(y)} labels; they must have the same length")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise DataError("metric auc needs binary labels 0/1; choose accuracy, macro_f1 or matthews")
    if y.min() == y.max():
        return 0.5  # one class only: a score ranks nothing (scikit-learn raises here)
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, sc))


_GSM8K_ANSWER = re.compile(r"####\s*([^\n]*)")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def final_answer(text: str) -> str:
    """The final answer of a response, for exact match: what follows ``####`` (GSM8K's convention), else the last
    number in the text, else the whole text; numbers lose thousands separators, ``$`` and a trailing ``.0``."""
    m = _GSM8K_ANSWER.search(text)
    ans = m.group(1).strip() if m else None
    if ans is None:
        nums = _NUMBER.findall(text)
        ans = nums[-1] if nums else text.strip()
    num = _NUMBER.fullmatch(ans.strip().rstrip("."))
    if num:
        ans = num.group(0).replace(",", "").replace("$", "")
        if "." in ans:
            ans = ans.rstrip("0").rstrip(".")
    return ans.strip()


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions whose :func:`final_answer` equals the reference's (GSM8K accuracy)."""
    if len(predictions) != len(references):
        raise DataError(f"cannot score {len(predictions)} answers against {len(references)} references")
    if not references:
        raise DataError("cannot score an empty evaluation set")
    return sum(final_answer(p) == final_answer(r) for p, r in zip(predictions, references)) / len(references)


def chance_score(metric: str, labels: IntLabels) -> float:
    """The metric of always predicting the majority label (ties: the smallest id); the hypervolume reference.
    For auc, 0.5 (a constant score ranks nothing)."""
    _check(metric)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if len(y) == 0:
        raise DataError("cannot compute the chance score of an empty evaluation set; use a larger --n-eval")
    if metric in SCORE_METRICS:
        return 0.5
    major = int(np.bincount(y - y.min()).argmax() + y.min())
    return compute_metric(metric, np.full(len(y), major), y)
