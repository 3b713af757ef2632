"""Candidate -> model on a tiny offline BERT: every method and combination builds, trains a step,
and its trainable parameters are counted exactly before building."""

from __future__ import annotations

import pytest
import torch

from autopeft.builder import build_model, count_params, load_base, model_info
from autopeft.candidate import Candidate
from autopeft.errors import ConfigError, ModelError

LORA = {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}
CASES = {
    "lora": ({"lora": LORA}, [0, 1]),
    "lora_per_layer_rank": ({"lora": {**LORA, "r": [2, 8], "targets": ["q", "k", "v", "o", "ffn_up", "ffn_down"]}}, [0, 1]),
    "dora": ({"dora": {**LORA, "targets": ["q", "v", "ffn_down"]}}, [1]),
    "ia3": ({"ia3": {"targets": ["k", "v", "ffn_down"]}}, [0, 1]),
    "prefix": ({"prefix": {"length": 5}}, []),
    "serial_adapter": ({"serial_adapter": {"size": 8, "scaling": 1.0}}, [1]),
    "parallel_adapter": ({"parallel_adapter": {"size": 8, "scaling": 1.0}}, [0, 1]),
    "sa_pa_prefix": ({"serial_adapter": {"size": 3, "scaling": 1.0}, "parallel_adapter": {"size": 6, "scaling": 1.0},
                      "prefix": {"length": 4}}, [0]),
    "lora_serial": ({"lora": LORA, "serial_adapter": {"size": 4, "scaling": 1.0}}, [1]),
    "full": ({"full": {}}, []),
    "head_only": ({}, []),
}


def _step(model: torch.nn.Module, groups: list, masks: object = None) -> float:
    torch.manual_seed(0)
    ids = torch.randint(5, 500, (4, 12))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "labels": torch.tensor([0, 1, 0, 1])}
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    model.train()
    losses = []
    for _ in range(3):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if masks is not None:
            masks.enforce()
        losses.append(float(loss))
    return losses[-1] - losses[0]


@pytest.mark.parametrize("case", list(CASES))
def test_every_method_builds_trains_and_counts_exactly(tiny_model: str, case: str) -> None:
    methods, layers = CASES[case]
    cand = Candidate.make(methods, layers)
    info = model_info(tiny_model, 2)
    expected = count_params(cand, info)
    base, _ = load_base(tiny_model, 2)
    built = build_model(cand, base, info, seed=0)
    trainable = [p for p in built.model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == expected == built.trainable
    before = [p.detach().clone() for p in trainable]
    _step(built.model, built.param_groups)
    changed = sum(not torch.equal(b, p.detach()) for b, p in zip(before, trainable))
    assert changed >= 1  # it really trains
    frozen = [p for p in built.model.parameters() if not p.requires_grad]
    assert case == "full" or frozen  # the base stays frozen


def test_placement_puts_modules_only_on_chosen_layers(tiny_model: str) -> None:
    info = model_info(tiny_model, 2)
    for methods, layers in (({"lora": LORA}, [1]), ({"ia3": {"targets": ["k", "v", "ffn_down"]}}, [0]),
                            ({"serial_adapter": {"size": 4, "scaling": 1.0}}, [1]),
                            ({"parallel_adapter": {"size": 4, "scaling": 1.0}}, [0])):
        base, _ = load_base(tiny_model, 2)
        built = build_model(Candidate.make(methods, layers), base, info)
        names = [n for n, p in built.model.named_parameters() if p.requires_grad and "classifier" not in n]
        assert names
        for n in names:
            assert f"layer.{layers[0]}." in n, n
            assert f"layer.{1 - layers[0]}." not in n, n


def test_per_layer_rank_reaches_peft(tiny_model: str) -> None:
    info = model_info(tiny_model, 2)
    base, _ = load_base(tiny_model, 2)
    built = build_model(Candidate.make({"lora": {**LORA, "r": [2, 8]}}, [0, 1]), base, info)
    shapes = {n: tuple(p.shape) for n, p in built.model.named_parameters() if "lora_A" in n}
    assert shapes["base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight"] == (2, 64)
    assert shapes["base_model.model.bert.encoder.layer.1.attention.self.query.lora_A.default.weight"] == (8, 64)


@pytest.mark.parametrize("criterion", ["random", "magnitude"])
def test_sparsity_masks_stay_zero_and_shrink_the_count(tiny_model: str, criterion: str) -> None:
    info = model_info(tiny_model, 2)
    dense = Candidate.make({"lora": LORA, "serial_adapter": {"size": 8, "scaling": 1.0}}, [0, 1])
    sparse = Candidate.make(dense.methods, dense.layers, {"fraction": 0.5, "criterion": criterion, "warmup_steps": 1})
    base, _ = load_base(tiny_model, 2)
    built = build_model(sparse, base, info, seed=3)
    assert built.trainable == count_params(sparse, info) < count_params(dense, info)
    masked = count_params(dense, info) - count_params(sparse, info)
    assert built.masks.masked_count() == masked
    opt = torch.optim.AdamW(built.param_groups, weight_decay=0.01)
    ids = torch.randint(5, 500, (4, 12))
    for step in range(4):
        loss = built.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 0, 1])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        built.masks.maybe_fix(step + 1)
        built.masks.enforce()
    named = dict(built.model.named_parameters())
    zeros = 0
    for n, m in built.masks.masks.items():
        w = named[n].detach()
        assert torch.all(w[~m] == 0), n  # mask True = kept
        zeros += int((~m).sum())
    assert zeros == masked


def test_bad_candidates(tiny_model: str) -> None:
    info = model_info(tiny_model, 2)
    base, _ = load_base(tiny_model, 2)
    with pytest.raises(ConfigError, match=r"layer index 5 is beyond the model's depth: .* has 2 layers \(allowed 0..1\)"):
        build_model(Candidate.make({"lora": LORA}, [0, 5]), base, info)
    with pytest.raises(ConfigError, match="at most one peft-based method"):
        build_model(Candidate.make({"lora": LORA, "ia3": {"targets": ["k"]}}, [0]), base, info)
    with pytest.raises(ConfigError, match=r"^method 'full' cannot be combined with other methods$"):
        build_model(Candidate.make({"full": {}, "serial_adapter": {"size": 4, "scaling": 1.0}}, [0]), base, info)


def test_model_that_cannot_load(tmp_path: object) -> None:
    with pytest.raises(ModelError, match="cannot load model"):
        model_info(str(tmp_path), 2)


def test_the_head_group_trains_at_the_trial_fidelitys_floor(tiny_model: str) -> None:
    info = model_info(tiny_model, 2)
    cand = Candidate.make({"lora": LORA}, [0, 1], lr_multiplier=2.0)
    rates = {g["name"]: g["lr"] for g in build_model(cand, load_base(tiny_model, 2)[0], info, head_lr=0.01).param_groups}
    assert rates == {"lora": 1e-3, "head": 0.02}
    plain = {g["name"]: g["lr"] for g in build_model(cand, load_base(tiny_model, 2)[0], info).param_groups}
    assert plain == {"lora": 1e-3, "head": 1e-3}  # full budget: the method's rate
