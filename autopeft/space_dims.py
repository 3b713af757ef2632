"""The parts a search space is made of: :class:`Dim` (one searched dimension: encoding, decoding, its Optuna
distribution) and the parsing of one YAML parameter into a fixed value or a dimension template, with exact messages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence


from autopeft.errors import SpaceError
from autopeft.methods import ParamDecl
from autopeft.yamlio import excerpt

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import BaseTrial

SPEC_KEYS = ("choices", "int", "float", "log", "per_layer")
#: the most choices one parameter may list (use a range beyond)
MAX_CHOICES = 1000


# ----------------------------------------------------------------------------- dimensions
@dataclass(frozen=True)
class Dim:
    """One searched dimension.

    ``kind``: ``cat`` (one-hot encoded choices), ``ord`` (numeric choices, encoded by index),
    ``int``/``float`` (ranges, optionally log-scaled) or ``bool`` (a layer switch).
    ``method``: active only when that method is selected (``select: one``); ``layer``: active only
    when that layer's switch is on.
    """

    name: str
    kind: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    method: str | None = None
    layer: int | None = None

    @property
    def width(self) -> int:
        return len(self.choices) if self.kind == "cat" else 1

    def distribution(self) -> BaseDistribution:
        import optuna.distributions as od

        if self.kind in ("cat", "ord"):
            return od.CategoricalDistribution([_to_optuna(c) for c in self.choices])
        if self.kind == "bool":
            return od.CategoricalDistribution([False, True])
        if self.kind == "int":
            return od.IntDistribution(int(self.low), int(self.high), log=self.log)
        return od.FloatDistribution(self.low, self.high, log=self.log)

    def encode(self, value: Any) -> list[float]:
        """Map a value to its slice of the unit-cube encoding."""
        if self.kind == "cat":
            out = [0.0] * len(self.choices)
            out[self.choices.index(value)] = 1.0
            return out
        if self.kind == "ord":
            n = len(self.choices)
            return [self.choices.index(value) / (n - 1) if n > 1 else 0.5]
        if self.kind == "bool":
            return [1.0 if value else 0.0]
        if self.high == self.low:
            return [0.5]
        if self.log:
            return [(math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))]
        return [(value - self.low) / (self.high - self.low)]

    def neutral(self) -> list[float]:
        """Encoding of an inactive dimension."""
        return [0.0] * self.width if self.kind == "cat" else [0.5]

    def decode(self, x: Sequence[float]) -> Any:
        """Inverse of :meth:`encode` for any point of the unit cube (argmax / rounding)."""
        if self.kind == "cat":  # the first largest, as numpy's argmax
            return self.choices[max(range(len(x)), key=x.__getitem__)]
        u = min(max(float(x[0]), 0.0), 1.0)
        if self.kind == "ord":
            return self.choices[int(round(u * (len(self.choices) - 1)))]
        if self.kind == "bool":
            return u >= 0.5
        if self.log:
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        if self.kind == "int":
            return int(min(max(round(v), self.low), self.high))
        return float(v)

    def suggest(self, trial: BaseTrial) -> Any:
        """Ask ``trial`` for this dimension through Optuna's public API (the value in Optuna's form)."""
        if self.kind in ("cat", "ord"):
            return trial.suggest_categorical(self.name, [_to_optuna(c) for c in self.choices])
        if self.kind == "bool":
            return trial.suggest_categorical(self.name, [False, True])
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def from_optuna(self, value: Any) -> Any:
        """Inverse of :func:`_to_optuna` for this dimension: an Optuna param value -> the dimension's value."""
        if self.kind in ("cat", "ord"):
            for c in self.choices:
                if _to_optuna(c) == value:
                    return c
            raise SpaceError(f"value {excerpt(value)} is not a choice of {self.name}")
        return value


def _to_optuna(value: Any) -> Any:
    """Optuna categorical choices must be scalars: lists become comma-joined strings."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


@dataclass(frozen=True)
class _Param:
    """A method parameter from YAML: fixed (``value``) or searched (``dim`` template)."""

    name: str
    value: Any = None
    kind: str | None = None  # None: fixed
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    per_layer: bool = False


def _in_dim(d: Dim, v: Any) -> bool:
    if d.kind in ("cat", "ord"):
        return v in d.choices
    if d.kind == "bool":
        return isinstance(v, bool)
    return d.low <= v <= d.high


# ----------------------------------------------------------------------------- param parsing
_SPARSITY_FRACTION = ParamDecl("float", default=0.0, low=0.0, high=0.99)
_SPARSITY_CRITERION = ParamDecl("str", default="random", options=("random", "magnitude"))
_SPARSITY_WARMUP = ParamDecl("int", default=10, low=0)
_LR_MULT = ParamDecl("float", default=1.0, low=1e-3, high=1e3, exclusive_low=True)


def _check_keys(block: Mapping[Any, Any], allowed: Iterable[str], where: str, source: str) -> None:
    allowed = tuple(allowed)
    for k in block:
        if k not in allowed:
            raise SpaceError(f"{source}: unknown key {excerpt(k)} in {where}; allowed keys: {', '.join(allowed)}")


def _parse_param(raw: Any, decl: ParamDecl, where: str, source: str, allow_zero: bool = False) -> _Param:
    name = where.rsplit(".", 1)[-1]
    if isinstance(raw, Mapping):
        _check_keys(raw, SPEC_KEYS, where, source)
        kinds = [k for k in ("choices", "int", "float") if k in raw]
        if len(kinds) != 1:
            raise SpaceError(f"{source}: {where} needs exactly one of 'choices', 'int' or 'float'")
        per_layer = raw.get("per_layer", False)
        if not isinstance(per_layer, bool):
            raise SpaceError(f"{source}: {where}.per_layer must be true or false")
        if per_layer and not decl.per_layer_ok:
            raise SpaceError(f"{source}: {where} cannot be searched per layer")
        allow_zero = allow_zero and not per_layer
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise SpaceError(f"{source}: {where}.log must be true or false")
        kind = kinds[0]
        if kind == "choices":
            if log:
                raise SpaceError(f"{source}: {where}: 'log' applies to 'int' and 'float' ranges, not to 'choices'")
            choices = raw["choices"]
            if not isinstance(choices, list) or not choices:
                raise SpaceError(f"{source}: {where}.choices must be a non-empty list")
            if len(choices) > MAX_CHOICES:
                raise SpaceError(f"{source}: {where}.choices has {len(choices)} entries, at most {MAX_CHOICES} are allowed; "
                                 "use an int or float range")
            vals = tuple(decl.check(c, f"{source}: {where}", allow_zero) for c in choices)
            if len(set(map(repr, vals))) != len(vals):
                raise SpaceError(f"{source}: {where}.choices has duplicates")
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
            if numeric:
                vals = tuple(sorted(vals))
            return _Param(name, kind="ord" if numeric else "cat", choices=vals, per_layer=per_layer)
        if decl.kind not in ("int", "float") or (kind == "float" and decl.kind == "int"):
            raise SpaceError(f"{source}: {where} takes {decl.kind} values; use 'choices'" if decl.kind not in ("int", "float")
                             else f"{source}: {where} is an integer: use 'int: [low, high]'")
        rng = raw[kind]
        if (not isinstance(rng, list) or len(rng) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
                or (kind == "int" and not all(isinstance(v, int) for v in rng))):
            raise SpaceError(f"{source}: {where}.{kind} must be a list [low, high] of {'integers' if kind == 'int' else 'numbers'}")
        low, high = rng
        decl.check(low, f"{source}: {where} low", allow_zero)
        decl.check(high, f"{source}: {where} high", allow_zero)
        if low > high:
            raise SpaceError(f"{source}: {where}.{kind}: low {low} is greater than high {high}")
        if log and low <= 0:
            raise SpaceError(f"{source}: {where}: a log range needs low > 0, got {low}")
        return _Param(name, kind=kind, low=float(low) if kind == "float" else low,
                      high=float(high) if kind == "float" else high, log=log, per_layer=per_layer)
    return _Param(name, value=decl.check(raw, f"{source}: {where}", allow_zero))


def _dim(name: str, p: _Param, method: str | None, layer: int | None) -> Dim:
    if p.kind in ("cat", "ord"):
        return Dim(name, p.kind, p.choices, method=method, layer=layer)
    return Dim(name, p.kind, low=p.low, high=p.high, log=p.log, method=method, layer=layer)  # type: ignore[arg-type]
