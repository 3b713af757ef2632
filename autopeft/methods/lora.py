"""LoRA (Hu et al. 2021) from HF peft: rank (optionally per layer), target sub-modules, alpha, dropout."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping, Sequence

from autopeft.arch import ArchInfo
from autopeft.methods import AltParam, Baseline, ParamDecl, PeftMethod, register_method, target_regex


def _base_rank(cfg: Mapping[str, Any]) -> int:
    """The rank peft's ``r`` and ``lora_alpha`` are given: the most common one of per-layer ranks."""
    r = cfg["r"]
    return Counter(r).most_common(1)[0][0] if isinstance(r, list) else r


def _alpha_to_ratio(alpha: float, cfg: Mapping[str, Any]) -> float:
    r = _base_rank(cfg)
    return alpha / r if r else alpha  # r = 0 switches the method off (select: all): the value goes unused


def _ratio_to_alpha(ratio: float, cfg: Mapping[str, Any]) -> float:
    return ratio * _base_rank(cfg)


@register_method
class Lora(PeftMethod):
    name = "lora"
    uses_peft = True
    sparsifiable = True
    size_param = "r"
    default_lr = 5e-4
    use_dora = False
    aliases = {"target_modules": "targets", "lora_dropout": "dropout"}
    params = {
        "r": ParamDecl("int", default=8, low=1, per_layer_ok=True),
        "targets": ParamDecl("targets", default=["q", "v"]),
        "alpha_ratio": ParamDecl("float", default=2.0, low=0.0, exclusive_low=True),
        "dropout": ParamDecl("float", default=0.1, low=0.0, high=1.0, exclusive_high=True),
    }
    #: peft's lora_alpha, fixed or searched: the space converts it to alpha_ratio for each candidate's rank
    alt_params = (AltParam("lora_alpha", "alpha_ratio", ParamDecl("float", low=0.0, exclusive_low=True),
                           depends_on="r", meaning="lora_alpha = alpha_ratio × r",
                           to_ours=_alpha_to_ratio, from_ours=_ratio_to_alpha),)

    @staticmethod
    def _ranks(cfg: dict[str, Any], layers: Sequence[int]) -> list[int]:
        r = cfg["r"]
        return list(r) if isinstance(r, list) else [r] * len(layers)

    def param_shapes(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []
        for layer, r in zip(layers, self._ranks(cfg, layers)):
            for t in arch.distinct(cfg["targets"]):
                fin, fout = arch.module_in_out(t)
                # a T5 decoder layer's q, k, v, o are two modules each (self- and cross-attention)
                shapes += ([(r, fin), (fout, r)] + ([(fout,)] if self.use_dora else [])) * arch.copies(layer, t)
        return shapes

    def baselines(self, num_layers: int) -> dict[str, Baseline]:
        return {"lora r=8 q,v": ({"r": 8, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}, list(range(num_layers)))}

    def peft_config(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo, head: list[str]) -> Any:
        from peft import LoraConfig

        ranks = self._ranks(cfg, layers)
        base_r = _base_rank(cfg)
        rank_pattern: dict[str, int] = {}
        alpha_pattern: dict[str, float] = {}
        for layer, r in zip(layers, ranks):
            if r != base_r:
                for key in (re.escape(n) for t in cfg["targets"] for n in arch.module_names(layer, t)):
                    rank_pattern[key] = r
                    alpha_pattern[key] = cfg["alpha_ratio"] * r
        return LoraConfig(
            task_type="SEQ_CLS",
            r=base_r,
            lora_alpha=cfg["alpha_ratio"] * base_r,
            lora_dropout=cfg["dropout"],
            target_modules=target_regex(arch, layers, cfg["targets"]),
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            use_dora=self.use_dora,
            modules_to_save=head,
        )
