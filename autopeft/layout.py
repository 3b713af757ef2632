"""The user's ``--layers-pattern`` / ``--target-modules``: where the layers and projections of a model are when
autopeft cannot find them by name, as one hashable :data:`Layout` that travels in the trial spec, the study and
exports (:func:`autopeft.arch.arch_from_model` applies it)."""

from __future__ import annotations

from typing import Any

from autopeft.errors import ConfigError

#: abstract sub-module names, in a fixed order (:data:`autopeft.arch.SUBMODULES`)
SUBMODULES: tuple[str, ...] = ("q", "k", "v", "o", "ffn_up", "ffn_down", "ffn_gate")

#: where the layers and their projections are, given by the user for a model whose names autopeft does not know:
#: (the dotted path of the layer list or "", ((sub-module, module name inside a layer), ...)); see :func:`parse_layout`
Layout = tuple[str, tuple[tuple[str, str], ...]]


def parse_layout(layers_pattern: str | None, target_modules: Any) -> Layout | None:
    """``--layers-pattern`` (the dotted path of the model's layer list, e.g. ``transformer.encoder.block``) and
    ``--target-modules`` (``q=NAME,k=NAME,...``: each sub-module's module name inside a layer, e.g.
    ``q=layer.0.SelfAttention.q``; a mapping in the API) as one hashable layout; None when neither is given."""
    path = "" if layers_pattern is None else layers_pattern
    if not isinstance(path, str) or (path and not all(p.isidentifier() or p.isdigit() for p in path.split("."))):
        raise ConfigError(f"--layers-pattern must be a dotted module path such as transformer.encoder.block, got "
                          f"{str(layers_pattern)[:80]!r}")
    pairs: list[tuple[str, str]] = []
    if target_modules is not None:
        items: Any = target_modules
        if isinstance(target_modules, str):
            items = []
            for part in (p.strip() for p in target_modules.split(",")):
                if "=" not in part:
                    raise ConfigError(f"--target-modules: {part[:80]!r} is not SUB=NAME; give e.g. "
                                      "q=attn.q,k=attn.k,v=attn.v,o=attn.o,ffn_up=mlp.wi,ffn_down=mlp.wo")
                k, v = part.split("=", 1)
                items.append((k.strip(), v.strip()))
        elif isinstance(target_modules, dict):
            items = list(target_modules.items())
        else:
            raise ConfigError("target_modules must be a string SUB=NAME,... or a mapping of sub-module to module name")
        for k, v in items:
            if k not in SUBMODULES:
                raise ConfigError(f"--target-modules: unknown sub-module {str(k)[:40]!r}; allowed: {', '.join(SUBMODULES)}")
            if not isinstance(v, str) or not v or not all(p.isidentifier() or p.isdigit() for p in v.split(".")):
                raise ConfigError(f"--target-modules: {k}={str(v)[:80]!r} is not a dotted module name inside a layer")
            if any(k == done for done, _ in pairs):
                raise ConfigError(f"--target-modules gives {k} twice")
            pairs.append((k, v))
        if not pairs:
            raise ConfigError("--target-modules is empty; give SUB=NAME pairs such as q=attn.q,v=attn.v")
    if not path and not pairs:
        return None
    return path, tuple(sorted(pairs, key=lambda kv: SUBMODULES.index(kv[0])))


def layout_to_json(layout: Layout | None) -> list[Any] | None:
    """A layout as plain lists (a study attribute, a TrialSpec field, an export's JSON)."""
    return None if layout is None else [layout[0], [list(p) for p in layout[1]]]


def layout_from_json(data: Any) -> Layout | None:
    """Inverse of :func:`layout_to_json` (None stays None)."""
    if not data:
        return None
    return str(data[0]), tuple((str(k), str(v)) for k, v in data[1])


def layout_text(layout: Layout | None) -> str:
    """How the user gave a layout, for messages: ``--layers-pattern P --target-modules q=...`` or ``none``."""
    if layout is None:
        return "none"
    parts = [f"--layers-pattern {layout[0]}"] if layout[0] else []
    if layout[1]:
        parts.append("--target-modules " + ",".join(f"{k}={v}" for k, v in layout[1]))
    return " ".join(parts)
