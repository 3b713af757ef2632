"""Training a built candidate with transformers' ``Trainer``: one path for the low-cost trials and final training.

Both use the same pieces: the ``TrainingArguments`` (linear schedule after 6 % warm-up; the per-method learning rates
live in the optimizer), the data collators (dynamic padding; -100 on a causal LM's padded labels), the weighted
cross-entropy of balanced class weights (``compute_loss_func``), the callback that keeps sparse weights at zero, and
the rows handed to the Trainer.  A trial adds :class:`TrialCallback`: the learning curve's rungs (the pruner's
decision stops training) and the stop at the first non-finite loss.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from autopeft.errors import ConfigError

#: a train_trial failure that is the pruner's stop, not an error
STOPPED_EARLY = "stopped early: "
#: the share of a run's optimizer steps spent warming the learning rate up (trials and final training alike)
WARMUP_FRACTION = 0.06
WEIGHT_DECAY = 0.01
#: ``autopeft train --epochs auto`` (its default): at most AUTO_MAX_EPOCHS epochs on one linear schedule, stopped once
#: the held-out rows' score has not improved for AUTO_PATIENCE epochs, the best epoch kept; AUTO_NO_HOLDOUT fixed
#: epochs when a task is too small to hold rows out (fewer than 100)
AUTO_MAX_EPOCHS, AUTO_PATIENCE, AUTO_NO_HOLDOUT = 10.0, 2, 3.0
#: under ``--lr-scale auto`` too, a run still flat by the held-out rows after this many epochs stops, so that the next
#: learning-rate scale is tried (a flat run costs 3 epochs a scale, as at the old fixed default, not up to 10)
AUTO_FLAT_EPOCHS = 3.0


def epoch_plan(epochs: float | str, holdout: bool) -> tuple[float, int | None]:
    """``--epochs`` as (epochs on the schedule, early-stopping patience in epochs or None): ``auto`` is up to
    :data:`AUTO_MAX_EPOCHS` with patience :data:`AUTO_PATIENCE` where rows are held out; a number is that many
    epochs, all trained (the best held-out epoch still kept)."""
    if epochs == "auto":
        return (AUTO_MAX_EPOCHS, AUTO_PATIENCE) if holdout else (AUTO_NO_HOLDOUT, None)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not 0 < epochs < math.inf:
        raise ConfigError(f"--epochs must be auto or a finite number > 0, got {str(epochs)[:40]!r}")
    return float(epochs), None


def warmup_steps(total_steps: int) -> int:
    return max(1, int(WARMUP_FRACTION * total_steps))


def epochs_run(state: Any) -> list[float | None]:
    """[epochs trained, the best held-out epoch] of a finished Trainer (the best None without held-out rows)."""
    key = next((k for k in ("eval_score", "eval_loss") if any(k in h for h in state.log_history)), None)
    best = next((h["epoch"] for h in state.log_history if key and h.get(key) == state.best_metric), None)
    return [round(float(state.epoch or 0), 2), None if best is None else round(float(best), 2)]


def best_eval(log_history: Sequence[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(the best held-out score so far, that epoch's held-out loss z) of a Trainer log; the first best, as the
    Trainer keeps it."""
    evals = [h for h in log_history if "eval_score" in h]
    best = max(evals, key=lambda h: h["eval_score"], default={})
    return best.get("eval_score"), best.get("eval_loss_z")


def stop_rules(patience: int | None, is_flat: Callable[[float | None, float | None], bool] | None
               ) -> tuple[list[Any], Callable[[Sequence[dict[str, Any]], float], bool] | None]:
    """``--epochs auto``'s stopping callbacks: early stopping with ``patience`` (none without it), and, when
    ``is_flat(best score, its loss z)`` is given (``--lr-scale auto``), the stop of a run still flat after
    :data:`AUTO_FLAT_EPOCHS`; with that rule as a test of a checkpoint's log (for :func:`run_trainer`)."""
    if not patience:
        return [], None
    from transformers import EarlyStoppingCallback, TrainerCallback

    def still_flat(log: Sequence[dict[str, Any]], epoch: float | None) -> bool:
        return (is_flat is not None and epoch is not None and epoch >= AUTO_FLAT_EPOCHS - 1e-9
                and is_flat(*best_eval(log)))

    class FlatStop(TrainerCallback):
        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if still_flat(state.log_history, state.epoch):  # the log already holds this evaluation
                control.should_training_stop = True

    return [EarlyStoppingCallback(early_stopping_patience=patience), FlatStop()], still_flat


def stopped_early(ckpt_dir: Path, patience: int | None,
                  still_flat: Callable[[Sequence[dict[str, Any]], float], bool] | None = None) -> Path | None:
    """The last checkpoint in ``ckpt_dir`` when its run had already stopped (the early-stopping counter at
    ``patience``, or ``still_flat`` of its log): resuming it must not train on (the Trainer resets the stop at each
    ``train()``)."""
    import json

    if not patience:
        return None
    last = max(ckpt_dir.glob("checkpoint-*"), key=lambda c: int(c.name.rsplit("-", 1)[-1]), default=None)
    f = last / "trainer_state.json" if last else None
    if f is None or not f.is_file():
        return None
    st = json.loads(f.read_text(encoding="utf-8"))
    cb = st.get("stateful_callbacks", {}).get("EarlyStoppingCallback", {})
    counter = (cb[0] if isinstance(cb, list) and cb else cb or {}).get("attributes", {}).get(
        "early_stopping_patience_counter", 0)
    flat_now = still_flat is not None and still_flat(st.get("log_history", []), st.get("epoch"))
    return last if counter >= patience or flat_now else None


def run_trainer(trainer: Any, ckpt_dir: Path, patience: int | None, resume: bool,
                still_flat: Callable[[Sequence[dict[str, Any]], float], bool] | None = None) -> None:
    """``trainer.train()``, continued from the checkpoints in ``ckpt_dir`` when ``resume`` (the early-stopping counter
    carries on: ``restore_callback_states_from_checkpoint``); a run that had already stopped early is not trained on
    (each ``train()`` call clears the stop): its state and best epoch are loaded instead."""
    has_ckpt = resume and ckpt_dir.is_dir() and any(ckpt_dir.glob("checkpoint-*"))
    done = stopped_early(ckpt_dir, patience, still_flat) if has_ckpt else None
    if done is None:
        trainer.train(resume_from_checkpoint=True if has_ckpt else None)
        return
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(done / "trainer_state.json"))
    trainer._load_best_model()


def training_arguments(out: Path, *, seed: int, epochs: float, batch_size: int, total_steps: int, device: str,
                       eval_each_epoch: bool, bf16: bool = False, fp16: bool = False, grad_accum: int = 1,
                       grad_ckpt: bool = False, report_to: str = "none", progress: bool = True,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of transformers' ``TrainingArguments`` for one seed: autopeft's schedule (linear,
    6 % warm-up; the per-method learning rates live in the optimizer), evaluation and a checkpoint each epoch with the
    best kept, the user's precision/accumulation/logging choices, then ``extra`` (any other TrainingArguments field)."""
    from transformers import TrainingArguments

    if bf16 and fp16:
        raise ConfigError("--bf16 and --fp16 exclude each other; pick one")
    if device == "cpu" and fp16:
        raise ConfigError("--fp16 needs a CUDA GPU; on the CPU use --bf16 or neither")
    kw: dict[str, Any] = dict(
        output_dir=str(out), seed=seed, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=64, gradient_accumulation_steps=grad_accum, gradient_checkpointing=grad_ckpt,
        bf16=bf16, fp16=fp16, use_cpu=device == "cpu", lr_scheduler_type="linear",
        warmup_steps=warmup_steps(total_steps), weight_decay=WEIGHT_DECAY,
        eval_strategy="epoch" if eval_each_epoch else "no", save_strategy="epoch" if eval_each_epoch else "no",
        load_best_model_at_end=eval_each_epoch, metric_for_best_model="score", greater_is_better=True,
        save_total_limit=1, logging_strategy="steps", logging_steps=max(1, total_steps // 20),
        report_to=[] if report_to in ("none", "") else [r.strip() for r in report_to.split(",")],
        disable_tqdm=not progress, remove_unused_columns=False, train_sampling_strategy="group_by_length",
    )
    fields = set(TrainingArguments.__dataclass_fields__)
    for k, v in (extra or {}).items():
        if k not in fields:
            close = sorted(f for f in fields if k.replace("-", "_") in f)[:5]
            raise ConfigError(f"--training-args: {k!r} is not a field of transformers' TrainingArguments"
                              + (f" (did you mean {', '.join(close)}?)" if close else ""))
        kw[k] = v
    return kw


def optimizer(param_groups: Sequence[dict[str, Any]], lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW over the candidate's per-method groups (each group's learning rate x ``lr_scale``)."""
    groups = [{"params": g["params"], "lr": g["lr"] * lr_scale} for g in param_groups]
    return torch.optim.AdamW(groups, weight_decay=WEIGHT_DECAY)


def collator(tok: Any, is_lm: bool) -> Any:
    """Dynamic padding: class labels as they are, or a causal LM's per-token labels padded with -100 (no loss)."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    return DataCollatorForSeq2Seq(tok, label_pad_token_id=-100, padding=True) if is_lm else DataCollatorWithPadding(tok)


def weighted_loss(weights: Sequence[float]) -> Callable[..., torch.Tensor]:
    """A ``compute_loss_func`` for the Trainer: cross-entropy with these class weights (balanced class weights)."""
    weight = torch.tensor(list(weights), dtype=torch.float32)

    def loss_func(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs.logits.float()
        return torch.nn.functional.cross_entropy(logits, labels, weight=weight.to(logits.device))

    return loss_func


def rows(enc: Any, labels: Sequence[int] | None) -> list[dict[str, Any]]:
    """Encoded rows as the Trainer's dataset: with class ``labels``, or (None) the causal-LM encoding's own labels."""
    if labels is None:
        return [{k: enc[k][i] for k in enc} for i in range(len(enc["input_ids"]))]
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "labels": int(labels[i])} for i in range(len(labels))]


def sparsity_callback(masks: Any) -> Any:
    """A ``TrainerCallback`` that fixes magnitude masks after their warm-up and re-zeroes masked weights after each
    optimizer step, so AdamW cannot revive them."""
    from transformers import TrainerCallback

    class SparsityCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            masks.maybe_fix(state.global_step)
            masks.enforce()

    return SparsityCallback()


def _trial_callback(checkpoint: Callable[[int, int, int], str | None] | None, at_step: dict[int, int],
                    total: int, fault_nan: Callable[[], None] | None) -> Any:
    """The trial's own callback: rung checkpoints (the pruner may stop training) and the stop at a non-finite loss
    (each step's loss is logged unfiltered); ``stop`` holds why training stopped, ``loss`` the last step's loss."""
    from transformers import TrainerCallback

    class TrialCallback(TrainerCallback):
        stop: str | None = None
        loss: float = float("nan")
        steps: int = 0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if fault_nan is not None and state.global_step == 1:
                fault_nan()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.steps = state.global_step
            rung = at_step.get(state.global_step)
            if rung is not None and checkpoint is not None and self.stop is None:
                why = checkpoint(state.global_step, total, rung)
                if why is not None:
                    self.stop = STOPPED_EARLY + why
                    control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kw: Any) -> None:
            if logs is None or "loss" not in logs:
                return
            self.loss = float(logs["loss"])
            if not math.isfinite(self.loss) and (self.stop is None or self.stop.startswith(STOPPED_EARLY)):
                self.stop = f"NaN loss at step {state.global_step} (diverged; try a lower learning rate)"
                control.should_training_stop = True

    return TrialCallback()


def train_trial(built: Any, dataset: list[dict[str, Any]], tok: Any, *, is_lm: bool, batch_size: int, epochs: float,
                lr_scale: float, seed: int, device: torch.device, class_weights: Sequence[float] | None = None,
                checkpoint: Callable[[int, int, int], str | None] | None = None, rungs: Sequence[float] = (),
                fault: str | None = None) -> tuple[int, float, str | None]:
    """One low-cost trial's training on transformers' ``Trainer``: AdamW with the per-method learning rates x
    ``lr_scale``, the linear schedule and rows grouped by length as final training, no evaluation, nothing saved.

    Returns (steps, last loss, failure reason or None).  ``checkpoint(step, total, rung)`` is called after the step
    that ends each rung (a fraction of the steps, :func:`autopeft.pruner.rung_steps`); a reason it returns stops
    training and is returned prefixed with :data:`STOPPED_EARLY`.  A non-finite loss stops training as a failure."""
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from autopeft.pruner import rung_steps

    total = max(1, int(math.ceil(math.ceil(len(dataset) / batch_size) * epochs)))
    at_step = rung_steps(total, rungs) if checkpoint is not None else {}
    fault_nan = None
    if fault == "nan":  # tests: poison a trained weight before the second step
        first = next(p for g in built.param_groups for p in g["params"])

        def fault_nan() -> None:
            with torch.no_grad():
                first.fill_(float("nan"))

    cb = _trial_callback(checkpoint, at_step, total, fault_nan)
    # masks first: a rung's score is taken on the masked weights
    callbacks = ([sparsity_callback(built.masks)] if built.masks is not None else []) + [cb]
    with tempfile.TemporaryDirectory(prefix="autopeft-trial-") as tmp:
        kw = training_arguments(Path(tmp), seed=seed, epochs=epochs, batch_size=batch_size, total_steps=total,
                                device=device.type, eval_each_epoch=False, progress=False)
        kw.update(max_steps=total, logging_steps=1, logging_nan_inf_filter=False, save_strategy="no",
                  dataloader_pin_memory=False, report_to=[], log_level="error")
        trainer = Trainer(model=built.model, args=TrainingArguments(**kw), train_dataset=dataset,
                          data_collator=collator(tok, is_lm), optimizers=(optimizer(built.param_groups, lr_scale), None),
                          callbacks=callbacks,
                          compute_loss_func=weighted_loss(class_weights) if class_weights is not None else None)
        trainer.remove_callback(PrinterCallback)  # the trial's per-step logs are the callback's, not stdout's
        trainer.train()
    return cb.steps, cb.loss, cb.stop
