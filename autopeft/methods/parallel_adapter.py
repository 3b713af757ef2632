"""Parallel bottleneck adapters (He et al. 2022; AutoPEFT's PA): beside each FFN block."""

from __future__ import annotations

from autopeft.methods import Baseline, register_method
from autopeft.methods.serial_adapter import SerialAdapter


@register_method
class ParallelAdapter(SerialAdapter):
    name = "parallel_adapter"
    kind = "parallel"

    def baselines(self, num_layers: int) -> dict[str, Baseline]:
        return {}  # the serial adapter's baseline is not the parallel one's
