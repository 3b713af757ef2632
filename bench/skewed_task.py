"""A binary task with a 25 % minority and no name autopeft knows: SST-2 with two thirds of its positive rows left out
(train and validation), as plain `{"text", "label"}` JSONL.  autopeft scores it by Matthews correlation (binary,
minority under 40 %), as it would a user's own imbalanced task; used to measure balanced class weights.

    python -m bench.skewed_task --glue ../shared/data/glue --out /tmp/skewdata   # writes /tmp/skewdata/skewsst/
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--glue", default="../shared/data/glue")
    ap.add_argument("--out", default="/tmp/skewdata")
    a = ap.parse_args(argv)
    rng = random.Random(0)
    d = Path(a.out) / "skewsst"
    d.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        rows = [json.loads(line) for line in open(Path(a.glue) / "sst2" / f"{split}.jsonl", encoding="utf-8")]
        neg = [r for r in rows if r["label"] == 0]
        pos = [r for r in rows if r["label"] == 1]
        out = neg + rng.sample(pos, len(neg) // 3)  # positives: a quarter of the rows
        rng.shuffle(out)
        with open(d / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for r in out:
                f.write(json.dumps({"text": r["sentence"], "label": r["label"]}) + "\n")
        print(split, len(out), f"positive share {sum(r['label'] for r in out) / len(out):.3f}")


if __name__ == "__main__":
    main()
