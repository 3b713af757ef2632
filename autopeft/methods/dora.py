"""DoRA (Liu et al. 2024): LoRA with a learned magnitude vector per adapted weight, from HF peft."""

from __future__ import annotations

from autopeft.methods import Baseline, register_method
from autopeft.methods.lora import Lora


@register_method
class Dora(Lora):
    name = "dora"
    use_dora = True

    def baselines(self, num_layers: int) -> dict[str, Baseline]:
        return {}  # LoRA's baseline is not DoRA's
