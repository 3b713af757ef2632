"""Bottleneck adapters (peft has none): serial (Houlsby et al. 2019, AutoPEFT's SA) after the attention
output and FFN output projections, and parallel (He et al. 2022, AutoPEFT's PA) beside each FFN.

Adapters are real sub-modules (an ``nn.ModuleDict`` named ``autopeft_adapters`` on each transformer
layer), so ``parameters()``, ``state_dict()`` and ``.to()`` see them, and they are attached with
forward hooks, so they work before or after wrapping the model with ``peft.get_peft_model``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from autopeft.arch import ArchInfo
from autopeft.errors import ConfigError

ATTR = "autopeft_adapters"


class BottleneckAdapter(nn.Module):
    """``scaling * up(relu(down(x)))``; ``up`` starts at zero, so a new adapter changes nothing."""

    def __init__(self, hidden: int, size: int, scaling: float = 1.0) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * self.up(torch.relu(self.down(x)))


def _container(layer: nn.Module) -> nn.ModuleDict:
    if not hasattr(layer, ATTR):
        layer.add_module(ATTR, nn.ModuleDict())
    return getattr(layer, ATTR)


def _output_of(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def add_bottleneck_adapters(model: nn.Module, arch: ArchInfo, kind: str, size: int, layers: Sequence[int],
                            scaling: float = 1.0) -> list[nn.Parameter]:
    """Insert ``serial`` or ``parallel`` adapters of bottleneck ``size`` on ``layers``; return their parameters."""
    if kind not in ("serial", "parallel"):
        raise ConfigError(f"adapter kind must be serial or parallel, got {kind!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"adapter size must be an integer >= 1, got {size!r}")
    for i in layers:
        if not 0 <= i < arch.num_layers:
            raise ConfigError(f"adapter layer index {i} is out of range (allowed 0..{arch.num_layers - 1})")
    params: list[nn.Parameter] = []
    for i in layers:
        box = _container(arch.layer_module(model, i))
        if kind == "serial":
            for key, sub in (("serial_o", "o"), ("serial_ffn", "ffn_down")):
                ad = BottleneckAdapter(arch.hidden_size, size, scaling)
                box[key] = ad
                arch.sub_module(model, i, sub).register_forward_hook(_serial_hook(ad))
                params += list(ad.parameters())
        else:
            ad = BottleneckAdapter(arch.hidden_size, size, scaling)
            box["parallel"] = ad
            stash: dict[str, torch.Tensor] = {}
            arch.sub_module(model, i, "ffn_up").register_forward_pre_hook(_stash_hook(stash))
            arch.sub_module(model, i, "ffn_down").register_forward_hook(_parallel_hook(ad, stash))
            params += list(ad.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def _serial_hook(ad: BottleneckAdapter) -> Any:
    def hook(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        return out + ad(out)

    return hook


def _stash_hook(stash: dict[str, torch.Tensor]) -> Any:
    def hook(module: nn.Module, args: Any) -> None:
        stash["x"] = args[0]

    return hook


def _parallel_hook(ad: BottleneckAdapter, stash: dict[str, torch.Tensor]) -> Any:
    def hook(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        x = stash.pop("x")
        return out + ad(x)

    return hook


def adapter_param_count(hidden: int, size: int, kind: str, n_layers: int) -> int:
    per = 2 * hidden * size + size + hidden
    return n_layers * per * (2 if kind == "serial" else 1)


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if f".{ATTR}." in n]


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t for n, t in model.state_dict().items() if f".{ATTR}." in n}
