"""Fixed sparsity masks on PEFT weight matrices (SparseAdapter / DSEE style).

In every masked tensor (ndim >= 2; vectors such as biases, IA3 scales and DoRA magnitudes stay
dense) exactly ``round(fraction * numel)`` entries are held at zero, so the effective trainable
count is known before training.  ``random`` masks are drawn at creation.  ``magnitude`` masks keep
the largest-|w| entries; because LoRA B and adapter up-projections start at zero, they are fixed
after ``warmup_steps`` dense steps (0 = at once).  Gradients of masked entries are zeroed by tensor
hooks and :meth:`SparsityMasks.enforce` re-zeroes the weights after each optimizer step, so AdamW's
momentum and weight decay cannot revive them.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from autopeft.errors import ConfigError


class SparsityMasks:
    def __init__(self, params: dict[str, nn.Parameter], fraction: float, criterion: str, seed: int,
                 warmup_steps: int = 0) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
            raise ConfigError(f"sparsity fraction must be in [0, 1), got {fraction!r}")
        if criterion not in ("random", "magnitude"):
            raise ConfigError(f"sparsity criterion must be random or magnitude, got {criterion!r}")
        self.fraction = float(fraction)
        self.criterion = criterion
        self.warmup_steps = int(warmup_steps) if criterion == "magnitude" else 0
        self.params = {n: p for n, p in params.items() if p.dim() >= 2}
        self.k = {n: int(round(self.fraction * p.numel())) for n, p in self.params.items()}
        self._gen = torch.Generator().manual_seed(int(seed))
        #: True = kept, False = held at zero
        self.masks: dict[str, torch.Tensor] = {}
        self.fixed = False
        for p in self.params.values():
            p.register_hook(self._grad_hook_for(p))
        if self.warmup_steps == 0:
            self._fix()

    def _grad_hook_for(self, p: nn.Parameter):  # type: ignore[no-untyped-def]
        name = next(n for n, q in self.params.items() if q is p)

        def hook(g: torch.Tensor) -> torch.Tensor:
            m = self.masks.get(name)
            return g if m is None else g * m.to(g.dtype)

        return hook

    def _fix(self) -> None:
        with torch.no_grad():
            for n, p in self.params.items():
                k = self.k[n]
                flat = torch.ones(p.numel(), dtype=torch.bool)
                if k > 0:
                    noise = torch.rand(p.numel(), generator=self._gen)
                    if self.criterion == "magnitude":
                        score = p.detach().abs().flatten().cpu().double() + noise.double() * 1e-12  # ties broken randomly
                    else:
                        score = noise
                    drop = torch.topk(score, k, largest=False).indices
                    flat[drop] = False
                self.masks[n] = flat.view_as(p).to(p.device)
                p.mul_(self.masks[n].to(p.dtype))
        self.fixed = True

    def maybe_fix(self, step: int) -> None:
        """Fix magnitude masks once ``step`` reaches ``warmup_steps`` (no-op otherwise)."""
        if not self.fixed and step >= self.warmup_steps:
            self._fix()

    def enforce(self) -> None:
        """Re-zero masked weights (call after every optimizer step)."""
        if not self.fixed:
            return
        with torch.no_grad():
            for n, p in self.params.items():
                p.mul_(self.masks[n].to(p.dtype))

    def masked_count(self) -> int:
        return sum(self.k.values())


def apply_sparsity(params: dict[str, nn.Parameter], fraction: float, criterion: str, seed: int,
                   warmup_steps: int = 0) -> SparsityMasks:
    return SparsityMasks(params, fraction, criterion, seed, warmup_steps)


def sparsity_masked_count(shapes: Iterable[tuple[int, ...]], fraction: float) -> int:
    total = 0
    for s in shapes:
        if len(s) >= 2:
            n = 1
            for d in s:
                n *= d
            total += int(round(fraction * n))
    return total
