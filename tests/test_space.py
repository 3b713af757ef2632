"""Search-space loading, validation errors, encoding round trips and Optuna distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from autopeft.arch import ArchInfo
from autopeft.candidate import Candidate
from autopeft.errors import ConfigError, SpaceError
from autopeft.methods import get_method, learning_rates
from autopeft.space import BoundSpace, SearchSpace, shipped_spaces


#: a BERT-shaped model of 6 layers (the peft configs of a space's candidates need no weights)
ARCH = ArchInfo("bert", "bert.encoder.layer", {s: s for s in ("q", "k", "v", "o", "ffn_up", "ffn_down")},
                num_layers=6, hidden_size=384, intermediate_size=1536, num_heads=12, max_positions=512)


def test_shipped_spaces_load_and_bind() -> None:
    assert {"autopeft", "lora", "mixed", "tiny"} <= set(shipped_spaces())
    for name in shipped_spaces():
        sp = SearchSpace.load(name)
        for depth in (2, 6, 12):
            b = sp.bind(depth)
            assert b.size == sum(d.width for d in b.dims)
    # AutoPEFT's space adapts to depth: one switch per layer
    b12 = SearchSpace.load("autopeft").bind(12)
    assert sum(d.name.startswith("layer.") for d in b12.dims) == 12
    assert b12.by_name["serial_adapter.size"].choices == (0, 1, 3, 6, 12, 24, 48, 96, 192, 384, 768)


@pytest.mark.parametrize("name", ["autopeft", "lora", "mixed", "tiny"])
def test_encoding_round_trips(name: str) -> None:
    b = SearchSpace.load(name).bind(6)
    rng = np.random.default_rng(1)
    seen = set()
    for c in b.sample(rng, 200):
        x = b.encode(c)
        assert x.shape == (b.size,)
        assert np.all((x >= 0) & (x <= 1))
        assert b.decode(x) == c
        assert b.contains(c)
        # the candidate survives JSON and Optuna params
        assert Candidate.from_json(c.to_json()) == c
        assert b.candidate_from_params(b.optuna_params(c)) == c
        seen.add(c.key)
    assert len(seen) > 50  # sampling covers the space


@pytest.mark.parametrize("layers", [6, 12])
@pytest.mark.parametrize("name", shipped_spaces())
def test_optuna_params_round_trip(name: str, layers: int) -> None:
    """A trial's params rebuild its candidate: candidate_from_params inverts optuna_params, and suggest (public
    suggest_* API only) on a trial holding those params returns the candidate."""
    b = SearchSpace.load(name).bind(layers)
    rng = np.random.default_rng(layers)
    for c in b.sample(rng, 100):
        params = b.optuna_params(c)
        assert b.candidate_from_params(params) == c
        assert b.suggest(optuna.trial.FixedTrial(params)) == c
        assert b.suggest(_Recorder(params)) == c


class _Recorder:
    """A trial with only Optuna's public suggest API; it records the distribution of every suggestion."""

    def __init__(self, params: dict[str, object]) -> None:
        self.params = params
        self.asked: dict[str, optuna.distributions.BaseDistribution] = {}

    def suggest_categorical(self, name: str, choices: list[object]) -> object:
        self.asked[name] = optuna.distributions.CategoricalDistribution(choices)
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> object:
        self.asked[name] = optuna.distributions.IntDistribution(low, high, log=log)
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> object:
        self.asked[name] = optuna.distributions.FloatDistribution(low, high, log=log)
        return self.params[name]


@pytest.mark.parametrize("name", ["tiny", "mixed", "autopeft"])
def test_suggest_asks_the_active_dimensions_with_their_distributions(name: str) -> None:
    b = SearchSpace.load(name).bind(4)
    dists = b.distributions()
    for c in b.sample(np.random.default_rng(0), 30):
        params = b.optuna_params(c)
        trial = _Recorder(params)
        assert b.suggest(trial) == c
        assert list(trial.asked) == list(params)  # the active dimensions only, switches before what they switch
        assert all(trial.asked[k] == dists[k] for k in trial.asked)


def test_candidate_from_params_errors_and_inactive_params() -> None:
    b = SearchSpace.load("tiny").bind(2)
    c = Candidate.make({"serial_adapter": {"size": 8, "scaling": 1.0}}, [0, 1])
    params = b.optuna_params(c)
    assert params == {"method": "serial_adapter", "layer.0": True, "layer.1": True, "serial_adapter.size": 8,
                      "sparsity.fraction": 0.0}
    assert b.candidate_from_params({**params, "lora.r": 4}) == c  # an inactive dimension is ignored
    with pytest.raises(SpaceError, match=r"^parameter 'x' is not a dimension of search space 'tiny'$"):
        b.candidate_from_params({**params, "x": 1.0})
    with pytest.raises(SpaceError, match=r"^parameter 'serial_adapter\.size' of search space 'tiny' is missing$"):
        b.candidate_from_params({k: v for k, v in params.items() if k != "serial_adapter.size"})
    with pytest.raises(SpaceError, match=r"^value 5 is not a choice of serial_adapter\.size$"):
        b.candidate_from_params({**params, "serial_adapter.size": 5})
    lora = b.candidate_from_params({**params, "method": "lora", "lora.r": 2, "lora.targets": "q,k,v,o"})
    assert lora.methods["lora"]["targets"] == ["q", "k", "v", "o"] and lora.methods["lora"]["r"] == 2


def test_inactive_dimensions_are_ignored_on_decode() -> None:
    b = SearchSpace.load("tiny").bind(2)
    c = Candidate.make({"serial_adapter": {"size": 8, "scaling": 1.0}}, [0, 1])
    x = b.encode(c)
    lora_r = b.offsets["lora.r"]
    for v in (0.0, 0.5, 1.0):  # the LoRA rank is inactive when the method is serial_adapter
        y = x.copy()
        y[lora_r] = v
        assert b.decode(y) == c


def test_mixed_space_has_all_methods_sparsity_and_lr() -> None:
    b = SearchSpace.load("mixed").bind(6)
    assert set(b.by_name["method"].choices) == {"lora", "dora", "ia3", "prefix", "serial_adapter", "parallel_adapter"}
    assert "sparsity.fraction" in b.by_name and "training.lr_multiplier" in b.by_name
    assert isinstance(b.distributions()["training.lr_multiplier"], optuna.distributions.FloatDistribution)


def test_size_zero_switches_a_method_off_under_select_all() -> None:
    b = SearchSpace.load("autopeft").bind(4)
    vals = {"layer.0": True, "layer.1": False, "layer.2": True, "layer.3": True,
            "serial_adapter.size": 0, "parallel_adapter.size": 12, "prefix.length": 0}
    c = b.candidate_from_values(vals)
    assert list(c.methods) == ["parallel_adapter"] and c.layers == [0, 2, 3]
    head = b.candidate_from_values({**vals, "parallel_adapter.size": 0})
    assert head.methods == {} and head.layers == []  # nothing left: a head-only candidate, canonical


def test_per_layer_rank_space() -> None:
    sp = SearchSpace.from_dict({"placement": {"layers": "per_layer"},
                                "methods": {"lora": {"r": {"choices": [2, 4, 8], "per_layer": True}}}})
    b = sp.bind(3)
    assert [d.name for d in b.dims] == ["layer.0", "layer.1", "layer.2", "lora.r.0", "lora.r.1", "lora.r.2"]
    c = b.candidate_from_values({"layer.0": True, "layer.1": False, "layer.2": True, "lora.r.0": 2, "lora.r.2": 8})
    assert c.methods["lora"]["r"] == [2, 8] and c.layers == [0, 2]
    assert b.decode(b.encode(c)) == c


def test_int_and_log_ranges() -> None:
    sp = SearchSpace.from_dict({"methods": {"lora": {"r": {"int": [1, 64], "log": True}},
                                            "prefix": {"length": {"int": [2, 40]}}},
                                "training": {"lr_multiplier": {"float": [0.1, 10.0], "log": True}}})
    b = sp.bind(2)
    rng = np.random.default_rng(0)
    rs = [c.methods["lora"]["r"] for c in b.sample(rng, 300) if "lora" in c.methods]
    assert min(rs) >= 1 and max(rs) <= 64 and np.median(rs) < 16  # log scale favours small ranks
    assert isinstance(b.distributions()["lora.r"], optuna.distributions.IntDistribution)
    assert b.distributions()["lora.r"].log


# ----------------------------------------------------------------------------- bad input
BAD = [
    ({"methods": {"loraa": {}}}, "unknown method 'loraa'"),
    ({"methods": {"lora": {"r": 0}}}, "methods.lora.r must be >= 1, got 0"),
    ({"methods": {"lora": {"r": {"choices": [4, -2]}}}}, "methods.lora.r must be >= 1, got -2"),
    ({"methods": {"lora": {"rank": 4}}}, "unknown key 'rank' in methods.lora"),
    ({"methods": {"lora": {}}, "extra": 1}, "unknown key 'extra' in top level"),
    ({"methods": {"lora": {"targets": ["q", "x"]}}}, "unknown sub-module 'x'"),
    ({"methods": {"lora": {"r": {"int": [8, 2]}}}}, "low 8 is greater than high 2"),
    ({"methods": {"lora": {"r": {"choices": [1], "int": [1, 2]}}}}, "exactly one of"),
    ({"methods": {"ia3": {"targets": {"choices": [["k"]], "per_layer": True}}}}, "cannot be searched per layer"),
    ({"select": "some", "methods": {"lora": {}}}, "select must be 'one' or 'all'"),
    ({"select": "all", "methods": {"lora": {}, "ia3": {}}}, "at most one peft-based method"),
    ({"select": "all", "methods": {"serial_adapter": {}, "full": {}}},
     "method 'full' cannot be combined with other methods under select: all"),
    ({"placement": {"layers": "most"}, "methods": {"lora": {}}}, "placement.layers must be"),
    ({}, "'methods' is required"),
    ([1, 2], "must be a mapping"),
    ({"methods": {"lora": {}}, "version": 2}, "version must be 1"),
    ({"methods": {"lora": {}}, "sparsity": {"fraction": 1.5}}, "sparsity.fraction must be <= 0.99"),
    ({"methods": {"lora": {}}, "sparsity": {"criterion": "l1"}}, "sparsity.criterion must be one of random, magnitude"),
    ({"methods": {"lora": {"lora_alpha": 0}}}, "methods.lora.lora_alpha must be > 0, got 0"),
    ({"methods": {"ia3": {"lora_alpha": 16}}}, "unknown key 'lora_alpha' in methods.ia3"),
    ({"methods": {"lora": {"lora_alpha": {"choices": [8], "per_layer": True}}}}, "lora_alpha cannot be searched per layer"),
    ({"methods": {"lora": {}}, "training": {"learning_rate": 0}}, "training.learning_rate must be > 0, got 0"),
    ({"methods": {"lora": {}}, "training": {"lr": 1e-3}}, "allowed keys: lr_multiplier, learning_rate"),
]


@pytest.mark.parametrize("data,msg", BAD)
def test_bad_spaces_raise_precise_errors(data: object, msg: str) -> None:
    with pytest.raises(SpaceError) as e:
        SearchSpace.from_dict(data, source="s.yaml")
    assert msg in str(e.value)
    assert "\n" not in str(e.value)


def test_layer_index_beyond_depth() -> None:
    sp = SearchSpace.from_dict({"placement": {"layers": [0, 7]}, "methods": {"lora": {}}})
    with pytest.raises(SpaceError, match=r"layer index 7, but the model has 6 layers \(allowed 0..5\)"):
        sp.bind(6)


def test_bad_files(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("methods: [lora\n  r: 4\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        SearchSpace.load(p)
    with pytest.raises(SpaceError, match="search space file not found"):
        SearchSpace.load(tmp_path / "nope.yaml")
    with pytest.raises(SpaceError, match="neither a file nor a shipped space; shipped spaces: autopeft"):
        SearchSpace.load("no-such-space")
    p.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(SpaceError, match="not valid YAML"):  # safe loading: no object construction
        SearchSpace.load(p)


def test_candidate_validation_errors() -> None:
    with pytest.raises(ConfigError, match="methods.lora.r must be >= 1, got 0"):
        Candidate.from_dict({"methods": {"lora": {"r": 0}}, "layers": [0]})
    with pytest.raises(SpaceError, match="unknown method 'lorax'"):
        Candidate.from_dict({"methods": {"lorax": {}}, "layers": [0]})
    with pytest.raises(ConfigError, match="sparsity.fraction must be in"):
        Candidate.from_dict({"methods": {"lora": {"r": 2}}, "layers": [0], "sparsity": {"fraction": 1.0}})


def test_spaces_accept_peft_names(tmp_path: Path) -> None:
    """peft's own names: target_modules with the model's module names (query, q_proj, ...) and lora_dropout are the
    same space as ours; giving both spellings of one parameter, or an ambiguous module name, is an error."""
    from autopeft.errors import SpaceError
    from autopeft.space import SearchSpace

    def load(text: str) -> SearchSpace:
        p = tmp_path / "s.yaml"
        p.write_text(text)
        return SearchSpace.load(p)

    ours = load("methods: {lora: {r: {choices: [4, 8]}, targets: {choices: [[q, v], [q, k, v, o]]}, dropout: 0.05}}\n")
    peft = load("methods: {lora: {r: {choices: [4, 8]}, target_modules: {choices: [[query, value], "
                "[q_proj, k_proj, v_proj, attention.output.dense]]}, lora_dropout: 0.05}}\n")
    assert peft.raw != ours.raw and peft.bind(6).size == ours.bind(6).size
    assert [d.name for d in peft.bind(6).dims] == [d.name for d in ours.bind(6).dims]
    assert load("methods: {ia3: {target_modules: [key, value, output.dense]}}\n").bind(2).size >= 0
    with pytest.raises(SpaceError, match="gives both target_modules and targets"):
        load("methods: {lora: {targets: [q], target_modules: [query]}}\n")
    with pytest.raises(SpaceError, match="unknown sub-module 'dense'"):
        load("methods: {lora: {target_modules: [dense]}}\n").bind(2)


def test_shipped_spaces_are_found_in_an_installed_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed from a wheel there is no source checkout: the spaces are package data in autopeft/search_spaces
    (found before as a MultiplexedPath string, so no shipped space was found)."""
    import autopeft.space as space_mod

    pkg = tmp_path / "site-packages" / "autopeft"
    (pkg / "search_spaces").mkdir(parents=True)
    (pkg / "search_spaces" / "lora.yaml").write_text("methods: {lora: {r: 8}}\n")
    monkeypatch.setattr(space_mod, "__file__", str(pkg / "space.py"))
    assert space_mod.shipped_spaces() == ["lora"]


# ----------------------------------------------------------------------------- names users know
def _round_trips(b: BoundSpace, c: Candidate) -> None:
    """Every way a candidate travels through the space gives it back."""
    assert b.contains(c)
    assert b.decode(b.encode(c)) == c
    params = b.optuna_params(c)
    assert b.candidate_from_params(params) == c
    assert b.suggest(optuna.trial.FixedTrial(params)) == c


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_a_fixed_lora_alpha_holds_for_every_rank(method: str) -> None:
    """peft's lora_alpha: 16 with a searched r: the candidate keeps alpha_ratio = 16 / r, so peft gets lora_alpha 16
    at every rank; lora_alpha fixed is no dimension, and a candidate with another alpha is no point of the space."""
    b = SearchSpace.from_dict({"methods": {method: {"r": {"choices": [4, 8, 16]}, "lora_alpha": 16}}}).bind(6)
    assert [d.name for d in b.dims] == [f"{method}.r"]
    for r, ratio in ((4, 4.0), (8, 2.0), (16, 1.0)):
        c = b.candidate_from_values({f"{method}.r": r})
        assert c.methods[method] == {"r": r, "targets": ["q", "v"], "alpha_ratio": ratio, "dropout": 0.1}
        cfg = get_method(method).peft_config(c.methods[method], c.layers, ARCH, ["classifier"])
        assert (cfg.r, cfg.lora_alpha) == (r, 16.0)
        _round_trips(b, c)
    other = Candidate.make({method: {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}}, range(6))
    assert not b.contains(other)  # lora_alpha 8
    # the same space in our names differs only in the candidates' alpha_ratio
    ours = SearchSpace.from_dict({"methods": {method: {"r": {"choices": [4, 8, 16]}, "alpha_ratio": 4.0}}}).bind(6)
    assert ours.candidate_from_values({f"{method}.r": 4}) == b.candidate_from_values({f"{method}.r": 4})


@pytest.mark.parametrize("alpha,kind", [({"choices": [8, 16, 32]}, "ord"), ({"float": [4, 64], "log": True}, "float"),
                                        ({"int": [4, 64]}, "int")])
def test_a_searched_lora_alpha_is_a_dimension_and_round_trips(alpha: dict, kind: str) -> None:
    """lora_alpha searched is the dimension lora.lora_alpha (what a sampler models); each candidate's alpha_ratio x r
    gives it back, through Candidate's rounding (r = 3, 7, ... leave alpha_ratio inexact), at the range's bounds too."""
    b = SearchSpace.from_dict({"methods": {"lora": {"r": {"int": [1, 12]}, "lora_alpha": alpha}}}).bind(4)
    d = b.by_name["lora.lora_alpha"]
    assert [x.name for x in b.dims] == ["lora.r", "lora.lora_alpha"] and d.kind == kind
    if kind == "ord":
        assert d.choices == (8.0, 16.0, 32.0)
    n_inexact = 0
    for c in b.sample(np.random.default_rng(3), 150):
        cfg = c.methods["lora"]
        assert set(cfg) == {"r", "targets", "alpha_ratio", "dropout"}  # the candidate format: no lora_alpha
        params = b.optuna_params(c)
        assert cfg["alpha_ratio"] * cfg["r"] == pytest.approx(params["lora.lora_alpha"], rel=1e-5)
        assert 4 <= params["lora.lora_alpha"] <= 64
        if kind != "float":
            assert params["lora.lora_alpha"] in (d.choices if kind == "ord" else range(4, 65))
        n_inexact += cfg["alpha_ratio"] * cfg["r"] != params["lora.lora_alpha"]
        _round_trips(b, c)
    assert n_inexact > 10 or kind == "float"  # a choice or an integer needed snapping back onto it
    for r, a in ((3, 4), (7, 64), (12, 64)):  # at the bounds
        c = b.candidate_from_values({"lora.r": r, "lora.lora_alpha": d.choices[-1] if kind == "ord" else a})
        _round_trips(b, c)


def test_lora_alpha_errors_have_exact_messages() -> None:
    both = {"methods": {"lora": {"r": 8, "alpha_ratio": 2.0, "lora_alpha": 16}}}
    with pytest.raises(SpaceError, match=r"^s\.yaml: methods\.lora gives both lora_alpha and alpha_ratio "
                                         r"\(lora_alpha = alpha_ratio × r\); keep one$"):
        SearchSpace.from_dict(both, source="s.yaml")
    per_layer = {"methods": {"dora": {"r": {"choices": [2, 4], "per_layer": True}, "lora_alpha": 16}}}
    with pytest.raises(SpaceError, match=r"^s\.yaml: methods\.dora\.lora_alpha does not take a per-layer r; give "
                                         r"alpha_ratio there \(lora_alpha = alpha_ratio × r\)$"):
        SearchSpace.from_dict(per_layer, source="s.yaml")
    with pytest.raises(SpaceError, match=r"^s\.yaml: training gives both learning_rate and lr_multiplier; keep one "
                                         r"\(learning_rate is the rate of the candidate's method, lr_multiplier "
                                         r"multiplies each method's default rate\)$"):
        SearchSpace.from_dict({"methods": {"lora": {}}, "training": {"learning_rate": 1e-3, "lr_multiplier": 2.0}},
                              source="s.yaml")


def test_a_fixed_learning_rate_is_the_rate_of_every_candidate() -> None:
    """training.learning_rate 3e-4: lora (default 5e-4) and ia3 (default 5e-3) each train at 3e-4, and so does the
    head; with several methods the one of the highest default rate takes it, the others keep their ratio to it."""
    b = SearchSpace.from_dict({"methods": {"lora": {}, "ia3": {}}, "training": {"learning_rate": 3e-4}}).bind(4)
    assert [d.name for d in b.dims] == ["method"]
    lora = b.candidate_from_values({"method": "lora"})
    assert lora.lr_multiplier == 0.6
    assert learning_rates(lora) == {"lora": pytest.approx(3e-4, rel=1e-12), "head": pytest.approx(3e-4, rel=1e-12)}
    ia3 = b.candidate_from_values({"method": "ia3"})
    assert ia3.lr_multiplier == 0.06
    assert learning_rates(ia3) == {"ia3": pytest.approx(3e-4, rel=1e-12), "head": pytest.approx(3e-4, rel=1e-12)}
    for c in (lora, ia3):
        _round_trips(b, c)
    assert not b.contains(Candidate.make(ia3.methods, ia3.layers))  # ia3 at its default 5e-3
    # select: all: serial_adapter's 1e-3 is the highest default, lora keeps half of it; switched off, lora takes it
    b = SearchSpace.from_dict({"select": "all", "methods": {"lora": {"r": {"choices": [0, 8]}},
                                                           "serial_adapter": {"size": {"choices": [0, 16]}}},
                               "training": {"learning_rate": 3e-4}}).bind(4)
    both = b.candidate_from_values({"lora.r": 8, "serial_adapter.size": 16})
    assert learning_rates(both) == {"lora": pytest.approx(1.5e-4), "serial_adapter": pytest.approx(3e-4),
                                    "head": pytest.approx(3e-4)}
    alone = b.candidate_from_values({"lora.r": 8, "serial_adapter.size": 0})
    assert learning_rates(alone) == {"lora": pytest.approx(3e-4), "head": pytest.approx(3e-4)}
    head_only = b.candidate_from_values({"lora.r": 0, "serial_adapter.size": 0})
    assert head_only.methods == {} and learning_rates(head_only) == {"head": pytest.approx(3e-4, rel=1e-12)}
    for c in (both, alone, head_only):
        _round_trips(b, c)


def test_a_searched_learning_rate_is_a_dimension_and_round_trips() -> None:
    """training.learning_rate searched is the dimension a sampler models; every candidate trains its head at the
    rate its params give, and comes back from them, at the range's bounds too."""
    b = SearchSpace.from_dict({"methods": {"lora": {"r": {"choices": [4, 8]}}, "ia3": {}, "prefix": {},
                                           "serial_adapter": {}},
                               "training": {"learning_rate": {"float": [1e-5, 1e-2], "log": True}}}).bind(4)
    assert [d.name for d in b.dims] == ["method", "lora.r", "training.learning_rate"]
    assert b.distributions()["training.learning_rate"] == optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)
    rates = []
    for c in b.sample(np.random.default_rng(5), 200):
        lr = b.optuna_params(c)["training.learning_rate"]
        assert 1e-5 <= lr <= 1e-2
        assert learning_rates(c)["head"] == pytest.approx(lr, rel=1e-5)
        rates.append(lr)
        _round_trips(b, c)
    assert min(rates) < 1e-4 and max(rates) > 1e-3  # log scale over three decades
    for method, lr in (("ia3", 1e-2), ("prefix", 1e-5), ("serial_adapter", 1e-2)):
        c = b.candidate_from_values({"method": method, "training.learning_rate": lr})
        assert b.values_of(c)["training.learning_rate"] == lr
        _round_trips(b, c)
    # the same searched as choices
    b = SearchSpace.from_dict({"methods": {"lora": {}},
                               "training": {"learning_rate": {"choices": [1e-4, 3e-4]}}}).bind(2)
    c = b.candidate_from_values({"training.learning_rate": 3e-4})
    assert b.optuna_params(c) == {"training.learning_rate": 3e-4}
    _round_trips(b, c)


def test_a_candidates_methods_are_a_copy_that_cannot_change_it() -> None:
    """``Candidate.methods`` is a fresh deep copy (nested lists too): changing it leaves the candidate, its key and
    its equality as they were."""
    c = Candidate.make({"lora": {"r": [2, 8], "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}}, [0, 2], {})
    key = c.key
    m = c.methods
    m["lora"]["targets"].append("k")
    m["lora"]["r"][0] = 64
    m["ia3"] = {}
    assert c.methods == {"lora": {"r": [2, 8], "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}}
    assert c.key == key and c == Candidate.make({"lora": {"r": [2, 8], "targets": ["q", "v"], "alpha_ratio": 2.0,
                                                          "dropout": 0.1}}, [0, 2], {})
    assert c.methods is not c.methods and c.methods["lora"]["r"] is not c.methods["lora"]["r"]
