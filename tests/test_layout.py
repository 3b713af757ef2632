"""--layers-pattern / --target-modules: where a model's layers and projections are, when the user says so.  T5 is found
by itself (both stacks, autopeft.stacks); a layout points autopeft at one stack (here T5's encoder: SelfAttention.q,
DenseReluDense.wi), which is searched, exported and rebuilt with that layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopeft.arch import layout_text, parse_layout
from autopeft.errors import ConfigError, ModelError, StudyError

T5_LAYERS = "transformer.encoder.block"
T5_TARGETS = ("q=layer.0.SelfAttention.q,k=layer.0.SelfAttention.k,v=layer.0.SelfAttention.v,o=layer.0.SelfAttention.o,"
              "ffn_up=layer.1.DenseReluDense.wi,ffn_down=layer.1.DenseReluDense.wo")


@pytest.fixture(scope="module")
def tiny_t5(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    from conftest import build_tiny_t5

    # a classifier of 3 encoder and 1 decoder layers; T5 pools at the end-of-sequence token ([SEP])
    return str(build_tiny_t5(tmp_path_factory.mktemp("t5"), tiny_model, seq2seq=False, num_layers=3, num_labels=2))


def test_layout_options_are_checked_with_exact_messages() -> None:
    assert parse_layout(None, None) is None
    lay = parse_layout("a.b", "v=x.v,q=x.q")
    assert lay == ("a.b", (("q", "x.q"), ("v", "x.v")))  # in the sub-modules' order
    assert parse_layout(None, {"q": "attn.q"}) == ("", (("q", "attn.q"),))
    assert layout_text(lay) == "--layers-pattern a.b --target-modules q=x.q,v=x.v"
    bad = {("a..b", None): "--layers-pattern must be a dotted module path such as transformer.encoder.block, got 'a..b'",
           (None, "q:attn.q"): "--target-modules: 'q:attn.q' is not SUB=NAME; give e.g. "
                               "q=attn.q,k=attn.k,v=attn.v,o=attn.o,ffn_up=mlp.wi,ffn_down=mlp.wo",
           (None, "query=attn.q"): "--target-modules: unknown sub-module 'query'; allowed: q, k, v, o, ffn_up, "
                                   "ffn_down, ffn_gate",
           (None, "q=attn.q,q=attn.k"): "--target-modules gives q twice",
           (None, "q=attn q"): "--target-modules: q='attn q' is not a dotted module name inside a layer"}
    for (lp, tm), msg in bad.items():
        with pytest.raises(ConfigError) as e:
            parse_layout(lp, tm)
        assert str(e.value) == msg


def test_t5_is_found_natively_and_a_layout_restricts_it_to_one_stack(tiny_t5: str) -> None:
    from autopeft.builder import model_info

    native = model_info(tiny_t5, 2).arch  # both stacks: 3 encoder + 1 decoder layers, 4 placement switches
    assert (native.num_layers, native.layer_path(3), native.module_names(3, "v")) == (
        4, "transformer.decoder.block.0", ["transformer.decoder.block.0.layer.0.SelfAttention.v",
                                           "transformer.decoder.block.0.layer.1.EncDecAttention.v"])
    with pytest.raises(ModelError, match=r"^--target-modules q=layer.0.SelfAttention.query: layer 0 of "
                                         r"transformer.encoder.block has no linear layer 'layer.0.SelfAttention.query'; "
                                         r"its linear layers: layer.0.SelfAttention.k, "):
        model_info(tiny_t5, 2, False, parse_layout(T5_LAYERS, T5_TARGETS.replace("SelfAttention.q,", "SelfAttention.query,")))
    with pytest.raises(ModelError, match=r"^--layers-pattern 'transformer.encoder': the model has no list of layers "
                                         r"there; its module lists: transformer.encoder.block, "):
        model_info(tiny_t5, 2, False, parse_layout("transformer.encoder", T5_TARGETS))
    a = model_info(tiny_t5, 2, False, parse_layout(T5_LAYERS, T5_TARGETS)).arch
    assert (a.layers_path, a.num_layers, a.in_out("q"), a.in_out("ffn_up"), a.in_out("ffn_down")) == (
        T5_LAYERS, 3, (64, 64), (64, 96), (96, 64))


def test_a_search_with_a_layout_exports_and_rebuilds_it(tiny_t5: str, glue_dir: Path, tmp_path: Path) -> None:
    """Trials, the study, the export and load_for_training all use the layout; resuming with another is refused."""
    import autopeft
    from autopeft.builder import count_params

    opts = dict(model=tiny_t5, task="sst2", data_dir=str(glue_dir), space="lora", n_trials=2, executor="inline",
                storage=f"sqlite:///{tmp_path / 't5.db'}", study_name="t5", n_train=32, n_eval=32, epochs=1,
                max_length=24, batch_size=16, collapse_stop=False, progress=False)
    res = autopeft.search(layers_pattern=T5_LAYERS, target_modules=T5_TARGETS, **opts)
    trials = res.trials
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"] and (trials["params"] > 0).all()
    from autopeft.candidate import Candidate
    from autopeft.result import FoundConfig

    # a trial with LoRA on some layer (a random start-up config may have switched every layer off)
    t = next(t for t in res.study.get_trials() if Candidate.from_dict(t.user_attrs["candidate"]).layers)
    found = FoundConfig(Candidate.from_dict(t.user_attrs["candidate"]), res.meta, t)
    from autopeft.api import export

    out = export(found, tmp_path / "cfg")
    info = json.loads((out / "autopeft_config.json").read_text())
    assert info["layout"] == [T5_LAYERS, [list(p.split("=")) for p in T5_TARGETS.split(",")]]
    peft_cfg = json.loads((out / "adapter_config.json").read_text())
    import re

    pattern = re.compile(peft_cfg["target_modules"])  # peft's regex names the T5 encoder's own modules
    layer = found.candidate.layers[0]
    assert pattern.fullmatch(f"transformer.encoder.block.{layer}.layer.0.SelfAttention.q")
    assert not pattern.fullmatch("transformer.decoder.block.0.layer.0.SelfAttention.q")
    built = autopeft.load_for_training(out)
    from autopeft.builder import model_info

    expected = count_params(found.candidate, model_info(tiny_t5, 2, False, parse_layout(T5_LAYERS, T5_TARGETS)))
    assert built.trainable_params == expected == found.trial.user_attrs["params"]
    assert sum(p.numel() for p in built.model.parameters() if p.requires_grad) == expected
    with pytest.raises(StudyError, match=r"was run with --layers-pattern/--target-modules --layers-pattern "
                                         r"transformer.encoder.block --target-modules q=layer.0.SelfAttention.q,"):
        autopeft.search(layers_pattern=T5_LAYERS, target_modules=T5_TARGETS.replace("k=layer.0.SelfAttention.k,", "k=layer.0.SelfAttention.q,"), **opts)
