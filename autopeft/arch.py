"""Where the PEFT modules go in a transformer: one small description per architecture family.

The search space speaks of abstract sub-modules (``q``, ``k``, ``v``, ``o``, ``ffn_up``,
``ffn_down``) and layer indices; :class:`ArchInfo` maps them to real module names of a loaded
Hugging Face model, so nothing (hidden size, depth, names) is hard-coded elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from autopeft.errors import ModelError

if TYPE_CHECKING:  # type hints only: describing an architecture loads no torch
    import torch.nn as nn

#: Abstract sub-module names, in a fixed order.
SUBMODULES: tuple[str, ...] = ("q", "k", "v", "o", "ffn_up", "ffn_down", "ffn_gate")

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
                           "c_attn": "q", "query_key_value": "q", "qkv_proj": "q", "gate_up_proj": "ffn_up"}
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

    def module_name(self, layer: int, sub: str) -> str:
        """Full dotted name of abstract sub-module ``sub`` in layer ``layer``."""
        return f"{self.layers_path}.{layer}.{self.names[sub]}"

    def layer_module(self, model: nn.Module, layer: int) -> nn.Module:
        return model.get_submodule(f"{self.layers_path}.{layer}")

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


#: where the layers and their projections are, given by the user for a model whose names autopeft does not know:
#: (the dotted path of the layer list or "", ((sub-module, module name inside a layer), ...)); see :func:`parse_layout`
Layout = tuple[str, tuple[tuple[str, str], ...]]


def parse_layout(layers_pattern: str | None, target_modules: Any) -> Layout | None:
    """``--layers-pattern`` (the dotted path of the model's layer list, e.g. ``transformer.encoder.block``) and
    ``--target-modules`` (``q=NAME,k=NAME,...``: each sub-module's module name inside a layer, e.g.
    ``q=layer.0.SelfAttention.q``; a mapping in the API) as one hashable layout; None when neither is given."""
    from autopeft.errors import ConfigError

    path = "" if layers_pattern is None else layers_pattern
    if not isinstance(path, str) or (path and not all(p.isidentifier() or p.isdigit() for p in path.split("."))):
        raise ConfigError(f"--layers-pattern must be a dotted module path such as transformer.encoder.block, got "
                          f"{str(layers_pattern)[:80]!r}")
    pairs: list[tuple[str, str]] = []
    if target_modules is not None:
        items: Any = target_modules
        if isinstance(target_modules, str):
            items = []
            for part in (p.strip() for p in target_modules.split(",")):
                if "=" not in part:
                    raise ConfigError(f"--target-modules: {part[:80]!r} is not SUB=NAME; give e.g. "
                                      "q=attn.q,k=attn.k,v=attn.v,o=attn.o,ffn_up=mlp.wi,ffn_down=mlp.wo")
                k, v = part.split("=", 1)
                items.append((k.strip(), v.strip()))
        elif isinstance(target_modules, dict):
            items = list(target_modules.items())
        else:
            raise ConfigError("target_modules must be a string SUB=NAME,... or a mapping of sub-module to module name")
        for k, v in items:
            if k not in SUBMODULES:
                raise ConfigError(f"--target-modules: unknown sub-module {str(k)[:40]!r}; allowed: {', '.join(SUBMODULES)}")
            if not isinstance(v, str) or not v or not all(p.isidentifier() or p.isdigit() for p in v.split(".")):
                raise ConfigError(f"--target-modules: {k}={str(v)[:80]!r} is not a dotted module name inside a layer")
            if any(k == done for done, _ in pairs):
                raise ConfigError(f"--target-modules gives {k} twice")
            pairs.append((k, v))
        if not pairs:
            raise ConfigError("--target-modules is empty; give SUB=NAME pairs such as q=attn.q,v=attn.v")
    if not path and not pairs:
        return None
    return path, tuple(sorted(pairs, key=lambda kv: SUBMODULES.index(kv[0])))


def layout_to_json(layout: Layout | None) -> list[Any] | None:
    """A layout as plain lists (a study attribute, a TrialSpec field, an export's JSON)."""
    return None if layout is None else [layout[0], [list(p) for p in layout[1]]]


def layout_from_json(data: Any) -> Layout | None:
    """Inverse of :func:`layout_to_json` (None stays None)."""
    if not data:
        return None
    return str(data[0]), tuple((str(k), str(v)) for k, v in data[1])


def layout_text(layout: Layout | None) -> str:
    """How the user gave a layout, for messages: ``--layers-pattern P --target-modules q=...`` or ``none``."""
    if layout is None:
        return "none"
    parts = [f"--layers-pattern {layout[0]}"] if layout[0] else []
    if layout[1]:
        parts.append("--target-modules " + ",".join(f"{k}={v}" for k, v in layout[1]))
    return " ".join(parts)


_HOW = ("; pass where they are: --layers-pattern (the layer list's path) and --target-modules "
        "(e.g. q=attn.q,k=attn.k,v=attn.v,o=attn.o,ffn_up=mlp.up,ffn_down=mlp.down: names inside a layer)")


def supported_model_types() -> list[str]:
    return sorted(_FAMILIES)


#: sub-module -> the names its linear layer has in a transformer layer (full relative paths first, then last parts)
_PATTERNS: dict[str, tuple[str, ...]] = {
    "q": ("self_attn.q_proj", "attention.self.query", "attention.self.query_proj", "attention.q_lin", "q_proj",
          "query_proj", "query", "q_lin"),
    "k": ("self_attn.k_proj", "attention.self.key", "attention.self.key_proj", "attention.k_lin", "k_proj", "key_proj",
          "key", "k_lin"),
    "v": ("self_attn.v_proj", "attention.self.value", "attention.self.value_proj", "attention.v_lin", "v_proj",
          "value_proj", "value", "v_lin"),
    "o": ("self_attn.o_proj", "attention.output.dense", "attention.out_lin", "attn.c_proj", "attention.dense",
          "self_attention.dense", "self_attn.dense", "o_proj", "out_proj", "out_lin"),
    "ffn_up": ("mlp.up_proj", "intermediate.dense", "ffn.lin1", "mlp.c_fc", "mlp.dense_h_to_4h", "mlp.fc_in", "up_proj",
               "fc1", "lin1", "dense_h_to_4h", "fc_in"),
    "ffn_down": ("mlp.down_proj", "output.dense", "ffn.lin2", "mlp.c_proj", "mlp.dense_4h_to_h", "mlp.fc_out",
                 "down_proj", "fc2", "lin2", "dense_4h_to_h", "fc_out"),
    "ffn_gate": ("mlp.gate_proj", "gate_proj"),
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


def arch_from_model(config: Any, model: Any, layout: Layout | None = None) -> ArchInfo:
    """Describe a model no family table lists by looking into its module tree (built on the meta device): the
    layer list is the outermost ``ModuleList`` as long as the config's depth, and each sub-module is the layer's
    ``nn.Linear`` whose path matches :data:`_PATTERNS`; shapes are read off the modules, so grouped-query attention's
    narrower k and v are exact.  Llama, Qwen2, Mistral, Phi-3-style decoders and BERT-like encoders are found so.
    ``layout`` (the user's ``--layers-pattern`` / ``--target-modules``) overrides what is found."""
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
    names: dict[str, str] = {}
    for sub, pats in _PATTERNS.items():
        used = set(names.values()) | set(given.values())  # "output.dense" also ends "attention.output.dense" (o's)
        hit = next((n for pat in pats for n in linears if (n == pat or n.endswith("." + pat)) and n not in used), None)
        if hit is not None and sub not in given:
            names[sub] = hit
    names.update(given)
    hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or getattr(config, "d_model"))
    heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 0)
                or getattr(config, "num_heads", 0) or 0)
    head_dim = getattr(config, "head_dim", None)
    for subs, pats in _FUSED:
        if set(subs) & set(names):
            continue
        hit = next((n for pat in pats for n in linears if n == pat or n.endswith("." + pat)), None)
        if hit is not None:
            names.update({s: hit for s in subs})
    fused: tuple[str, ...] = ()
    shares: dict[str, int] = {}
    for module in dict.fromkeys(names.values()):  # sub-modules that name one module are computed by it, fused
        subs = tuple(s for s in SUBMODULES if names.get(s) == module)
        if len(subs) > 1:
            fused += subs
            shares.update(_fused_shares(subs, linears[module][1], hidden, heads,
                                        head_dim if isinstance(head_dim, int) else None))
    missing = [s for s in ("q", "v", "o", "ffn_up", "ffn_down") if s not in names]
    if missing:
        raise ModelError(f"model type {model_type!r}: could not find the {', '.join(missing)} projection(s) among the "
                         f"linear layers of {layers_path}.0 ({', '.join(sorted(linears)[:12]) or 'none'}); autopeft "
                         "knows Llama-, BERT-, GPT-2-, GPT-NeoX- and Phi-3-style names" + _HOW)
    shapes = tuple((s, *linears[n]) for s, n in names.items())
    inter = shares.get("ffn_up") or next(fout for s, _, fout in shapes if s == "ffn_up")
    max_pos = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512)
    return ArchInfo(str(model_type), layers_path, names, int(depth), hidden, inter, heads, max_pos, shapes, fused,
                    tuple(shares.items()))


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
