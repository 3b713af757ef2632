"""Shared fixtures: a tiny BERT built offline, the real GLUE copy beside the repo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"

_SENTENCES = [
    "a gripping and beautiful film", "the plot is dull and the acting is worse", "i loved every minute of it",
    "a tedious mess with no redeeming features", "charming , funny and smart", "an utterly boring experience",
    "the best movie of the year", "painfully slow and predictable", "a delightful surprise",
    "it never works as a comedy or a drama", "the cast is wonderful", "bad writing ruins a good idea",
]


def build_tiny_bert(path: Path, layers: int = 2) -> Path:
    """A randomly initialised BERT (hidden 64) with a WordPiece tokenizer trained on a few sentences."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = _SENTENCES
    if GLUE.is_dir():
        with open(GLUE / "sst2" / "train.jsonl", encoding="utf-8") as f:
            words = words + [json.loads(next(f))["sentence"] for _ in range(2000)]
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(words, trainer)
    from tokenizers.processors import TemplateProcessing

    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    fast.save_pretrained(path)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=128, num_labels=2)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(path)
    return path


def build_tiny_llama(path: Path, layers: int = 2) -> Path:
    """A randomly initialised Llama-architecture decoder with grouped-query attention (4 query heads, 2 key/value
    heads: k and v are half as wide as q), a gated FFN and no pad token (as SmolLM2), with a BPE tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = _SENTENCES
    if GLUE.is_dir():
        with open(GLUE / "sst2" / "train.jsonl", encoding="utf-8") as f:
            words = words + [json.loads(next(f))["sentence"] for _ in range(2000)]
    tok.train_from_iterator(words, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(path)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=96, max_position_embeddings=128, num_labels=2,
                      tie_word_embeddings=True, pad_token_id=None, bos_token_id=1, eos_token_id=2)
    import torch

    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(path)
    return path


def build_tiny_t5(path: Path, tiny_bert: str | Path, seq2seq: bool = True, **config: Any) -> Path:
    """A randomly initialised T5 (d_model 64, 2 encoder + 1 decoder layers unless ``config`` says otherwise) with the
    tiny BERT's tokenizer ([PAD] 0 starts the decoder, [SEP] 3 ends a sequence): a seq2seq LM, or a classifier."""
    import shutil

    import torch
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    for f in Path(tiny_bert).iterdir():
        if "token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json"):
            shutil.copy(f, path / f.name)
    kw: dict[str, Any] = dict(vocab_size=608, d_model=64, num_layers=2, num_decoder_layers=1, num_heads=4, d_ff=96,
                              d_kv=16, decoder_start_token_id=0, pad_token_id=0, eos_token_id=3)
    cfg = transformers.T5Config(**{**kw, **config})
    torch.manual_seed(0)
    auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForSequenceClassification
    auto.from_config(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not GLUE.is_dir():
        pytest.skip("../shared/data/glue is not beside the repository")
    return GLUE


def dashboard_data(name: str, storage: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The study's summary and its detail (trials, intermediate values) as ``autopeft dashboard`` serves them over
    HTTP (started on a free port, stopped after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "autopeft.cli", "dashboard", "--study", name, "--storage", storage,
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    summary = next(x for x in json.loads(r.read())["study_summaries"] if x["study_name"] == name)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("dashboard did not answer") from None
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0", timeout=5) as r:
            return summary, dict(json.loads(r.read()))
    finally:
        proc.terminate()
        proc.wait(10)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Trials that tests run in this process (run_trial, the inline executor) start as a worker's do: libraries
    imported and frozen out of garbage collection (autopeft.trial.warm_up), so each tiny trial does not pay for a
    full collection of pytest's heap when the Trainer starts."""
    from autopeft.trial import warm_up

    warm_up()
