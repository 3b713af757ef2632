"""Seq2seq tasks on encoder-decoder models (T5, Flan-T5, mT5): which task type a model makes of the data, the rows
encoded for it (the source into the encoder, the target's tokens as labels, every one of them carrying a loss), the
search metric (the target tokens' mean cross-entropy, minimised as a causal LM's) and greedy answers for exact match.

The columns tell a generative task (a prompt/response pair such as source/target, input/output, question/answer)
from a classification; the model tells seq2seq from causal LM: an inferred generative task on an encoder-decoder is
seq2seq (:func:`fit_task_type`), so the same data searches a T5 or a Llama with no option.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from autopeft.errors import AutoPeftError, ConfigError


def is_encoder_decoder(model: str | None, trust_remote_code: bool = False) -> bool:
    """Whether the model's config says it is an encoder-decoder (T5); False for one that cannot be read (its loading
    reports that in its own words)."""
    from transformers import AutoConfig

    from autopeft.builder import resolve_model

    try:
        cfg = AutoConfig.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)
    except Exception:  # transformers raises many types for a bad id or directory: model_info says which
        return False
    return bool(getattr(cfg, "is_encoder_decoder", False))


def fit_task_type(data: dict[str, Any], model: str | None, trust_remote_code: bool = False) -> dict[str, Any]:
    """The data settings (a DataSpec dict) with the task type the model makes of them: a generative task whose type
    was inferred (causal LM from its columns) is seq2seq on an encoder-decoder, which gets ``task_type: seq2seq``; a
    type given that the model cannot train is a clear error.  Classification, and a decoder's tasks, are unchanged."""
    from autopeft.data import CAUSAL_LM, SEQ2SEQ
    from autopeft.trial import task_of

    given = data.get("task_type")
    if given not in (None, CAUSAL_LM, SEQ2SEQ):
        return data
    enc_dec = is_encoder_decoder(model, trust_remote_code)
    if given == SEQ2SEQ and not enc_dec:
        raise ConfigError(f"--task-type seq2seq needs an encoder-decoder model (T5, Flan-T5, mT5); model "
                          f"{str(model)[:200]!r} is not one: pass --task-type causal-lm for a decoder")
    if given == CAUSAL_LM and enc_dec:
        raise ConfigError(f"--task-type causal-lm needs a decoder; model {str(model)[:200]!r} is an encoder-decoder: "
                          "pass --task-type seq2seq (or leave it out)")
    if given is None and enc_dec and task_of(data).kind == CAUSAL_LM:
        return {**data, "task_type": SEQ2SEQ}
    return data


def encode_seq2seq(tok: Any, texts: Sequence[tuple[str, ...]], max_length: int) -> dict[str, list[list[int]]]:
    """(source, target) rows -> ``input_ids`` and ``attention_mask`` of the source and ``labels``: the target's token
    ids (the tokenizer's end-of-sequence included), each truncated to ``max_length``.  The model makes its decoder's
    inputs from the labels (shifted right); every label token carries a loss.  Rows with an empty target are dropped."""
    if texts and len(texts[0]) != 2:
        raise AutoPeftError("a seq2seq task needs (source, target) rows; pass --text-columns SOURCE,TARGET")
    src = tok([r[0] for r in texts], truncation=True, max_length=max_length)
    tgt = tok(text_target=[r[1] for r in texts], truncation=True, max_length=max_length)
    out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for ids, mask, labels in zip(src["input_ids"], src["attention_mask"], tgt["input_ids"]):
        if ids and labels:
            out["input_ids"].append(list(ids))
            out["attention_mask"].append(list(mask))
            out["labels"].append(list(labels))
    return out


def _batch(enc: dict[str, list[list[int]]], idx: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows ``idx`` padded: the source with ``pad_id`` (attention 0), the labels with -100 (no loss), each to its own
    longest row."""
    out = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", -100)):
        n = max(len(enc[key][i]) for i in idx)
        out[key] = torch.tensor([enc[key][i] + [fill] * (n - len(enc[key][i])) for i in idx], dtype=torch.long)
    return out


def seq2seq_loss(model: torch.nn.Module, enc: dict[str, list[list[int]]], bs: int, pad_id: int,
                 device: torch.device, se: bool = False) -> Any:
    """Mean cross-entropy per target token over a seq2seq encoding (the search metric ``loss``): summed over every
    label token of every row, then divided once, as :func:`autopeft.trial.lm_loss`."""
    from autopeft.trial import token_loss

    n, bs = len(enc["input_ids"]), max(1, bs)
    if n == 0:
        raise AutoPeftError("no evaluation row has a target token; use a larger --n-eval")
    order = sorted(range(n), key=lambda i: len(enc["input_ids"][i]))
    return token_loss(model, (_batch(enc, order[s:s + bs], pad_id) for s in range(0, n, bs)), device, shift=False,
                      se=se)


def generate_seq2seq(model: torch.nn.Module, tok: Any, sources: Sequence[str], device: Any, max_length: int,
                     batch_size: int = 16) -> list[str]:
    """Greedy answers: each source (truncated to ``max_length`` tokens, as in training) into the encoder, at most
    ``max_length`` new tokens (the length training truncated the targets to), decoded without special tokens."""
    out: list[str] = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(sources), batch_size):
            enc = tok(list(sources[s:s + batch_size]), return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length)
            gen = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                                 max_new_tokens=max_length, do_sample=False)
            out += tok.batch_decode(gen, skip_special_tokens=True)
    return out
