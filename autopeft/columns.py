"""Which columns of a table hold the text and the label, what kind of task the rows are, and the label values as
hashable classes with their ids; each problem a :class:`~autopeft.errors.DataError` naming the file and the line."""

from __future__ import annotations

import re
from typing import Any, Sequence

from autopeft.config import TASK_TYPES
from autopeft.errors import DataError
from autopeft.tables import Table

__all__ = ["LM_PAIRS", "LM_SINGLE", "given_columns", "infer_kind", "infer_label", "infer_text_columns",
           "label_by_name", "label_by_values", "label_map", "norm_label", "raw_labels", "texts"]

CLASSIFICATION, CAUSAL_LM, _ = TASK_TYPES
_PAIRS: tuple[tuple[str, str], ...] = (("sentence1", "sentence2"), ("question", "sentence"), ("premise", "hypothesis"),
                                       ("question1", "question2"), ("question", "passage"))
_SINGLE: tuple[str, ...] = ("sentence", "text", "review", "content", "document")
_LABELS: tuple[str, ...] = ("label", "labels", "target", "class", "category", "y", "gold_label", "sentiment", "polarity",
                           "emotion", "intent", "topic", "stance")
#: a column of no known label name is the label when its values look like classes (:func:`label_by_values`): ints or
#: short strings, at least 2 and at most this many distinct values, at most a tenth as many as the rows sampled
_MAX_CLASSES = 100
_MIN_ROWS = 20
_SHORT = 40
_ID_COLUMNS: frozenset[str] = frozenset({"id", "idx", "guid", "index", "uid", "uuid"})
# causal-LM data: (prompt, response) column pairs, else one text column trained on whole
LM_PAIRS: tuple[tuple[str, str], ...] = (("question", "answer"), ("prompt", "response"), ("prompt", "completion"),
                                         ("instruction", "output"), ("input", "output"), ("query", "response"),
                                         ("source", "target"))
LM_SINGLE: tuple[str, ...] = ("text", "content", "document")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_MISSING = frozenset({"nan", "na", "n/a", "null", "none"})


def norm_label(v: Any, where: str, line: int, column: str) -> Any:
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
            return norm_label(float(s), where, line, column)
        return s
    if v is None:
        raise DataError(f"{where}: line {line} has no value in label column {column!r}; every row needs a label")
    raise DataError(f"{where}: line {line}: label column {column!r} holds a {type(v).__name__} ({str(v)[:40]}); "
                    "autopeft does single-label classification, so each label must be one int or string")


def label_map(values: Sequence[Any]) -> dict[Any, int]:
    """Ints 0..K-1 keep their ids (GLUE convention); anything else gets ids by sorted unique value."""
    uniq = set(values)
    if all(type(v) is int for v in uniq) and uniq == set(range(len(uniq))):
        return {v: v for v in sorted(uniq)}
    order = sorted(uniq, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))
    return {v: i for i, v in enumerate(order)}


def label_by_name(t: Table) -> str | None:
    found = next((c for c in _LABELS if c in t.columns), None)
    if found is None:
        lower = {c.lower(): c for c in t.columns}
        found = next((lower[c] for c in _LABELS if c in lower), None)
    return found


def label_by_values(t: Table) -> list[str]:
    """The columns whose values look like classes (the first 5,000 rows; at least :data:`_MIN_ROWS`): every value an
    int or a string of 1-:data:`_SHORT` characters that is no decimal number, 2 to :data:`_MAX_CLASSES` distinct
    values and at most one per ten rows; id columns and columns named as text (``sentence``, ``premise``, ...)
    never.  One such column beside the text is the label of a file that names it otherwise ("relation", "stars");
    two or more are ambiguous.  Called by :func:`infer_kind` and :func:`infer_label` on the same table: one pass
    over at most 5,000 rows each, once per load (loads are memoised)."""
    rows = t.rows[:5000]
    if len(rows) < _MIN_ROWS:
        return []

    def is_class(v: Any) -> bool:
        if isinstance(v, bool) or (isinstance(v, int) and abs(v) < 10**6):
            return True
        if not isinstance(v, str):
            return False
        s = v.strip()
        return 0 < len(s) <= _SHORT and (s.lstrip("+-").isdigit() or not _FLOAT_RE.fullmatch(s))

    texts = {c for pair in _PAIRS for c in pair} | set(_SINGLE)
    out = []
    for c in t.columns:
        if c.lower() in _ID_COLUMNS or c.lower() in texts:  # an id, or a column named as text
            continue
        vals = [r.get(c) for r in rows]
        if all(is_class(v) for v in vals) and 2 <= len(set(vals)) <= min(_MAX_CLASSES, len(rows) // 10):
            out.append(c)
    return out


def infer_label(t: Table) -> tuple[str, str]:
    """The label column and how it was found ("" by its name, else a note: by its values)."""
    found = label_by_name(t)
    if found is not None:
        return found, ""
    cands = label_by_values(t)
    if len(cands) == 1:
        return cands[0], f"label column {cands[0]!r} taken by its values (no column is named label); --label-column sets it"
    if cands:
        raise DataError(f"{t.where}: no column is named label, and {', '.join(map(repr, cands))} all hold values like "
                        "classes; pass --label-column with the one that is the label")
    raise DataError(f"{t.where}: no label column found (columns: {', '.join(t.columns)}); pass --label-column")


def infer_text_columns(t: Table, label: str) -> tuple[str, ...]:
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


def texts(t: Table, cols: tuple[str, ...]) -> list[tuple[str, ...]]:
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


def raw_labels(t: Table, label: str) -> list[Any]:
    out: list[Any] = []
    for r, line in zip(t.rows, t.lines):
        if label not in r:
            raise DataError(f"{t.where}: line {line} has no label column {label!r}; every row needs a label")
        out.append(norm_label(r[label], t.where, line, label))
    return out


def given_columns(t: Table, cols: tuple[str, ...], how: str) -> tuple[str, ...]:
    for c in cols:
        if c not in t.columns:
            raise DataError(f"{t.where}: text column {c!r} not found (columns: {', '.join(t.columns)}); "
                            f"pass --text-columns {how}")
    return cols


def infer_kind(t: Table, task_type: str | None, label_column: str | None) -> str:
    """The task type given (``task_type``), else classification when a label column is given or found; causal LM
    when none is but the rows hold a prompt and a response (GSM8K's question/answer) or one text column; else the
    missing-label error, naming both ways."""
    if task_type is not None:
        return task_type
    if label_column is not None:
        return CLASSIFICATION
    if label_by_name(t) is not None:
        return CLASSIFICATION
    pair = next(((a, b) for a, b in LM_PAIRS if a in t.columns and b in t.columns), None)
    cols = pair or next(((c,) for c in LM_SINGLE if c in t.columns), ())
    # only when nothing else is left: {"text", "stars"} is a classification whose label has another name
    if cols and not [c for c in t.columns if c not in cols and c.lower() not in _ID_COLUMNS]:
        return CAUSAL_LM
    if label_by_values(t):  # one: the label; several: infer_label says which are in doubt
        return CLASSIFICATION
    raise DataError(f"{t.where}: no label column found (columns: {', '.join(t.columns)}); pass --label-column for "
                    "classification, or --task-type causal-lm --text-columns PROMPT,RESPONSE for language modelling")
