"""Prefix tuning (Li & Liang 2021) from HF peft: learned key/value prefixes in every layer.

peft's prefix tuning always spans all layers, so layer switches do not apply to it.
"""

from __future__ import annotations

from typing import Any, Sequence

from autopeft.arch import ArchInfo
from autopeft.methods import Baseline, ParamDecl, PeftMethod, register_method


@register_method
class Prefix(PeftMethod):
    name = "prefix"
    uses_peft = True
    uses_layers = False
    sparsifiable = True
    n_cost_features = 1
    size_param = "length"
    default_lr = 1e-2
    params = {"length": ParamDecl("int", default=20, low=1)}

    def param_shapes(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[tuple[int, ...]]:
        # a key and a value prefix per layer, each as wide as the key projection's output (narrower than the hidden
        # size under grouped-query attention, e.g. Llama/SmolLM2)
        # (an encoder-decoder's prefixes feed its decoder layers only)
        return [(cfg["length"], (arch.prefix_layers or arch.num_layers) * 2 * arch.in_out("k")[1])]

    def unsupported(self, info: Any) -> str | None:
        if not info.supports_cache:
            return "its transformer takes no past_key_values, which prefix tuning feeds the prefixes through"
        if info.encoder_decoder and info.num_labels:
            return ("peft's prefix tuning cannot drive an encoder-decoder's sequence classifier (it calls the "
                    "encoder-decoder without decoder inputs); it works on seq2seq tasks")
        return None

    def backprop_depth(self, cfg: dict[str, Any], layers: Sequence[int], num_layers: int) -> float:
        return 1.0  # the prefixes sit in every layer, so backward reaches the bottom one

    def cost_features(self, cfg: dict[str, Any], layer_fraction: float) -> list[float]:
        return [float(cfg["length"]) / 100.0]

    def baselines(self, num_layers: int) -> dict[str, Baseline]:
        return {"prefix 20": ({"length": 20}, [])}

    def peft_config(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo, head: list[str]) -> Any:
        from peft import PrefixTuningConfig

        # the prefixes' shape, given rather than left to peft, which reads it from the config under names some families
        # lack (Falcon's multi-query attention has one key/value head and no num_key_value_heads)
        width = arch.in_out("k")[1]
        head_dim = arch.in_out("q")[1] // arch.num_heads if arch.num_heads else width
        kw = dict(num_layers=arch.prefix_layers or arch.num_layers, token_dim=width, num_attention_heads=max(1, width // max(1, head_dim)))
        return PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=cfg["length"], modules_to_save=head, **kw)
