"""Seq2seq tasks on T5 (issue 18): prompt/response data on an encoder-decoder is a seq2seq task (inferred, or
``--task-type seq2seq``), the source goes into the encoder and every target token carries a loss, the search minimises
the search split's loss, and its export rebuilds (``load_for_training``), trains (``autopeft train``: test loss and
exact match) and loads in plain peft."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from autopeft.data import CAUSAL_LM, CLASSIFICATION, SEQ2SEQ, DataSpec, load_task
from autopeft.errors import ConfigError, DataError


def _rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def t5(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny T5 seq2seq LM: 2 encoder + 1 decoder layers, the tiny BERT's tokenizer."""
    from conftest import build_tiny_t5

    return str(build_tiny_t5(tmp_path_factory.mktemp("t5s2s"), tiny_model))


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A train/test folder of short question/answer rows, and a one-column text file and a labelled file beside it."""
    root = tmp_path_factory.mktemp("s2s")
    rows = [{"question": f"what is {a} plus {b}", "answer": f"{a + b}"} for a in range(1, 13) for b in range(1, 11)]
    _rows(root / "sums" / "train.jsonl", rows[:100])
    _rows(root / "sums" / "test.jsonl", rows[100:])
    _rows(root / "text.jsonl", [{"text": "a b c"}, {"text": "d e"}])
    _rows(root / "labelled.jsonl", [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}])
    return root


def test_the_model_makes_generative_data_a_seq2seq_task(t5: str, tiny_llama: str, qa_dir: Path) -> None:
    from autopeft.config import data_spec_dict
    from autopeft.seq2seq import fit_task_type

    qa = data_spec_dict("sums", str(qa_dir))
    on_t5 = fit_task_type(qa, t5)
    assert on_t5 == {**qa, "task_type": "seq2seq"} and fit_task_type(qa, tiny_llama) == qa  # a decoder: causal LM
    t = load_task(DataSpec(**{**on_t5, "text_columns": None}))
    assert (t.kind, t.is_lm, t.is_seq2seq, t.num_labels, t.metric, t.text_columns) == (
        SEQ2SEQ, True, True, 0, "loss", ("question", "answer"))
    assert t.metric_reason == "seq2seq (source and target: question, answer); loss of the target tokens"
    assert load_task(DataSpec(**qa)).kind == CAUSAL_LM
    labelled = data_spec_dict(train_file=str(qa_dir / "labelled.jsonl"))
    assert fit_task_type(labelled, t5) == labelled and load_task(DataSpec(**labelled)).kind == CLASSIFICATION
    with pytest.raises(ConfigError) as e:
        fit_task_type({**qa, "task_type": "seq2seq"}, tiny_llama)
    assert str(e.value) == (f"--task-type seq2seq needs an encoder-decoder model (T5, Flan-T5, mT5); model "
                            f"{tiny_llama!r} is not one: pass --task-type causal-lm for a decoder")
    with pytest.raises(ConfigError) as e:
        fit_task_type({**qa, "task_type": "causal-lm"}, t5)
    assert str(e.value) == (f"--task-type causal-lm needs a decoder; model {t5!r} is an encoder-decoder: pass "
                            "--task-type seq2seq (or leave it out)")
    text = data_spec_dict(train_file=str(qa_dir / "text.jsonl"))
    with pytest.raises(DataError) as e:
        load_task(DataSpec(**fit_task_type(text, t5)))
    assert str(e.value) == (f"{qa_dir / 'text.jsonl'}: a seq2seq task needs a source and a target column, found only "
                            "'text' (columns: text); pass --text-columns SOURCE,TARGET")
    with pytest.raises(DataError, match=r"^unknown task type 'translation'; choose classification, causal-lm or seq2seq$"):
        DataSpec(task="sums", task_type="translation")


def test_the_source_goes_in_and_every_target_token_carries_a_loss(t5: str) -> None:
    from autopeft.builder import load_base
    from autopeft.seq2seq import encode_seq2seq, seq2seq_loss

    model, tok = load_base(t5, 0)
    enc = encode_seq2seq(tok, [("what is 2 plus 3", "5"), ("word " * 40, "a long answer")], 16)
    assert enc["input_ids"][0] == tok("what is 2 plus 3")["input_ids"] and len(enc["input_ids"][1]) == 16
    assert enc["labels"][0] == tok(text_target="5")["input_ids"] and -100 not in enc["labels"][1]
    # the search metric is the mean over target tokens: on one row, the model's own loss
    one = {k: v[:1] for k, v in enc.items()}
    own = model(input_ids=torch.tensor(one["input_ids"]), labels=torch.tensor(one["labels"])).loss
    assert seq2seq_loss(model, one, 4, 0, torch.device("cpu")) == pytest.approx(float(own), rel=1e-5)
    both = seq2seq_loss(model, enc, 2, 0, torch.device("cpu"))
    assert both == pytest.approx(seq2seq_loss(model, enc, 1, 0, torch.device("cpu")), rel=1e-5)  # padding adds nothing


def test_a_seq2seq_search_exports_rebuilds_and_trains(t5: str, qa_dir: Path, tmp_path: Path) -> None:
    """Two inline trials on both stacks (LoRA on the encoder's layer 0 and the decoder's, enqueued, then one the
    sampler proposes): the study minimises the loss; the export names the T5 modules of both stacks, rebuilds with the
    exact count, trains at full budget (test loss, exact match of greedy answers) and loads in plain peft."""
    import autopeft
    from autopeft.api import export, train
    from autopeft.builder import count_params, model_info
    from autopeft.candidate import Candidate
    from autopeft.result import FoundConfig

    lora = {"methods": {"lora": {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}}, "layers": [0, 2]}
    res = autopeft.search(model=t5, task="sums", data_dir=str(qa_dir), space="lora", n_trials=2, executor="inline",
                          storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s2s", n_train=32, n_eval=16, epochs=1,
                          max_length=24, batch_size=8, collapse_stop=False, progress=False, enqueue=[lora])
    meta = res.meta
    assert meta["objectives"] == ["loss", "params", "memory"] and meta["task"]["task_type"] == "seq2seq"
    trials = res.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(math.isfinite(t.values[0]) and 0 < t.values[0] for t in trials) and meta["chance_score"] > 0
    info = model_info(t5, 0)
    cand = Candidate.from_dict(lora)
    assert trials[0].user_attrs["params"] == count_params(cand, info) == 6 * 4 * (64 + 64)  # 2 + 4 modules
    out = export(FoundConfig(cand, meta, trials[0]), tmp_path / "cfg")
    peft_cfg = json.loads((out / "adapter_config.json").read_text())
    assert (peft_cfg["task_type"], peft_cfg["modules_to_save"]) == ("SEQ_2_SEQ_LM", None)  # peft's wrapper for T5
    import re

    pattern = re.compile(peft_cfg["target_modules"])
    assert pattern.fullmatch("encoder.block.0.layer.0.SelfAttention.q")
    assert pattern.fullmatch("decoder.block.0.layer.1.EncDecAttention.v")
    assert not pattern.fullmatch("encoder.block.1.layer.0.SelfAttention.q")
    built = autopeft.load_for_training(out)
    assert type(built.model).__name__ == "PeftModelForSeq2SeqLM" and built.trainable_params == 3072
    assert sum(p.numel() for p in built.model.parameters() if p.requires_grad) == 3072
    trained = tmp_path / "trained"
    r = train(out, trained, data_dir=str(qa_dir), epochs=1, n_train=32, max_length=24, batch_size=8, n_eval=6, generate=3,
                       progress=False)
    assert (r["metric"], r["split"], r["n_eval"], r["generated_rows"], r["params"]) == ("loss", "test", 6, 3, 3072)
    assert math.isfinite(r["mean"]) and r["mean"] > 0 and 0.0 <= r["exact_match_mean"] <= 1.0
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    m = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(t5), str(trained))
    assert sum(p.numel() for n, p in m.named_parameters() if "lora_" in n) == 3072


def test_a_bad_seq2seq_option_is_one_line_and_exit_2(t5: str, tiny_model: str, qa_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from autopeft.cli import main

    base = ["search", "--task", "sums", "--data-dir", str(qa_dir), "--space", "lora", "--trials", "1",
            "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--no-progress", "--task-type", "seq2seq"]
    cases = {(t5, "question"): "autopeft: error: a seq2seq task needs a source and a target column, got --text-columns "
                               "question; pass --text-columns SOURCE,TARGET",
             (tiny_model, None): f"autopeft: error: --task-type seq2seq needs an encoder-decoder model (T5, Flan-T5, "
                                 f"mT5); model {tiny_model!r} is not one: pass --task-type causal-lm for a decoder"}
    for (model, cols), line in cases.items():
        assert main(base + ["--model", model] + (["--text-columns", cols] if cols else [])) == 2
        assert capsys.readouterr().err.strip().splitlines() == [line]
    assert not (tmp_path / "x.db").exists()
