"""Registry of PEFT methods (as peft's ``register_peft_method``): one small module per method.

Besides the registry, the few rules that combine the methods of a candidate live here, written
once against the :class:`PeftMethod` hooks: learning rates, the sampler's cost features and the
hand-designed baselines.  Importing this package loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from autopeft.errors import SpaceError
from autopeft.methods.base import AltParam, Baseline, ParamDecl, PeftMethod, target_regex

if TYPE_CHECKING:
    from autopeft.candidate import Candidate

_REGISTRY: dict[str, PeftMethod] = {}

#: learning rate of the classification head of a candidate with no method (head only)
HEAD_ONLY_LR = 1e-3


def register_method(cls: type[PeftMethod]) -> type[PeftMethod]:
    """Class decorator: make a method available to search spaces by its ``name``."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} has no name")
    for attr in ("default_lr", "sparsifiable"):
        if not hasattr(cls, attr):
            raise ValueError(f"method {cls.name!r} ({cls.__name__}) does not declare {attr}")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister_method(name: str) -> None:
    """Remove a method from the registry (for plug-ins registered only for a while, e.g. in tests)."""
    get_method(name)
    del _REGISTRY[name]


def get_method(name: str) -> PeftMethod:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SpaceError(f"unknown method {name!r}; known methods: {', '.join(method_names())}") from None


def unsupported_methods(names: Iterable[str], info: Any) -> dict[str, str]:
    """The methods among ``names`` that the model (``autopeft.builder.ModelInfo``) cannot take, each with the reason."""
    why = {m: get_method(m).unsupported(info) for m in names}
    return {m: w for m, w in why.items() if w}


def method_names() -> list[str]:
    return list(_REGISTRY)


def base_learning_rate(names: Iterable[str]) -> float:
    """The rate lr_multiplier multiplies for the head: the largest ``default_lr`` of these methods, ``HEAD_ONLY_LR``
    for none (a space's ``training.learning_rate`` is this rate x lr_multiplier)."""
    return max((get_method(n).default_lr for n in names), default=HEAD_ONLY_LR)


def learning_rates(cand: Candidate, head_lr: float = 0.0) -> dict[str, float]:
    """Per-group rates: each method's ``default_lr`` x lr_multiplier; ``head``: the largest of them
    (``HEAD_ONLY_LR`` for a head-only candidate), or ``head_lr`` where that is larger (a trial fidelity's floor,
    :attr:`autopeft.contract.Fidelity.head_lr`), x lr_multiplier."""
    mult = cand.lr_multiplier
    lrs = {n: get_method(n).default_lr * mult for n in cand.methods}
    lrs["head"] = max(base_learning_rate(cand.methods), head_lr) * mult
    return lrs


def cost_feature_vector(methods: Mapping[str, Mapping[str, Any]], layer_fraction: float) -> list[float]:
    """Every registered method's ``n_cost_features`` values in registry order: its :meth:`PeftMethod.cost_features`
    if it is among ``methods`` (name -> settings), else zeros."""
    out: list[float] = []
    for name, m in _REGISTRY.items():
        if name not in methods:
            out += [0.0] * m.n_cost_features
            continue
        vals = [float(v) for v in m.cost_features(dict(methods[name]), layer_fraction)]
        if len(vals) != m.n_cost_features:
            raise ValueError(f"method {name!r}: cost_features returned {len(vals)} values, n_cost_features is {m.n_cost_features}")
        out += vals
    return out


def baseline_candidates(num_layers: int) -> dict[str, Candidate]:
    """Every method's hand-designed baselines (registry order) for a model of ``num_layers`` layers."""
    from autopeft.candidate import Candidate

    out: dict[str, Candidate] = {}
    for name, m in _REGISTRY.items():
        for label, (cfg, layers) in m.baselines(num_layers).items():
            if label in out:
                raise ValueError(f"baseline {label!r} of method {name!r} is already declared by another method")
            out[label] = Candidate.make({name: cfg}, layers)
    return out


from autopeft.methods import lora, dora, ia3, prefix, serial_adapter, parallel_adapter, full  # noqa: E402,F401

__all__ = ["AltParam", "Baseline", "ParamDecl", "PeftMethod", "register_method", "unregister_method", "get_method",
           "method_names", "target_regex", "learning_rates", "base_learning_rate", "cost_feature_vector",
           "baseline_candidates", "HEAD_ONLY_LR"]
