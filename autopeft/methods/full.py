"""Full fine-tuning: every weight trains. The reference point that PEFT methods are measured against."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from autopeft.arch import ArchInfo
from autopeft.methods import PeftMethod, register_method

if TYPE_CHECKING:
    import torch.nn as nn

    from autopeft.builder import ModelInfo


@register_method
class Full(PeftMethod):
    name = "full"
    uses_layers = False
    exclusive = True
    trains_base = True
    sparsifiable = False
    default_lr = 5e-5

    def param_shapes(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[tuple[int, ...]]:
        return []  # the base model's tensors are not described by the architecture; see trainable_count

    def trainable_count(self, cfg: dict[str, Any], layers: Sequence[int], info: ModelInfo) -> int | None:
        return info.base_params  # every parameter, head included

    def backprop_depth(self, cfg: dict[str, Any], layers: Sequence[int], num_layers: int) -> float:
        return 1.0

    def apply(self, model: nn.Module, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[nn.Parameter]:
        params = list(model.parameters())
        for p in params:
            p.requires_grad_(True)
        return params
