"""Parallel bottleneck adapters (He et al. 2022; AutoPEFT's PA): beside each FFN block."""

from __future__ import annotations

from autopeft.methods import register_method
from autopeft.methods.serial_adapter import SerialAdapter


@register_method
class ParallelAdapter(SerialAdapter):
    name = "parallel_adapter"
    kind = "parallel"
