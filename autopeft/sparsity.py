"""Fixed sparsity masks on PEFT weight matrices (SparseAdapter / DSEE style).

In every masked tensor (ndim >= 2; vectors such as biases, IA3 scales and DoRA magnitudes stay
dense) exactly ``k = round(fraction * numel)`` entries are held at zero, so the effective trainable
count is known before training.  ``random`` masks are drawn at creation.  ``magnitude`` masks keep
the largest-|w| entries; because LoRA B and adapter up-projections start at zero, they are fixed
after ``warmup_steps`` dense steps (0 = at once, ties broken randomly).  Gradients of masked
entries are zeroed by tensor hooks and :meth:`SparsityMasks.enforce` re-zeroes the weights after
each optimizer step, so AdamW's momentum and weight decay cannot revive them.

Typical loop::

    masks = apply_sparsity(dict(trainable), 0.5, "magnitude", seed=0, warmup_steps=10)
    for step in range(n):
        loss.backward(); opt.step(); opt.zero_grad()
        masks.maybe_fix(step + 1)
        masks.enforce()
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Literal, Mapping

import torch
import torch.nn as nn

from autopeft.errors import ConfigError

CRITERIA: tuple[str, ...] = ("random", "magnitude")


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise ConfigError(f"sparsity fraction must be a number in [0, 1), got {fraction!r}")
    return float(fraction)


def _k(fraction: float, numel: int) -> int:
    return int(round(fraction * numel))


class SparsityMasks:
    """Masks on the ndim >= 2 tensors of ``params``; ``masks[name]`` is a bool tensor, True = kept, False = held at 0."""

    def __init__(self, params: Mapping[str, nn.Parameter], fraction: float,
                 criterion: Literal["random", "magnitude"], seed: int, warmup_steps: int = 0) -> None:
        self.fraction = _check_fraction(fraction)
        if criterion not in CRITERIA:
            raise ConfigError(f"sparsity criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ConfigError(f"sparsity warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"sparsity seed must be an integer, got {seed!r}")
        self.criterion = criterion
        self.warmup_steps = warmup_steps if criterion == "magnitude" else 0
        self.params: dict[str, nn.Parameter] = {n: p for n, p in params.items() if p.dim() >= 2}
        self.k: dict[str, int] = {n: _k(self.fraction, p.numel()) for n, p in self.params.items()}
        self._gen = torch.Generator().manual_seed(seed)
        #: name -> bool mask (True = kept); empty until the masks are fixed
        self.masks: dict[str, torch.Tensor] = {}
        self.fixed = False
        for n, p in self.params.items():
            if p.requires_grad and self.k[n] > 0:
                p.register_hook(self._grad_hook(n))
        if self.warmup_steps == 0:
            self._fix()

    def _mask(self, name: str, device: torch.device) -> torch.Tensor:
        """The mask on ``device`` (follows the parameter if the model was moved after creation)."""
        m = self.masks[name]
        if m.device != device:
            m = self.masks[name] = m.to(device)
        return m

    def _grad_hook(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def hook(g: torch.Tensor) -> torch.Tensor:
            if name not in self.masks:
                return g
            return g.masked_fill(~self._mask(name, g.device), 0)

        return hook

    def _fix(self) -> None:
        """Choose the masks (random, or smallest |w| with random tie-breaks) and zero the masked weights."""
        with torch.no_grad():
            for n, p in self.params.items():
                k, numel = self.k[n], p.numel()
                keep = torch.ones(numel, dtype=torch.bool)
                if k > 0:
                    perm = torch.randperm(numel, generator=self._gen)
                    if self.criterion == "random":
                        drop = perm[:k]
                    else:  # stable sort of a random permutation: equal magnitudes are ordered randomly
                        mag = p.detach().abs().flatten().float().cpu()[perm]
                        drop = perm[torch.sort(mag, stable=True).indices[:k]]
                    keep[drop] = False
                self.masks[n] = keep.view(p.shape).to(p.device)
                p.masked_fill_(~self.masks[n], 0)
        self.fixed = True

    def maybe_fix(self, step: int) -> None:
        """Fix the masks once ``step`` (optimizer steps done) reaches ``warmup_steps``; no-op otherwise."""
        if not self.fixed and step >= self.warmup_steps:
            self._fix()

    def enforce(self) -> None:
        """Re-zero masked weights (call after every optimizer step); no-op before the masks are fixed."""
        if not self.fixed:
            return
        with torch.no_grad():
            for n, p in self.params.items():
                if self.k[n] > 0:
                    p.masked_fill_(~self._mask(n, p.device), 0)

    def masked_count(self) -> int:
        """Total number of masked entries (known before the masks are fixed)."""
        return sum(self.k.values())


def apply_sparsity(params: Mapping[str, nn.Parameter], fraction: float, criterion: Literal["random", "magnitude"],
                   seed: int, warmup_steps: int = 0) -> SparsityMasks:
    """Create :class:`SparsityMasks` on ``params`` (random masks, and magnitude ones with ``warmup_steps=0``, apply at once)."""
    return SparsityMasks(params, fraction, criterion, seed, warmup_steps)


def sparsity_masked_count(shapes: Iterable[tuple[int, ...]], fraction: float) -> int:
    """Analytic :meth:`SparsityMasks.masked_count` from tensor shapes (ndim < 2 stays dense)."""
    frac = _check_fraction(fraction)
    return sum(_k(frac, math.prod(s)) for s in shapes if len(s) >= 2)
