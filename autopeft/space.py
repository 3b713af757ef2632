"""Search spaces: a YAML declaration, validated, encoded as a flat vector and as Optuna distributions.

A space is a mixed, conditional configuration (see ``search_spaces/README.md`` for the schema).
Binding it to a model depth gives a fixed list of :class:`Dim` dimensions.  Every candidate
encodes to one vector of the same length (inactive dimensions take a neutral value and are
ignored on decode), so a Bayesian-optimisation model sees every dimension; Optuna sees the
same dimensions as distributions (define-by-run, active ones only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from autopeft.candidate import Candidate
from autopeft.errors import SpaceError
from autopeft.methods import ParamDecl, get_method, method_names

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import BaseTrial

SCHEMA_VERSION = 1
TOP_KEYS = ("version", "name", "description", "select", "placement", "methods", "sparsity", "training")
PLACEMENT_KEYS = ("layers",)
SPARSITY_KEYS = ("fraction", "criterion", "warmup_steps")
TRAINING_KEYS = ("lr_multiplier",)
SPEC_KEYS = ("choices", "int", "float", "log", "per_layer")
SUBMODULES = ("q", "k", "v", "o", "ffn_up", "ffn_down")

def _shipped_dir() -> Path:
    """The shipped spaces: ``search_spaces/`` of a source checkout, else the installed package data."""
    here = Path(__file__).resolve().parent.parent / "search_spaces"
    if here.is_dir():
        return here
    from importlib.resources import files

    return Path(str(files("autopeft.search_spaces")))


def shipped_spaces() -> list[str]:
    """Names of the spaces shipped with the package."""
    return sorted(p.stem for p in _shipped_dir().glob("*.yaml"))


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
        if self.kind == "cat":
            return self.choices[int(np.argmax(x))]
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
            raise SpaceError(f"value {value!r} is not a choice of {self.name}")
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


# ----------------------------------------------------------------------------- the space
@dataclass
class SearchSpace:
    """A validated search space, not yet bound to a model depth."""

    name: str
    description: str
    select: str
    layers: str | list[int]
    methods: dict[str, dict[str, _Param]]
    sparsity: dict[str, _Param]
    training: dict[str, _Param]
    source: str = "<dict>"
    raw: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_path: str | Path) -> "SearchSpace":
        """Load a shipped space by name (e.g. ``lora``) or a YAML file by path."""
        import yaml

        p = Path(name_or_path)
        if p.suffix not in (".yaml", ".yml") and (not p.is_file() or "/" not in str(name_or_path)):
            shipped = _shipped_dir() / f"{name_or_path}.yaml"
            if not shipped.exists():
                raise SpaceError(
                    f"search space {str(name_or_path)!r} is neither a file nor a shipped space; "
                    f"shipped spaces: {', '.join(shipped_spaces())}"
                )
            p = shipped
        if not p.is_file():
            raise SpaceError(f"search space file not found: {p}")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpaceError(f"cannot read search space file {p}: {exc}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f" (line {line + 1})" if line is not None else ""
            raise SpaceError(f"search space file {p} is not valid YAML{where}") from None
        except RecursionError:
            raise SpaceError(f"search space file {p} is nested too deeply") from None
        return cls.from_dict(data, source=str(p), default_name=p.stem)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", default_name: str = "custom") -> "SearchSpace":
        if not isinstance(data, Mapping):
            raise SpaceError(f"{source}: a search space must be a mapping with keys {', '.join(TOP_KEYS)}")
        _check_keys(data, TOP_KEYS, "top level", source)
        version = data.get("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise SpaceError(f"{source}: version must be {SCHEMA_VERSION}, got {version!r}")
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name:
            raise SpaceError(f"{source}: name must be a non-empty string")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise SpaceError(f"{source}: description must be a string")
        select = data.get("select", "one")
        if select not in ("one", "all"):
            raise SpaceError(f"{source}: select must be 'one' or 'all', got {select!r}")
        placement = data.get("placement", {}) or {}
        if not isinstance(placement, Mapping):
            raise SpaceError(f"{source}: placement must be a mapping with key 'layers'")
        _check_keys(placement, PLACEMENT_KEYS, "placement", source)
        layers = placement.get("layers", "all")
        if isinstance(layers, list):
            if not layers or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers):
                raise SpaceError(f"{source}: placement.layers must be 'all', 'per_layer' or a non-empty list of layer indices >= 0")
            layers = sorted(set(layers))
        elif layers not in ("all", "per_layer"):
            raise SpaceError(f"{source}: placement.layers must be 'all', 'per_layer' or a list of layer indices, got {layers!r}")
        methods_raw = data.get("methods")
        if not isinstance(methods_raw, Mapping) or not methods_raw:
            raise SpaceError(f"{source}: 'methods' is required: a mapping from method name to its settings; known methods: {', '.join(method_names())}")
        methods: dict[str, dict[str, _Param]] = {}
        for mname, block in methods_raw.items():
            if not isinstance(mname, str) or mname not in method_names():
                raise SpaceError(f"{source}: unknown method {mname!r} under methods; known methods: {', '.join(method_names())}")
            block = block if block is not None else {}
            if not isinstance(block, Mapping):
                raise SpaceError(f"{source}: methods.{mname} must be a mapping of its parameters")
            method = get_method(mname)
            _check_keys(block, tuple(method.params), f"methods.{mname}", source)
            parsed = {}
            for pname, decl in method.params.items():
                where = f"methods.{mname}.{pname}"
                parsed[pname] = _parse_param(block.get(pname, decl.default), decl, where, source,
                                             allow_zero=(select == "all" and pname == method.size_param))
            methods[mname] = parsed
        peft_methods = [m for m in methods if get_method(m).uses_peft]
        if select == "all" and len(peft_methods) > 1:
            raise SpaceError(
                f"{source}: with select: all, at most one peft-based method may be listed "
                f"(got {', '.join(peft_methods)}); serial_adapter and parallel_adapter combine with any"
            )
        exclusive = [m for m in methods if get_method(m).exclusive]
        if select == "all" and exclusive and len(methods) > 1:
            raise SpaceError(f"{source}: method {exclusive[0]!r} cannot be combined with other methods under select: all")
        sparsity_raw = data.get("sparsity", {}) or {}
        if not isinstance(sparsity_raw, Mapping):
            raise SpaceError(f"{source}: sparsity must be a mapping with keys {', '.join(SPARSITY_KEYS)}")
        _check_keys(sparsity_raw, SPARSITY_KEYS, "sparsity", source)
        sparsity = {
            "fraction": _parse_param(sparsity_raw.get("fraction", 0.0), _SPARSITY_FRACTION, "sparsity.fraction", source),
            "criterion": _parse_param(sparsity_raw.get("criterion", "random"), _SPARSITY_CRITERION, "sparsity.criterion", source),
            "warmup_steps": _parse_param(sparsity_raw.get("warmup_steps", 10), _SPARSITY_WARMUP, "sparsity.warmup_steps", source),
        }
        training_raw = data.get("training", {}) or {}
        if not isinstance(training_raw, Mapping):
            raise SpaceError(f"{source}: training must be a mapping with keys {', '.join(TRAINING_KEYS)}")
        _check_keys(training_raw, TRAINING_KEYS, "training", source)
        training = {
            "lr_multiplier": _parse_param(training_raw.get("lr_multiplier", 1.0), _LR_MULT, "training.lr_multiplier", source),
        }
        return cls(name, description, select, layers, methods, sparsity, training, source, dict(data))

    # ------------------------------------------------------------------ binding
    def dims(self, num_layers: int) -> list[Dim]:
        """The fixed list of searched dimensions for a model with ``num_layers`` layers."""
        if isinstance(self.layers, list) and self.layers[-1] >= num_layers:
            bad = [i for i in self.layers if i >= num_layers]
            raise SpaceError(
                f"{self.source}: placement.layers has layer index {bad[0]}, but the model has "
                f"{num_layers} layers (allowed 0..{num_layers - 1})"
            )
        out: list[Dim] = []
        one = self.select == "one"
        if one and len(self.methods) > 1:
            out.append(Dim("method", "cat", tuple(self.methods)))
        if self.layers == "per_layer":  # switches come before the dimensions that depend on them
            for i in range(num_layers):
                out.append(Dim(f"layer.{i}", "bool"))
        for mname, params in self.methods.items():
            cond = mname if one and len(self.methods) > 1 else None
            for pname, p in params.items():
                if p.kind is None:
                    continue
                if p.per_layer:
                    for i in self.layer_indices(num_layers):
                        out.append(_dim(f"{mname}.{pname}.{i}", p, cond, i if self.layers == "per_layer" else None))
                else:
                    out.append(_dim(f"{mname}.{pname}", p, cond, None))
        for group, params in (("sparsity", self.sparsity), ("training", self.training)):
            for pname, p in params.items():
                if p.kind is not None:
                    out.append(_dim(f"{group}.{pname}", p, None, None))
        return out

    def layer_indices(self, num_layers: int) -> list[int]:
        if isinstance(self.layers, list):
            return list(self.layers)
        return list(range(num_layers))

    def bind(self, num_layers: int) -> "BoundSpace":
        return BoundSpace(self, num_layers)


class BoundSpace:
    """A space bound to a model depth: encode, decode, sample, and talk to Optuna."""

    def __init__(self, space: SearchSpace, num_layers: int) -> None:
        if num_layers < 1:
            raise SpaceError(f"the model must have at least one layer, got {num_layers}")
        self.space = space
        self.num_layers = num_layers
        self.dims = space.dims(num_layers)
        self.by_name = {d.name: d for d in self.dims}
        self.offsets: dict[str, int] = {}
        pos = 0
        for d in self.dims:
            self.offsets[d.name] = pos
            pos += d.width
        self.size = pos

    # ------------------------------------------------------------------ params <-> candidate
    def _active(self, d: Dim, values: Mapping[str, Any]) -> bool:
        if d.method is not None and values.get("method") != d.method:
            return False
        if d.layer is not None and not values.get(f"layer.{d.layer}", True):
            return False
        return True

    def candidate_from_values(self, values: Mapping[str, Any]) -> Candidate:
        """Build the canonical candidate from dimension values (inactive ones may be absent)."""
        sp = self.space
        if sp.select == "one":
            chosen = [values["method"]] if "method" in self.by_name else list(sp.methods)
        else:
            chosen = list(sp.methods)
        if sp.layers == "per_layer":
            layers = [i for i in range(self.num_layers) if values[f"layer.{i}"]]
        else:
            layers = sp.layer_indices(self.num_layers)
        methods: dict[str, dict[str, Any]] = {}
        for mname in chosen:
            cfg: dict[str, Any] = {}
            for pname, p in sp.methods[mname].items():
                if p.kind is None:
                    v = p.value
                    cfg[pname] = [v] * len(layers) if p.per_layer else v
                elif p.per_layer:
                    cfg[pname] = [values[f"{mname}.{pname}.{i}"] for i in layers]
                else:
                    cfg[pname] = values[f"{mname}.{pname}"]
            methods[mname] = cfg
        sparsity = {k: (values[f"sparsity.{k}"] if p.kind is not None else p.value) for k, p in sp.sparsity.items()}
        training = {k: (values[f"training.{k}"] if p.kind is not None else p.value) for k, p in sp.training.items()}
        return Candidate.make(methods, layers, sparsity, training["lr_multiplier"])

    def values_of(self, cand: Candidate) -> dict[str, Any]:
        """Dimension values (active ones only) that reproduce ``cand``; inverse of candidate_from_values."""
        sp = self.space
        vals: dict[str, Any] = {}
        names = list(cand.methods)
        if "method" in self.by_name:
            if len(names) != 1:
                vals["method"] = self.by_name["method"].choices[0]
            else:
                vals["method"] = names[0]
        layer_set = set(cand.layers)
        if sp.layers == "per_layer":
            for i in range(self.num_layers):
                vals[f"layer.{i}"] = i in layer_set
        for mname in sp.methods:
            if "method" in vals and vals["method"] != mname:
                continue
            cfg = cand.methods.get(mname)
            for pname, p in sp.methods[mname].items():
                if p.kind is None:
                    continue
                if cfg is None:  # switched off (size 0 under select: all), or no layer left: any valid value
                    v = 0 if (0 in p.choices or (p.kind in ("int", "float") and p.low <= 0)) else (
                        p.choices[0] if p.choices else p.low)
                else:
                    v = cfg.get(pname)
                if p.per_layer:
                    per = dict(zip(cand.layers, v)) if isinstance(v, list) else {}
                    for i in sp.layer_indices(self.num_layers):
                        if sp.layers == "per_layer" and i not in layer_set:
                            continue
                        vals[f"{mname}.{pname}.{i}"] = per.get(i, p.choices[0] if p.choices else int(p.low))
                else:
                    vals[f"{mname}.{pname}"] = v
        for k, p in sp.sparsity.items():
            if p.kind is not None:
                vals[f"sparsity.{k}"] = cand.sparsity.get(k, p.choices[0] if p.choices else p.low)
        if sp.training["lr_multiplier"].kind is not None:
            vals["training.lr_multiplier"] = cand.lr_multiplier
        return vals

    # ------------------------------------------------------------------ vectors
    def encode(self, cand: Candidate) -> np.ndarray:
        vals = self.values_of(cand)
        x = np.empty(self.size)
        for d in self.dims:
            o = self.offsets[d.name]
            if d.name in vals and self._active(d, vals):
                v = vals[d.name]
                if d.kind in ("int", "float"):
                    v = min(max(v, d.low), d.high)
                elif d.kind in ("cat", "ord") and v not in d.choices:
                    x[o:o + d.width] = d.neutral()
                    continue
                x[o:o + d.width] = d.encode(v)
            else:
                x[o:o + d.width] = d.neutral()
        return x

    def decode_values(self, x: Sequence[float]) -> dict[str, Any]:
        if len(x) != self.size:
            raise SpaceError(f"encoded vector has length {len(x)}, the space needs {self.size}")
        vals: dict[str, Any] = {}
        for d in self.dims:  # method and layer switches come before what depends on them
            o = self.offsets[d.name]
            if self._active(d, vals):
                vals[d.name] = d.decode(x[o:o + d.width])
        return vals

    def decode(self, x: Sequence[float]) -> Candidate:
        return self.candidate_from_values(self.decode_values(x))

    def sample(self, rng: np.random.Generator, n: int = 1) -> list[Candidate]:
        """Uniform random candidates (uniform over each dimension's encoding)."""
        return [self.decode(self.random_vector(rng)) for _ in range(n)]

    def random_vector(self, rng: np.random.Generator) -> np.ndarray:
        return rng.random(self.size)

    # ------------------------------------------------------------------ optuna
    def distributions(self) -> dict[str, BaseDistribution]:
        """Every dimension as an Optuna distribution (the flat, fixed search space; a new dict each call)."""
        return {d.name: d.distribution() for d in self.dims}

    def suggest(self, trial: BaseTrial) -> Candidate:
        """Define-by-run: ask an Optuna trial for the active dimensions, return the candidate.

        Only the public ``suggest_*`` API, with each dimension's own distribution, so a sampler's relative
        plan over :meth:`distributions` answers every suggestion; inactive dimensions are not asked."""
        vals: dict[str, Any] = {}
        for d in self.dims:
            if self._active(d, vals):
                vals[d.name] = d.from_optuna(d.suggest(trial))
        return self.candidate_from_values(vals)

    def candidate_from_params(self, params: Mapping[str, Any]) -> Candidate:
        """The candidate whose Optuna params (see :meth:`optuna_params`) are ``params``, e.g. a past trial's.

        Inverse of :meth:`optuna_params`.  Every active dimension must be present; inactive ones are ignored;
        a name that is no dimension of the space raises :class:`SpaceError`."""
        for k in params:
            if k not in self.by_name:
                raise SpaceError(f"parameter {k!r} is not a dimension of search space {self.space.name!r}")
        vals: dict[str, Any] = {}
        for d in self.dims:  # method and layer switches come before what depends on them
            if not self._active(d, vals):
                continue
            if d.name not in params:
                raise SpaceError(f"parameter {d.name!r} of search space {self.space.name!r} is missing")
            vals[d.name] = d.from_optuna(params[d.name])
        return self.candidate_from_values(vals)

    def optuna_params(self, cand: Candidate) -> dict[str, Any]:
        """The Optuna params (active dimensions) of a candidate, e.g. for ``study.enqueue_trial``."""
        vals = self.values_of(cand)
        return {d.name: _to_optuna(vals[d.name]) for d in self.dims if d.name in vals and self._active(d, vals)}

    def contains(self, cand: Candidate) -> bool:
        """Whether ``cand`` is a point of this space."""
        try:
            return self.candidate_from_values(self.values_of(cand)) == cand and all(
                _in_dim(self.by_name[k], v) for k, v in self.values_of(cand).items() if k in self.by_name
            )
        except (KeyError, ValueError, TypeError, SpaceError):
            return False


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
            raise SpaceError(f"{source}: unknown key {k!r} in {where}; allowed keys: {', '.join(allowed)}")


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
