"""Bottleneck adapters (serial / parallel) and fixed sparsity masks on a tiny offline BERT."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from transformers import BertConfig, BertForSequenceClassification

from autopeft.adapters import (
    ATTR,
    BottleneckAdapter,
    adapter_param_count,
    adapter_parameters,
    adapter_state_dict,
    add_bottleneck_adapters,
    load_adapter_state_dict,
)
from autopeft.arch import ArchInfo, arch_from_config
from autopeft.errors import ConfigError
from autopeft.sparsity import apply_sparsity, sparsity_masked_count

HIDDEN = 64


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(cfg)


def _loud_head(model: BertForSequenceClassification) -> None:
    """Scale the (frozen, std 0.02) classifier up so a few SGD steps on adapters visibly move the loss."""
    with torch.no_grad():
        model.classifier.weight.mul_(50)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (4, 10), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 0, 1])}


def _freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _train(model: nn.Module, params: list[nn.Parameter], batch: dict[str, torch.Tensor], steps: int = 6,
           lr: float = 0.05) -> list[float]:
    model.train()
    for m in model.modules():  # no dropout: a deterministic loss curve
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    opt = torch.optim.SGD(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    return losses


# ------------------------------------------------------------------------------------------- adapters


@pytest.mark.parametrize("kind", ["serial", "parallel"])
def test_adapter_is_identity_at_init_then_trains(kind: str, batch: dict[str, torch.Tensor]) -> None:
    model = tiny_bert()
    _loud_head(model)
    arch = arch_from_config(model.config)
    before = _logits(model, batch)
    _freeze(model)
    params = add_bottleneck_adapters(model, arch, kind, 8, [0, 1], scaling=1.0)
    assert torch.allclose(_logits(model, batch), before, atol=1e-6)
    assert all(p.requires_grad for p in params)
    assert [p for p in model.parameters() if p.requires_grad] == params  # only adapters train
    losses = _train(model, params, batch)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert (_logits(model, batch) - before).abs().max() > 0.1
    # repeated forwards are deterministic (the parallel stash does not leak between calls)
    assert torch.equal(_logits(model, batch), _logits(model, batch))


@pytest.mark.parametrize("kind,size,layers", [("serial", 8, [0, 1]), ("serial", 3, [1]), ("parallel", 8, [0, 1]),
                                              ("parallel", 5, [0])])
def test_param_count_and_placement(kind: str, size: int, layers: list[int]) -> None:
    model = tiny_bert()
    arch = arch_from_config(model.config)
    n_before = sum(p.numel() for p in model.parameters())
    params = add_bottleneck_adapters(model, arch, kind, size, layers)
    expected = adapter_param_count(HIDDEN, size, kind, len(layers))
    assert sum(p.numel() for p in params) == expected
    assert sum(p.numel() for p in model.parameters()) - n_before == expected
    assert sum(p.numel() for p in adapter_parameters(model)) == expected
    keys = {"serial": {"serial_o", "serial_ffn"}, "parallel": {"parallel"}}[kind]
    for i in range(arch.num_layers):
        box = getattr(arch.layer_module(model, i), ATTR, None)
        if i in layers:
            assert box is not None and set(box.keys()) == keys
        else:
            assert box is None
    names = list(adapter_state_dict(model))
    assert names and all(f"layer.{layers[0]}." in n or len(layers) > 1 for n in names)
    assert all(n in model.state_dict() for n in names)


def test_serial_and_parallel_on_same_layer(batch: dict[str, torch.Tensor]) -> None:
    model = tiny_bert()
    _loud_head(model)
    arch = arch_from_config(model.config)
    before = _logits(model, batch)
    _freeze(model)
    ps = add_bottleneck_adapters(model, arch, "serial", 4, [0]) + add_bottleneck_adapters(model, arch, "parallel", 6, [0])
    assert torch.allclose(_logits(model, batch), before, atol=1e-6)
    assert sum(p.numel() for p in ps) == adapter_param_count(HIDDEN, 4, "serial", 1) + adapter_param_count(HIDDEN, 6, "parallel", 1)
    losses = _train(model, ps, batch, steps=4)
    assert losses[-1] < losses[0]


def test_parallel_adapter_math() -> None:
    """PA adds ``scaling * PA(ffn_in)`` to the FFN output, exactly."""
    model = tiny_bert()
    arch = arch_from_config(model.config)
    add_bottleneck_adapters(model, arch, "parallel", 4, [0], scaling=2.0)
    ad: BottleneckAdapter = getattr(arch.layer_module(model, 0), ATTR)["parallel"]
    nn.init.normal_(ad.up.weight)
    x = torch.randn(2, 3, HIDDEN)
    up, down = arch.sub_module(model, 0, "ffn_up"), arch.sub_module(model, 0, "ffn_down")
    layer = arch.layer_module(model, 0)
    with torch.no_grad():
        got = layer.output.dense(layer.intermediate(x))
        want = down.weight @ torch.nn.functional.gelu(up(x)).unsqueeze(-1)
        want = want.squeeze(-1) + down.bias + 2.0 * ad.up(torch.relu(ad.down(x)))
    assert torch.allclose(got, want, atol=1e-5)


def test_serial_adapter_math() -> None:
    model = tiny_bert()
    arch = arch_from_config(model.config)
    add_bottleneck_adapters(model, arch, "serial", 4, [1], scaling=0.5)
    ad: BottleneckAdapter = getattr(arch.layer_module(model, 1), ATTR)["serial_o"]
    nn.init.normal_(ad.up.weight)
    o = arch.sub_module(model, 1, "o")
    x = torch.randn(2, 3, HIDDEN)
    with torch.no_grad():
        plain = torch.nn.functional.linear(x, o.weight, o.bias)
        assert torch.allclose(o(x), plain + 0.5 * ad.up(torch.relu(ad.down(plain))), atol=1e-5)


def test_invalid_adapter_settings() -> None:
    model = tiny_bert()
    arch: ArchInfo = arch_from_config(model.config)
    with pytest.raises(ConfigError, match="size .* must be an integer >= 1, got 0"):
        add_bottleneck_adapters(model, arch, "serial", 0, [0])
    with pytest.raises(ConfigError, match=r"layer index 2 is out of range \(allowed 0..1\)"):
        add_bottleneck_adapters(model, arch, "parallel", 4, [0, 2])
    with pytest.raises(ConfigError, match=r"layer index -1 is out of range"):
        add_bottleneck_adapters(model, arch, "serial", 4, [-1])
    with pytest.raises(ConfigError, match="kind must be one of serial, parallel"):
        add_bottleneck_adapters(model, arch, "houlsby", 4, [0])  # type: ignore[arg-type]
    assert not adapter_parameters(model)  # nothing half-added
    add_bottleneck_adapters(model, arch, "serial", 4, [0])
    with pytest.raises(ConfigError, match="layer 0 already has a serial adapter"):
        add_bottleneck_adapters(model, arch, "serial", 4, [1, 0])
    assert getattr(arch.layer_module(model, 1), ATTR, None) is None


def test_adapter_state_dict_roundtrip_and_deepcopy(batch: dict[str, torch.Tensor]) -> None:
    model = tiny_bert()
    arch = arch_from_config(model.config)
    _freeze(model)
    params = add_bottleneck_adapters(model, arch, "parallel", 4, [0, 1])
    _train(model, params, batch, steps=2)
    sd = adapter_state_dict(model)
    assert all(ATTR in n for n in sd)
    trained = _logits(model, batch)
    clone = copy.deepcopy(model)  # hooks are objects: the copy uses its own adapters
    assert torch.allclose(_logits(clone, batch), trained, atol=1e-6)
    for p in adapter_parameters(clone):
        nn.init.zeros_(p)
    assert torch.allclose(_logits(model, batch), trained, atol=1e-6)

    fresh = tiny_bert()
    add_bottleneck_adapters(fresh, arch, "parallel", 4, [0, 1])
    load_adapter_state_dict(fresh, sd)
    assert torch.allclose(_logits(fresh, batch), trained, atol=1e-6)
    with pytest.raises(ConfigError, match="does not match"):
        load_adapter_state_dict(fresh, {k: v for k, v in list(sd.items())[1:]})


@pytest.mark.parametrize("order", ["before", "after"])
def test_adapters_combine_with_peft_lora(order: str, batch: dict[str, torch.Tensor]) -> None:
    from peft import LoraConfig, get_peft_model

    base = tiny_bert()
    arch = arch_from_config(base.config)
    before = _logits(base, batch)
    cfg = LoraConfig(r=4, target_modules=["query", "value", "output.dense"], task_type="SEQ_CLS")
    if order == "before":
        add_bottleneck_adapters(base, arch, "serial", 4, [0, 1])
        add_bottleneck_adapters(base, arch, "parallel", 4, [1])
        model = get_peft_model(base, cfg)
        assert not any(p.requires_grad for p in adapter_parameters(model))  # peft froze them
    else:
        model = get_peft_model(base, cfg)
        add_bottleneck_adapters(model, arch, "serial", 4, [0, 1])
        add_bottleneck_adapters(model, arch, "parallel", 4, [1])
    ad_params = adapter_parameters(model)
    assert sum(p.numel() for p in ad_params) == (adapter_param_count(HIDDEN, 4, "serial", 2)
                                                 + adapter_param_count(HIDDEN, 4, "parallel", 1))
    for p in ad_params:
        p.requires_grad_(True)
    assert torch.allclose(_logits(model, batch), before, atol=1e-6)  # LoRA B and adapter up are zero
    names = set(adapter_state_dict(model))
    assert all(n.startswith("bert.encoder.layer.") for n in names)  # peft prefix stripped
    model.train()
    out = model(**batch)
    out.loss.backward()
    assert all(p.grad is not None for p in ad_params)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None for p in lora_b)
    # the serial adapter on attention.output.dense sees the LoRA-wrapped output in both orders
    for ad in adapter_parameters(model):
        nn.init.normal_(ad, std=0.02)
    for p in lora_b:
        nn.init.normal_(p, std=0.02)
    layer = arch.layer_module(model.get_base_model(), 0)
    layer.eval()
    o = layer.attention.output.dense  # peft lora.Linear
    sa: BottleneckAdapter = layer.autopeft_adapters["serial_o"]
    x = torch.randn(2, 3, HIDDEN)
    with torch.no_grad():
        layer(x)  # binds hooks to the current modules
        base_out = o.base_layer(x)
        lora_out = base_out + o.lora_B["default"](o.lora_A["default"](x)) * o.scaling["default"]
        assert torch.allclose(o(x), lora_out + sa(lora_out), atol=1e-5)


# ------------------------------------------------------------------------------------------- sparsity


def _sparse_setup() -> tuple[nn.Module, dict[str, nn.Parameter]]:
    from peft import LoraConfig, get_peft_model

    base = tiny_bert()
    arch = arch_from_config(base.config)
    add_bottleneck_adapters(base, arch, "serial", 8, [0, 1])
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    for p in adapter_parameters(model):
        p.requires_grad_(True)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n}
    return model, params


@pytest.mark.parametrize("criterion,warmup", [("random", 0), ("magnitude", 2), ("magnitude", 0)])
def test_sparsity_masks_survive_adamw(criterion: str, warmup: int, batch: dict[str, torch.Tensor]) -> None:
    model, params = _sparse_setup()
    fraction = 0.4
    zeros_before = {n: int((p.detach() == 0).sum()) for n, p in params.items()}
    masks = apply_sparsity(params, fraction, criterion, seed=7, warmup_steps=warmup)
    expected = sparsity_masked_count([tuple(p.shape) for p in params.values()], fraction)
    assert masks.masked_count() == expected > 0
    assert set(masks.params) == {n for n, p in params.items() if p.dim() >= 2}  # vectors stay dense
    assert masks.fixed == (warmup == 0)
    opt = torch.optim.AdamW(list(params.values()), lr=1e-2, weight_decay=0.01)
    model.train()
    for step in range(5):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        masks.maybe_fix(step + 1)
        masks.enforce()
        if step + 1 < warmup:
            assert not masks.fixed and not masks.masks
    assert masks.fixed
    masked = 0
    for n, m in masks.masks.items():
        assert m.dtype == torch.bool and m.shape == params[n].shape
        w = params[n].detach()
        assert torch.all(w[~m] == 0), n
        assert int((~m).sum()) == masks.k[n] == round(fraction * w.numel())
        masked += int((~m).sum())
        if masks.k[n]:
            assert int((w[m] != 0).sum()) > 0, n  # kept entries do train
    assert masked == expected
    # zeros introduced: tensors with no zeros at init (LoRA A, adapter down) now hold exactly k zeros
    # (zero-initialised LoRA B / adapter up may keep extra zeros, e.g. columns of dead ReLU units)
    dense_init = [n for n in masks.masks if zeros_before[n] == 0]
    assert dense_init
    for n in dense_init:
        assert int((params[n].detach() == 0).sum()) == masks.k[n], n


def test_random_mask_zeroes_at_creation_and_is_seeded() -> None:
    p1 = {"w": nn.Parameter(torch.randn(6, 10)), "b": nn.Parameter(torch.randn(10))}
    p2 = {"w": nn.Parameter(p1["w"].detach().clone()), "b": nn.Parameter(torch.randn(10))}
    m1 = apply_sparsity(p1, 0.25, "random", seed=3)
    m2 = apply_sparsity(p2, 0.25, "random", seed=3)
    assert torch.equal(m1.masks["w"], m2.masks["w"]) and "b" not in m1.masks
    assert int((p1["w"] == 0).sum()) == 15 == m1.masked_count()
    assert int((p1["b"] == 0).sum()) == 0
    m3 = apply_sparsity({"w": nn.Parameter(torch.randn(6, 10))}, 0.25, "random", seed=4)
    assert not torch.equal(m1.masks["w"], m3.masks["w"])


def test_magnitude_keeps_largest_and_breaks_ties_by_seed() -> None:
    w = torch.arange(1.0, 21.0).view(4, 5)
    p = {"w": nn.Parameter(w.clone())}
    m = apply_sparsity(p, 0.3, "magnitude", seed=0)
    assert torch.equal(m.masks["w"].flatten(), torch.arange(20) >= 6)  # 6 smallest dropped
    z1 = apply_sparsity({"w": nn.Parameter(torch.zeros(4, 5))}, 0.5, "magnitude", seed=1).masks["w"]
    z2 = apply_sparsity({"w": nn.Parameter(torch.zeros(4, 5))}, 0.5, "magnitude", seed=1).masks["w"]
    assert torch.equal(z1, z2) and int((~z1).sum()) == 10
    # before fixing nothing is masked and gradients flow
    q = {"w": nn.Parameter(torch.randn(4, 5))}
    late = apply_sparsity(q, 0.5, "magnitude", seed=0, warmup_steps=3)
    q["w"].sum().backward()
    assert torch.equal(q["w"].grad, torch.ones(4, 5)) and late.masked_count() == 10
    late.maybe_fix(2)
    assert not late.fixed
    late.maybe_fix(3)
    q["w"].grad = None
    q["w"].sum().backward()
    assert torch.equal(q["w"].grad, late.masks["w"].float())


def test_sparsity_invalid_settings() -> None:
    p = {"w": nn.Parameter(torch.randn(3, 3))}
    for bad in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"fraction must be a number in \[0, 1\)"):
            apply_sparsity(p, bad, "random", seed=0)
    with pytest.raises(ConfigError, match="criterion must be one of random, magnitude"):
        apply_sparsity(p, 0.5, "l1", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fraction"):
        sparsity_masked_count([(3, 3)], 1.0)
    assert sparsity_masked_count([(3, 3), (3,), (2, 2, 2)], 0.5) == round(4.5) + 4
    assert apply_sparsity(p, 0.0, "magnitude", seed=0).masked_count() == 0
