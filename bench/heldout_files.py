"""Two three-class held-out tasks written as plain CSV files from the GLUE copy in ../shared (session 34), for the
issue-17 check "a task no one here tuned for, run through `autopeft search` as a new user would, with no task options".

- ``topic3``: ``text,category``: SST-2 sentences labelled ``negative`` / ``positive`` and news sentences (MRPC's and
  RTE's first sentences) labelled ``other``; train 900 / 1,100 / 1,000, validation 200 / 250 / 150 (SST-2's and the
  others' validation rows).
- ``pairs3``: ``sentence_a,sentence_b,relation`` (a label column of no known name): MRPC's pairs as ``paraphrase`` /
  ``related`` and 1,200 (validation 150) pairs of two different rows' sentences as ``unrelated``.

    python -m bench.heldout_files --out /tmp/heldout      # writes /tmp/heldout/{topic3,pairs3}/{train,validation}.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import add_data_dir


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def _write(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    print(f"{path}: {len(rows)} rows, {dict(Counter(r[-1] for r in rows))}")


def topic3(glue: Path, out: Path) -> None:
    rnd = random.Random(7)

    def pick(rows: list[dict[str, Any]], lab: int, n: int) -> list[str]:
        xs = [r["sentence"].strip() for r in rows if r["label"] == lab]
        rnd.shuffle(xs)
        return xs[:n]

    def build(split: str, nneg: int, npos: int, noth: int) -> list[tuple[str, ...]]:
        sst = _read(glue / "sst2" / f"{split}.jsonl")
        other = [r["sentence1"] for r in _read(glue / "mrpc" / f"{split}.jsonl")]
        other += [r["sentence1"] for r in _read(glue / "rte" / f"{split}.jsonl")]
        rnd.shuffle(other)
        rows = [(t, "negative") for t in pick(sst, 0, nneg)] + [(t, "positive") for t in pick(sst, 1, npos)]
        rows += [(t, "other") for t in other[:noth]]
        rnd.shuffle(rows)
        return rows

    _write(out / "topic3" / "train.csv", ["text", "category"], build("train", 900, 1100, 1000))
    _write(out / "topic3" / "validation.csv", ["text", "category"], build("validation", 200, 250, 150))


def pairs3(glue: Path, out: Path) -> None:
    rnd = random.Random(11)
    for split, n_unrelated in (("train", 1200), ("validation", 150)):
        rows = _read(glue / "mrpc" / f"{split}.jsonl")
        out_rows = [(r["sentence1"], r["sentence2"], "paraphrase" if r["label"] == 1 else "related") for r in rows]
        for _ in range(n_unrelated):
            a, b = rnd.sample(rows, 2)
            out_rows.append((a["sentence1"], b["sentence2"], "unrelated"))
        rnd.shuffle(out_rows)
        _write(out / "pairs3" / f"{split}.csv", ["sentence_a", "sentence_b", "relation"], out_rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(ap)
    ap.add_argument("--out", required=True, help="the folder to write topic3/ and pairs3/ into")
    a = ap.parse_args(argv)
    topic3(Path(a.data_dir), Path(a.out))
    pairs3(Path(a.data_dir), Path(a.out))


if __name__ == "__main__":
    main()
