"""Registry of PEFT methods (as peft's ``register_peft_method``): one small module per method."""

from __future__ import annotations

from autopeft.errors import SpaceError
from autopeft.methods.base import ParamDecl, PeftMethod, target_regex

_REGISTRY: dict[str, PeftMethod] = {}


def register_method(cls: type[PeftMethod]) -> type[PeftMethod]:
    """Class decorator: make a method available to search spaces by its ``name``."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls()
    return cls


def get_method(name: str) -> PeftMethod:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SpaceError(f"unknown method {name!r}; known methods: {', '.join(method_names())}") from None


def method_names() -> list[str]:
    return list(_REGISTRY)


from autopeft.methods import lora, dora, ia3, prefix, serial_adapter, parallel_adapter, full  # noqa: E402,F401

__all__ = ["ParamDecl", "PeftMethod", "register_method", "get_method", "method_names", "target_regex"]
