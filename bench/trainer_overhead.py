"""What transformers' ``Trainer`` costs a low-cost trial, against autopeft's former lean trial loop (issue 19: trials
could keep the lean loop only if ``Trainer`` cost them more than 10 %; it did not, and trials now run on ``Trainer``
through ``autopeft.training.train_trial``, timed here as trials run it; the lean loop is ``bench/lean_loop.py``).

Both train the same candidate on the same rows with the same schedule (AdamW, per-method learning rates, linear
decay after 6 % warm-up, dynamic padding) on one thread; only the training is timed (model and data load apart).
Runs alternate (lean, Trainer, lean, Trainer, ...) so machine noise hits both alike; the figure is the ratio of the
medians.

    python -m bench.trainer_overhead                 # MiniLM, SST-2, the CPU trial preset (600 rows x 2 epochs, batch 8)
    python -m bench.trainer_overhead --quick         # the tiny test model, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import add_data_dir

CANDIDATE = {"methods": {"lora": {"r": 8, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}},
             "layers": [], "sparsity": {}, "lr_multiplier": 1.0}


def _setup(model: str | None, data_dir: str, n: int, max_length: int, seed: int) -> tuple[Any, Any, Any, list[int]]:
    from autopeft.builder import build_model, load_base, model_info
    from autopeft.candidate import Candidate
    from autopeft.trial import _encode, task_of

    task = task_of({"task": "sst2", "data_dir": data_dir})
    info = model_info(model, 2)
    base, tok = load_base(model, 2)
    cand = Candidate.from_dict({**CANDIDATE, "layers": list(range(info.arch.num_layers))})  # every layer
    built = build_model(cand, base, info, seed=seed)
    idx = np.random.default_rng(seed).permutation(len(task.train_labels))[:n].tolist()
    enc = _encode(tok, [task.train_texts[i] for i in idx], max_length)
    return built, tok, enc, [task.train_labels[i] for i in idx]


def run_lean(model: str | None, data_dir: str, fid: dict[str, Any], seed: int) -> float:
    from autopeft.contract import Fidelity
    from bench.lean_loop import train_loop

    built, tok, enc, labels = _setup(model, data_dir, fid["n_train"], fid["max_length"], seed)
    t0 = time.perf_counter()
    train_loop(built, enc, labels, Fidelity(**fid), seed, torch.device("cpu"), tok.pad_token_id or 0)
    return time.perf_counter() - t0


def run_trainer(model: str | None, data_dir: str, fid: dict[str, Any], seed: int) -> float:
    """What a low-cost trial runs now: :func:`autopeft.training.train_trial` (transformers' Trainer)."""
    from autopeft.training import rows, train_trial

    built, tok, enc, labels = _setup(model, data_dir, fid["n_train"], fid["max_length"], seed)
    t0 = time.perf_counter()
    train_trial(built, rows(enc, labels), tok, is_lm=False, batch_size=fid["batch_size"], epochs=fid["epochs"],
                lr_scale=fid["lr_scale"], seed=seed, device=torch.device("cpu"))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(ap)
    ap.add_argument("--model", default=None, help="default: the packaged all-MiniLM-L6-v2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="the tiny test model (for the test suite)")
    ap.add_argument("--out", help="write the timings as JSON here")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from autopeft._quiet import quiet

    quiet()
    fid = {"n_train": 600, "epochs": 2.0, "batch_size": 8, "lr_scale": 2.0, "max_length": 128, "n_eval": 1}
    model = a.model
    if a.quick:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import build_tiny_bert

        model = str(build_tiny_bert(Path(tempfile.mkdtemp()) / "tiny"))
        fid.update(n_train=64, epochs=1.0, max_length=32)
    times: dict[str, list[float]] = {"lean": [], "trainer": []}
    for r in range(a.repeats):
        times["lean"].append(run_lean(model, a.data_dir, fid, seed=r))
        times["trainer"].append(run_trainer(model, a.data_dir, fid, seed=r))
        print(f"repeat {r}: lean {times['lean'][-1]:.1f} s, Trainer {times['trainer'][-1]:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["trainer"] / med["lean"]
    print(f"median: lean {med['lean']:.1f} s, Trainer {med['trainer']:.1f} s; Trainer / lean = {ratio:.3f}")
    if a.out:
        Path(a.out).write_text(json.dumps({"fidelity": fid, "times": times, "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
