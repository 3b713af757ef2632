"""A candidate: one point of a search space, frozen and JSON-serialisable.

Its canonical form makes equal configurations compare equal (e.g. every switched-off method and
every layer list of a head-only candidate normalise away), so a study never trains one twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from autopeft.errors import ConfigError, SpaceError

CANDIDATE_FILE = "autopeft_candidate.json"


def _copy(v: Any) -> Any:
    """A deep copy of JSON-typed data (dicts, lists, scalars): what ``json.loads(json.dumps(v))`` returns for it, at a
    tenth of the cost (a sampler reads thousands of candidates' methods per ask)."""
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.6g}")
    if isinstance(v, list):
        return [_round(x) for x in v]
    return v


def structure_key(cand: Mapping[str, Any]) -> str:
    """A candidate's dict (``Candidate.to_dict()``, or as stored with a trial) without its learning-rate multiplier:
    candidates with one key differ only in learning rate (the front keeps one of them; the collapse model does not
    retry a collapsed one at a rate as low)."""
    return json.dumps({k: v for k, v in cand.items() if k != "lr_multiplier"}, sort_keys=True)


class Candidate:
    """An immutable PEFT configuration: methods with their settings, layers, sparsity, lr multiplier."""

    __slots__ = ("_data", "_key")

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", json.loads(json.dumps(data)))
        object.__setattr__(self, "_key", json.dumps(self._data, sort_keys=True, separators=(",", ":")))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Candidate is immutable")

    @classmethod
    def make(
        cls,
        methods: Mapping[str, Mapping[str, Any]],
        layers: Sequence[int],
        sparsity: Mapping[str, Any] | None = None,
        lr_multiplier: float = 1.0,
    ) -> "Candidate":
        """Build the canonical candidate (validating method names)."""
        from autopeft.methods import get_method

        layers = sorted(set(int(i) for i in layers))
        out: dict[str, dict[str, Any]] = {}
        for name, cfg in methods.items():
            m = get_method(name)
            cfg = {k: _round(v) for k, v in cfg.items()}
            if m.size_param is not None:
                size = cfg.get(m.size_param)
                if size == 0 or (isinstance(size, list) and size and all(s == 0 for s in size)):
                    continue  # size 0 switches the method off
            if m.uses_layers and not layers:
                continue
            out[name] = cfg
        if not any(get_method(n).uses_layers for n in out):
            layers = []
        sp = dict(sparsity or {})
        fraction = float(sp.get("fraction", 0.0) or 0.0)
        maskable = any(get_method(n).sparsifiable for n in out)
        if fraction <= 0.0 or not maskable:
            sp_out: dict[str, Any] = {}
        else:
            sp_out = {
                "fraction": _round(fraction),
                "criterion": sp.get("criterion", "random"),
                "warmup_steps": int(sp.get("warmup_steps", 10)) if sp.get("criterion", "random") == "magnitude" else 0,
            }
        return cls._fresh({"methods": out, "layers": layers, "sparsity": sp_out, "lr_multiplier": _round(float(lr_multiplier))})

    @classmethod
    def _fresh(cls, data: dict[str, Any]) -> "Candidate":
        """A candidate of JSON-typed data built here and shared with no one (:meth:`make`'s): kept as is, not copied
        through JSON first (a sampler makes thousands per ask); equal to ``cls(data)``."""
        key = json.dumps(data, sort_keys=True, separators=(",", ":"))
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_data", data)
        object.__setattr__(obj, "_key", key)
        return obj

    # ------------------------------------------------------------------ accessors
    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        return _copy(self._data["methods"])

    @property
    def layers(self) -> list[int]:
        return list(self._data["layers"])

    @property
    def sparsity(self) -> dict[str, Any]:
        return dict(self._data["sparsity"])

    @property
    def lr_multiplier(self) -> float:
        return float(self._data["lr_multiplier"])

    def with_lr(self, lr_multiplier: float) -> "Candidate":
        """The same configuration at another learning-rate multiplier (``--refine-rate``'s steps)."""
        return Candidate.make(self.methods, self.layers, self.sparsity, lr_multiplier)

    @property
    def key(self) -> str:
        """Canonical JSON text: equal candidates have equal keys."""
        return self._key

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self._key)

    def to_json(self) -> str:
        return self._key

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Candidate":
        if not isinstance(data, Mapping):
            raise ConfigError("a candidate must be a JSON object with keys methods, layers, sparsity, lr_multiplier")
        unknown = set(data) - {"methods", "layers", "sparsity", "lr_multiplier"}
        if unknown:
            raise ConfigError(f"unknown key {sorted(unknown)[0]!r} in candidate; allowed: methods, layers, sparsity, lr_multiplier")
        methods = data.get("methods", {})
        if not isinstance(methods, Mapping):
            raise ConfigError("candidate 'methods' must be an object of method name -> settings")
        from autopeft.methods import get_method

        for name, cfg in methods.items():
            m = get_method(name)
            if not isinstance(cfg, Mapping):
                raise ConfigError(f"candidate methods.{name} must be an object")
            for k, v in cfg.items():
                if k not in m.params:
                    raise ConfigError(f"unknown key {k!r} in candidate methods.{name}; allowed: {', '.join(m.params) or 'none'}")
                vals = v if isinstance(v, list) and m.params[k].kind != "targets" else [v]
                for x in vals:
                    try:
                        m.params[k].check(x, f"candidate methods.{name}.{k}")
                    except SpaceError as exc:
                        raise ConfigError(str(exc)) from None
        layers = data.get("layers", [])
        if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers):
            raise ConfigError("candidate 'layers' must be a list of layer indices >= 0")
        lr = data.get("lr_multiplier", 1.0)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            raise ConfigError(f"candidate lr_multiplier must be a number > 0, got {lr!r}")
        sp = data.get("sparsity", {}) or {}
        if not isinstance(sp, Mapping):
            raise ConfigError("candidate 'sparsity' must be an object")
        frac = sp.get("fraction", 0.0)
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac < 1.0:
            raise ConfigError(f"candidate sparsity.fraction must be in [0, 1), got {frac!r}")
        if sp.get("criterion", "random") not in ("random", "magnitude"):
            raise ConfigError(f"candidate sparsity.criterion must be random or magnitude, got {sp.get('criterion')!r}")
        return cls.make(methods, layers, sp, float(lr))

    @classmethod
    def from_json(cls, text: str) -> "Candidate":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"candidate is not valid JSON: {exc.msg} (line {exc.lineno})") from None

    # ------------------------------------------------------------------ presentation
    def summary(self) -> str:
        """One line such as ``lora r=8 [q,v] + serial_adapter size=64 | layers 4,5 | sparse 50% random``."""
        from autopeft.methods import get_method

        if not self._data["methods"]:
            parts = ["head only"]
        else:
            parts = [" + ".join(get_method(n).summary(c) for n, c in self._data["methods"].items())]
        if self._data["layers"]:
            parts.append("layers " + ",".join(map(str, self._data["layers"])))
        if self._data["sparsity"]:
            parts.append(f"sparse {self._data['sparsity']['fraction']:.0%} {self._data['sparsity']['criterion']}")
        if self.lr_multiplier != 1.0:
            parts.append(f"lr x{self.lr_multiplier:.3g}")
        return " | ".join(parts)

    def save(self, directory: str | Path) -> Path:
        """Write the candidate to ``directory/autopeft_candidate.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        p = d / CANDIDATE_FILE
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return p

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Candidate) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"Candidate({self.summary()})"
