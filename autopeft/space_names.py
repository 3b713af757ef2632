"""Names users know, in a search space: a method's alternative parameters (:class:`autopeft.methods.AltParam`, e.g.
peft's ``lora_alpha`` for LoRA's ``alpha_ratio``) and ``training.learning_rate`` for ``training.lr_multiplier``.

A space searches the name it is given (its dimension carries that name, so a sampler models it directly); candidates
keep ours.  The conversions run when the space builds a candidate from dimension values and back when it reads a
candidate's values, snapped onto the dimension so that encode/decode, Optuna params and ``contains`` round trips hold
through :class:`~autopeft.candidate.Candidate`'s rounding to 6 significant digits.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from autopeft.candidate import Candidate
from autopeft.errors import SpaceError
from autopeft.methods import ParamDecl, base_learning_rate, get_method
from autopeft.space_dims import _LR_MULT, _check_keys, _Param, _parse_param

TRAINING_KEYS = ("lr_multiplier", "learning_rate")
_LEARNING_RATE = ParamDecl("float", low=0.0, high=1.0, exclusive_low=True)
#: a value converted back from a candidate's rounded numbers lies this close (relative) to the one the space gave
_SNAP = 1e-5


def parse_method(block: Mapping[str, Any], mname: str, select: str, source: str) -> dict[str, _Param]:
    """One ``methods.<name>`` block, parsed: peft's aliases renamed to ours, an alternative parameter kept under its
    own name (in the place of the parameter it replaces), every other parameter at its default when not given."""
    method = get_method(mname)
    for alias, canon in method.aliases.items():  # peft's names for our parameters
        if alias in block:
            if canon in block:
                raise SpaceError(f"{source}: methods.{mname} gives both {alias} and {canon}; they are one "
                                 "parameter, keep one")
            block = {(canon if k == alias else k): v for k, v in block.items()}
    alts = {a.replaces: a for a in method.alt_params if a.name in block}
    for a in alts.values():
        if a.replaces in block:
            raise SpaceError(f"{source}: methods.{mname} gives both {a.name} and {a.replaces} ({a.meaning}); keep one")
    _check_keys(block, (*method.params, *(a.name for a in method.alt_params)), f"methods.{mname}", source)
    parsed: dict[str, _Param] = {}
    for pname, decl in method.params.items():
        if pname in alts:
            a = alts[pname]
            parsed[a.name] = _parse_param(block[a.name], a.decl, f"methods.{mname}.{a.name}", source)
        else:
            parsed[pname] = _parse_param(block.get(pname, decl.default), decl, f"methods.{mname}.{pname}", source,
                                         allow_zero=(select == "all" and pname == method.size_param))
    for a in alts.values():
        dep = parsed.get(a.depends_on)
        if dep is not None and dep.per_layer:
            raise SpaceError(f"{source}: methods.{mname}.{a.name} does not take a per-layer {a.depends_on}; give "
                             f"{a.replaces} there ({a.meaning})")
    return parsed


def parse_training(raw: Any, source: str) -> dict[str, _Param]:
    """The ``training`` block: ``lr_multiplier`` (default 1) or ``learning_rate``, not both."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise SpaceError(f"{source}: training must be a mapping with keys {', '.join(TRAINING_KEYS)}")
    _check_keys(raw, TRAINING_KEYS, "training", source)
    if "learning_rate" in raw:
        if "lr_multiplier" in raw:
            raise SpaceError(f"{source}: training gives both learning_rate and lr_multiplier; keep one "
                             "(learning_rate is the rate of the candidate's method, lr_multiplier multiplies each "
                             "method's default rate)")
        return {"learning_rate": _parse_param(raw["learning_rate"], _LEARNING_RATE, "training.learning_rate", source)}
    return {"lr_multiplier": _parse_param(raw.get("lr_multiplier", 1.0), _LR_MULT, "training.lr_multiplier", source)}


def ours(mname: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """A method's settings from dimension values, in the candidate's names (alternatives converted), in its order."""
    method = get_method(mname)
    for a in method.alt_params:
        if a.name in cfg:
            cfg[a.replaces] = a.to_ours(cfg.pop(a.name), cfg)
    return {k: cfg[k] for k in method.params if k in cfg}


def value_of(mname: str, pname: str, p: _Param, cfg: Mapping[str, Any]) -> Any:
    """The value of the space's parameter ``pname`` in a candidate's settings ``cfg``: its own, or converted back."""
    for a in get_method(mname).alt_params:
        if a.name == pname:
            return snap(p, a.from_ours(cfg[a.replaces], cfg))
    return cfg.get(pname)


def make_candidate(methods: Mapping[str, Mapping[str, Any]], layers: Sequence[int], sparsity: Mapping[str, Any],
                   training: Mapping[str, Any]) -> Candidate:
    """The candidate of these settings; a learning rate becomes the multiplier of the rate it sets (see
    :func:`autopeft.methods.base_learning_rate`) for the methods left once switched-off ones drop out."""
    if "learning_rate" not in training:
        return Candidate.make(methods, layers, sparsity, training["lr_multiplier"])
    base = base_learning_rate(Candidate.make(methods, layers, sparsity).methods)
    return Candidate.make(methods, layers, sparsity, training["learning_rate"] / base)


def training_values(training: Mapping[str, _Param], cand: Candidate) -> dict[str, Any]:
    """The searched ``training.*`` dimension values of ``cand``."""
    out: dict[str, Any] = {}
    for k, p in training.items():
        if p.kind is not None:
            lr = cand.lr_multiplier
            out[f"training.{k}"] = lr if k == "lr_multiplier" else snap(p, lr * base_learning_rate(cand.methods))
    return out


def snap(p: _Param, v: float) -> Any:
    """``v``, converted back from a candidate's rounded numbers, onto dimension ``p``: the nearest choice or a range's
    bound when that close to it, an integer for an int range; a value further off stays as it is (no point of ``p``)."""
    if p.kind == "int":
        return int(round(v))
    near: Any = v
    if p.kind == "ord":
        near = min(p.choices, key=lambda c: abs(c - v))
    elif p.kind == "float":
        near = min(max(v, p.low), p.high)
    return near if abs(near - v) <= _SNAP * abs(v) else v
