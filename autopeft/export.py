"""Hand-off: write a found configuration so it trains without autopeft where possible.

A directory written by :func:`export_config` holds
- ``adapter_config.json``: the peft part (LoRA/DoRA/IA3/prefix) — ``peft.PeftConfig.from_pretrained(DIR)`` loads it;
- ``autopeft_candidate.json``: the whole candidate (also our bottleneck adapters and sparsity),
  which :func:`load_config` reads back and :func:`autopeft.builder.build_model` applies;
- ``autopeft_config.json``: how it was found (base model, number of labels, per-group learning
  rates, epochs, max length, metric, task).

The base model is stored as its Hugging Face id when it has one (the packaged default is
``sentence-transformers/all-MiniLM-L6-v2``, resolved back to the packaged copy when installed) and as an absolute
path otherwise, so the export loads from any working directory.  :func:`load_for_training` rebuilds any export
(our bottleneck adapters and sparsity included) for training with transformers' ``Trainer``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.candidate import CANDIDATE_FILE, Candidate
from autopeft.errors import ConfigError
from autopeft.methods import get_method, learning_rates

CONFIG_FILE = "autopeft_config.json"


def peft_config_for(cand: Candidate, model: str | None, num_labels: int, layout: Any = None) -> Any:
    """The peft config of the candidate's peft-based method, or ``None`` if it has none.  ``layout``: the study's
    ``--layers-pattern`` / ``--target-modules`` (:data:`autopeft.arch.Layout`), if it had them."""
    from autopeft.builder import model_info, peft_config_of

    info = model_info(model, num_labels, False, layout)
    for name, cfg in cand.methods.items():
        m = get_method(name)
        if m.uses_peft:  # peft's task type as trials built it: SEQ_CLS, CAUSAL_LM or SEQ_2_SEQ_LM
            pc = peft_config_of(name, cfg, cand.layers, info)
            pc.base_model_name_or_path = model_reference(model)
            return pc
    return None


def model_reference(model: str | None) -> str:
    """How an export names its base model: the Hugging Face id when it has one, else an absolute path."""
    from autopeft.builder import DEFAULT_MODEL, resolve_model
    from autopeft.gguf_models import gguf_file, packaged

    if model in (None, "", DEFAULT_MODEL, DEFAULT_HUB_ID):
        return DEFAULT_HUB_ID
    p = packaged(str(model)) or Path(str(model)).expanduser()
    if gguf_file(p) is not None:  # a GGUF model: its converted folder, which plain transformers and peft load
        return str(Path(resolve_model(str(model))).resolve())
    return str(p.resolve()) if p.exists() else str(model)


#: the hub id of the packaged default model (all-MiniLM-L6-v2)
DEFAULT_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def describe(directory: str | Path) -> str:
    """One line: what plain peft can load from an export, and what needs autopeft."""
    d = Path(directory)
    info = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
    own = info.get("autopeft_only") or []
    if info.get("peft_part") and not own:
        return (f"plain peft loads it: PeftConfig.from_pretrained({str(d)!r}) (base {info['base_model']}); "
                f"autopeft.load_for_training({str(d)!r}) builds it for transformers' Trainer")
    needs = " and ".join(own) or "full fine-tuning"
    if info.get("peft_part"):
        return (f"{needs} need(s) autopeft: autopeft.load_for_training({str(d)!r}) builds the whole config for "
                f"transformers' Trainer; plain peft's PeftConfig.from_pretrained loads only the peft part, without "
                f"{needs}")
    return (f"plain peft cannot load it (no adapter_config.json: {needs} is not a peft method); "
            f"autopeft.load_for_training({str(d)!r}) builds it for transformers' Trainer")


def _autopeft_only(cand: Candidate) -> list[str]:
    """What needs autopeft to train: methods that neither peft builds nor plain full fine-tuning is, and sparsity."""
    own = [n for n in cand.methods if not get_method(n).uses_peft and not get_method(n).trains_base]
    return own + (["sparsity"] if cand.sparsity else [])


def export_config(found: Any, directory: str | Path) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cand: Candidate = found.candidate
    meta = found.meta
    model = meta.get("model")
    model_arg = None if model == "all-MiniLM-L6-v2" else model
    cand.save(d)
    from autopeft.arch import layout_from_json

    layout = meta.get("layout")
    pc = peft_config_for(cand, model_arg, int(meta["num_labels"]), layout_from_json(layout))
    if pc is not None:
        pc.save_pretrained(str(d))
    fid = meta.get("fidelity", {})
    trial = getattr(found, "trial", None)
    from autopeft.storage import A, level_of, rung_of

    rung = rung_of(trial) if trial is not None else 0
    level = level_of(trial) if trial is not None else 0
    if trial is not None:  # the fidelity its score was measured at (a promoted trial's, a raised level's)
        fid = trial.user_attrs.get(A.FIDELITY, fid)
    info = {
        "base_model": model_reference(model_arg),
        "num_labels": meta.get("num_labels"),
        "layout": layout,  # --layers-pattern / --target-modules of the study, if it had them
        "task": meta.get("task"),
        "metric": meta.get("metric"),
        # for training the config at full budget: the per-group rates (without the search trials' lr_scale) and
        # the batch its memory objective was reported for; the search's own short-trial settings are kept apart
        "learning_rates": learning_rates(cand),
        "max_length": fid.get("max_length"),
        "batch_size": fid.get("memory_batch_size", fid.get("batch_size")),
        "search_fidelity": fid,
        "summary": cand.summary(),
        "peft_part": "adapter_config.json" if pc is not None else None,
        "autopeft_only": _autopeft_only(cand),
    }
    if getattr(found, "trial", None) is not None:
        info["trial"] = found.trial.number
        info["values"] = dict(zip(meta["objectives"], found.trial.values))
        if rung:
            info["rung"] = rung
        if level:
            info["level"] = level
    (d / CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return d


def load_config(directory: str | Path) -> Candidate:
    """The candidate stored in an export directory."""
    p = Path(directory) / CANDIDATE_FILE
    if not p.is_file():
        raise ConfigError(f"no {CANDIDATE_FILE} in {directory}: pass a directory written by 'autopeft export'")
    return Candidate.from_json(p.read_text(encoding="utf-8"))


@dataclass
class Trainable:
    """An export rebuilt for training: pass ``model`` to transformers' ``Trainer`` with
    ``optimizers=(trainable.optimizer(), None)`` (the per-group learning rates) and ``callbacks=trainable.callbacks``
    (which keep sparse weights at zero)."""

    model: Any
    tokenizer: Any
    candidate: Candidate
    param_groups: list[dict[str, Any]]
    trainable_params: int
    callbacks: list[Any] = field(default_factory=list)
    masks: Any = None  # autopeft.sparsity.SparsityMasks, if the config is sparse

    def optimizer(self, weight_decay: float = 0.01, lr_scale: float = 1.0) -> Any:
        """AdamW over the per-method groups (each group's rate x ``lr_scale``), with the trials' weight decay."""
        import torch

        groups = [{"params": g["params"], "lr": g["lr"] * lr_scale} for g in self.param_groups]
        return torch.optim.AdamW(groups, weight_decay=weight_decay)


def trainable(cand: Candidate, model: str | None, num_labels: int, seed: int = 0, layout: Any = None,
              head_lr: float = 0.0) -> Trainable:
    """``cand`` built on a fresh copy of ``model``, with its optimizer groups and (if sparse) the mask callback: what
    :func:`load_for_training` and ``autopeft train`` hand to transformers' ``Trainer``.  ``layout``: where the layers
    and projections are, when the study was told (:data:`autopeft.arch.Layout`); ``head_lr``: the head's learning-rate
    floor (:func:`autopeft.methods.learning_rates`; 0: each method's own rate)."""
    from autopeft.builder import build_model, load_base, model_info

    info = model_info(model, num_labels, False, layout)
    base, tok = load_base(model, num_labels)
    built = build_model(cand, base, info, seed=seed, head_lr=head_lr)
    from autopeft.training import sparsity_callback

    callbacks = [sparsity_callback(built.masks)] if built.masks is not None else []
    return Trainable(built.model, tok, cand, built.param_groups, built.trainable, callbacks, built.masks)


def load_for_training(directory: str | Path, model: str | None = None, seed: int = 0) -> Trainable:
    """Rebuild an export (any candidate: peft methods, our bottleneck adapters, sparsity) on a fresh copy of its base
    model, ready to train with transformers' ``Trainer``."""
    d = Path(directory)
    cand = load_config(d)
    p = d / CONFIG_FILE
    try:
        info_json = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{p} is missing or not valid JSON ({type(exc).__name__}): export the config again") from None
    base_model = model if model is not None else info_json.get("base_model")
    from autopeft.arch import layout_from_json

    return trainable(cand, base_model, int(info_json.get("num_labels", 2)), seed,  # num_labels 0: causal LM
                     layout_from_json(info_json.get("layout")))
