"""Task data: local JSONL/CSV/TSV files, task directories (the GLUE copy reads with no options) or HF
``datasets`` names; label mapping, metric choice, and the seeded held-out search split."""

from __future__ import annotations

import csv
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from autopeft.errors import DataError

METRICS: tuple[str, ...] = ("accuracy", "f1", "matthews", "macro_f1")
TASK_METRICS = {"sst2": "accuracy", "rte": "accuracy", "qnli": "accuracy", "wnli": "accuracy", "mnli": "accuracy",
                "mrpc": "f1", "qqp": "f1", "cola": "matthews"}
_PAIRS = (("sentence1", "sentence2"), ("question", "sentence"), ("premise", "hypothesis"), ("question1", "question2"),
          ("question", "passage"))
_SINGLE = ("sentence", "text", "review", "content", "document")
_LABELS = ("label", "labels", "target", "class", "y")
_EXTS = (".jsonl", ".json", ".csv", ".tsv")


@dataclass(frozen=True)
class DataSpec:
    task: str | None = None
    data_dir: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    text_columns: tuple[str, ...] | None = None
    label_column: str | None = None
    metric: str | None = None


@dataclass
class TaskData:
    name: str
    text_columns: tuple[str, ...]
    label_column: str
    train_texts: list[tuple[str, ...]]
    train_labels: list[int]
    validation_texts: list[tuple[str, ...]] | None
    validation_labels: list[int] | None
    num_labels: int
    label_names: list[str]
    metric: str
    metric_reason: str


# ----------------------------------------------------------------------------- reading
def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL/JSON-lines, CSV or TSV file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    ext = p.suffix.lower()
    if ext not in _EXTS:
        raise DataError(f"cannot read {p}: use a .jsonl, .csv or .tsv file")
    rows: list[dict[str, Any]] = []
    try:
        with open(p, encoding="utf-8", newline="") as f:
            if ext in (".jsonl", ".json"):
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{p}: line {i} is not valid JSON ({exc.msg}); expected one JSON object per line") from None
                    if not isinstance(obj, dict):
                        raise DataError(f"{p}: line {i} is not a JSON object")
                    rows.append(obj)
            else:
                reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
                for row in reader:
                    if None in row:
                        raise DataError(f"{p}: line {reader.line_num} has more fields than the header")
                    rows.append(row)
    except UnicodeDecodeError:
        raise DataError(f"{p} is not UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"{p}: {exc}") from None
    if not rows:
        raise DataError(f"{p} has no rows")
    return rows


def _find(directory: Path, stems: Sequence[str]) -> Path | None:
    for stem in stems:
        for ext in _EXTS:
            if (directory / f"{stem}{ext}").is_file():
                return directory / f"{stem}{ext}"
    return None


def _infer_text_columns(cols: Sequence[str], label: str, rows: list[dict[str, Any]], where: str) -> tuple[str, ...]:
    for a, b in _PAIRS:
        if a in cols and b in cols:
            return (a, b)
    for c in _SINGLE:
        if c in cols:
            return (c,)
    strs = [c for c in cols if c != label and isinstance(rows[0].get(c), str) and c not in ("idx", "id")]
    if strs:
        return tuple(strs[:2])
    raise DataError(f"{where}: cannot tell which columns hold the text (columns: {', '.join(cols)}); pass --text-columns")


def _load_hub(task: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    try:
        import datasets

        parts = task.split("/")
        if len(parts) == 2 and parts[0] in ("glue", "super_glue"):
            ds = datasets.load_dataset(parts[0], parts[1])
        else:
            ds = datasets.load_dataset(task)
    except Exception as exc:  # the hub client raises many types (offline, not found, ...)
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(msg) from None
    train = [dict(r) for r in ds["train"]]
    val_split = "validation" if "validation" in ds else ("test" if "test" in ds else None)
    val = [dict(r) for r in ds[val_split]] if val_split else None
    return train, val


def _task_files(spec: DataSpec) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None, str]:
    if spec.train_file:
        train = read_rows(spec.train_file)
        val = read_rows(spec.validation_file) if spec.validation_file else None
        return Path(spec.train_file).stem, train, val, str(spec.train_file)
    if not spec.task:
        raise DataError("no data: pass --task (e.g. sst2 with --data-dir) or --train-file")
    data_dir = spec.data_dir or os.environ.get("AUTOPEFT_DATA_DIR")
    if data_dir:
        d = Path(data_dir) / spec.task
        if d.is_dir():
            tr = _find(d, ("train",))
            if tr is None:
                raise DataError(f"task directory {d} has no train.jsonl, train.csv or train.tsv")
            va = _find(d, ("validation", "dev"))
            return spec.task, read_rows(tr), read_rows(va) if va else None, str(tr)
    if data_dir and not Path(data_dir).is_dir():
        raise DataError(f"data dir not found: {data_dir}; pass --data-dir pointing at a folder of task folders")
    try:
        train, val = _load_hub(spec.task)
    except DataError as exc:
        where = f"in data dir {data_dir} (looked for {Path(data_dir) / spec.task}/train.jsonl)" if data_dir else "locally (no --data-dir or $AUTOPEFT_DATA_DIR given)"
        raise DataError(f"task {spec.task!r} not found {where} and could not be loaded from the Hugging Face hub: {exc}; "
                        "pass --data-dir or --train-file") from None
    return spec.task.split("/")[-1], train, val, spec.task


def _label_map(values: Sequence[Any]) -> dict[Any, int]:
    uniq = set(values)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in uniq) and uniq == set(range(len(uniq))):
        return {v: v for v in uniq}
    ints = all(isinstance(v, str) and v.strip().lstrip("-").isdigit() for v in uniq)
    if ints:
        conv = sorted(uniq, key=lambda v: int(v))
        if [int(v) for v in conv] == list(range(len(conv))):
            return {v: int(v) for v in conv}
        return {v: i for i, v in enumerate(conv)}
    return {v: i for i, v in enumerate(sorted(uniq, key=str))}


def choose_metric(task: str, labels: Sequence[int], num_labels: int, override: str | None) -> tuple[str, str]:
    if override is not None:
        if override not in METRICS:
            raise DataError(f"unknown metric {override!r}; choose one of {', '.join(METRICS)}")
        return override, "--metric override"
    if task.lower() in TASK_METRICS:
        return TASK_METRICS[task.lower()], f"by task name {task.lower()}"
    if num_labels >= 3:
        return "macro_f1", f"{num_labels} classes"
    counts = np.bincount(np.asarray(labels), minlength=2)
    share = counts.min() / counts.sum()
    if share < 0.4:
        return "matthews", f"binary, minority class {share:.1%} < 40%"
    return "accuracy", f"binary, minority class {share:.1%} >= 40%"


@functools.lru_cache(maxsize=8)
def load_task(spec: DataSpec) -> TaskData:
    name, train, val, where = _task_files(spec)
    cols = list(train[0].keys())
    label = spec.label_column
    if label is None:
        label = next((c for c in _LABELS if c in cols), None)
        if label is None:
            raise DataError(f"{where}: no label column found (columns: {', '.join(cols)}); pass --label-column")
    elif label not in cols:
        raise DataError(f"{where}: label column {label!r} not found (columns: {', '.join(cols)}); pass --label-column")
    text_cols = tuple(spec.text_columns) if spec.text_columns else _infer_text_columns(cols, label, train, where)
    for c in text_cols:
        if c not in cols:
            raise DataError(f"{where}: text column {c!r} not found (columns: {', '.join(cols)}); pass --text-columns")

    def texts(rows: list[dict[str, Any]], w: str) -> list[tuple[str, ...]]:
        out = []
        for i, r in enumerate(rows, 1):
            try:
                out.append(tuple(("" if r[c] is None else str(r[c])).rstrip() for c in text_cols))
            except KeyError as exc:
                raise DataError(f"{w}: row {i} has no column {exc.args[0]!r}") from None
        return out

    def raw_labels(rows: list[dict[str, Any]], w: str) -> list[Any]:
        out = []
        for i, r in enumerate(rows, 1):
            if label not in r or r[label] is None or r[label] == "":
                raise DataError(f"{w}: row {i} has no value in label column {label!r}")
            out.append(r[label])
        return out

    tr_raw = raw_labels(train, where)
    mapping = _label_map(tr_raw)
    if len(mapping) < 2:
        raise DataError(f"{where}: label column {label!r} has a single value; a classification task needs at least 2 labels")
    tr_labels = [mapping[v] for v in tr_raw]
    va_texts = va_labels = None
    if val is not None:
        vw = spec.validation_file or f"{name} validation"
        if any(label not in r for r in val[:1]):
            raise DataError(f"{vw}: label column {label!r} not found; the validation file needs the same columns")
        va_raw = raw_labels(val, vw)
        bad = [v for v in va_raw if v not in mapping]
        if bad:
            raise DataError(f"{vw}: label {bad[0]!r} does not occur in the training data")
        va_texts, va_labels = texts(val, vw), [mapping[v] for v in va_raw]
    names = [str(k) for k, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    metric, reason = choose_metric(name, tr_labels, len(mapping), spec.metric)
    return TaskData(name, text_cols, label, texts(train, where), tr_labels, va_texts, va_labels, len(mapping), names,
                    metric, reason)


# ----------------------------------------------------------------------------- splits and metrics
def search_split(task: TaskData, n_train: int | None, n_eval: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded held-out slice of the *training* rows: (search-train indices, search-eval indices)."""
    n = len(task.train_labels)
    if n_eval >= n:
        raise DataError(f"--n-eval {n_eval} must be smaller than the {n} training rows")
    perm = np.random.default_rng(seed).permutation(n)
    ev = perm[:n_eval].tolist()
    rest = perm[n_eval:]
    tr = (rest if n_train is None else rest[:n_train]).tolist()
    return tr, ev


def compute_metric(metric: str, preds: Sequence[int], labels: Sequence[int]) -> float:
    p, y = np.asarray(preds), np.asarray(labels)
    if len(y) == 0:
        raise DataError("cannot score an empty evaluation set")
    if metric == "accuracy":
        return float((p == y).mean())
    if metric == "f1":
        return _f1(p, y, 1)
    if metric == "macro_f1":
        return float(np.mean([_f1(p, y, c) for c in np.unique(y)]))
    if metric == "matthews":
        classes = np.union1d(np.unique(y), np.unique(p))
        C = np.array([[np.sum((y == a) & (p == b)) for b in classes] for a in classes], dtype=float)
        t, pk, c, s = C.sum(1), C.sum(0), np.trace(C), C.sum()
        den = np.sqrt((s * s - pk @ pk) * (s * s - t @ t))
        return float((c * s - t @ pk) / den) if den > 0 else 0.0
    raise DataError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def _f1(p: np.ndarray, y: np.ndarray, c: int) -> float:
    tp = np.sum((p == c) & (y == c))
    fp = np.sum((p == c) & (y != c))
    fn = np.sum((p != c) & (y == c))
    return float(2 * tp / (2 * tp + fp + fn)) if tp > 0 else 0.0


def chance_score(metric: str, labels: Sequence[int]) -> float:
    """The metric of always predicting the majority label (the score's hypervolume reference)."""
    y = np.asarray(labels)
    major = int(np.bincount(y).argmax())
    return compute_metric(metric, [major] * len(y), y)
