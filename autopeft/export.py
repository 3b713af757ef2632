"""Hand-off: write a found configuration so it trains without autopeft where possible.

A directory written by :func:`export_config` holds
- ``adapter_config.json``: the peft part (LoRA/DoRA/IA3/prefix) — ``peft.PeftConfig.from_pretrained(DIR)`` loads it;
- ``autopeft_candidate.json``: the whole candidate (also our bottleneck adapters and sparsity),
  which :func:`load_config` reads back and :func:`autopeft.builder.build_model` applies;
- ``autopeft_config.json``: how it was found (base model, number of labels, per-group learning
  rates, epochs, max length, metric, task).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autopeft.candidate import CANDIDATE_FILE, Candidate
from autopeft.errors import ConfigError
from autopeft.methods import get_method, learning_rates

CONFIG_FILE = "autopeft_config.json"


def peft_config_for(cand: Candidate, model: str | None, num_labels: int) -> Any:
    """The peft config of the candidate's peft-based method, or ``None`` if it has none."""
    from autopeft.builder import model_info

    info = model_info(model, num_labels)
    for name, cfg in cand.methods.items():
        m = get_method(name)
        if m.uses_peft:
            pc = m.peft_config(cfg, cand.layers, info.arch, list(info.head_modules))
            from autopeft.builder import resolve_model

            pc.base_model_name_or_path = resolve_model(model) if model in (None, "all-MiniLM-L6-v2") else model
            return pc
    return None


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
    pc = peft_config_for(cand, model_arg, int(meta["num_labels"]))
    if pc is not None:
        pc.save_pretrained(str(d))
    fid = meta.get("fidelity", {})
    info = {
        "base_model": model,
        "num_labels": meta.get("num_labels"),
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
    (d / CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return d


def load_config(directory: str | Path) -> Candidate:
    """The candidate stored in an export directory."""
    p = Path(directory) / CANDIDATE_FILE
    if not p.is_file():
        raise ConfigError(f"no {CANDIDATE_FILE} in {directory}: pass a directory written by 'autopeft export'")
    return Candidate.from_json(p.read_text(encoding="utf-8"))
