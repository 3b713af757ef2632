"""Search-space loading, validation errors, encoding round trips and Optuna distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from autopeft.candidate import Candidate
from autopeft.errors import ConfigError, SpaceError
from autopeft.space import SearchSpace, shipped_spaces


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
