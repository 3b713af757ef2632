"""Search spaces: a YAML declaration, validated, encoded as a flat vector and as Optuna distributions.

A space is a mixed, conditional configuration (see ``search_spaces/README.md`` for the schema).
Binding it to a model depth gives a fixed list of :class:`Dim` dimensions.  Every candidate
encodes to one vector of the same length (inactive dimensions take a neutral value and are
ignored on decode), so a Bayesian-optimisation model sees every dimension; Optuna sees the
same dimensions as distributions (define-by-run, active ones only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from autopeft.candidate import Candidate
from autopeft.errors import SpaceError
from autopeft.methods import get_method, method_names
from autopeft.space_dims import (  # noqa: F401  (Dim and the limits are part of this module's interface)
    _SPARSITY_CRITERION, _SPARSITY_FRACTION, _SPARSITY_WARMUP, MAX_CHOICES, SPEC_KEYS, Dim, _check_keys, _dim, _in_dim,
    _Param, _parse_param, _to_optuna)
from autopeft.space_names import (  # noqa: F401  (TRAINING_KEYS is part of this module's interface)
    TRAINING_KEYS, make_candidate, ours, parse_method, parse_training, training_values, value_of)
from autopeft.yamlio import excerpt

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import BaseTrial

SCHEMA_VERSION = 1
#: bounds on a space (README, search_spaces/README.md): the file's size and the choices of one parameter
MAX_FILE_BYTES = 256 * 1024
TOP_KEYS = ("version", "name", "description", "select", "placement", "methods", "sparsity", "training")
PLACEMENT_KEYS = ("layers",)
SPARSITY_KEYS = ("fraction", "criterion", "warmup_steps")
SUBMODULES = ("q", "k", "v", "o", "ffn_up", "ffn_down")

def _shipped_dir() -> Path:
    """The shipped spaces: ``search_spaces/`` of a source checkout, else the installed package data."""
    here = Path(__file__).resolve().parent.parent / "search_spaces"
    if here.is_dir():
        return here
    # installed from a wheel: the package data sits in autopeft/search_spaces (a namespace package, for which
    # importlib.resources.files() gives a MultiplexedPath whose str() is not a path)
    return Path(__file__).resolve().parent / "search_spaces"


def shipped_spaces() -> list[str]:
    """Names of the spaces shipped with the package."""
    return sorted(p.stem for p in _shipped_dir().glob("*.yaml"))


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
        from autopeft.yamlio import load_yaml

        try:
            data = load_yaml(p, "search space file", MAX_FILE_BYTES)
        except ValueError as exc:
            raise SpaceError(str(exc)) from None
        return cls.from_dict(data, source=str(p), default_name=p.stem)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", default_name: str = "custom") -> "SearchSpace":
        if not isinstance(data, Mapping):
            raise SpaceError(f"{source}: a search space must be a mapping with keys {', '.join(TOP_KEYS)}")
        _check_keys(data, TOP_KEYS, "top level", source)
        version = data.get("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise SpaceError(f"{source}: version must be {SCHEMA_VERSION}, got {excerpt(version)}")
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name:
            raise SpaceError(f"{source}: name must be a non-empty string")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise SpaceError(f"{source}: description must be a string")
        select = data.get("select", "one")
        if select not in ("one", "all"):
            raise SpaceError(f"{source}: select must be 'one' or 'all', got {excerpt(select)}")
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
            raise SpaceError(f"{source}: placement.layers must be 'all', 'per_layer' or a list of layer indices, got {excerpt(layers)}")
        methods_raw = data.get("methods")
        if not isinstance(methods_raw, Mapping) or not methods_raw:
            raise SpaceError(f"{source}: 'methods' is required: a mapping from method name to its settings; known methods: {', '.join(method_names())}")
        methods: dict[str, dict[str, _Param]] = {}
        for mname, block in methods_raw.items():
            if not isinstance(mname, str) or mname not in method_names():
                raise SpaceError(f"{source}: unknown method {excerpt(mname)} under methods; known methods: {', '.join(method_names())}")
            block = block if block is not None else {}
            if not isinstance(block, Mapping):
                raise SpaceError(f"{source}: methods.{mname} must be a mapping of its parameters")
            methods[mname] = parse_method(block, mname, select, source)  # peft's names (aliases, alternatives) too
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
        training = parse_training(data.get("training"), source)
        return cls(name, description, select, layers, methods, sparsity, training, source, dict(data))

    def without_methods(self, names: Sequence[str]) -> "SearchSpace":
        """This space less some methods (e.g. ones a model cannot take); a space left with none is a SpaceError."""
        raw = {**self.raw, "methods": {k: v for k, v in (self.raw.get("methods") or {}).items() if k not in names}}
        if not raw["methods"]:
            raise SpaceError(f"{self.source}: no method of the space is left once {', '.join(names)} is removed")
        return SearchSpace.from_dict(raw, self.source, self.name)

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
            methods[mname] = ours(mname, cfg)
        sparsity = {k: (values[f"sparsity.{k}"] if p.kind is not None else p.value) for k, p in sp.sparsity.items()}
        training = {k: (values[f"training.{k}"] if p.kind is not None else p.value) for k, p in sp.training.items()}
        return make_candidate(methods, layers, sparsity, training)

    def values_of(self, cand: Candidate) -> dict[str, Any]:
        """Dimension values (active ones only) that reproduce ``cand``; inverse of candidate_from_values."""
        sp = self.space
        vals: dict[str, Any] = {}
        methods = cand.methods  # a copy each time it is read: read once
        names = list(methods)
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
            cfg = methods.get(mname)
            for pname, p in sp.methods[mname].items():
                if p.kind is None:
                    continue
                if cfg is None:  # switched off (size 0 under select: all), or no layer left: any valid value
                    v = 0 if (0 in p.choices or (p.kind in ("int", "float") and p.low <= 0)) else (
                        p.choices[0] if p.choices else p.low)
                else:
                    v = value_of(mname, pname, p, cfg)
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
        return {**vals, **training_values(sp.training, cand)}

    # ------------------------------------------------------------------ vectors
    def encode(self, cand: Candidate) -> np.ndarray:
        vals = self.values_of(cand)
        out: list[float] = []  # the dimensions in offset order (one list, one array: a pool encodes thousands)
        for d in self.dims:
            if d.name in vals and self._active(d, vals):
                v = vals[d.name]
                if d.kind in ("int", "float"):
                    v = min(max(v, d.low), d.high)
                elif d.kind in ("cat", "ord") and v not in d.choices:
                    out += d.neutral()
                    continue
                out += d.encode(v)
            else:
                out += d.neutral()
        return np.array(out, dtype=float)

    def decode_values(self, x: Sequence[float]) -> dict[str, Any]:
        if len(x) != self.size:
            raise SpaceError(f"encoded vector has length {len(x)}, the space needs {self.size}")
        xs = x.tolist() if isinstance(x, np.ndarray) else [float(v) for v in x]  # list slices: cheaper than arrays'
        vals: dict[str, Any] = {}
        for d in self.dims:  # method and layer switches come before what depends on them
            o = self.offsets[d.name]
            if self._active(d, vals):
                vals[d.name] = d.decode(xs[o:o + d.width])
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

