"""Where the PEFT modules go in a transformer: one small description per architecture family.

The search space speaks of abstract sub-modules (``q``, ``k``, ``v``, ``o``, ``ffn_up``,
``ffn_down``) and layer indices; :class:`ArchInfo` maps them to real module names of a loaded
Hugging Face model, so nothing (hidden size, depth, names) is hard-coded elsewhere.  A model with two stacks of
layers (T5's encoder and decoder) numbers them one after the other (:class:`Stack`, found by :mod:`autopeft.stacks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from autopeft.errors import ModelError
from autopeft.layout import SUBMODULES as _SUBMODULES
from autopeft.layout import Layout, layout_from_json, layout_text, layout_to_json, parse_layout  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # type hints only: describing an architecture loads no torch
    import torch.nn as nn

#: Abstract sub-module names, in a fixed order.
SUBMODULES: tuple[str, ...] = _SUBMODULES

# model_type -> (path of the layer list inside the *ForSequenceClassification model, sub-module names)
_FAMILIES: dict[str, tuple[str, dict[str, str]]] = {
    "bert": (
        "bert.encoder.layer",
        {
            "q": "attention.self.query",
            "k": "attention.self.key",
            "v": "attention.self.value",
            "o": "attention.output.dense",
            "ffn_up": "intermediate.dense",
            "ffn_down": "output.dense",
        },
    ),
    "roberta": (
        "roberta.encoder.layer",
        {
            "q": "attention.self.query",
            "k": "attention.self.key",
            "v": "attention.self.value",
            "o": "attention.output.dense",
            "ffn_up": "intermediate.dense",
            "ffn_down": "output.dense",
        },
    ),
    "distilbert": (
        "distilbert.transformer.layer",
        {
            "q": "attention.q_lin",
            "k": "attention.k_lin",
            "v": "attention.v_lin",
            "o": "attention.out_lin",
            "ffn_up": "ffn.lin1",
            "ffn_down": "ffn.lin2",
        },
    ),
}
_FAMILIES["xlm-roberta"] = _FAMILIES["roberta"]
_FAMILIES["electra"] = ("electra.encoder.layer", _FAMILIES["bert"][1])


def _module_aliases() -> dict[str, str]:
    """Model module names (as peft's ``target_modules`` spells them) -> our sub-module names: each family's paths and
    their unambiguous last parts (BERT's ``query``, DistilBERT's ``q_lin``), and the Llama-style projections."""
    out: dict[str, str] = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "up_proj": "ffn_up",
                           "down_proj": "ffn_down", "gate_proj": "ffn_gate", "fc1": "ffn_up", "fc2": "ffn_down",
                           "fc_in": "ffn_up", "fc_out": "ffn_down", "dense_h_to_4h": "ffn_up", "dense_4h_to_h": "ffn_down",
                           # fused projections: any of the sub-modules they compute names the module
                           "c_attn": "q", "query_key_value": "q", "qkv_proj": "q", "gate_up_proj": "ffn_up",
                           "wi": "ffn_up", "wi_1": "ffn_up", "wi_0": "ffn_gate", "wo": "ffn_down"}  # T5's FFN
    seen: dict[str, set[str]] = {}
    for _, names in _FAMILIES.values():
        for sub, path in names.items():
            out[path] = sub
            seen.setdefault(path.rsplit(".", 1)[-1], set()).add(sub)
    out.update({last: next(iter(subs)) for last, subs in seen.items() if len(subs) == 1})  # "dense" is ambiguous
    return out


#: a module name as peft's ``target_modules`` has it -> our sub-module name (``query`` -> ``q``)
MODULE_ALIASES: dict[str, str] = _module_aliases()


@dataclass(frozen=True)
class Stack:
    """One stack of layers of a model that has several (T5: the encoder's, then the decoder's): the layer list's
    dotted path, its depth, each sub-module's module name inside a layer, and the further modules a sub-module names
    there (a decoder block's cross-attention q, k, v, o), which peft's methods adapt too."""

    path: str
    depth: int
    names: tuple[tuple[str, str], ...]
    also: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ArchInfo:
    """Shapes and module names of one supported encoder."""

    model_type: str
    layers_path: str
    names: dict[str, str]
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    max_positions: int
    #: exact (in, out) features per sub-module when they differ from the hidden/intermediate sizes (GQA's k and v)
    shapes: tuple[tuple[str, int, int], ...] = ()
    #: sub-modules that a fused projection computes (GPT-2's ``c_attn`` and GPT-NeoX's ``query_key_value``: q, k and v;
    #: Phi-3's ``gate_up_proj``: ffn_gate and ffn_up); ``names`` maps each of them to that module and ``shapes`` holds
    #: its whole (in, out)
    fused: tuple[str, ...] = ()
    #: each fused sub-module's share of its module's output features (grouped-query attention's k and v are narrower);
    #: a sub-module not listed takes an equal share
    shares: tuple[tuple[str, int], ...] = ()
    #: the stacks, in layer order, of a model with more than one (layer i of a candidate is the i-th over them all);
    #: empty: one stack, ``layers_path`` with ``names``.  Sub-modules have the same shapes in every stack
    stacks: tuple[Stack, ...] = ()
    #: how many layers take peft's prefixes (past_key_values): an encoder-decoder's decoder layers; 0: every layer
    prefix_layers: int = 0

    def spans(self) -> list[tuple[Stack, int]]:
        """Each stack and the index of its first layer among all layers."""
        if "_spans" not in self.__dict__:  # the fields are frozen; a parameter count reads this per layer
            stacks = self.stacks or (Stack(self.layers_path, self.num_layers, tuple(self.names.items())),)
            self.__dict__["_spans"] = [(st, sum(x.depth for x in stacks[:k])) for k, st in enumerate(stacks)]
        return list(self.__dict__["_spans"])

    def _at(self, layer: int) -> tuple[Stack, int]:
        for st, start in self.spans():
            if start <= layer < start + st.depth:
                return st, layer - start
        raise ModelError(f"layer index {layer} is beyond the model's depth ({self.num_layers} layers)")

    def layer_path(self, layer: int) -> str:
        """Full dotted name of layer ``layer`` (T5's layer 3 of 3 + 1: ``decoder.block.0``)."""
        st, i = self._at(layer)
        return f"{st.path}.{i}"

    def names_at(self, layer: int) -> dict[str, str]:
        """Each sub-module's module name inside layer ``layer``."""
        return dict(self._at(layer)[0].names)

    def module_name(self, layer: int, sub: str) -> str:
        """Full dotted name of abstract sub-module ``sub`` in layer ``layer``."""
        return self.module_names(layer, sub)[0]

    def module_names(self, layer: int, sub: str) -> list[str]:
        """Every module ``sub`` names in layer ``layer``: its own, then a decoder block's cross-attention one (peft's
        methods adapt both, so each counts: :meth:`copies`)."""
        st, i = self._at(layer)
        also = dict(st.also)
        return [f"{st.path}.{i}.{dict(st.names)[sub]}"] + ([f"{st.path}.{i}.{also[sub]}"] if sub in also else [])

    def copies(self, layer: int, sub: str) -> int:
        return len(self.module_names(layer, sub))

    def layer_module(self, model: nn.Module, layer: int) -> nn.Module:
        return model.get_submodule(self.layer_path(layer))

    def sub_module(self, model: nn.Module, layer: int, sub: str) -> nn.Module:
        return model.get_submodule(self.module_name(layer, sub))

    def distinct(self, subs: "Sequence[str]") -> list[str]:
        """``subs`` less those whose module another of them already names (q, k and v of a fused projection are one
        module: a method on [q, v] of GPT-2 adapts ``c_attn`` once)."""
        seen, out = set(), []
        for t in subs:
            if self.names.get(t, t) not in seen:
                seen.add(self.names.get(t, t))
                out.append(t)
        return out

    def module_in_out(self, sub: str) -> tuple[int, int]:
        """(in, out) features of the module that computes ``sub`` (a fused projection's whole width)."""
        if sub in self.fused:
            return next((fin, fout) for name, fin, fout in self.shapes if name == sub)
        return self.in_out(sub)

    def in_out(self, sub: str) -> tuple[int, int]:
        """(in_features, out_features) of an abstract sub-module's projection (of a fused projection, its share)."""
        if sub in self.fused:
            fin, fout = next((fin, fout) for name, fin, fout in self.shapes if name == sub)
            share = dict(self.shares).get(sub)
            group = [t for t in self.fused if self.names.get(t) == self.names.get(sub)]
            return fin, share if share is not None else fout // len(group)
        for name, fin, fout in self.shapes:
            if name == sub:
                return fin, fout
        if sub not in self.names:
            raise ModelError(f"model type {self.model_type!r} has no {sub!r} projection; its sub-modules are "
                             f"{', '.join(self.names)}")
        if sub == "ffn_up":
            return self.hidden_size, self.intermediate_size
        if sub == "ffn_down":
            return self.intermediate_size, self.hidden_size
        return self.hidden_size, self.hidden_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_heads": self.num_heads,
            "max_positions": self.max_positions,
        }


_HOW = ("; pass where they are: --layers-pattern (the layer list's path) and --target-modules "
        "(e.g. q=attn.q,k=attn.k,v=attn.v,o=attn.o,ffn_up=mlp.up,ffn_down=mlp.down: names inside a layer)")


def supported_model_types() -> list[str]:
    return sorted(_FAMILIES)


#: sub-module -> the names its linear layer has in a transformer layer (full relative paths first, then last parts);
#: T5's gated FFN (v1.1, Flan-T5, mT5, UMT5): ``wi_0`` is the gate, ``wi_1`` the up projection
_PATTERNS: dict[str, tuple[str, ...]] = {
    "q": ("self_attn.q_proj", "SelfAttention.q", "attention.self.query", "attention.self.query_proj", "attention.q_lin", "q_proj",
          "query_proj", "query", "q_lin"),
    "k": ("self_attn.k_proj", "SelfAttention.k", "attention.self.key", "attention.self.key_proj", "attention.k_lin", "k_proj", "key_proj",
          "key", "k_lin"),
    "v": ("self_attn.v_proj", "SelfAttention.v", "attention.self.value", "attention.self.value_proj", "attention.v_lin", "v_proj",
          "value_proj", "value", "v_lin"),
    "o": ("self_attn.o_proj", "SelfAttention.o", "attention.output.dense", "attention.out_lin", "attn.c_proj", "attention.dense",
          "self_attention.dense", "self_attn.dense", "o_proj", "out_proj", "out_lin"),
    "ffn_up": ("mlp.up_proj", "DenseReluDense.wi", "DenseReluDense.wi_1", "intermediate.dense", "ffn.lin1", "mlp.c_fc", "mlp.dense_h_to_4h", "mlp.fc_in", "up_proj",
               "fc1", "lin1", "dense_h_to_4h", "fc_in"),
    "ffn_down": ("mlp.down_proj", "DenseReluDense.wo", "output.dense", "ffn.lin2", "mlp.c_proj", "mlp.dense_4h_to_h", "mlp.fc_out",
                 "down_proj", "fc2", "lin2", "dense_4h_to_h", "fc_out"),
    "ffn_gate": ("mlp.gate_proj", "DenseReluDense.wi_0", "gate_proj"),
}


#: fused projections: (the sub-modules one module computes, in its output's order; the module's names).  Used when
#: none of those sub-modules has a module of its own: GPT-2's ``attn.c_attn``, GPT-NeoX's, Falcon's and Bloom's
#: ``query_key_value``, Phi-3's ``qkv_proj`` (q, k, v); Phi-3's ``gate_up_proj`` (ffn_gate, ffn_up)
_FUSED: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("q", "k", "v"), ("attn.c_attn", "attention.query_key_value", "self_attention.query_key_value",
                       "self_attn.qkv_proj", "query_key_value", "qkv_proj")),
    (("ffn_gate", "ffn_up"), ("mlp.gate_up_proj", "gate_up_proj")),
)


def _fused_shares(subs: tuple[str, ...], fout: int, hidden: int, heads: int, head_dim: int | None) -> dict[str, int]:
    """Each sub-module's share of a fused projection's ``fout`` output features: q gets every query head
    (``heads`` x head size), k and v split the rest (grouped-query and multi-query attention have fewer key/value
    heads); other groups (gate and up) split evenly."""
    if subs == ("q", "k", "v") and heads:
        q = heads * (head_dim or hidden // heads)
        if 0 < q < fout and (fout - q) % 2 == 0:
            return {"q": q, "k": (fout - q) // 2, "v": (fout - q) // 2}
    return {s: fout // len(subs) for s in subs}


def _projections(layer: Any) -> dict[str, tuple[int, int]]:
    """The layer's projections, name -> (in, out): ``nn.Linear`` and GPT-2's ``Conv1D`` (a linear layer whose weight
    is stored transposed)."""
    import torch.nn as nn

    out: dict[str, tuple[int, int]] = {}
    for n, m in layer.named_modules():
        if isinstance(m, nn.Linear):
            out[n] = (int(m.in_features), int(m.out_features))
        elif type(m).__name__ == "Conv1D" and getattr(m, "weight", None) is not None and m.weight.dim() == 2:
            out[n] = (int(m.weight.shape[0]), int(m.weight.shape[1]))
    return out


def _layer_list(model: Any, depth: int | None, layers_path: str) -> tuple[str, Any]:
    """The model's transformer layers: the list at ``layers_path``, else the outermost ``ModuleList`` of the config's
    depth."""
    import torch.nn as nn

    if layers_path:
        try:
            found = model.get_submodule(layers_path)
        except AttributeError:
            found = None
        if not isinstance(found, nn.ModuleList) or not len(found):
            lists = [n for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)][:8]
            raise ModelError(f"--layers-pattern {layers_path!r}: the model has no list of layers there; its module "
                             f"lists: {', '.join(lists) or 'none'}")
        return layers_path, found
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and depth and len(m) == depth]
    if not lists:
        raise ModelError(f"model type {getattr(model.config, 'model_type', None)!r}: found no list of its {depth} "
                         "transformer layers in the model; autopeft supports " + ", ".join(supported_model_types())
                         + " and Llama-style decoders" + _HOW)
    return lists[0]


def layer_names(linears: dict[str, tuple[int, int]], given: dict[str, str]) -> dict[str, str]:
    """Sub-module -> module name inside a layer whose linear layers are ``linears``: the user's ``given`` names, then
    :data:`_PATTERNS`, then a fused projection (:data:`_FUSED`) for sub-modules with no module of their own."""
    names: dict[str, str] = {}
    for sub, pats in _PATTERNS.items():
        used = set(names.values()) | set(given.values())  # "output.dense" also ends "attention.output.dense" (o's)
        hit = next((n for pat in pats for n in linears if (n == pat or n.endswith("." + pat)) and n not in used), None)
        if hit is not None and sub not in given:
            names[sub] = hit
    names.update(given)
    for subs, pats in _FUSED:
        if set(subs) & set(names):
            continue
        hit = next((n for pat in pats for n in linears if n == pat or n.endswith("." + pat)), None)
        if hit is not None:
            names.update({s: hit for s in subs})
    return names


def check_found(model_type: Any, names: dict[str, str], layers_path: str, linears: dict[str, tuple[int, int]]) -> None:
    """The one-line error for a layer whose q, v, o or FFN projections were not found."""
    missing = [s for s in ("q", "v", "o", "ffn_up", "ffn_down") if s not in names]
    if missing:
        raise ModelError(f"model type {model_type!r}: could not find the {', '.join(missing)} projection(s) among the "
                         f"linear layers of {layers_path}.0 ({', '.join(sorted(linears)[:12]) or 'none'}); autopeft "
                         "knows Llama-, BERT-, T5-, GPT-2-, GPT-NeoX- and Phi-3-style names" + _HOW)


def arch_from_model(config: Any, model: Any, layout: Layout | None = None) -> ArchInfo:
    """Describe a model no family table lists by looking into its module tree (built on the meta device): the
    layer list is the outermost ``ModuleList`` as long as the config's depth, and each sub-module is the layer's
    ``nn.Linear`` whose path matches :data:`_PATTERNS`; shapes are read off the modules, so grouped-query attention's
    narrower k and v are exact.  Llama, Qwen2, Mistral, Phi-3-style decoders and BERT-like encoders are found so.
    ``layout`` (the user's ``--layers-pattern`` / ``--target-modules``) overrides what is found.  An encoder-decoder
    (T5) has both its stacks found (:mod:`autopeft.stacks`) unless a layout names one."""
    if layout is None and getattr(config, "is_encoder_decoder", False):
        from autopeft.stacks import arch_from_stacks

        return arch_from_stacks(config, model)
    model_type = getattr(config, "model_type", None)
    depth = next((getattr(config, k) for k in ("num_hidden_layers", "n_layer", "num_layers") if hasattr(config, k)), None)
    layers_path, layer_list = _layer_list(model, depth, layout[0] if layout else "")
    depth = len(layer_list)
    linears = _projections(layer_list[0])
    given = dict(layout[1]) if layout else {}
    for sub, name in given.items():
        if name not in linears:
            raise ModelError(f"--target-modules {sub}={name}: layer 0 of {layers_path} has no linear layer {name!r}; "
                             f"its linear layers: {', '.join(sorted(linears)[:16]) or 'none'}")
    names = layer_names(linears, given)
    hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or getattr(config, "d_model"))
    heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 0)
                or getattr(config, "num_heads", 0) or 0)
    head_dim = getattr(config, "head_dim", None)
    fused: tuple[str, ...] = ()
    shares: dict[str, int] = {}
    for module in dict.fromkeys(names.values()):  # sub-modules that name one module are computed by it, fused
        subs = tuple(s for s in SUBMODULES if names.get(s) == module)
        if len(subs) > 1:
            fused += subs
            shares.update(_fused_shares(subs, linears[module][1], hidden, heads,
                                        head_dim if isinstance(head_dim, int) else None))
    check_found(model_type, names, layers_path, linears)
    shapes = tuple((s, *linears[n]) for s, n in names.items())
    inter = shares.get("ffn_up") or next(fout for s, _, fout in shapes if s == "ffn_up")
    max_pos = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512)
    return ArchInfo(str(model_type), layers_path, names, int(depth), hidden, inter, heads, max_pos, shapes, fused,
                    tuple(shares.items()), prefix_layers=decoder_depth(config))


def decoder_depth(config: Any) -> int:
    """An encoder-decoder's decoder layers (T5's ``num_decoder_layers``); 0 for a model with one stack."""
    if not getattr(config, "is_encoder_decoder", False):
        return 0
    return int(getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None)
               or getattr(config, "num_hidden_layers", 0))


def arch_from_config(config: Any, model: Any = None, layout: Layout | None = None) -> ArchInfo:
    """Describe a Hugging Face config (``PretrainedConfig``): a family of the table, else (given the model, e.g.
    built on the meta device) by looking into its module tree, as always when the user gives a ``layout``."""
    model_type = getattr(config, "model_type", None)
    if (model_type not in _FAMILIES or layout) and model is not None:
        return arch_from_model(config, model, layout)
    if model_type not in _FAMILIES:
        raise ModelError(
            f"model type {model_type!r} is not supported; supported types: "
            f"{', '.join(supported_model_types())} and Llama-style decoders"
        )
    layers_path, names = _FAMILIES[model_type]
    if model_type == "distilbert":
        return ArchInfo(
            model_type, layers_path, names, config.n_layers, config.dim, config.hidden_dim,
            config.n_heads, config.max_position_embeddings,
        )
    max_pos = int(config.max_position_embeddings)
    if model_type in ("roberta", "xlm-roberta"):
        max_pos -= 2  # RoBERTa reserves padding_idx + 1 positions
    return ArchInfo(
        model_type, layers_path, names, config.num_hidden_layers, config.hidden_size,
        config.intermediate_size, config.num_attention_heads, max_pos,
    )
