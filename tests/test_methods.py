"""The method hooks with real numbers on a MiniLM-shaped architecture (6 layers, hidden 384), and a method
registered here that works through counting, candidates, learning rates and building with no core edit."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Sequence

import pytest

from autopeft.arch import ArchInfo
from autopeft.builder import ModelInfo, build_model, count_params, load_base, model_info, validate_candidate
from autopeft.candidate import Candidate
from autopeft.errors import ConfigError
from autopeft.export import _autopeft_only
from autopeft.methods import (ParamDecl, PeftMethod, baseline_candidates, cost_feature_vector, get_method,
                              learning_rates, method_names, register_method, unregister_method)
from autopeft.plot import baseline_keys, is_baseline

ARCH = ArchInfo("bert", "bert.encoder.layer", {s: s for s in ("q", "k", "v", "o", "ffn_up", "ffn_down")},
                num_layers=6, hidden_size=384, intermediate_size=1536, num_heads=12, max_positions=512)
HEAD = 384 * 2 + 2  # the classifier of a 2-label model
INFO = ModelInfo("minilm-shaped", ARCH, 2, base_params=22_713_986, head_params=HEAD, head_modules=("classifier",))
ALL = list(range(6))
LORA8 = {"r": 8, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}
SA64 = {"size": 64, "scaling": 1.0}
ADAPTER64 = 64 * 384 + 64 + 384 * 64 + 384  # down, bias, up, bias


@pytest.mark.parametrize("methods,layers,sparsity,expected", [
    ({"lora": LORA8}, ALL, None, 6 * 2 * (8 * 384 + 384 * 8) + HEAD),
    ({"lora": {**LORA8, "r": [2, 8], "targets": ["q"]}}, [0, 1], None, (2 * 384 + 384 * 2) + (8 * 384 + 384 * 8) + HEAD),
    ({"dora": LORA8}, ALL, None, 6 * 2 * (8 * 384 + 384 * 8 + 384) + HEAD),
    ({"ia3": {"targets": ["k", "v", "ffn_down"]}}, ALL, None, 6 * (384 + 384 + 1536) + HEAD),
    ({"prefix": {"length": 20}}, [], None, 20 * 6 * 2 * 384 + HEAD),
    ({"serial_adapter": SA64}, ALL, None, 6 * 2 * ADAPTER64 + HEAD),
    ({"parallel_adapter": SA64}, ALL, None, 6 * ADAPTER64 + HEAD),
    ({"full": {}}, [], None, 22_713_986),
    ({}, [], None, HEAD),
    ({"lora": LORA8}, ALL, {"fraction": 0.5}, 6 * 2 * 8 * 384 + HEAD),  # half of every matrix masked
    # IA3's vectors are not sparsifiable: only the adapters' matrices lose half
    ({"ia3": {"targets": ["k", "v", "ffn_down"]}, "serial_adapter": SA64}, ALL, {"fraction": 0.5},
     6 * 2304 + 6 * 2 * (ADAPTER64 - 64 * 384) + HEAD),
])
def test_exact_counts(methods: dict, layers: list[int], sparsity: dict | None, expected: int) -> None:
    assert count_params(Candidate.make(methods, layers, sparsity), INFO) == expected


def test_full_counts_every_parameter_and_excludes_others() -> None:
    full = get_method("full")
    assert full.trainable_count({}, [], INFO) == INFO.base_params
    assert full.param_shapes({}, [], ARCH) == []  # no longer raises
    assert full.exclusive and full.trains_base and not full.sparsifiable
    assert [n for n in method_names() if get_method(n).exclusive] == ["full"]
    with pytest.raises(ConfigError, match=r"^method 'full' cannot be combined with other methods$"):
        validate_candidate(Candidate.make({"full": {}, "serial_adapter": SA64}, [0]), INFO)


def test_sparsity_applies_only_to_sparsifiable_methods() -> None:
    assert {n: get_method(n).sparsifiable for n in method_names()} == {
        "lora": True, "dora": True, "ia3": False, "prefix": True, "serial_adapter": True, "parallel_adapter": True,
        "full": False}
    sp = {"fraction": 0.5, "criterion": "random"}
    assert Candidate.make({"ia3": {"targets": ["k"]}}, [0], sp).sparsity == {}
    assert Candidate.make({"full": {}}, [], sp).sparsity == {}
    assert Candidate.make({"prefix": {"length": 5}}, [], sp).sparsity == {"fraction": 0.5, "criterion": "random",
                                                                         "warmup_steps": 0}


def test_backprop_depth() -> None:
    assert get_method("lora").backprop_depth(LORA8, [3, 4, 5], 6) == 0.5
    assert get_method("serial_adapter").backprop_depth(SA64, [5], 6) == pytest.approx(1 / 6)
    assert get_method("serial_adapter").backprop_depth(SA64, ALL, 6) == 1.0
    assert get_method("ia3").backprop_depth({"targets": ["k"]}, [], 6) == 0.0
    assert get_method("prefix").backprop_depth({"length": 5}, [], 6) == 1.0
    assert get_method("full").backprop_depth({}, [], 6) == 1.0


def test_cost_feature_vector() -> None:
    assert [(n, get_method(n).n_cost_features) for n in method_names() if get_method(n).n_cost_features] == [("prefix", 1)]
    assert cost_feature_vector({"prefix": {"length": 20}}, 0.0) == [0.2]
    assert cost_feature_vector({"lora": LORA8}, 1.0) == [0.0]
    assert cost_feature_vector({}, 0.0) == [0.0]


def test_baseline_candidates() -> None:
    got = baseline_candidates(6)
    assert list(got) == ["lora r=8 q,v", "ia3", "prefix 20", "serial adapter 64"]
    assert got["lora r=8 q,v"] == Candidate.make({"lora": LORA8}, ALL)
    assert got["ia3"] == Candidate.make({"ia3": {"targets": ["k", "v", "ffn_down"]}}, ALL)
    assert got["prefix 20"].to_dict() == {"methods": {"prefix": {"length": 20}}, "layers": [], "sparsity": {},
                                          "lr_multiplier": 1.0}
    assert got["serial adapter 64"].layers == ALL and got["serial adapter 64"].methods == {"serial_adapter": SA64}
    assert get_method("dora").baselines(6) == get_method("parallel_adapter").baselines(6) == {}


def test_plot_marks_exactly_the_baselines() -> None:
    keys = baseline_keys(6)
    assert len(keys) == 5  # the four declared ones and full fine-tuning
    assert is_baseline(Candidate.make({"full": {}}, []).to_dict(), keys)
    assert is_baseline(Candidate.make({"lora": LORA8}, ALL).to_dict(), keys)
    assert not is_baseline(Candidate.make({"lora": LORA8}, ALL, lr_multiplier=2.0).to_dict(), keys)
    assert not is_baseline(Candidate.make({"lora": LORA8}, ALL[1:]).to_dict(), keys)
    assert not is_baseline(Candidate.make({"lora": LORA8}, ALL, {"fraction": 0.5}).to_dict(), keys)
    assert not is_baseline(Candidate.make({"parallel_adapter": SA64}, ALL).to_dict(), keys)
    assert not is_baseline({"methods": {"no_such_method": {}}, "layers": []}, keys)
    assert not is_baseline(None, keys)
    # a study whose depth is unknown: the layered baselines vanish, head-only is not one
    assert baseline_keys(0) == {Candidate.make({"prefix": {"length": 20}}, []).key, Candidate.make({"full": {}}, []).key}


@pytest.mark.parametrize("methods,lr,expected", [
    ({"lora": LORA8}, 2.0, {"lora": 1e-3, "head": 1e-3}),
    ({}, 1.0, {"head": 1e-3}),
    ({}, 2.0, {"head": 2e-3}),
    ({"lora": LORA8, "serial_adapter": SA64}, 1.0, {"lora": 5e-4, "serial_adapter": 1e-3, "head": 1e-3}),
    ({"prefix": {"length": 5}, "parallel_adapter": SA64}, 0.5, {"prefix": 5e-3, "parallel_adapter": 5e-4, "head": 5e-3}),
    ({"full": {}}, 1.0, {"full": 5e-5, "head": 5e-5}),
])
def test_learning_rates(methods: dict, lr: float, expected: dict) -> None:
    assert learning_rates(Candidate.make(methods, ALL, lr_multiplier=lr)) == expected


def test_a_trial_fidelity_floors_only_the_heads_rate() -> None:
    lora = Candidate.make({"lora": LORA8}, ALL, lr_multiplier=2.0)
    assert learning_rates(lora, head_lr=0.01) == {"lora": 1e-3, "head": 0.02}  # the adapter keeps its own rate
    assert learning_rates(Candidate.make({}, [], lr_multiplier=0.5), head_lr=0.01) == {"head": 0.005}
    prefix = Candidate.make({"prefix": {"length": 5}}, [], lr_multiplier=1.0)
    assert learning_rates(prefix, head_lr=0.001) == {"prefix": 1e-2, "head": 1e-2}  # a floor, never lower


def test_export_lists_what_needs_autopeft() -> None:
    assert _autopeft_only(Candidate.make({"lora": LORA8, "serial_adapter": SA64, "parallel_adapter": SA64}, ALL)) == [
        "serial_adapter", "parallel_adapter"]
    assert _autopeft_only(Candidate.make({"full": {}}, [])) == []
    assert _autopeft_only(Candidate.make({"lora": LORA8}, ALL, {"fraction": 0.5})) == ["sparsity"]


def test_importing_declarations_loads_no_torch() -> None:
    code = ("import sys, autopeft.arch, autopeft.methods, autopeft.candidate, autopeft.space; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


class _LayerNormTuning(PeftMethod):
    """A plug-in defined only in this test: train the LayerNorms of the chosen layers (two per layer)."""

    name = "test_layernorm"
    sparsifiable = False
    default_lr = 2e-3
    n_cost_features = 2
    params = {"scale": ParamDecl("float", default=1.0, low=0.0, exclusive_low=True)}

    def param_shapes(self, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[tuple[int, ...]]:
        return [(arch.hidden_size,)] * (4 * len(layers))

    def cost_features(self, cfg: dict[str, Any], layer_fraction: float) -> list[float]:
        return [layer_fraction, cfg["scale"]]

    def baselines(self, num_layers: int) -> dict[str, tuple[dict[str, Any], list[int]]]:
        return {"layernorm top": ({"scale": 1.0}, [num_layers - 1])}

    def apply(self, model: Any, cfg: dict[str, Any], layers: Sequence[int], arch: ArchInfo) -> list[Any]:
        params = [p for i in layers for n, p in arch.layer_module(model, i).named_parameters() if "LayerNorm" in n]
        for p in params:
            p.requires_grad_(True)
        return params


def test_a_new_method_needs_no_core_edit(tiny_model: str) -> None:
    before = method_names()
    register_method(_LayerNormTuning)
    try:
        sp = {"fraction": 0.5, "criterion": "random"}
        cand = Candidate.make({"test_layernorm": {"scale": 1.0}, "serial_adapter": SA64}, [4, 5], sp)
        assert cand.sparsity  # the adapter is sparsifiable
        assert Candidate.make({"test_layernorm": {"scale": 1.0}}, [4, 5], sp).sparsity == {}
        assert count_params(cand, INFO) == 4 * 2 * 384 + 2 * 2 * (ADAPTER64 - 64 * 384) + HEAD
        assert learning_rates(cand) == {"test_layernorm": 2e-3, "serial_adapter": 1e-3, "head": 2e-3}
        assert cost_feature_vector(cand.methods, 1 / 3) == [0.0, 1 / 3, 1.0]  # prefix's, then this method's two
        assert get_method("test_layernorm").backprop_depth({}, [4, 5], 6) == pytest.approx(2 / 6)
        assert baseline_candidates(6)["layernorm top"] == Candidate.make({"test_layernorm": {"scale": 1.0}}, [5])
        assert Candidate.from_dict(cand.to_dict()) == cand
        # and it builds: the tiny BERT (hidden 64, 2 layers), LayerNorms of layer 1 only
        info = model_info(tiny_model, 2)
        small = Candidate.make({"test_layernorm": {"scale": 1.0}}, [1])
        built = build_model(small, load_base(tiny_model, 2)[0], info)
        assert built.trainable == count_params(small, info) == 4 * 64 + info.head_params
        assert {g["name"]: g["lr"] for g in built.param_groups} == {"test_layernorm": 2e-3, "head": 2e-3}
    finally:
        unregister_method("test_layernorm")
    assert method_names() == before


def test_register_refuses_a_method_without_its_declarations() -> None:
    class NoSparsity(PeftMethod):
        name = "test_incomplete"
        default_lr = 1e-3

    with pytest.raises(ValueError, match=r"^method 'test_incomplete' \(NoSparsity\) does not declare sparsifiable$"):
        register_method(NoSparsity)
    assert "test_incomplete" not in method_names()


def test_sparse_ia3_with_an_adapter_counts_what_it_builds(tiny_model: str) -> None:
    info = model_info(tiny_model, 2)
    cand = Candidate.make({"ia3": {"targets": ["k", "v", "ffn_down"]}, "parallel_adapter": {"size": 8, "scaling": 1.0}},
                          [1], {"fraction": 0.4, "criterion": "random"})
    assert build_model(cand, load_base(tiny_model, 2)[0], info).trainable == count_params(cand, info)
