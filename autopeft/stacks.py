"""Encoder-decoder models (T5, T5 v1.1 / Flan-T5, mT5, UMT5): both stacks of layers, found in the module tree.

Placement numbers the encoder's layers first, then the decoder's: a T5 with 3 encoder and 1 decoder layers has 4
layer switches, and layer 3 is ``decoder.block.0``.  In an encoder layer q, k, v, o are the self-attention's
projections; in a decoder layer they name the self-attention's **and** the cross-attention's (``EncDecAttention``)
projections, as peft's own T5 targets do (``target_modules=["q", "v"]`` adapts both), so a peft method (LoRA, DoRA,
IA3) on q of a decoder layer adapts two modules and is counted twice.  Our bottleneck adapters sit where they sit in
an encoder layer: after the self-attention's output projection and the FFN (serial), beside the FFN (parallel).
peft's prefix tuning feeds the decoder only (its self- and cross-attention), so its prefixes span the decoder's
layers (:attr:`autopeft.arch.ArchInfo.prefix_layers`).
"""

from __future__ import annotations

from typing import Any

from autopeft.arch import ArchInfo, Stack, _projections, check_found, decoder_depth, layer_names
from autopeft.errors import ModelError

#: sub-module -> its module in a decoder layer's cross-attention (T5's ``EncDecAttention``)
_CROSS: dict[str, tuple[str, ...]] = {"q": ("EncDecAttention.q",), "k": ("EncDecAttention.k",),
                                      "v": ("EncDecAttention.v",), "o": ("EncDecAttention.o",)}


def _stack_list(model: Any, side: str, depth: int) -> tuple[str, Any]:
    """The outermost ``ModuleList`` of ``depth`` layers under the model's ``side`` (``encoder`` / ``decoder``)."""
    import torch.nn as nn

    other = "decoder" if side == "encoder" else "encoder"
    for name, m in model.named_modules():
        parts = name.split(".")
        if isinstance(m, nn.ModuleList) and len(m) == depth and side in parts and other not in parts:
            return name, m
    raise ModelError(f"model type {getattr(model.config, 'model_type', None)!r} is an encoder-decoder, but autopeft "
                     f"found no list of its {depth} {side} layers; pass --layers-pattern (one stack's layer list) and "
                     "--target-modules to search one stack")


def arch_from_stacks(config: Any, model: Any) -> ArchInfo:
    """Describe an encoder-decoder from its module tree (built on the meta device): the encoder's layer list and the
    decoder's, the projections of each (the same names as one-stack models, plus T5's ``SelfAttention.q`` and
    ``DenseReluDense.wi``/``wi_0``/``wi_1``/``wo``), and the decoder's cross-attention.  Every sub-module must have
    one shape in both stacks (T5's do), so counts stay exact with one set of shapes."""
    model_type = getattr(config, "model_type", None)
    n_enc = int(getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", 0))
    n_dec = decoder_depth(config)
    stacks: list[Stack] = []
    shapes: dict[str, tuple[int, int]] = {}
    for side, depth in (("encoder", n_enc), ("decoder", n_dec)):
        path, layers = _stack_list(model, side, depth)
        linears = _projections(layers[0])
        names = layer_names(linears, {})
        check_found(model_type, names, path, linears)
        if len(set(names.values())) < len(names):
            raise ModelError(f"model type {model_type!r}: {path}.0 computes several sub-modules in one projection, which "
                             "autopeft supports in one-stack models only; pass --layers-pattern and --target-modules")
        also = {s: n for s, pats in _CROSS.items() for n in linears if any(n.endswith("." + p) for p in pats)}
        for sub, module in [*names.items(), *also.items()]:
            if shapes.setdefault(sub, linears[module]) != linears[module]:
                raise ModelError(f"model type {model_type!r}: {sub} is {linears[module]} in {path}.0.{module} but "
                                 f"{shapes[sub]} elsewhere; autopeft needs one shape per sub-module across the stacks "
                                 "(pass --layers-pattern to search one stack)")
        if side == "encoder" and set(also):
            raise ModelError(f"model type {model_type!r}: its encoder layers have cross-attention; not an encoder-decoder "
                             "autopeft knows")
        stacks.append(Stack(path, depth, tuple(names.items()), tuple(also.items())))
    enc = dict(stacks[0].names)
    if set(dict(stacks[1].names)) != set(enc):
        raise ModelError(f"model type {model_type!r}: the encoder's layers have {', '.join(enc)} but the decoder's "
                         f"{', '.join(dict(stacks[1].names))}; pass --layers-pattern to search one stack")
    hidden = int(getattr(config, "d_model", None) or getattr(config, "hidden_size"))
    heads = int(getattr(config, "num_heads", None) or getattr(config, "num_attention_heads", 0) or 0)
    max_pos = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512)
    return ArchInfo(str(model_type), stacks[0].path, enc, n_enc + n_dec, hidden, shapes["ffn_up"][1], heads, max_pos,
                    tuple((s, *shapes[s]) for s in enc), stacks=tuple(stacks), prefix_layers=n_dec)
