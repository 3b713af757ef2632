"""autopeft's former lean trial loop, kept for the benchmarks whose committed tables it measured.

Low-cost trials and final training now run on transformers' ``Trainer`` (``autopeft.training``).  The re-training
tables of ``bench/retrain.py`` (found configs vs hand-designed, the proxy-fidelity ceilings) were measured with this
loop (AdamW with per-method learning rates, linear warm-up over 6 % and decay, rows grouped by length, no gradient
clipping), so ``run_seed`` stays here to reproduce them; ``bench/trainer_overhead.py`` times it against a trial.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from autopeft.candidate import Candidate
from autopeft.contract import Fidelity
from autopeft.errors import ConfigError
from autopeft.final import _validation
from autopeft.trial import _batches, _encode, predict_logits, score_logits, task_of

#: a train_loop failure that is the pruner's stop, not an error
STOPPED_EARLY = "stopped early: "


def length_grouped_order(enc: Any, bs: int, rng: np.random.Generator, group: int = 16) -> list[int]:
    """A random order in which each batch holds rows of similar length (less padding), as HF's
    ``group_by_length``: shuffle, sort by length inside chunks of ``group`` batches, shuffle the batches."""
    n = len(enc["input_ids"])
    perm = rng.permutation(n)
    lens = np.array([len(x) for x in enc["input_ids"]])
    batches: list[list[int]] = []
    chunk = bs * group
    for s in range(0, n, chunk):
        part = perm[s:s + chunk]
        part = part[np.argsort(-lens[part], kind="stable")]
        batches += [part[i:i + bs].tolist() for i in range(0, len(part), bs)]
    return [i for b in (batches[j] for j in rng.permutation(len(batches))) for i in b]


def train_loop(built: Any, enc: Any, labels: Sequence[int] | None, fid: Fidelity, seed: int, device: torch.device,
               pad_id: int, fault: str | None = None,
               checkpoint: Callable[[int, int, int], str | None] | None = None,
               rungs: Sequence[float] = ()) -> tuple[int, float, str | None]:
    """AdamW with per-method learning rates, linear warm-up (6%) and decay, dynamic padding.

    Returns (steps, last loss, failure reason or None).  Sparsity masks are re-applied after every step.
    ``labels`` None: a causal-LM encoding that holds its own per-token labels.  ``checkpoint(step, total, rung)`` is
    called after the step that ends each rung (a fraction of the steps); a reason it returns stops training, and is
    returned prefixed with :data:`STOPPED_EARLY`.
    """
    model = built.model
    rng = np.random.default_rng(seed)
    weight = None
    if labels is not None and fid.class_weights == "balanced":  # cross-entropy with balanced class weights
        from autopeft.data import balanced_weights

        n_labels = int(getattr(getattr(model, "config", None), "num_labels", 0) or max(labels) + 1)
        weight = torch.tensor(balanced_weights(labels, n_labels), dtype=torch.float32, device=device)
    steps_per_epoch = math.ceil(len(enc["input_ids"]) / fid.batch_size)
    total_steps = max(1, int(math.ceil(steps_per_epoch * fid.epochs)))
    warmup = max(1, int(0.06 * total_steps))
    groups = [{**g, "lr": g["lr"] * fid.lr_scale} for g in built.param_groups]
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    model.train()
    step = 0
    last_loss = float("nan")
    from autopeft.pruner import rung_steps

    at_step = rung_steps(total_steps, rungs) if checkpoint is not None else {}
    while step < total_steps:
        order = length_grouped_order(enc, fid.batch_size, rng)
        for batch in _batches(enc, labels, order, fid.batch_size, pad_id):
            batch = {k: v.to(device) for k, v in batch.items()}
            if weight is None:
                loss = model(**batch).loss
            else:
                y = batch.pop("labels")
                loss = torch.nn.functional.cross_entropy(model(**batch).logits.float(), y, weight=weight)
            if fault == "nan" and step == 1:
                loss = loss * float("nan")
            if not torch.isfinite(loss):
                return step, float("nan"), f"NaN loss at step {step + 1} (diverged; try a lower learning rate)"
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if built.masks is not None:
                built.masks.maybe_fix(step + 1)
                built.masks.enforce()
            last_loss = float(loss.detach())
            step += 1
            if step in at_step and checkpoint is not None:
                why = checkpoint(step, total_steps, at_step[step])
                if why is not None:
                    return step, last_loss, STOPPED_EARLY + why
            if step >= total_steps:
                break
    return step, last_loss, None


def _train_lean(cand: Candidate, model: str | None, data: dict[str, Any], n_train: int | None, epochs: float, seed: int,
                max_length: int, batch_size: int) -> dict[str, Any]:
    """One full-budget run on autopeft's lean loop (the trials' loop), saving nothing: what the committed
    ``bench/retrain.py`` tables were measured with, kept so they reproduce."""
    from autopeft.builder import build_model, load_base, model_info

    task = task_of(data)
    info = model_info(model, task.num_labels)
    n = len(task.train_labels) if n_train is None else min(n_train, len(task.train_labels))
    fid = Fidelity(n_train=max(1, n), epochs=epochs, n_eval=1, max_length=min(max_length, info.arch.max_positions),
                   batch_size=batch_size, memory_batch_size=batch_size)
    val_texts, val_labels = _validation(task)
    t0 = time.perf_counter()
    base, tok = load_base(model, task.num_labels)
    built = build_model(cand, base, info, seed=seed)
    idx = np.random.default_rng(seed).permutation(len(task.train_labels))[:n].tolist()
    enc = _encode(tok, [task.train_texts[i] for i in idx], fid.max_length)
    steps, loss, failure = train_loop(built, enc, [task.train_labels[i] for i in idx], fid, seed, torch.device("cpu"),
                                      tok.pad_token_id or 0)
    if failure is not None:
        raise ConfigError(f"final training diverged (seed {seed}): {failure}")
    logits = predict_logits(built.model, _encode(tok, val_texts, fid.max_length), 64, tok.pad_token_id or 0,
                            torch.device("cpu"))
    return {"score": score_logits(task.metric, logits, val_labels), "seconds": time.perf_counter() - t0,
            "params": built.trainable, "n_train": n}


def run_seed(cand_json: str, model: str | None, data: dict[str, Any], n_train: int | None, epochs: float, seed: int,
             max_length: int = 128, batch_size: int = 32) -> dict[str, Any]:
    """One full-budget run with one seed, on one thread, saving nothing (for process pools, e.g. bench/retrain.py;
    on the lean loop its committed tables were measured with)."""
    from autopeft._quiet import quiet

    quiet()
    torch.set_num_threads(1)
    return _train_lean(Candidate.from_json(cand_json), model, data, n_train, epochs, seed, max_length, batch_size)


