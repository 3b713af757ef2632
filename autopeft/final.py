"""Final training of a found configuration at full budget, scored on the untouched validation split,
saved so that peft (``PeftModel.from_pretrained``) or autopeft (:func:`load_trained`) reloads it."""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from autopeft.candidate import Candidate
from autopeft.errors import ConfigError, DataError
from autopeft.escalation import final_lr_scales, flat, loss_gain_z
from autopeft.training import (collator, epoch_plan, epochs_run, rows, run_trainer,  # noqa: F401  (re-exported)
                               stop_rules, training_arguments, weighted_loss)
from autopeft.trial import _encode, encode_generative, generative_loss, predict_logits, score_logits, task_of

WEIGHTS_FILE = "autopeft_weights.pt"
RESULT_FILE = "autopeft_result.json"


def _validation(task: Any) -> tuple[list[tuple[str, ...]], list[int]]:
    if not task.validation_texts:
        raise DataError(f"task {task.name!r} has no validation (or test) split; pass --validation-file")
    return task.validation_texts, task.validation_labels


def _split_name(task: Any) -> str:
    """What the reported score was measured on: ``validation``, ``dev`` or ``test`` (the file's name)."""
    stem = Path(task.validation_source).stem.lower() if task.validation_source else ""
    return stem if stem in ("dev", "test") else "validation"


#: rows of the evaluation split answered by generation for exact match on CPU (all of them on a GPU); ``generate``
#: overrides it.  Greedy answers of SmolLM2-135M to GSM8K took 42 s for 8 rows here (one thread, batch 8, 256 new tokens).
GENERATE_ROWS_CPU = 100
MAX_NEW_TOKENS = 256


def generate_answers(model: torch.nn.Module, tok: Any, prompts: Sequence[str], device: Any,
                     max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 16) -> list[str]:
    """Greedy answers to prompts, each given as the user turn of the tokenizer's chat template (as in training)."""
    template = bool(getattr(tok, "chat_template", None))
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             if template else p + "\n" for p in prompts]
    side = tok.padding_side
    tok.padding_side = "left"  # generation continues every row from its last token
    out: list[str] = []
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(texts), batch_size):
                enc = tok(texts[s:s + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=not template).to(device)
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return out


#: rows of the training set held out to pick the best epoch (never the validation split, which is the reported score)
HOLDOUT_FRACTION, HOLDOUT_MAX = 0.1, 1000
TRAINABLE_FILE = "autopeft_trainable.pt"  # every trainable tensor, in each Trainer checkpoint


def pick_device() -> str:
    """The device final training runs on: CUDA when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _trainer_class() -> Any:
    from transformers import Trainer

    class AutoPeftTrainer(Trainer):
        """Trainer whose checkpoints also hold every trainable tensor, so resuming and restoring the best epoch are
        exact for any candidate: peft saves only its own adapters, not our bottleneck adapters beside them."""

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            super()._save(output_dir, state_dict)
            out = Path(output_dir or self.args.output_dir)
            torch.save({n: p.detach().cpu() for n, p in self.model.named_parameters() if p.requires_grad},
                       out / TRAINABLE_FILE)

        def _restore_trainable(self, checkpoint: str | None) -> None:
            f = Path(checkpoint or "") / TRAINABLE_FILE
            if checkpoint and f.is_file():
                saved = torch.load(f, weights_only=True)
                params = dict(self.model.named_parameters())
                with torch.no_grad():
                    for n, t in saved.items():
                        params[n].copy_(t.to(params[n].device))

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            self._restore_trainable(resume_from_checkpoint)

        def _load_best_model(self) -> None:
            super()._load_best_model()
            self._restore_trainable(self.state.best_model_checkpoint)

    return AutoPeftTrainer


def _dataset(task: Any, tok: Any, idx: Sequence[int], max_length: int) -> list[dict[str, Any]]:
    """Training rows for the Trainer: class labels, or per-token labels (causal LM: the prompt masked; seq2seq: the
    target's)."""
    texts = [task.train_texts[i] for i in idx]
    if task.is_lm:
        return rows(encode_generative(task, tok, texts, max_length), None)
    return rows(_encode(tok, texts, max_length), [task.train_labels[i] for i in idx])


def train_final(cand: Candidate, model: str | None, data: dict[str, Any], out_dir: str | Path, *,
                epochs: float | str = "auto", n_train: int | None = None, max_length: int = 128, batch_size: int = 32,
                seeds: Sequence[int] = (0,), threads: int | None = None, device: str | None = None, bf16: bool = False, fp16: bool = False,
                grad_accum: int = 1, grad_ckpt: bool = False, resume: bool = False, report_to: str = "none",
                training_args: dict[str, Any] | None = None, progress: bool = True,
                generate: int | None = None, n_eval: int | None = None, class_weights: str = "auto",
                layout: Any = None, lr_scale: float | str = "auto", head_lr: float = 0.0) -> dict[str, Any]:
    """Train ``cand`` at full budget with transformers' ``Trainer``, once per seed: all (or ``n_train``) training rows
    less a held-out tenth (at most 1,000 rows) that picks the best epoch, scored once on the validation split; the
    first seed's model is saved.  ``epochs``: a number, or ``auto`` (the default: up to 10 epochs, stopped after 2
    without a better held-out score, or after 3 while still flat under ``lr_scale="auto"``:
    :func:`autopeft.training.stop_rules`).  ``resume`` continues from the
    checkpoints of an interrupted run in ``out_dir`` and keeps seeds already finished there.

    A causal-LM task trains on the response tokens, picks the epoch by the held-out loss and reports the evaluation
    split's loss; when its rows have a prompt and a response, also the exact match of greedy answers (the number after
    ``####`` for GSM8K) on ``generate`` rows (default: all on a GPU, :data:`GENERATE_ROWS_CPU` on CPU; 0: none).

    ``class_weights``: ``balanced``, ``none``, or ``auto`` (balanced for imbalanced tasks scored by Matthews or
    macro-F1, as a search's trials: :func:`autopeft.data.auto_class_weights`).

    ``lr_scale`` multiplies every group's learning rate (the methods' rates x the config's multiplier); ``auto``
    (the default) trains at x1 and, for a classification task whose best held-out score stays at that split's chance
    level (the majority class) or whose held-out loss there is not clearly below the class prior's
    (:func:`autopeft.escalation.loss_gain_z`), trains the seed again at x2 and then x4 (:func:`autopeft.escalation.final_lr_scales`),
    keeping the run with the best held-out score: PEFT at the methods' default rates can learn nothing on a hard task
    where full fine-tuning does (issue 17's held-out task).  Each seed starts at the scale the one before kept.

    ``head_lr`` floors the classification head's rate before the multiplier and ``lr_scale``, as a search's trials do
    (:attr:`autopeft.contract.Fidelity.head_lr`); 0 trains the head at the methods' rate."""
    import numpy as np
    from transformers import TrainingArguments

    from autopeft.builder import model_info
    from autopeft.export import trainable

    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    epoch_plan(epochs, True)  # a bad --epochs ends here, before any model loads
    if lr_scale != "auto" and (isinstance(lr_scale, bool) or not isinstance(lr_scale, (int, float))
                               or not 0 < lr_scale < math.inf):
        raise ConfigError(f"--lr-scale must be auto or a finite number > 0, got {str(lr_scale)[:40]!r}")
    if isinstance(head_lr, bool) or not isinstance(head_lr, (int, float)) or not 0 <= head_lr < math.inf:
        raise ConfigError(f"--head-lr must be a finite number >= 0, got {repr(head_lr)[:40]}")
    if threads:
        torch.set_num_threads(threads)
    device = device or pick_device()
    from autopeft.seq2seq import fit_task_type

    data = fit_task_type(data, model)  # generative data on an encoder-decoder (T5) is a seq2seq task
    task = task_of(data)
    info = model_info(model, task.num_labels, False, layout)
    from autopeft.contract import CLASS_WEIGHTS
    from autopeft.data import auto_class_weights, balanced_weights

    if class_weights not in (*CLASS_WEIGHTS, "auto"):
        raise ConfigError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)} or auto, got {str(class_weights)[:40]!r}")
    if class_weights == "auto":
        class_weights = auto_class_weights(task)
    n_all = task.n_train
    n = n_all if n_train is None else min(n_train, n_all)
    n_hold = min(HOLDOUT_MAX, int(HOLDOUT_FRACTION * n)) if n >= 100 else 0
    n_epochs, patience = epoch_plan(epochs, n_hold > 0)
    max_length = min(max_length, info.arch.max_positions)
    val_texts, val_labels = _validation(task)
    if n_eval is not None:  # the first rows of the evaluation split (a quicker, coarser report)
        if isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 1:
            raise ConfigError(f"--n-eval must be an integer >= 1, got {n_eval!r}")
        val_texts = val_texts[:n_eval]
        val_labels = val_labels[:n_eval] if val_labels is not None else None
    if generate is not None and (isinstance(generate, bool) or not isinstance(generate, int) or generate < 0):
        raise ConfigError(f"--generate must be an integer >= 0 (rows answered for exact match), got {generate!r}")
    n_gen = 0
    if task.is_lm and len(task.text_columns) == 2:
        n_gen = min(len(val_texts), generate if generate is not None else
                    (len(val_texts) if device == "cuda" else GENERATE_ROWS_CPU))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file; pass a folder (new or from an earlier run) with -o")
    def make_args(ckpt: Path, seed: int, total_steps: int) -> Any:
        kw = training_arguments(ckpt, seed=seed, epochs=n_epochs, batch_size=batch_size, total_steps=total_steps,
                                device=device, eval_each_epoch=n_hold > 0, bf16=bf16, fp16=fp16,
                                grad_accum=grad_accum, grad_ckpt=grad_ckpt, report_to=report_to, progress=progress,
                                extra=training_args)
        if patience:
            kw["restore_callback_states_from_checkpoint"] = True
        if task.is_lm:  # the epoch is picked by the held-out loss; logits (rows x tokens x vocabulary) are not kept
            kw.update(metric_for_best_model="loss", greater_is_better=False, prediction_loss_only=True,
                      per_device_eval_batch_size=(training_args or {}).get("per_device_eval_batch_size", batch_size))
        try:
            return TrainingArguments(**kw)
        except (ValueError, TypeError, ImportError, RuntimeError) as exc:  # a bad value, a missing --report-to tool
            raise ConfigError(f"transformers refused the training arguments: "
                              f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}") from None

    make_args(out / "checkpoints", seeds[0], 1)  # bad arguments end here, before any model is loaded or file written
    auto = lr_scale == "auto"
    can_raise = auto and n_hold > 0 and not task.is_lm  # a raise is judged on the held-out tenth's score

    def fit_once(seed: int, scale: float, ckpt: Path) -> tuple[Any, Any, float | None, float | None, float | None]:
        """One training run of ``seed`` at ``scale`` x the rates: (built, trainer, best held-out score, its chance,
        that epoch's held-out loss against the class prior's in standard errors)."""
        built = trainable(cand, model, task.num_labels, seed, layout, head_lr=float(head_lr))
        tok = built.tokenizer
        idx = np.random.default_rng(seed).permutation(n_all)[:n].tolist()
        hold, fit = idx[:n_hold], idx[n_hold:]
        train_ds = _dataset(task, tok, fit, max_length)
        hold_ds = _dataset(task, tok, hold, max_length) if hold else []
        steps_per_epoch = -(-len(train_ds) // (batch_size * grad_accum))
        total = max(1, int(np.ceil(steps_per_epoch * n_epochs)))
        args = make_args(ckpt, seed, total)

        weights = None
        if class_weights == "balanced" and not task.is_lm:  # cross-entropy with balanced class weights
            weights = balanced_weights([r["labels"] for r in train_ds], task.num_labels)
        train_labels = [] if task.is_lm else [r["labels"] for r in train_ds]

        def metrics(pred: Any) -> dict[str, float]:
            logits = np.asarray(pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions)
            labels = pred.label_ids.tolist()
            # loss_z: the held-out loss against the class prior's, in standard errors (escalation.loss_gain_z)
            return {"score": score_logits(task.metric, logits, labels),
                    "loss_z": loss_gain_z(logits, labels, train_labels, weights)}

        loss_func = None if weights is None else weighted_loss(weights)
        from autopeft.metrics import chance_score

        hold_chance = chance_score(task.metric, [r["labels"] for r in hold_ds]) if hold_ds and not task.is_lm else None
        stop, still_flat = stop_rules(patience if hold_ds else None,
                                      (lambda s, z: flat(s, hold_chance, z, n_hold)) if can_raise else None)
        trainer = _trainer_class()(
            model=built.model, args=args, train_dataset=train_ds, eval_dataset=hold_ds or None,
            data_collator=collator(tok, task.is_lm), compute_metrics=None if task.is_lm else metrics,
            optimizers=(built.optimizer(lr_scale=scale), None), callbacks=[*built.callbacks, *stop] or None,
            compute_loss_func=loss_func)
        run_trainer(trainer, ckpt, patience, resume, still_flat)
        if any(not math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h):
            raise ConfigError(f"final training diverged (seed {seed}): a NaN or infinite loss; try a lower learning "
                              "rate (--training-args max_grad_norm=0.5 also helps)")
        if not hold_ds or task.is_lm:
            return built, trainer, None, None, None
        best_z = next((h.get("eval_loss_z") for h in trainer.state.log_history
                       if h.get("eval_score") == trainer.state.best_metric and "eval_loss_z" in h), None)
        return built, trainer, trainer.state.best_metric, hold_chance, best_z

    scores, times, params, matches, chosen, tried_all, accs, lasts, ran = [], [], 0, [], [], [], [], [], []
    scale = 1.0 if auto else float(lr_scale)
    for k, seed in enumerate(seeds):
        done_f = out / "seeds" / f"seed{seed}.json"
        if resume and done_f.is_file():  # finished before the interruption
            r = json.loads(done_f.read_text(encoding="utf-8"))
            scores.append(r["score"])
            if r.get("exact_match") is not None:
                matches.append(r["exact_match"])
            if r.get("accuracy") is not None:
                accs.append(r["accuracy"])
            times.append(r["seconds"])
            params = r["params"]
            scale = float(r.get("lr_scale", scale))
            chosen.append(scale)
            tried_all.append(r.get("lr_tried", [[scale, None]]))
            lasts.append(r.get("best_last"))
            ran.append(r.get("epochs_run"))
            continue
        t0 = time.perf_counter()
        # --lr-scale auto: a seed whose best held-out score stays at that split's chance level trains again at the
        # other scales of the ladder x1, x2, x4 (escalation.final_lr_scales); the best held-out run is kept
        best, tried = None, []
        for scale in (final_lr_scales(scale) if can_raise else [scale]):
            ckpt = out / "checkpoints" / (f"seed{seed}" if scale == 1.0 or not auto else f"seed{seed}-lr{scale:g}")
            built, trainer, hold_score, hold_chance, loss_z = fit_once(seed, scale, ckpt)
            tried.append([scale, hold_score] + ([] if loss_z is None else [round(loss_z, 3)]))
            if best is None or (hold_score is not None and best[2] is not None and hold_score > best[2]):
                best = (built, trainer, hold_score, scale)
            if not flat(hold_score, hold_chance, loss_z, n_hold):
                break
        built, trainer, _, scale = best
        best_ckpt = trainer.state.best_model_checkpoint  # the held-out rows' best epoch the last one: still improving
        lasts.append(None if best_ckpt is None else str(best_ckpt).endswith(f"-{trainer.state.global_step}"))
        ran.append(epochs_run(trainer.state))
        chosen.append(scale)
        tried_all.append(tried)
        params = built.trainable_params
        tok = built.tokenizer
        dev = next(built.model.parameters()).device
        match = None
        if task.is_lm:
            score = generative_loss(task, built.model, encode_generative(task, tok, val_texts, max_length), batch_size,
                                    tok.pad_token_id or 0, dev)
            if n_gen:
                from autopeft.metrics import exact_match
                from autopeft.seq2seq import generate_seq2seq

                rows = val_texts[:n_gen]
                prompts = [r[0] for r in rows]
                answers = (generate_seq2seq(built.model, tok, prompts, dev, max_length) if task.is_seq2seq
                           else generate_answers(built.model, tok, prompts, dev))
                match = exact_match(answers, [r[1] for r in rows])
                matches.append(match)
        else:
            logits = predict_logits(built.model, _encode(tok, val_texts, max_length), 64, tok.pad_token_id or 0, dev)
            score = score_logits(task.metric, logits, val_labels)
            acc = score_logits("accuracy", logits, val_labels)  # beside the majority class's, whatever the metric
            accs.append(acc)
        scores.append(score)
        times.append(time.perf_counter() - t0)
        if k == 0:
            save_trained(built, cand, out, model, task.num_labels, layout)
        done_f.parent.mkdir(parents=True, exist_ok=True)
        done_f.write_text(json.dumps({"score": score, "exact_match": match, "seconds": times[-1], "params": params,
                                      "accuracy": None if task.is_lm else acc,
                                      "lr_scale": scale, "lr_tried": tried,
                                      "best_epoch_checkpoint": best_ckpt, "best_last": lasts[-1], "epochs_run": ran[-1],
                                      "log_history": trainer.state.log_history}) + "\n")
    result = {"summary": cand.summary(), "candidate": cand.to_dict(), "model": model, "task": data, "metric": task.metric,
              "split": _split_name(task), "seeds": list(seeds), "scores": scores, "mean": statistics.fmean(scores),
              "std": statistics.pstdev(scores) if len(scores) > 1 else 0.0, "params": params,
              "n_train": n, "holdout": n_hold, "n_eval": len(val_texts),
              "epochs": n_epochs, "epochs_option": epochs, "patience": patience, "epochs_run": ran,
              "lr_scale": chosen[0], "lr_scales": chosen, "lr_tried": tried_all,
              "lr_scale_option": lr_scale, "best_last": lasts, "seconds": times, "saved_seed": seeds[0], "saved_score": scores[0], "device": device,
              "trainer": "transformers.Trainer", "class_weights": class_weights, "head_lr": float(head_lr), "label_note": task.label_note}
    if accs and len(accs) == len(scores) and val_labels is not None:  # and what always the majority class scores
        from autopeft.metrics import chance_score

        result.update({"accuracies": accs, "accuracy_mean": statistics.fmean(accs),
                       "majority": {task.metric: chance_score(task.metric, val_labels),
                                    "accuracy": chance_score("accuracy", val_labels)}})
    if matches:
        result.update({"exact_match": matches, "exact_match_mean": statistics.fmean(matches), "generated_rows": n_gen})
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def save_trained(built: Any, cand: Candidate, out: Path, model: str | None, num_labels: int, layout: Any = None) -> None:
    """peft's own files for the peft part (if any) + every trained tensor for autopeft's reload."""
    from peft import PeftModel

    cand.save(out)
    if isinstance(built.model, PeftModel):
        built.model.save_pretrained(str(out))
    state = {n: p.detach().cpu().clone() for n, p in built.model.named_parameters() if p.requires_grad}
    from autopeft.arch import layout_to_json

    torch.save({"state": state, "model": model, "num_labels": num_labels, "layout": layout_to_json(layout)},
               out / WEIGHTS_FILE)


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
    from autopeft.arch import layout_from_json

    layout = layout_from_json(blob.get("layout"))
    info = model_info(model, blob["num_labels"], False, layout)
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
