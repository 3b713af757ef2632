"""Reading user YAML (search spaces, study specs) safely and within bounds.

``yaml.safe_load`` builds no objects, but an alias bomb ("billion laughs") loads as a small graph that expands to
billions of values when walked or printed; a huge file or list costs memory and time.  Limits: the file's size, the
values it expands to (each alias counted every time it occurs), and the nesting depth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_NODES = 20_000
MAX_DEPTH = 40


def excerpt(value: Any, n: int = 60) -> str:
    """``repr(value)`` cut to about ``n`` characters, for error messages (never print a whole user value)."""
    r = repr(value) if not isinstance(value, (list, dict)) or _size(value, 200) < 200 else f"<{type(value).__name__}>"
    return r if len(r) <= n else r[: n - 3] + "..."


def _size(obj: Any, limit: int) -> int:
    """Values in a loaded YAML document, counting aliases each time they occur; stops past ``limit``.
    Returns ``limit + 1`` too when the document nests deeper than :data:`MAX_DEPTH`."""
    n, stack = 0, [(obj, 0)]
    while stack and n <= limit:
        o, depth = stack.pop()
        n += 1
        if depth > MAX_DEPTH:
            return limit + 1
        if isinstance(o, dict):
            stack.extend((x, depth + 1) for x in o.keys())
            stack.extend((x, depth + 1) for x in o.values())
        elif isinstance(o, list):
            stack.extend((x, depth + 1) for x in o)
    return n


def load_yaml(path: str | Path, what: str, max_bytes: int) -> Any:
    """The YAML document in ``path``; ValueError with a one-line reason if it is unreadable or out of bounds."""
    import yaml

    p = Path(path)
    try:
        if p.stat().st_size > max_bytes:
            raise ValueError(f"{what} {p} is over {max_bytes // 1024} KiB")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {p} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise ValueError(f"{what} {p} is not valid YAML" + (f" (line {line + 1})" if line is not None else "")) from None
    except RecursionError:
        raise ValueError(f"{what} {p} is nested too deeply") from None
    if _size(data, MAX_NODES) > MAX_NODES:
        raise ValueError(f"{what} {p} expands to over {MAX_NODES} values or nests over {MAX_DEPTH} deep "
                         "(YAML aliases?)")
    return data
