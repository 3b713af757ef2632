"""Reading a task's rows: local JSON-lines / JSON / CSV / TSV / Parquet files and Hugging Face ``datasets`` names.

Our own reader rather than ``datasets.load_dataset("csv", ...)`` for local files: every problem a user can cause (a
bad line, an unquoted delimiter, a non-UTF-8 byte, a 30 MB row) is a :class:`~autopeft.errors.DataError` naming the
file and the line, and nothing is written to an Arrow cache.  Hub names go through ``datasets``.  Parquet (how the
hub stores datasets, so what a user downloads) is read with ``pyarrow``, which ``datasets`` brings.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.errors import DataError

__all__ = ["EXTS", "MAX_ROW_CHARS", "Table", "load_hub", "read_rows", "read_table"]

#: the file types read, in the order a task folder is searched
EXTS: tuple[str, ...] = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
#: the longest row (a JSONL line, a CSV field) read: one 30 MB line took 5.5 GB to load
MAX_ROW_CHARS = 1 << 20
csv.field_size_limit(MAX_ROW_CHARS)  # long documents exceed the csv module's 128 KiB default


@dataclass
class Table:
    rows: list[dict[str, Any]]
    lines: list[int]  # 1-based line (or item) number of each row, for messages
    where: str  # the file path or hub name, for messages
    columns: list[str]
    class_names: dict[str, list[str]] = field(default_factory=dict)  # HF ClassLabel names per column


def read_rows(path: str | Path, role: str = "data") -> list[dict[str, Any]]:
    """Rows of a JSON-lines (``.jsonl``/``.json``), CSV or TSV file, as dicts."""
    return read_table(Path(path), role).rows


def read_table(p: Path, role: str) -> Table:
    if not p.exists():
        raise DataError(f"{role} file not found: {p}")
    if not p.is_file():
        raise DataError(f"{role} file {p} is not a file; pass a .jsonl, .csv, .tsv or .parquet file")
    ext = p.suffix.lower()
    if ext not in EXTS:
        raise DataError(f"{role} file {p} has an unsupported extension {p.suffix or '(none)'!r}; use .jsonl, .json, .csv, "
                        ".tsv or .parquet")
    if ext == ".parquet":
        rows, lines = _parse_parquet(p, role)
        return Table(rows, lines, str(p), list(rows[0]))
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
    return Table(rows, lines, str(p), list(columns))


def _parse_parquet(p: Path, role: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows of a Parquet file (row numbers from 1 stand for lines); a text longer than :data:`MAX_ROW_CHARS` is
    refused as the other readers refuse a long line."""
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(p)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{role} file {p} cannot be read as Parquet ({str(exc).splitlines()[0][:200]}); "
                        "re-save it, or write it as .jsonl or .csv") from None
    rows = table.to_pylist()
    if not rows:
        raise DataError(f"{role} file {p} has no rows" + (" (columns: " + ", ".join(table.column_names) + ")"
                                                           if table.column_names else ""))
    for i, r in enumerate(rows, 1):
        if any(isinstance(v, str) and len(v) > MAX_ROW_CHARS for v in r.values()):
            raise DataError(f"{role} file {p}: row {i} holds a text over {MAX_ROW_CHARS:,} characters; shorten it")
    return rows, list(range(1, len(rows) + 1))


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


def load_hub(task: str) -> tuple[Table, Table | None]:
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
        tables: list[Table | None] = []
        for split in ("train", val_name):
            if split is None:
                continue
            rows = ds[split].to_list()
            if names:  # ClassLabel -1 marks an unlabelled row (e.g. GLUE test splits)
                rows = [r for r in rows if all(r.get(c) != -1 for c in names)]
            tables.append(Table(rows, list(range(1, len(rows) + 1)), f"{task} ({split} split)",
                                 list(features), names) if rows else None)
    except DataError:
        raise
    except Exception as exc:  # the hub client raises many types (offline, not found, gated, ...)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise DataError(f"{type(exc).__name__}: {first}" if first else type(exc).__name__) from None
    if tables[0] is None:
        raise DataError("its train split has no labelled rows")
    return tables[0], (tables[1] if len(tables) > 1 else None)
