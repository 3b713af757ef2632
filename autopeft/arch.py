"""Where the PEFT modules go in a transformer: one small description per architecture family.

The search space speaks of abstract sub-modules (``q``, ``k``, ``v``, ``o``, ``ffn_up``,
``ffn_down``) and layer indices; :class:`ArchInfo` maps them to real module names of a loaded
Hugging Face model, so nothing (hidden size, depth, names) is hard-coded elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft.errors import ModelError

if TYPE_CHECKING:  # type hints only: describing an architecture loads no torch
    import torch.nn as nn

#: Abstract sub-module names, in a fixed order.
SUBMODULES: tuple[str, ...] = ("q", "k", "v", "o", "ffn_up", "ffn_down")

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
                           "down_proj": "ffn_down", "fc1": "ffn_up", "fc2": "ffn_down"}
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

    def module_name(self, layer: int, sub: str) -> str:
        """Full dotted name of abstract sub-module ``sub`` in layer ``layer``."""
        return f"{self.layers_path}.{layer}.{self.names[sub]}"

    def layer_module(self, model: nn.Module, layer: int) -> nn.Module:
        return model.get_submodule(f"{self.layers_path}.{layer}")

    def sub_module(self, model: nn.Module, layer: int, sub: str) -> nn.Module:
        return model.get_submodule(self.module_name(layer, sub))

    def in_out(self, sub: str) -> tuple[int, int]:
        """(in_features, out_features) of an abstract sub-module's linear layer."""
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


def supported_model_types() -> list[str]:
    return sorted(_FAMILIES)


def arch_from_config(config: Any) -> ArchInfo:
    """Describe a Hugging Face config (``PretrainedConfig``) of a supported encoder."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _FAMILIES:
        raise ModelError(
            f"model type {model_type!r} is not supported; supported types: "
            f"{', '.join(supported_model_types())}"
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
