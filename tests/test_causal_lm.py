"""Causal-LM tasks (issue 18): GSM8K-style prompt/response data is recognised, only the response tokens carry a loss,
the search minimises the search split's loss everywhere (study direction, reference point, front order, best), memory
counts the LM head's logits, and ``autopeft train`` reports the evaluation loss and exact match of greedy answers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import optuna
import pytest
import torch

from autopeft.data import CAUSAL_LM, CLASSIFICATION, DataSpec, load_task
from autopeft.metrics import exact_match, final_answer
from autopeft.errors import DataError

GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def _rows(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def math_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A train/test task folder (no validation file, as GSM8K) of short GSM8K-style rows."""
    root = tmp_path_factory.mktemp("lmdata")
    rows = [{"question": f"What is {a} plus {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"}
            for a in range(1, 13) for b in range(1, 11)]
    _rows(root / "sums" / "train.jsonl", rows[:100])
    _rows(root / "sums" / "test.jsonl", rows[100:])
    return root


def test_prompt_response_data_is_a_causal_lm_task(math_dir: Path, tmp_path: Path) -> None:
    t = load_task(DataSpec(task="sums", data_dir=str(math_dir)))
    assert (t.kind, t.text_columns, t.metric, t.num_labels, t.n_train) == (CAUSAL_LM, ("question", "answer"), "loss", 0, 100)
    assert len(t.validation_texts) == 20 and t.validation_source.endswith("test.jsonl")  # train/test: test evaluates
    if GSM8K.is_dir():
        g = load_task(DataSpec(task="gsm8k", data_dir=str(GSM8K.parent)))
        assert (g.kind, g.n_train, len(g.validation_texts)) == (CAUSAL_LM, 7473, 1319)
    text = _rows(tmp_path / "plain.jsonl", [{"id": 1, "text": "a b c"}, {"id": 2, "text": "d e"}])
    assert load_task(DataSpec(train_file=str(text))).text_columns == ("text",)
    # a column besides the text is a label under another name: classification's error, naming both ways out
    stars = _rows(tmp_path / "stars.jsonl", [{"text": "good", "stars": 5}, {"text": "bad", "stars": 1}])
    with pytest.raises(DataError, match="no label column found.*--label-column for classification, or --task-type "
                                        "causal-lm --text-columns PROMPT,RESPONSE"):
        load_task(DataSpec(train_file=str(stars)))
    assert load_task(DataSpec(train_file=str(stars), task_type="causal-lm", text_columns="text")).kind == CAUSAL_LM
    assert load_task(DataSpec(train_file=str(stars), label_column="stars")).kind == CLASSIFICATION
    with pytest.raises(DataError, match="metric 'accuracy' is for classification"):
        load_task(DataSpec(task="sums", data_dir=str(math_dir), metric="accuracy"))
    with pytest.raises(DataError, match="unknown task type 'translation'; choose classification, causal-lm or seq2seq"):
        DataSpec(task="sums", task_type="translation")


def test_final_answers_and_exact_match() -> None:
    assert final_answer("48/2 = 24\nso 48+24 = 72\n#### 72") == "72"
    assert final_answer("The answer is $1,234.00.") == "1234"
    assert final_answer("x = 3.50") == "3.5"
    assert exact_match(["so #### 72", "it is 5", "#### 7"], ["#### 72", "#### 5", "#### 8"]) == pytest.approx(2 / 3)


def test_only_response_tokens_carry_a_loss(tiny_llama: str) -> None:
    from transformers import AutoTokenizer

    from autopeft.trial import encode_lm

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    plain_prompt = tok("What is 2 plus 3?\n")["input_ids"]
    enc = encode_lm(tok, [("What is 2 plus 3?", "2 + 3 = 5\n#### 5")], 128)
    ids, labels = enc["input_ids"][0], enc["labels"][0]
    assert ids[:len(plain_prompt)] == plain_prompt and labels[:len(plain_prompt)] == [-100] * len(plain_prompt)
    assert labels[len(plain_prompt):] == ids[len(plain_prompt):] and ids[-1] == tok.eos_token_id
    # too long for max_length: the prompt loses its start, at least half the length stays for the response
    long = encode_lm(tok, [("word " * 200, "the answer is 5")], 32)
    resp = [x for x in long["labels"][0] if x != -100]
    assert len(long["input_ids"][0]) <= 32 and len(resp) == len(tok("the answer is 5", add_special_tokens=False)["input_ids"]) + 1
    # with a chat template the prompt is the user turn and the response the assistant's
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant: {% endif %}")
    chat = encode_lm(tok, [("hi", "ok")], 128)
    text = tok.decode([i for i, y in zip(chat["input_ids"][0], chat["labels"][0]) if y != -100])
    assert text.replace(" ", "") == "ok</s>"  # the assistant's turn as the template ends it; nothing of the prompt


def test_the_loss_and_its_standard_error_over_rows(tiny_llama: str) -> None:
    """:func:`autopeft.trial.lm_loss` with ``se``: the loss per token over all rows and the ratio estimator's
    standard error with the rows as units, checked against each row scored on its own."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autopeft.trial import encode_lm, lm_loss, ratio_se

    assert ratio_se([1.0, 3.0], [1, 1]) == pytest.approx(1.0)  # equal counts: the sample sd / sqrt(rows)
    assert ratio_se([2.0, 4.0, 6.0], [1, 2, 3]) == pytest.approx(0.0)  # every row at the same loss per token
    assert ratio_se([5.0], [4]) is None and ratio_se([1.0, 2.0], [3, 0]) is None  # one row with tokens
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    rows = [("What is 2 plus 3?", "2 + 3 = 5\n#### 5"), ("And 7 minus 4?", "3"), ("Sum 10 and 20.", "10 + 20 = 30"),
            ("Double 6.", "12")]
    enc = encode_lm(tok, rows, 64)
    loss, se = lm_loss(model, enc, 3, tok.pad_token_id or 0, torch.device("cpu"), se=True)
    sums, counts = [], []
    with torch.no_grad():
        for ids, labels in zip(enc["input_ids"], enc["labels"]):
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            y = torch.tensor(labels[1:])
            sums.append(float(torch.nn.functional.cross_entropy(logits, y, ignore_index=-100, reduction="sum")))
            counts.append(int((y != -100).sum()))
    assert loss == pytest.approx(sum(sums) / sum(counts), rel=1e-5)
    assert lm_loss(model, enc, 3, tok.pad_token_id or 0, torch.device("cpu")) == pytest.approx(loss, rel=1e-6)
    assert se == pytest.approx(ratio_se(sums, counts), rel=1e-4) and 0 < se < loss


def test_memory_counts_the_lm_heads_logits(tiny_llama: str) -> None:
    from autopeft.builder import build_model, load_base, model_info
    from autopeft.candidate import Candidate
    from autopeft.trial import memory_parts

    info = model_info(tiny_llama, 0)
    assert (info.head_params, info.head_modules) == (0, ())  # the LM head is the model's own, frozen
    base, _ = load_base(tiny_llama, 0)
    assert type(base).__name__ == "LlamaForCausalLM"
    built = build_model(Candidate.from_dict({"methods": {"lora": {"r": 2, "targets": ["q", "v"], "alpha_ratio": 2.0,
                                                                   "dropout": 0.0}}, "layers": [0, 1]}), base, info)
    assert type(built.model).__name__ == "PeftModelForCausalLM"
    vocab = int(base.config.vocab_size)
    tb = sum(p.numel() * p.element_size() for p in built.model.parameters() if p.requires_grad)
    _, with_loss = memory_parts(built.model, 64, vocab, tb, False, lm=True)
    _, logits_only = memory_parts(built.model, 64, vocab, tb, False, lm=False)
    # the loss keeps float32 log-probabilities over the vocabulary for every token of a row
    assert with_loss - logits_only >= 64 * vocab * 4


def test_a_causal_lm_search_minimises_the_loss(tiny_llama: str, math_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from autopeft.cli import main
    from autopeft.result import SearchResult
    from autopeft.storage import A, get_storage

    storage = f"sqlite:///{tmp_path / 'lm.db'}"
    argv = ["search", "--model", tiny_llama, "--task", "sums", "--data-dir", str(math_dir), "--space", "tiny",
            "--trials", "6", "--n-startup", "3", "--workers", "2", "--storage", storage, "--study", "lm",
            "--n-train", "48", "--n-eval", "16", "--epochs", "2", "--batch-size", "8", "--lr-scale", "4", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "causal LM" in out.err and "Pareto front (loss on the held-out search split, lower is better)" in out.out
    assert len(re.findall(r"\| loss \d+\.\d{4} ± 0\.\d{4} \|", out.err)) == 6  # each trial line: the loss ± its se
    study = optuna.load_study(study_name="lm", storage=get_storage(storage, create=False))
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE", "MINIMIZE"]
    meta = study.user_attrs
    assert meta[A.OBJECTIVES] == ["loss", "params", "memory"] and meta[A.METRIC] == "loss"
    untrained = meta[A.CHANCE_SCORE]
    assert untrained > 1.0 and meta[A.REF_POINT][0] == pytest.approx(-untrained)
    res = SearchResult(study, storage)
    losses = [t.values[0] for t in res.complete_trials()]
    assert len(losses) == 6 and all(math.isfinite(v) and v > 0 for v in losses)
    assert min(losses) < untrained  # training lowers the loss, so the front has hypervolume
    assert res.hypervolume() > 0
    front = res.front_trials()
    assert [t.values[0] for t in front] == sorted(t.values[0] for t in front)  # lowest loss first
    assert res.best_trial().values[0] == min(losses)
    # each loss comes with its standard error over the 16 search rows (the answer rule's noise for a loss)
    assert all(0 < t.user_attrs[A.SCORE_SE] < 0.5 * t.values[0] for t in res.complete_trials())


def test_an_encoder_cannot_take_a_causal_lm_task(tiny_model: str, math_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from autopeft.cli import main

    argv = ["search", "--model", tiny_model, "--task", "sums", "--data-dir", str(math_dir), "--space", "tiny",
            "--trials", "1", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no causal-LM head in transformers" in err[0] and "--task-type classification" in err[0]
    assert not (tmp_path / "x.db").exists()


def test_train_reports_the_test_loss_and_exact_match(tiny_llama: str, math_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from autopeft.candidate import Candidate
    from autopeft.config import data_spec_dict
    from autopeft.final import train_final

    cand = Candidate.from_dict({"methods": {"lora": {"r": 2, "targets": ["q", "v"], "alpha_ratio": 2.0,
                                                      "dropout": 0.0}}, "layers": [0, 1]})
    out = tmp_path / "trained"
    res = train_final(cand, tiny_llama, data_spec_dict("sums", str(math_dir)), out, epochs=1, batch_size=8,
                      max_length=64, n_eval=6, generate=3, progress=False)
    assert (res["metric"], res["split"], res["n_eval"], res["generated_rows"]) == ("loss", "test", 6, 3)
    assert math.isfinite(res["mean"]) and res["mean"] > 0 and 0.0 <= res["exact_match_mean"] <= 1.0
    # the saved adapter loads in plain peft on the causal-LM base
    m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(out))
    assert sum(p.numel() for n, p in m.named_parameters() if "lora_" in n) == res["params"]
    assert isinstance(m(input_ids=torch.tensor([[1, 5, 6]])).logits, torch.Tensor)
