"""Bottleneck adapters (peft has none): serial (Houlsby et al. 2019, AutoPEFT's SA) after the attention
output and FFN output projections, and parallel (He et al. 2022, AutoPEFT's PA) beside each FFN.

Adapters are real sub-modules (an ``nn.ModuleDict`` named ``autopeft_adapters`` on each transformer
layer, keys ``serial_o``, ``serial_ffn``, ``parallel``), so ``parameters()``, ``state_dict()`` and
``.to()`` see them.  They act through forward hooks on the projections:

- serial: ``out = out + adapter(out)`` on the outputs of ``o`` and ``ffn_down`` (before BERT's
  dropout / residual / LayerNorm);
- parallel: ``ffn_down_out + adapter(ffn_in)``, ``ffn_in`` being the input of ``ffn_up``.

They work whether added before or after ``peft.get_peft_model``.  A hook always sits on whatever
module is *currently* at the projection's path (re-checked at every layer forward), so when peft
wraps that projection (LoRA / DoRA / IA3 on ``o`` or ``ffn_down``) the adapter sees the wrapped
output in both orders.  ``get_peft_model`` freezes every parameter it did not create, adapters
included: re-enable them afterwards, e.g. ``for p in adapter_parameters(model): p.requires_grad_(True)``.

Hooks are callable objects (not closures), so ``copy.deepcopy`` and pickling of a model keep each
copy's hooks pointing at that copy's adapters.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn as nn

from autopeft.arch import ArchInfo
from autopeft.errors import ConfigError

#: Attribute name of the ``nn.ModuleDict`` holding a layer's adapters.
ATTR = "autopeft_adapters"
KINDS: tuple[str, ...] = ("serial", "parallel")

# kind -> (ModuleDict key, abstract sub-module whose output the adapter modifies)
_SERIAL_SITES: tuple[tuple[str, str], ...] = (("serial_o", "o"), ("serial_ffn", "ffn_down"))


class BottleneckAdapter(nn.Module):
    """``scaling * up(relu(down(x)))`` (the delta only); ``up`` starts at zero, so a new adapter is a no-op."""

    def __init__(self, hidden: int, size: int, scaling: float = 1.0) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scaling = float(scaling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.down.weight.dtype
        y = self.scaling * self.up(torch.relu(self.down(x.to(dtype))))
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"scaling={self.scaling}"


# ----------------------------------------------------------------------------------------------- hooks


class _Hook:
    """A forward (pre-)hook kept on whichever module currently sits at ``path`` inside one layer."""

    pre: bool = False

    def __init__(self, path: str) -> None:
        self.path = path
        self.current: nn.Module | None = None

    def bind(self, layer: nn.Module) -> None:
        """Attach to the module now at ``path`` (once); hooks left on former modules become no-ops."""
        m = layer.get_submodule(self.path)
        if m is self.current:
            return
        hooks = m._forward_pre_hooks if self.pre else m._forward_hooks
        if not any(h is self for h in hooks.values()):
            if self.pre:
                m.register_forward_pre_hook(self)
            else:
                m.register_forward_hook(self)
        self.current = m


class _SerialHook(_Hook):
    def __init__(self, path: str, adapter: BottleneckAdapter) -> None:
        super().__init__(path)
        self.adapter = adapter

    def __call__(self, module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor | None:
        if module is not self.current:
            return None
        return out + self.adapter(out)


class _Stash:
    """The FFN input, held from ``ffn_up``'s pre-hook until ``ffn_down``'s hook uses it."""

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None


class _ParallelIn(_Hook):
    pre = True

    def __init__(self, path: str, stash: _Stash) -> None:
        super().__init__(path)
        self.stash = stash

    def __call__(self, module: nn.Module, args: Any) -> None:
        if module is self.current:
            self.stash.x = args[0]


class _ParallelOut(_Hook):
    def __init__(self, path: str, adapter: BottleneckAdapter, stash: _Stash) -> None:
        super().__init__(path)
        self.adapter = adapter
        self.stash = stash

    def __call__(self, module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor | None:
        if module is not self.current:
            return None
        x, self.stash.x = self.stash.x, None  # release the activation as soon as it is used
        if x is None:
            raise RuntimeError(f"parallel adapter at {self.path!r}: the FFN input was not seen in this forward")
        return out + self.adapter(x)


class _Rebind:
    """Layer forward pre-hook: re-binds the layer's adapter hooks (peft may have replaced projections)."""

    def __init__(self) -> None:
        self.hooks: list[_Hook] = []

    def __call__(self, layer: nn.Module, args: Any) -> None:
        for h in self.hooks:
            h.bind(layer)


def _rebinder(layer: nn.Module) -> _Rebind:
    for h in layer._forward_pre_hooks.values():
        if isinstance(h, _Rebind):
            return h
    rb = _Rebind()
    layer.register_forward_pre_hook(rb)
    return rb


# ----------------------------------------------------------------------------------------------- API


def _unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a peft wrapper (``PeftModel`` or a tuner), else ``model``."""
    peft = sys.modules.get("peft")
    if peft is None:
        return model
    if isinstance(model, peft.PeftModel):
        return model.get_base_model()
    from peft.tuners.tuners_utils import BaseTuner

    if isinstance(model, BaseTuner):
        return model.model
    return model


def _place(weight: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of a new adapter: the projection's, but float32 for half-precision bases."""
    dtype = weight.dtype if weight.dtype.is_floating_point else torch.float32
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    return weight.device, dtype


def _check(kind: str, size: int, scaling: float, layers: Sequence[int], num_layers: int) -> None:
    if kind not in KINDS:
        raise ConfigError(f"adapter kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"adapter size (bottleneck dimension) must be an integer >= 1, got {size!r}")
    if isinstance(scaling, bool) or not isinstance(scaling, (int, float)) or not math.isfinite(scaling) or scaling <= 0:
        raise ConfigError(f"adapter scaling must be a finite number > 0, got {scaling!r}")
    seen: set[int] = set()
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_layers:
            raise ConfigError(f"adapter layer index {i!r} is out of range (allowed 0..{num_layers - 1})")
        if i in seen:
            raise ConfigError(f"adapter layer index {i} is listed twice")
        seen.add(i)


def add_bottleneck_adapters(model: nn.Module, arch: ArchInfo, kind: Literal["serial", "parallel"], size: int,
                            layers: Sequence[int], scaling: float = 1.0) -> list[nn.Parameter]:
    """Insert ``serial`` or ``parallel`` adapters of bottleneck ``size`` on ``layers``; return their (trainable) parameters.

    ``model`` may be a plain Hugging Face model or already wrapped by ``peft.get_peft_model``.
    """
    layers = list(layers)
    _check(kind, size, scaling, layers, arch.num_layers)
    hf = _unwrap(model)
    keys = [k for k, _ in _SERIAL_SITES] if kind == "serial" else ["parallel"]
    for i in layers:  # validate everything before changing anything
        box = getattr(arch.layer_module(hf, i), ATTR, None)
        if box is not None and any(k in box for k in keys):
            raise ConfigError(f"layer {i} already has a {kind} adapter")
    params: list[nn.Parameter] = []
    for i in layers:
        layer = arch.layer_module(hf, i)
        if not hasattr(layer, ATTR):
            layer.add_module(ATTR, nn.ModuleDict())
        box: nn.ModuleDict = getattr(layer, ATTR)
        rb = _rebinder(layer)
        new: list[tuple[str, BottleneckAdapter, str]] = []
        sites = _SERIAL_SITES if kind == "serial" else (("parallel", "ffn_down"),)
        for key, sub in sites:
            device, dtype = _place(arch.sub_module(hf, i, sub).weight)
            ad = BottleneckAdapter(arch.hidden_size, size, scaling).to(device=device, dtype=dtype)
            ad.train(layer.training)
            box[key] = ad
            new.append((key, ad, sub))
        for key, ad, sub in new:
            names = arch.names_at(i)  # a T5 decoder layer's FFN is layer.2, an encoder layer's layer.1
            if kind == "serial":
                hooks: list[_Hook] = [_SerialHook(names[sub], ad)]
            else:
                stash = _Stash()
                hooks = [_ParallelIn(names["ffn_up"], stash), _ParallelOut(names["ffn_down"], ad, stash)]
            for h in hooks:
                h.bind(layer)
                rb.hooks.append(h)
            params += list(ad.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def adapter_param_count(hidden: int, size: int, kind: str, n_layers: int) -> int:
    """Exact parameter count of ``kind`` adapters of bottleneck ``size`` on ``n_layers`` layers."""
    if kind not in KINDS:
        raise ConfigError(f"adapter kind must be one of {', '.join(KINDS)}, got {kind!r}")
    per = 2 * hidden * size + size + hidden
    return n_layers * per * (2 if kind == "serial" else 1)


def _is_adapter_name(name: str) -> bool:
    return ATTR in name.split(".")


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All bottleneck-adapter parameters of ``model`` (wrapped by peft or not), found by the ``autopeft_adapters`` name."""
    return [p for n, p in model.named_parameters() if _is_adapter_name(n)]


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter weights only (detached copies), named relative to the Hugging Face model (any peft wrapper stripped)."""
    hf = _unwrap(model)
    return {n: t.detach().clone() for n, t in hf.state_dict().items() if _is_adapter_name(n)}


def load_adapter_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Load :func:`adapter_state_dict` output into a model carrying the same adapters (strict)."""
    hf = _unwrap(model)
    own = {n: t for n, t in hf.state_dict(keep_vars=True).items() if _is_adapter_name(n)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]!r})")
        raise ConfigError("adapter state dict does not match the model's adapters: " + "; ".join(parts))
    for n, t in own.items():
        if tuple(sd[n].shape) != tuple(t.shape):
            raise ConfigError(f"adapter weight {n!r} has shape {tuple(sd[n].shape)}, the model expects {tuple(t.shape)}")
    with torch.no_grad():
        for n, t in own.items():
            t.copy_(sd[n])
