"""One low-cost trial fine-tune: ``run_trial(TrialSpec) -> TrialResult``.

Executors see only these two plain, JSON-friendly dataclasses; the study (the driver) owns all
decisions and all storage.  A trial never raises for a bad candidate or a diverging run: it
returns ``status="failed"`` with a reason.  ``status="infeasible"`` means a budget was exceeded
before any training was spent.
"""

from __future__ import annotations

import functools
import math
import os
import time
import traceback
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from autopeft.arch import layout_from_json
from autopeft.errors import AutoPeftError

from autopeft.contract import (  # noqa: F401  (re-exported: the trial's types)
    CPU_FIDELITY, FAILED, INFEASIBLE, OK, PRUNED, REFERENCE, Fidelity, TrialResult, TrialSpec, default_fidelity)
from autopeft.memory import apply_cost_knobs, measure_memory, memory_parts  # noqa: F401  (re-exported)
from autopeft.memory import training_memory_parts as _memory_parts
from autopeft.pruner import decide
from autopeft.training import STOPPED_EARLY, rows, train_trial


# ----------------------------------------------------------------------------- data plumbing
@functools.lru_cache(maxsize=4)
def _task(data_items: tuple[tuple[str, Any], ...]) -> Any:
    from autopeft.data import DataSpec, load_task

    d = dict(data_items)
    if d.get("text_columns") is not None:
        d["text_columns"] = tuple(d["text_columns"])
    return load_task(DataSpec(**d))


def task_of(data: dict[str, Any]) -> Any:
    """Load (once per process) the task described by a DataSpec dict."""
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in data.items()))
    return _task(items)


def _encode(tok: Any, texts: Sequence[tuple[str, ...]], max_length: int) -> list[list[int]]:
    cols = list(zip(*texts))
    enc = tok(*cols[:2], truncation=True, max_length=max_length) if len(cols) > 1 else tok(list(cols[0]), truncation=True, max_length=max_length)
    return enc


def encode_lm(tok: Any, texts: Sequence[tuple[str, ...]], max_length: int) -> dict[str, list[list[int]]]:
    """Causal-LM rows -> ``input_ids``, ``attention_mask`` and ``labels`` (-100 where no loss is taken).

    (prompt, response) rows: the prompt in the tokenizer's chat template as a user turn when it has one (else the
    prompt and a newline), the response after it, then end-of-sequence; only the response tokens carry a loss.  A
    prompt too long for ``max_length`` loses its start (at least half the length stays for the response).  (text,)
    rows are trained on whole.  Rows left with no token to predict are dropped."""
    template = bool(getattr(tok, "chat_template", None))
    eos = tok.eos_token or ""
    out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for row in texts:
        if len(row) == 1:
            ids = tok(row[0] + eos, add_special_tokens=True)["input_ids"][:max_length]
            labels = list(ids)
        else:
            prompt, response = row[0], row[1]
            if template:
                user = [{"role": "user", "content": prompt}]
                p_text = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
                full = tok.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
                r_text = full[len(p_text):] if full.startswith(p_text) else response + eos
                p_ids = tok(p_text, add_special_tokens=False)["input_ids"]
            else:
                p_ids = tok(prompt + "\n", add_special_tokens=True)["input_ids"]
                r_text = response + eos
            r_ids = tok(r_text, add_special_tokens=False)["input_ids"]
            keep = max(max_length - len(r_ids), max_length // 2, 1)
            p_ids = p_ids[-keep:] if len(p_ids) > keep else p_ids
            ids = (p_ids + r_ids)[:max_length]
            labels = ([-100] * len(p_ids) + r_ids)[:max_length]
        if len(ids) < 2 or all(x == -100 for x in labels[1:]):
            continue
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(labels)
    return out


def encode_generative(task: Any, tok: Any, texts: Sequence[tuple[str, ...]], max_length: int) -> dict[str, list[list[int]]]:
    """A generative task's rows encoded for its model: seq2seq (source in, target tokens as labels) or causal LM."""
    from autopeft.seq2seq import encode_seq2seq

    return encode_seq2seq(tok, texts, max_length) if task.is_seq2seq else encode_lm(tok, texts, max_length)


def generative_loss(task: Any, model: torch.nn.Module, enc: Any, bs: int, pad_id: int, device: torch.device,
                    se: bool = False) -> Any:
    """The search metric ``loss`` of a generative task: its target (seq2seq) or response (causal LM) tokens'; with
    ``se``, ``(loss, its standard error over the rows)`` (:func:`ratio_se`)."""
    from autopeft.seq2seq import seq2seq_loss

    return (seq2seq_loss if task.is_seq2seq else lm_loss)(model, enc, bs, pad_id, device, se=se)


def _batches(enc: Any, labels: Sequence[int] | None, order: Sequence[int], bs: int,
             pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
    """Padded batches in ``order``: class ``labels`` per row, or (``None``) the per-token labels ``enc`` holds
    (causal LM; padding gets -100, no loss)."""
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask", "labels") if k in enc]
    for s in range(0, len(order), bs):
        idx = order[s:s + bs]
        L = max(len(enc["input_ids"][i]) for i in idx)
        batch = {}
        for k in keys:
            fill = pad_id if k == "input_ids" else -100 if k == "labels" else 0
            batch[k] = torch.tensor([enc[k][i] + [fill] * (L - len(enc[k][i])) for i in idx], dtype=torch.long)
        if labels is not None:
            batch["labels"] = torch.tensor([labels[i] for i in idx], dtype=torch.long)
        yield batch


# ----------------------------------------------------------------------------- the trial
def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def warm_up() -> None:
    """Import what every trial needs (transformers' Trainer and peft take about 9 s cold here): a worker calls it
    when it starts, before its first trial's clock runs (:func:`autopeft.executors.base.load_runner`).

    Then ``gc.freeze()``: what is alive now (the imported libraries) is left out of later garbage collections.  The
    Trainer runs a full ``gc.collect()`` as each training starts (accelerate's ``free_memory``), which scanned that
    whole heap: 0.45 s a trial here, more than a tiny model's training; 0.05 s once frozen (tiny BERT trial 0.55 s ->
    0.22 s).  Objects a trial creates are collected as before."""
    import gc

    import peft  # noqa: F401
    import transformers  # noqa: F401
    from transformers import Trainer, TrainingArguments  # noqa: F401

    gc.collect()
    gc.freeze()


def run_trial(spec: TrialSpec) -> TrialResult:
    """Run one low-cost trial. Never raises for a failing trial: returns status ``failed``."""
    t0 = time.perf_counter()
    try:
        return _run(spec, t0)
    except AutoPeftError as exc:
        return TrialResult(spec.trial_id, FAILED, reason=f"bad config: {exc}", wall_s=time.perf_counter() - t0)
    except torch.OutOfMemoryError as exc:  # CUDA OOM
        return TrialResult(spec.trial_id, FAILED, reason=f"out of memory: {str(exc).splitlines()[0][:200]}",
                           wall_s=time.perf_counter() - t0)
    except MemoryError:
        return TrialResult(spec.trial_id, FAILED, reason="out of memory (host)", wall_s=time.perf_counter() - t0)
    except Exception as exc:  # a trial must report, not crash the search
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
        return TrialResult(spec.trial_id, FAILED, reason=f"{type(exc).__name__}: {str(exc)[:300]}{where}",
                           wall_s=time.perf_counter() - t0)


def _run(spec: TrialSpec, t0: float) -> TrialResult:
    from autopeft.builder import build_model, load_base, model_info
    from autopeft.candidate import Candidate
    from autopeft.data import search_split

    if spec.threads and spec.threads > 0:
        torch.set_num_threads(spec.threads)
    fid = Fidelity.from_stored(spec.fidelity)
    if spec.fault == "raise":
        raise RuntimeError("injected fault")
    if spec.fault == "exit":
        os._exit(3)
    if spec.fault and spec.fault.startswith("sleep:"):
        time.sleep(float(spec.fault.split(":", 1)[1]))
    if spec.purpose == REFERENCE:
        return _reference(spec, fid, t0)
    cand = Candidate.from_dict(spec.candidate)
    task = task_of(spec.data)
    info = model_info(spec.model, task.num_labels, spec.trust_remote_code, layout_from_json(spec.layout))
    max_len = min(fid.max_length, info.arch.max_positions)
    device = _pick_device(spec.device)
    base, tok = load_base(spec.model, task.num_labels, spec.trust_remote_code)
    apply_cost_knobs(base, fid)
    built = build_model(cand, base, info, seed=spec.seed, head_lr=fid.head_floor(cand.lr_multiplier))
    model = built.model
    fixed, per_row = _memory_parts(model, base, info, fid, max_len, tok, task.is_lm)
    memory = fixed + per_row * fid.memory_batch_size
    if spec.max_memory is not None and memory > spec.max_memory:
        return TrialResult(spec.trial_id, INFEASIBLE, params=built.trainable, memory_bytes=memory,
                           metric=task.metric, wall_s=time.perf_counter() - t0,
                           reason=f"memory {memory / 2**20:.1f} MiB > budget {spec.max_memory / 2**20:.1f} MiB")
    train_idx, eval_idx = search_split(task, fid.n_train, fid.n_eval, spec.seed)
    tr_texts = [task.train_texts[i] for i in train_idx]
    ev_texts = [task.train_texts[i] for i in eval_idx]
    tr_labels: list[int] | None = None
    if task.is_lm:
        tr_enc, ev_enc = encode_generative(task, tok, tr_texts, max_len), encode_generative(task, tok, ev_texts, max_len)
    else:
        tr_labels = [task.train_labels[i] for i in train_idx]
        ev_labels = [task.train_labels[i] for i in eval_idx]
        tr_enc, ev_enc = _encode(tok, tr_texts, max_len), _encode(tok, ev_texts, max_len)
    pad_id = tok.pad_token_id or 0

    model.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    curve: list[list[float]] = []
    checkpoint = None
    if spec.prune is not None:  # learning curve and early stopping: score a slice of the search split at each rung
        prune = spec.prune
        n_rung = prune["n_eval"]
        rung_enc = {k: v[:n_rung] for k, v in ev_enc.items()}
        rung_labels = None if task.is_lm else ev_labels[:n_rung]

        def checkpoint(step: int, total: int, rung: int) -> str | None:
            value = _score(task, model, rung_enc, rung_labels, fid.batch_size, pad_id, device)
            model.train()
            curve.append([prune["rungs"][rung], step, round(float(value), 6)])
            if not math.isfinite(value):
                return None  # a NaN at a rung: the loss check of the next step reports it
            return decide(prune, rung, float(value), memory / 2**20, task.metric)

    weights = None
    if tr_labels is not None and fid.class_weights == "balanced":  # cross-entropy with balanced class weights
        from autopeft.data import balanced_weights

        weights = balanced_weights(tr_labels, task.num_labels)
    t_train = time.perf_counter()
    step, last_loss, failure = train_trial(
        built, rows(tr_enc, tr_labels), tok, is_lm=task.is_lm, batch_size=fid.batch_size, epochs=fid.epochs,
        lr_scale=fid.lr_scale, seed=spec.seed, device=device, class_weights=weights, checkpoint=checkpoint,
        rungs=spec.prune["rungs"] if spec.prune else (), fault=spec.fault)
    if failure is not None and failure.startswith(STOPPED_EARLY):
        return TrialResult(spec.trial_id, PRUNED, score=curve[-1][2], params=built.trainable, memory_bytes=memory,
                           metric=task.metric, reason=failure[len(STOPPED_EARLY):], wall_s=time.perf_counter() - t0,
                           train_s=time.perf_counter() - t_train, steps=step, loss=last_loss, curve=curve)
    if failure is not None:
        return TrialResult(spec.trial_id, FAILED, params=built.trainable, memory_bytes=memory, metric=task.metric,
                           reason=failure, wall_s=time.perf_counter() - t0, steps=step, curve=curve or None)
    train_s = time.perf_counter() - t_train
    if device.type == "cuda":  # measured peak at the trial's batch, moved to the memory batch by the exact per-row count
        memory = int(torch.cuda.max_memory_allocated(device)) + per_row * (fid.memory_batch_size - fid.batch_size)
    score_se = None
    if task.is_lm:  # a loss comes with its standard error over the search rows (the answer rule's noise)
        score, score_se = generative_loss(task, model, ev_enc, fid.batch_size, pad_id, device, se=True)
    else:
        score = _score(task, model, ev_enc, ev_labels, fid.batch_size, pad_id, device)
    if curve:
        curve.append([1.0, step, round(float(score), 6)])
    if not math.isfinite(score):
        return TrialResult(spec.trial_id, FAILED, params=built.trainable, memory_bytes=memory, metric=task.metric,
                           reason=f"the search split's {task.metric} is not finite (diverged; try a lower learning rate)",
                           wall_s=time.perf_counter() - t0, steps=step)
    return TrialResult(spec.trial_id, OK, score=float(score), params=built.trainable, memory_bytes=memory,
                       wall_s=time.perf_counter() - t0, train_s=train_s, metric=task.metric, steps=step, loss=last_loss,
                       curve=curve or None, score_se=score_se)


def _score(task: Any, model: torch.nn.Module, enc: Any, labels: Sequence[int] | None, bs: int, pad_id: int,
           device: torch.device) -> float:
    """The search metric on an encoded slice of the search split (a causal LM's loss, else the task metric)."""
    if task.is_lm:  # logits are rows x tokens x vocabulary: score at the trial's batch, not twice it
        return generative_loss(task, model, enc, bs, pad_id, device)
    if labels is None:
        raise AutoPeftError("a classification task's search split has no labels")
    return score_logits(task.metric, predict_logits(model, enc, bs * 2, pad_id, device), labels)


def _reference(spec: TrialSpec, fid: Fidelity, t0: float) -> TrialResult:
    """The study's reference point: the spec's candidate (full fine-tuning) and its training memory (measured as for any candidate) and the
    chance score of the search split (always predicting its majority class)."""
    from autopeft.builder import build_model, load_base, model_info
    from autopeft.candidate import Candidate
    from autopeft.data import search_split
    from autopeft.metrics import chance_score

    task = task_of(spec.data)
    info = model_info(spec.model, task.num_labels, spec.trust_remote_code, layout_from_json(spec.layout))
    _, ev = search_split(task, fid.n_train, fid.n_eval, spec.seed)
    base, tok = load_base(spec.model, task.num_labels, spec.trust_remote_code)
    max_len = min(fid.max_length, info.arch.max_positions)
    if task.is_lm:  # the untrained model's loss on the search split: what a config must improve on
        device = _pick_device(spec.device)
        chance = generative_loss(task, base.to(device), encode_generative(task, tok, [task.train_texts[i] for i in ev],
                                                                          max_len), fid.batch_size, tok.pad_token_id or 0, device)
        base.to("cpu")
    else:
        chance = float(chance_score(task.metric, [task.train_labels[i] for i in ev]))
    apply_cost_knobs(base, fid)
    full = build_model(Candidate.from_dict(spec.candidate), base, info)
    fixed, per_row = _memory_parts(full.model, base, info, fid, max_len, tok, task.is_lm)
    mem = int(fixed + per_row * fid.memory_batch_size)
    return TrialResult(spec.trial_id, OK, score=chance, params=full.trainable, memory_bytes=mem, metric=task.metric,
                       wall_s=time.perf_counter() - t0)


def predict_logits(model: torch.nn.Module, enc: Any, bs: int, pad_id: int, device: torch.device) -> "np.ndarray[Any, Any]":
    """Logits (rows x labels) for tokenised inputs, in their order."""
    model.eval()
    n = len(enc["input_ids"])
    order = sorted(range(n), key=lambda i: len(enc["input_ids"][i]))  # length-sorted: less padding
    out: np.ndarray[Any, Any] | None = None
    with torch.no_grad():
        pos = 0
        for batch in _batches(enc, [0] * n, order, bs, pad_id):
            batch.pop("labels")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
            if out is None:
                out = np.zeros((n, logits.shape[-1]), dtype=np.float32)
            out[order[pos:pos + len(logits)]] = logits
            pos += len(logits)
    return out if out is not None else np.zeros((0, 1), dtype=np.float32)


def lm_loss(model: torch.nn.Module, enc: Any, bs: int, pad_id: int, device: torch.device, se: bool = False) -> Any:
    """Mean cross-entropy per predicted token (labels not -100) over a causal-LM encoding (the search metric
    ``loss``): summed over every token of every row, then divided once, so long rows weigh by their tokens."""
    n = len(enc["input_ids"])
    if n == 0:
        raise AutoPeftError("no evaluation row has a token to predict; use a larger --n-eval or --max-length")
    order = sorted(range(n), key=lambda i: len(enc["input_ids"][i]))
    return token_loss(model, _batches(enc, None, order, max(1, bs), pad_id), device, shift=True, se=se)


def token_loss(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: torch.device,
               shift: bool, se: bool = False) -> Any:
    """Cross-entropy summed over every label token (not -100) of every batch, divided once by their number; with
    ``se``, ``(that loss, its standard error over the rows)`` (:func:`ratio_se`).
    ``shift``: a causal LM's logits at a position predict the next token (the labels stay out of its forward); else
    (seq2seq) the labels go in, the decoder's inputs being them shifted right, and its logits align with them."""
    model.eval()
    sums: list[float] = []
    counts: list[int] = []
    with torch.no_grad():
        for batch in batches:
            labels = batch["labels"].to(device)
            logits = model(**{k: v.to(device) for k, v in batch.items() if k != "labels" or not shift}).logits
            if shift:
                logits, labels = logits[:, :-1], labels[:, 1:]
            per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                          labels.reshape(-1), ignore_index=-100, reduction="none")
            sums += per_token.reshape(labels.shape).sum(dim=1).tolist()
            counts += (labels != -100).sum(dim=1).tolist()
    loss = sum(sums) / max(sum(counts), 1)
    return (loss, ratio_se(sums, counts)) if se else loss


def ratio_se(sums: Sequence[float], counts: Sequence[int]) -> float | None:
    """The standard error of a mean per token over rows, ``sum(sums) / sum(counts)`` (``sums``: each row's summed
    loss; ``counts``: its tokens), with the rows as the sampled units: the ratio estimator's linearised variance,
    ``sqrt(sum((s_i - r c_i)^2) / (m (m - 1))) / mean(c)``.  None for fewer than two rows with tokens.  For a loss
    the answer rule's noise (:meth:`autopeft.result.SearchResult.margins`), as the binomial error is a score's: how
    far the loss moves with which rows were drawn."""
    pairs = [(float(s), int(c)) for s, c in zip(sums, counts) if c > 0]
    m = len(pairs)
    if m < 2:
        return None
    r = sum(s for s, _ in pairs) / sum(c for _, c in pairs)
    c_bar = sum(c for _, c in pairs) / m
    return math.sqrt(sum((s - r * c) ** 2 for s, c in pairs) / (m * (m - 1))) / c_bar


def score_logits(metric: str, logits: "np.ndarray[Any, Any]", labels: Sequence[int]) -> float:
    """The task metric of a model's logits: argmax predictions, and for binary tasks the positive margin (for auc)."""
    from autopeft.metrics import compute_metric

    margin = logits[:, 1] - logits[:, 0] if logits.ndim == 2 and logits.shape[1] == 2 else None
    return float(compute_metric(metric, logits.argmax(-1), labels, margin))
