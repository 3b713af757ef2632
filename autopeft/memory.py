"""Training memory of a model, counted without training: weights, gradients and AdamW's moments of the trainable
parameters, and the activations autograd saves (counted exactly with ``saved_tensors_hooks``); and the trial cost
knobs that change it (the base model's dtype, gradient checkpointing)."""

from __future__ import annotations

import weakref
from typing import Any

import torch

from autopeft.contract import Fidelity
from autopeft.errors import AutoPeftError


def measure_memory(model: torch.nn.Module, batch_size: int, max_length: int, vocab_hint: int,
                   trainable_bytes: int, has_token_types: bool, lm: bool = False) -> int:
    """Training memory in bytes for one max-length batch, without training.

    = bytes of all weights + 3 x trainable bytes (gradients and AdamW's two moments) + bytes of
    the activations autograd saves for backward.  Saved activations are counted exactly with
    ``saved_tensors_hooks`` (de-duplicated by storage; parameters excluded) on batches of 1 and 2
    max-length sequences and extrapolated linearly to ``batch_size`` (activations are linear in
    the batch), which costs two tiny forward passes.  For a causal LM (``lm``) the forward takes labels, so the loss's
    saved log-probabilities over the vocabulary (often the largest activation of a small decoder) are counted.
    """
    fixed, per_row = memory_parts(model, max_length, vocab_hint, trainable_bytes, has_token_types, lm)
    return int(fixed + per_row * batch_size)


def memory_parts(model: torch.nn.Module, max_length: int, vocab_hint: int, trainable_bytes: int,
                 has_token_types: bool, lm: bool = False) -> tuple[int, int]:
    """(bytes independent of the batch, bytes per max-length row) of training memory; see :func:`measure_memory`."""
    params = list(model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}

    def saved(b: int) -> int:
        held: list[tuple[weakref.ref[torch.Tensor], tuple[int, int]]] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            try:
                st = t.untyped_storage()
                key = (st.data_ptr(), st.nbytes())
            except (RuntimeError, NotImplementedError):
                key = (id(t), t.numel() * t.element_size())
            # detached: the graph keeps it (and so its storage) alive for as long as it keeps what it saved, without a
            # C++ reference cycle.  Returning ``t`` itself makes the graph hold an output that holds the graph, which gc
            # cannot see: each trial leaked its model copy (130 MiB on MiniLM; 2 workers reached 12 GiB each after 80
            # trials each and were killed)
            d = t.detach()
            held.append((weakref.ref(d), key))
            return d

        g = torch.Generator().manual_seed(0)
        ids = torch.randint(vocab_hint // 2, vocab_hint, (b, max_length), generator=g)
        eos = getattr(getattr(model, "config", None), "eos_token_id", None)
        if isinstance(eos, int) and not isinstance(eos, bool) and 0 <= eos < vocab_hint:
            ids[:, -1] = eos  # rows end as real ones do (T5's classifier pools at the end-of-sequence token)
        kw: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if has_token_types:
            kw["token_type_ids"] = torch.zeros_like(ids)
        if lm:
            kw["labels"] = ids
        was_training = model.training
        model.train()
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(**kw)
            # only what the output's graph still holds is kept for backward: a side computation whose graph was
            # dropped during the forward (peft's DoRA computes its weight norm so, then detaches it) freed what it
            # saved, and that memory may since have been handed to another saved tensor at the same address.
            # Counting every packed tensor made DoRA's memory vary from run to run (1052-1190 MiB for one config)
            alive = {key for ref, key in held if ref() is not None}
            del out
        model.train(was_training)
        return sum(n for ptr, n in alive if ptr not in param_ptrs)

    s1, s2 = saved(1), saved(2)
    return int(weight_bytes + 3 * trainable_bytes + s1 - (s2 - s1)), int(s2 - s1)


def checkpointed_memory_parts(model: torch.nn.Module, base: torch.nn.Module, num_layers: int, hidden: int,
                              max_length: int, vocab_hint: int, trainable_bytes: int, has_token_types: bool,
                              lm: bool = False) -> tuple[int, int]:
    """:func:`memory_parts` of a model whose transformer layers use gradient checkpointing (``base`` has it on).

    With checkpointing on, the saved-tensor count sees only what autograd keeps outside the checkpointed layers; a
    layer's activations are recomputed in backward, one layer at a time.  Per row, the peak adds what the count does
    not see: each layer's input (``num_layers`` hidden states, which the checkpoint keeps itself) and one layer's
    recomputed activations, measured as (the count without checkpointing - the count with it) / ``num_layers``.
    Measured on a tiny Llama (4 layers, 64 tokens): 1,167,608 bytes per row without, 243,960 counted with, so
    540,408 with the two terms (46 %)."""
    fixed, row_ckpt = memory_parts(model, max_length, vocab_hint, trainable_bytes, has_token_types, lm)
    base.gradient_checkpointing_disable()
    try:
        _, row_plain = memory_parts(model, max_length, vocab_hint, trainable_bytes, has_token_types, lm)
    finally:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    act_bytes = next((p.element_size() for p in base.parameters() if p.is_floating_point()), 4)
    inputs = num_layers * max_length * hidden * act_bytes
    return fixed, int(row_ckpt + inputs + max(0, row_plain - row_ckpt) / max(1, num_layers))


def apply_cost_knobs(base: torch.nn.Module, fid: Fidelity) -> None:
    """The fidelity's cost knobs on a freshly loaded base model: its dtype, and gradient checkpointing."""
    if fid.dtype != "float32":
        base.to(getattr(torch, fid.dtype))
    if fid.gradient_checkpointing:
        if not getattr(base, "supports_gradient_checkpointing", False):
            raise AutoPeftError(f"{type(base).__name__} does not support gradient checkpointing; drop "
                                "--gradient-checkpointing")
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def training_memory_parts(model: torch.nn.Module, base: torch.nn.Module, info: Any, fid: Fidelity, max_len: int, tok: Any,
                  lm: bool) -> tuple[int, int]:
    """(fixed bytes, bytes per row) of training memory, checkpointing counted (:mod:`autopeft.memory`)."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    vocab, types = int(getattr(base.config, "vocab_size", 30000)), "token_type_ids" in tok.model_input_names
    if fid.gradient_checkpointing:
        return checkpointed_memory_parts(model, base, info.arch.num_layers, info.arch.hidden_size, max_len, vocab,
                                         trainable, types, lm)
    return memory_parts(model, max_len, vocab, trainable, types, lm)


__all__ = ["measure_memory", "memory_parts", "checkpointed_memory_parts", "apply_cost_knobs", "training_memory_parts"]
