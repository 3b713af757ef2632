"""Full fine-tuning: every weight trains. The reference point that PEFT methods are measured against."""

from __future__ import annotations

from typing import Any, Sequence

import torch.nn as nn

from autopeft.arch import ArchInfo
from autopeft.methods import PeftMethod, register_method


@register_method
class Full(PeftMethod):
    name = "full"
    uses_layers = False
    default_lr = 5e-5

    def param_shapes(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[tuple[int, ...]]:
        raise ValueError("full fine-tuning is counted from the model itself")  # handled in autopeft.builder

    def apply(self, model: nn.Module, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[nn.Parameter]:
        params = list(model.parameters())
        for p in params:
            p.requires_grad_(True)
        return params
