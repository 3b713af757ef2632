"""Cost knobs of trials for bigger models (issue 18): the base model's dtype and gradient checkpointing.  Both show
up in the measured memory objective, and trials still train."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopeft.contract import OK, Fidelity, TrialSpec
from autopeft.errors import ConfigError

FID = dict(n_train=32, n_eval=32, epochs=1, max_length=32, batch_size=16)
CANDS = {
    "lora": {"methods": {"lora": {"r": 4, "alpha_ratio": 2.0, "dropout": 0.0, "targets": ["q", "v"]}}, "layers": [0, 1]},
    "serial_adapter": {"methods": {"serial_adapter": {"size": 8, "scaling": 1.0}}, "layers": [0, 1]},
}


@pytest.mark.parametrize("method", list(CANDS))
def test_bfloat16_and_checkpointing_train_and_lower_the_memory(method: str, tiny_model: str, glue_dir: Path) -> None:
    from autopeft.builder import model_info
    from autopeft.candidate import Candidate
    from autopeft.config import data_spec_dict
    from autopeft.trial import run_trial

    data = data_spec_dict(task="sst2", data_dir=str(glue_dir))
    cand = Candidate.make(CANDS[method]["methods"], CANDS[method]["layers"]).to_dict()
    res = {}
    for name, knobs in {"fp32": {}, "bf16": {"dtype": "bfloat16"}, "ckpt": {"gradient_checkpointing": True}}.items():
        r = run_trial(TrialSpec(0, cand, tiny_model, data, fidelity={**FID, **knobs}))
        assert r.status == OK, (name, r.reason)
        res[name] = r
    assert res["bf16"].params == res["ckpt"].params == res["fp32"].params  # adapters stay float32: same count
    assert res["bf16"].steps == res["ckpt"].steps == res["fp32"].steps == 2
    # bf16: the base weights take 2 bytes, not 4 (at least half of their float32 bytes saved), activations fewer
    # too; the float32 adapters and their optimizer state stay
    base_params = model_info(tiny_model, 2).base_params
    assert res["fp32"].memory_bytes - res["bf16"].memory_bytes >= 0.5 * 4 * base_params * 0.98
    # checkpointing keeps each layer's input and one layer's recomputed activations instead of every layer's
    assert res["ckpt"].memory_bytes < res["fp32"].memory_bytes


def test_checkpointed_memory_counts_what_the_checkpoint_keeps(tiny_llama: str) -> None:
    """Per row: the count with checkpointing on, plus every layer's input and one layer's activations, lies between
    the bare count with checkpointing and the count without it."""
    import transformers

    from autopeft.memory import checkpointed_memory_parts, memory_parts

    m = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
    tb = sum(p.numel() * p.element_size() for p in m.parameters())
    _, plain = memory_parts(m, 64, 100, tb, False, lm=True)
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    _, bare = memory_parts(m, 64, 100, tb, False, lm=True)
    _, counted = checkpointed_memory_parts(m, m, m.config.num_hidden_layers, m.config.hidden_size, 64, 100, tb, False,
                                           lm=True)
    layers, hidden = m.config.num_hidden_layers, m.config.hidden_size
    assert bare < counted < plain
    assert counted == bare + layers * 64 * hidden * 4 + (plain - bare) // layers
    assert m.is_gradient_checkpointing  # left on


def test_bad_knobs_are_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^dtype must be one of float32, bfloat16, float16, got 'int8'$"):
        Fidelity(dtype="int8")
    with pytest.raises(ConfigError, match=r"^gradient-checkpointing must be true or false, got 'yes'$"):
        Fidelity(gradient_checkpointing="yes")  # type: ignore[arg-type]
