"""Final training of a found configuration at full budget, scored on the untouched validation split,
saved so that peft (``PeftModel.from_pretrained``) or autopeft (:func:`load_trained`) reloads it."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from autopeft.candidate import Candidate
from autopeft.errors import ConfigError, DataError
from autopeft.trial import Fidelity, _encode, predict_logits, score_logits, task_of, train_loop

WEIGHTS_FILE = "autopeft_weights.pt"
RESULT_FILE = "autopeft_result.json"


def _validation(task: Any) -> tuple[list[tuple[str, ...]], list[int]]:
    if not task.validation_texts:
        raise DataError(f"task {task.name!r} has no validation split; pass --validation-file")
    return task.validation_texts, task.validation_labels


def train_final(cand: Candidate, model: str | None, data: dict[str, Any], out_dir: str | Path, *, epochs: float = 3.0,
                n_train: int | None = None, max_length: int = 128, batch_size: int = 32, seeds: Sequence[int] = (0,),
                threads: int | None = None) -> dict[str, Any]:
    """Train ``cand`` on all (or ``n_train``) training rows for each seed; save the first seed's model."""
    from autopeft.builder import build_model, load_base, model_info

    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    if threads:
        torch.set_num_threads(threads)
    task = task_of(data)
    info = model_info(model, task.num_labels)
    n = len(task.train_labels) if n_train is None else min(n_train, len(task.train_labels))
    fid = Fidelity(n_train=max(1, n), epochs=epochs, n_eval=1, max_length=min(max_length, info.arch.max_positions),
                   batch_size=batch_size, memory_batch_size=batch_size)
    val_texts, val_labels = _validation(task)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores, times = [], []
    for k, seed in enumerate(seeds):
        t0 = time.perf_counter()
        base, tok = load_base(model, task.num_labels)
        built = build_model(cand, base, info, seed=seed)
        import numpy as np

        idx = np.random.default_rng(seed).permutation(len(task.train_labels))[:n].tolist()
        enc = _encode(tok, [task.train_texts[i] for i in idx], fid.max_length)
        labels = [task.train_labels[i] for i in idx]
        steps, loss, failure = train_loop(built, enc, labels, fid, seed, torch.device("cpu"), tok.pad_token_id or 0)
        if failure is not None:
            raise ConfigError(f"final training diverged (seed {seed}): {failure}")
        logits = predict_logits(built.model, _encode(tok, val_texts, fid.max_length), 64, tok.pad_token_id or 0,
                                torch.device("cpu"))
        scores.append(score_logits(task.metric, logits, val_labels))
        times.append(time.perf_counter() - t0)
        if k == 0:
            save_trained(built, cand, out, model, task.num_labels)
    result = {"summary": cand.summary(), "candidate": cand.to_dict(), "model": model, "task": data, "metric": task.metric,
              "split": "validation", "seeds": list(seeds), "scores": scores, "mean": statistics.fmean(scores),
              "std": statistics.pstdev(scores) if len(scores) > 1 else 0.0, "params": built.trainable,
              "n_train": n, "epochs": epochs, "seconds": times, "saved_seed": seeds[0], "saved_score": scores[0]}
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def run_seed(cand_json: str, model: str | None, data: dict[str, Any], n_train: int | None, epochs: float, seed: int,
             max_length: int = 128, batch_size: int = 32) -> dict[str, Any]:
    """One full-budget run with one seed, on one thread, saving nothing (for process pools, e.g. bench/retrain.py)."""
    import tempfile

    from autopeft._quiet import quiet

    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        r = train_final(Candidate.from_json(cand_json), model, data, tmp, epochs=epochs, n_train=n_train,
                        max_length=max_length, batch_size=batch_size, seeds=(seed,), threads=1)
    return {"score": r["scores"][0], "seconds": r["seconds"][0], "params": r["params"], "n_train": r["n_train"]}


def save_trained(built: Any, cand: Candidate, out: Path, model: str | None, num_labels: int) -> None:
    """peft's own files for the peft part (if any) + every trained tensor for autopeft's reload."""
    from peft import PeftModel

    cand.save(out)
    if isinstance(built.model, PeftModel):
        built.model.save_pretrained(str(out))
    state = {n: p.detach().cpu().clone() for n, p in built.model.named_parameters() if p.requires_grad}
    torch.save({"state": state, "model": model, "num_labels": num_labels}, out / WEIGHTS_FILE)


def load_trained(directory: str | Path, model: str | None = None) -> tuple[torch.nn.Module, Any, Candidate]:
    """Rebuild a model saved by :func:`train_final` (any candidate, including our own adapters)."""
    from autopeft.builder import build_model, load_base, model_info
    from autopeft.export import load_config

    d = Path(directory)
    if not (d / WEIGHTS_FILE).is_file():
        raise ConfigError(f"no {WEIGHTS_FILE} in {d}: pass a directory written by 'autopeft train'")
    blob = torch.load(d / WEIGHTS_FILE, weights_only=True)
    cand = load_config(d)
    model = model if model is not None else blob["model"]
    info = model_info(model, blob["num_labels"])
    base, tok = load_base(model, blob["num_labels"])
    built = build_model(cand, base, info)
    missing = set(blob["state"]) - {n for n, _ in built.model.named_parameters()}
    if missing:
        raise ConfigError(f"saved weights do not fit the rebuilt model (e.g. {sorted(missing)[0]})")
    params = dict(built.model.named_parameters())
    with torch.no_grad():
        for n, t in blob["state"].items():
            params[n].copy_(t)
    built.model.eval()
    return built.model, tok, cand


def evaluate(model: torch.nn.Module, tok: Any, data: dict[str, Any], max_length: int = 128) -> float:
    """The model's metric on the task's validation split."""
    task = task_of(data)
    texts, labels = _validation(task)
    logits = predict_logits(model, _encode(tok, texts, max_length), 64, tok.pad_token_id or 0, torch.device("cpu"))
    return score_logits(task.metric, logits, labels)
