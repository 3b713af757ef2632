"""Serial bottleneck adapters (Houlsby et al. 2019; AutoPEFT's SA): after attention and FFN outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from autopeft.arch import ArchInfo
from autopeft.methods import Baseline, ParamDecl, PeftMethod, register_method

if TYPE_CHECKING:
    import torch.nn as nn


@register_method
class SerialAdapter(PeftMethod):
    name = "serial_adapter"
    kind = "serial"
    sparsifiable = True
    size_param = "size"
    default_lr = 1e-3
    params = {
        "size": ParamDecl("int", default=64, low=1),
        "scaling": ParamDecl("float", default=1.0, low=0.0, exclusive_low=True),
    }

    def _per_layer(self) -> int:
        return 2 if self.kind == "serial" else 1

    def param_shapes(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[tuple[int, ...]]:
        h, s = arch.hidden_size, cfg["size"]
        one = [(s, h), (s,), (h, s), (h,)]
        return one * (self._per_layer() * len(layers))

    def baselines(self, num_layers: int) -> dict[str, Baseline]:
        return {"serial adapter 64": ({"size": 64, "scaling": 1.0}, list(range(num_layers)))}

    def apply(self, model: nn.Module, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[nn.Parameter]:
        from autopeft.adapters import add_bottleneck_adapters

        return add_bottleneck_adapters(model, arch, self.kind, cfg["size"], list(layers), scaling=cfg["scaling"])
