"""The method plug-in interface: what a PEFT method adds to the space and how it becomes modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

from autopeft.arch import MODULE_ALIASES, SUBMODULES, ArchInfo
from autopeft.errors import SpaceError
from autopeft.yamlio import excerpt

if TYPE_CHECKING:  # type hints only: importing a method (and so the search space) loads no torch
    import torch.nn as nn

    from autopeft.builder import ModelInfo

#: a hand-designed configuration: the method's settings (every parameter) and its layers
Baseline = tuple[dict[str, Any], list[int]]


@dataclass(frozen=True)
class ParamDecl:
    """Declares one parameter of a method block: its type, bounds and default.

    kind: ``int``, ``float``, ``str`` (one of ``options``) or ``targets`` (a non-empty list of
    sub-module names from :data:`autopeft.arch.SUBMODULES`).
    """

    kind: str
    default: Any = None
    low: float | None = None
    high: float | None = None
    exclusive_low: bool = False
    exclusive_high: bool = False
    options: tuple[str, ...] = ()
    per_layer_ok: bool = False

    def check(self, v: Any, where: str, allow_zero: bool = False) -> Any:
        """Validate one value; return it in canonical form, or raise :class:`SpaceError`."""
        if self.kind == "targets":
            if isinstance(v, str):
                v = [s.strip() for s in v.split(",")]
            if not isinstance(v, list) or not v or not all(isinstance(s, str) for s in v):
                raise SpaceError(f"{where} must be a non-empty list of sub-modules from {', '.join(SUBMODULES)}")
            v = [MODULE_ALIASES.get(s, s) for s in v]  # peft's module names (query, q_proj, ...) as ours
            for s in v:
                if s not in SUBMODULES:
                    raise SpaceError(f"{where}: unknown sub-module {excerpt(s)}; allowed: {', '.join(SUBMODULES)} or "
                                     "the model's module names (e.g. query, value, q_proj, v_proj)")
            return [s for s in SUBMODULES if s in v]
        if self.kind == "str":
            if v not in self.options:
                raise SpaceError(f"{where} must be one of {', '.join(self.options)}, got {excerpt(v)}")
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SpaceError(f"{where} must be a number, got {excerpt(v)}")
        if v != v or v in (float("inf"), float("-inf")):
            raise SpaceError(f"{where} must be a finite number, got {excerpt(v)}")
        if self.kind == "int":
            if isinstance(v, float) and not v.is_integer():
                raise SpaceError(f"{where} must be an integer, got {excerpt(v)}")
            v = int(v)
        else:
            v = float(v)
        if allow_zero and v == 0:
            return v
        if self.low is not None and (v < self.low or (self.exclusive_low and v == self.low)):
            op = ">" if self.exclusive_low else ">="
            extra = " (0 switches the method off only under select: all)" if self.low == 1 and v == 0 else ""
            raise SpaceError(f"{where} must be {op} {self.low:g}, got {excerpt(v)}{extra}")
        if self.high is not None and (v > self.high or (self.exclusive_high and v == self.high)):
            op = "<" if self.exclusive_high else "<="
            raise SpaceError(f"{where} must be {op} {self.high:g}, got {excerpt(v)}")
        return v


@dataclass(frozen=True)
class AltParam:
    """A parameter a space may give instead of one of ours, under a name users know (peft's ``lora_alpha`` for
    LoRA's ``alpha_ratio``).  Candidates keep ours: the space converts when it builds a candidate and back when it
    reads one, so a search on this name models it directly while the candidate format stays the same.

    ``replaces``: our parameter; ``decl``: its own type and bounds; ``depends_on``: the parameter of ours that the
    conversions read (the space refuses this name when that one is searched per layer); ``meaning``: the relation, for
    messages; ``to_ours(value, cfg)`` and ``from_ours(ours, cfg)``: the conversions, given the method's other settings.
    """

    name: str
    replaces: str
    decl: ParamDecl
    depends_on: str
    meaning: str
    to_ours: Callable[[float, Mapping[str, Any]], float]
    from_ours: Callable[[float, Mapping[str, Any]], float]


class PeftMethod:
    """Base class of a method plug-in. Subclasses register with :func:`autopeft.methods.register_method`.

    A method declares its YAML parameters (``params``), whether it sits on the chosen layers
    (``uses_layers``), whether it is built by HF peft (``uses_peft``; at most one per candidate),
    whether it excludes every other method (``exclusive``), trains the whole base model
    (``trains_base``: the head is then no group of its own) or may be masked by sparsity
    (``sparsifiable``), its default learning rate, and functions of a candidate's settings: the
    shapes of the tensors it trains (exact parameter counting with no model), how to build it,
    how deep backward goes, its extra cost features for the sampler and its hand-designed baselines.
    The core asks these hooks and never a method's name, so a new method is one module.
    """

    name: ClassVar[str]
    uses_peft: ClassVar[bool] = False
    uses_layers: ClassVar[bool] = True
    #: cannot be combined with any other method in a candidate
    exclusive: ClassVar[bool] = False
    #: trains every weight of the base model, head included
    trains_base: ClassVar[bool] = False
    #: sparsity masks may apply to this method's weight matrices (every method declares it)
    sparsifiable: ClassVar[bool]
    #: how many values :meth:`cost_features` returns
    n_cost_features: ClassVar[int] = 0
    #: parameter whose value 0 switches the method off (only under ``select: all``)
    size_param: ClassVar[str | None] = None
    default_lr: ClassVar[float]
    params: ClassVar[dict[str, ParamDecl]] = {}
    #: other names a space may give a parameter (peft's own: ``target_modules``, ``lora_dropout``) -> ours
    aliases: ClassVar[dict[str, str]] = {}
    #: parameters a space may give instead of one of ours, converted (peft's ``lora_alpha`` for ``alpha_ratio``)
    alt_params: ClassVar[tuple[AltParam, ...]] = ()

    def param_shapes(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[tuple[int, ...]]:
        """Shapes of every tensor this method trains, in any order."""
        raise NotImplementedError  # abstract: every registered method overrides it

    def peft_config(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo, head: list[str]) -> Any:
        """A ``peft.PeftConfig`` (only for ``uses_peft`` methods)."""
        raise NotImplementedError  # abstract: overridden by peft-based methods

    def apply(self, model: nn.Module, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[nn.Parameter]:
        """Insert the method's own modules into ``model`` (only for non-peft methods); return new params."""
        raise NotImplementedError  # abstract: overridden by non-peft methods

    def unsupported(self, info: ModelInfo) -> str | None:
        """Why this method cannot be applied to the model, or ``None`` if it can."""
        return None

    def trainable_count(self, cfg: dict[str, Any], layers: Sequence[int], info: ModelInfo) -> int | None:
        """Exact trainable count when it does not follow from :meth:`param_shapes`; ``None``: count the shapes."""
        return None

    def backprop_depth(self, cfg: dict[str, Any], layers: Sequence[int], num_layers: int) -> float:
        """Fraction of the network (from the top) that the backward pass goes through for this method."""
        if self.uses_layers and layers:
            return (num_layers - min(layers)) / num_layers
        return 0.0

    def cost_features(self, cfg: dict[str, Any], layer_fraction: float) -> list[float]:
        """Method-specific features (``n_cost_features`` of them) of the sampler's memory/time model."""
        return []

    def baselines(self, num_layers: int) -> dict[str, Baseline]:
        """Hand-designed configurations of this method: name -> (settings with every parameter, layers)."""
        return {}

    def summary(self, cfg: dict[str, Any]) -> str:
        """A short human-readable description, e.g. ``lora r=8 [q,v]``."""
        parts = []
        for k, v in cfg.items():
            if isinstance(v, list) and v and isinstance(v[0], str):
                parts.append(f"[{','.join(v)}]")
            elif k == self.size_param or k in ("r", "size", "length"):
                parts.append(f"{k}={v if not isinstance(v, list) else '/'.join(map(str, v))}")
        return f"{self.name} {' '.join(parts)}".strip()


def target_regex(arch: ArchInfo, layers: Sequence[int], targets: Sequence[str]) -> str:
    """A peft ``target_modules`` regex (full match) for these sub-modules on these layers only; on a model with two
    stacks (T5), one alternative per stack that has chosen layers, a decoder layer's cross-attention modules included."""
    import re

    parts = []
    for st, start in arch.spans():
        lay = "|".join(str(i - start) for i in layers if start <= i < start + st.depth)
        names, also = dict(st.names), dict(st.also)
        subs = "|".join(re.escape(n) for t in targets for n in (names[t], *([also[t]] if t in also else [])))
        if lay or (not parts and start + st.depth == arch.num_layers):  # one stack: its pattern even for no layers
            parts.append(rf"{re.escape(st.path)}\.({lay})\.({subs})")
    return rf"(.*\.)?{parts[0]}" if len(parts) == 1 else rf"(.*\.)?({'|'.join(parts)})"
