"""autopeft.data (with autopeft.tables, columns, metrics): loading the real GLUE copy and user files, label ids,
metric choice, metrics, search split."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autopeft.config import METRICS
from autopeft.data import DataSpec, TaskData, clear_cache, load_task, search_split
from autopeft.errors import AutoPeftError, DataError
from autopeft.metrics import chance_score, compute_metric

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


@pytest.fixture()
def glue() -> Path:
    if not GLUE.is_dir():
        pytest.skip("../shared/data/glue is not beside the repository")
    return GLUE


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]], sep: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sep.join(str(x) for x in r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def binary_rows(n: int, n_pos: int) -> list[dict[str, Any]]:
    return [{"text": f"row {i}", "label": int(i < n_pos)} for i in range(n)]


# ----------------------------------------------------------------------------- the real GLUE copy
@pytest.mark.parametrize("task,cols,n_train,n_val,metric", [
    ("sst2", ("sentence",), 67_349, 872, "accuracy"),
    ("mrpc", ("sentence1", "sentence2"), 3_668, 408, "f1"),
    ("rte", ("sentence1", "sentence2"), 2_490, 277, "accuracy"),
])
def test_glue_tasks_load_with_no_options(glue: Path, task: str, cols: tuple[str, ...], n_train: int, n_val: int,
                                         metric: str) -> None:
    t0 = time.perf_counter()
    d = load_task(DataSpec(task=task, data_dir=str(glue)))
    assert time.perf_counter() - t0 < 3.0  # sst2 train is 67k rows; plain JSON-lines parsing keeps it well under 1 s
    assert (d.name, d.text_columns, d.label_column) == (task, cols, "label")
    assert len(d.train_texts) == len(d.train_labels) == n_train
    assert d.validation_texts is not None and d.validation_labels is not None
    assert len(d.validation_texts) == len(d.validation_labels) == n_val
    assert all(len(t) == len(cols) for t in d.train_texts[:100])
    assert (d.num_labels, d.label_names) == (2, ["0", "1"])
    assert set(d.train_labels) == set(d.validation_labels) == {0, 1}
    assert (d.metric, d.metric_reason) == (metric, f"by task name {task}")
    assert load_task(DataSpec(task=task, data_dir=str(glue))) is d  # memoised


def test_glue_label_counts_and_trailing_space(glue: Path) -> None:
    d = load_task(DataSpec(task="sst2", data_dir=str(glue)))
    assert np.bincount(d.train_labels).tolist() == [29_780, 37_569]
    raw = json.loads((glue / "sst2" / "train.jsonl").open(encoding="utf-8").readline())["sentence"]
    assert raw.endswith(" ") and d.train_texts[0] == (raw.rstrip(),)
    m = load_task(DataSpec(task="mrpc", data_dir=str(glue)))
    assert np.bincount(m.train_labels).tolist() == [1_194, 2_474]


def test_glue_via_env_and_via_train_file(glue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPEFT_DATA_DIR", str(glue))
    assert len(load_task(DataSpec(task="rte")).train_labels) == 2_490
    d = load_task(DataSpec(train_file=str(glue / "mrpc" / "train.jsonl"), validation_file=str(glue / "mrpc" / "validation.jsonl")))
    assert (d.name, d.metric) == ("mrpc", "f1")  # .../mrpc/train.jsonl is task mrpc
    assert d.validation_labels is not None and len(d.validation_labels) == 408


# ----------------------------------------------------------------------------- user files
def test_csv_string_labels_are_mapped_by_sorted_value(tmp_path: Path) -> None:
    tr = write_csv(tmp_path / "reviews.csv", ["review", "stars", "sentiment"],
                   [["great fun  ", 5, "pos"], ["awful", 1, "neg"], ["fine", 4, "pos"], ["bad", 2, "neg"]])
    va = write_csv(tmp_path / "reviews_val.csv", ["review", "stars", "sentiment"], [["nice", 5, "pos"], ["meh", 2, "neg"]])
    d = load_task(DataSpec(train_file=str(tr), validation_file=str(va), label_column="sentiment"))
    assert (d.name, d.text_columns, d.label_column) == ("reviews", ("review",), "sentiment")
    assert d.label_names == ["neg", "pos"] and d.num_labels == 2
    assert d.train_labels == [1, 0, 1, 0] and d.validation_labels == [1, 0]
    assert d.train_texts[0] == ("great fun",)
    assert (d.metric, d.metric_reason) == ("accuracy", "binary, minority class 50.0% >= 40%")
    bad = write_csv(tmp_path / "bad_val.csv", ["review", "stars", "sentiment"], [["hmm", 3, "neutral"]])
    with pytest.raises(DataError, match="'neutral' does not occur in the train data"):
        load_task(DataSpec(train_file=str(tr), validation_file=str(bad), label_column="sentiment"))


def test_int_labels_keep_glue_ids_or_are_mapped_numerically(tmp_path: Path) -> None:
    csv_ids = write_csv(tmp_path / "ids.csv", ["text", "label"], [["a", 1], ["b", 0], ["c", 1]])
    d = load_task(DataSpec(train_file=str(csv_ids)))
    assert d.train_labels == [1, 0, 1] and d.label_names == ["0", "1"]
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"text": "a", "label": 10}, {"text": "b", "label": 2},
                                              {"text": "c", "label": 1.0}, {"text": "d", "label": 2}])
    d = load_task(DataSpec(train_file=str(odd)))
    assert d.label_names == ["1", "2", "10"] and d.train_labels == [2, 1, 0, 1]


def test_three_classes_use_macro_f1(tmp_path: Path) -> None:
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": ["entailment", "neutral", "contradiction"][i % 3]}
            for i in range(30)]
    d = load_task(DataSpec(train_file=str(write_jsonl(tmp_path / "nli.jsonl", rows))))
    assert d.text_columns == ("premise", "hypothesis")
    assert d.label_names == ["contradiction", "entailment", "neutral"] and d.num_labels == 3
    assert (d.metric, d.metric_reason) == ("macro_f1", "3 classes")
    with pytest.raises(DataError, match="metric 'auc' needs a binary task, but nli has 3 classes"):
        load_task(DataSpec(train_file=str(tmp_path / "nli.jsonl"), metric="auc"))


def test_imbalanced_binary_uses_matthews_and_override_wins(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "spam.jsonl", binary_rows(100, 30))
    d = load_task(DataSpec(train_file=str(path)))
    assert (d.metric, d.metric_reason) == ("matthews", "binary, minority class 30.0% < 40%")
    d = load_task(DataSpec(train_file=str(path), metric="f1"))
    assert (d.metric, d.metric_reason) == ("f1", "--metric override")
    with pytest.raises(DataError, match="unknown metric 'roc'.*accuracy, f1, matthews, macro_f1, auc"):
        load_task(DataSpec(train_file=str(path), metric="roc"))
    assert load_task(DataSpec(train_file=str(path), metric="auc")).metric == "auc"
    balanced = write_jsonl(tmp_path / "bal.jsonl", binary_rows(100, 45))
    assert load_task(DataSpec(train_file=str(balanced))).metric == "accuracy"


def test_text_columns_are_inferred(tmp_path: Path) -> None:
    pairs = write_jsonl(tmp_path / "qq.jsonl", [{"id": i, "question1": "a?", "question2": "b?", "label": i % 2} for i in range(4)])
    assert load_task(DataSpec(train_file=str(pairs))).text_columns == ("question1", "question2")
    other = write_csv(tmp_path / "posts.csv", ["id", "title", "score", "body", "extra", "target"],
                      [[f"x{i}", f"title {i}", i * 1.5, f"body {i}", "z", i % 2] for i in range(4)])
    d = load_task(DataSpec(train_file=str(other)))
    assert (d.text_columns, d.label_column) == (("title", "body"), "target")  # string columns, id/numeric skipped, max 2
    assert d.train_texts[1] == ("title 1", "body 1")
    given = load_task(DataSpec(train_file=str(other), text_columns=("extra",)))
    assert given.text_columns == ("extra",)
    nums = write_jsonl(tmp_path / "nums.jsonl", [{"x": i, "label": i % 2} for i in range(4)])
    with pytest.raises(DataError, match=r"cannot tell which columns hold the text \(columns: x, label\).*--text-columns"):
        load_task(DataSpec(train_file=str(nums)))
    with pytest.raises(DataError, match="text column 'nope' not found"):
        load_task(DataSpec(train_file=str(other), text_columns=("nope",)))


def test_label_column_errors(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    with pytest.raises(DataError, match=r"label column 'sentiment' not found \(columns: text, label\)") as e:
        load_task(DataSpec(train_file=str(path), label_column="sentiment"))
    assert str(path) in str(e.value)
    nolabel = write_jsonl(tmp_path / "n.jsonl", [{"text": "a", "stars": 0}, {"text": "b", "stars": 1}])
    with pytest.raises(DataError, match="no label column found.*--label-column"):
        load_task(DataSpec(train_file=str(nolabel)))
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 1}])
    with pytest.raises(DataError, match="at least 2 labels"):
        load_task(DataSpec(train_file=str(one)))
    gap = write_jsonl(tmp_path / "gap.jsonl", [{"text": "a", "label": 0}, {"text": "b"}])
    with pytest.raises(DataError, match="line 2 has no label column 'label'"):
        load_task(DataSpec(train_file=str(gap)))
    reg = write_jsonl(tmp_path / "reg.jsonl", [{"text": "a", "label": 0.5}, {"text": "b", "label": 3.2}])
    with pytest.raises(DataError, match="classification only"):
        load_task(DataSpec(train_file=str(reg)))


def test_a_label_column_of_another_name_is_found_by_its_values(tmp_path: Path) -> None:
    """A held-out file names its label "relation" or "stars": the one column whose values look like classes is the
    label, and the search says so; two such columns, or too few rows to tell, stay the error naming --label-column."""
    import csv

    rels = ["paraphrase", "related", "unrelated"]
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "sentence_a", "sentence_b", "relation"])
        w.writerows([[i, f"a sentence number {i}", f"another one {i % 7}", rels[i % 3]] for i in range(60)])
    t = load_task(DataSpec(train_file=str(path)))
    assert (t.label_column, t.text_columns, t.num_labels, t.label_names, t.metric) == (
        "relation", ("sentence_a", "sentence_b"), 3, rels, "macro_f1")
    assert t.label_note == ("label column 'relation' taken by its values (no column is named label); --label-column "
                            "sets it")
    # ints 1-5 under another name; a year-like column of many values is no class; a named label needs no note
    rows = [{"text": f"review {i}", "stars": 1 + i % 5, "year": 1950 + i} for i in range(50)]
    t = load_task(DataSpec(train_file=str(write_jsonl(tmp_path / "stars.jsonl", rows))))
    assert (t.label_column, t.text_columns, t.num_labels) == ("stars", ("text",), 5)
    named = [{"premise": f"p {i}", "hypothesis": f"h {i}", "gold_label": ["entailment", "neutral"][i % 2]} for i in range(30)]
    t = load_task(DataSpec(train_file=str(write_jsonl(tmp_path / "snli.jsonl", named))))
    assert (t.label_column, t.text_columns, t.label_note) == ("gold_label", ("premise", "hypothesis"), "")
    both = [{"text": f"t {i}", "source": ["web", "news"][i % 2], "relation": ["x", "y", "z"][i % 3]} for i in range(40)]
    with pytest.raises(DataError, match=r"no column is named label, and 'source', 'relation' all hold values like "
                                        r"classes; pass --label-column with the one that is the label"):
        load_task(DataSpec(train_file=str(write_jsonl(tmp_path / "both.jsonl", both))))
    assert load_task(DataSpec(train_file=str(tmp_path / "both.jsonl"), label_column="relation")).num_labels == 3
    few = [{"text": f"t {i}", "stars": i % 2} for i in range(19)]  # under 20 rows: not enough to tell
    with pytest.raises(DataError, match="no label column found"):
        load_task(DataSpec(train_file=str(write_jsonl(tmp_path / "few.jsonl", few))))
    decimals = [{"text": f"t {i}", "score": ["0.5", "1.5"][i % 2]} for i in range(40)]  # decimals are no classes
    with pytest.raises(DataError, match="no label column found"):
        load_task(DataSpec(train_file=str(write_jsonl(tmp_path / "dec.jsonl", decimals))))


def test_parquet_files_as_the_hub_stores_them(tmp_path: Path) -> None:
    """A held-out task downloaded from the hub is Parquet: read like the other files, in a task folder too; a file
    that is not Parquet, or has no rows, is one clear error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "reviews"
    d.mkdir()
    pq.write_table(pa.table({"text": [f"review {i}" for i in range(30)], "label": [i % 2 for i in range(30)]}),
                   d / "train.parquet")
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 1]}), d / "validation.parquet")
    t = load_task(DataSpec(task="reviews", data_dir=str(tmp_path)))
    assert (t.name, t.n_train, t.text_columns, t.label_column, t.validation_labels) == (
        "reviews", 30, ("text",), "label", [0, 1, 1])
    assert load_task(DataSpec(train_file=str(d / "train.parquet"))).train_labels[:4] == [0, 1, 0, 1]
    (tmp_path / "bad.parquet").write_text("text,label\na,0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train file .*bad.parquet cannot be read as Parquet \(.*\); re-save it"):
        load_task(DataSpec(train_file=str(tmp_path / "bad.parquet")))
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.int64())}), tmp_path / "e.parquet")
    with pytest.raises(DataError, match=r"e.parquet has no rows \(columns: text, label\)"):
        load_task(DataSpec(train_file=str(tmp_path / "e.parquet")))


def test_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=f"train file not found: {missing}"):
        load_task(DataSpec(train_file=str(missing)))
    ok = write_jsonl(tmp_path / "ok.jsonl", binary_rows(4, 2))
    with pytest.raises(DataError, match="validation file not found"):
        load_task(DataSpec(train_file=str(ok), validation_file=str(missing)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 0}\n\n{"text": "b", "label": 1\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 3 is not valid JSON"):
        load_task(DataSpec(train_file=str(bad)))
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_task(DataSpec(train_file=str(tmp_path / "empty.csv")))
    (tmp_path / "header.csv").write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        load_task(DataSpec(train_file=str(tmp_path / "header.csv")))
    (tmp_path / "wide.csv").write_text("text,label\na,0\nb,1,extra\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 3 has more fields"):
        load_task(DataSpec(train_file=str(tmp_path / "wide.csv")))
    (tmp_path / "x.txt").write_text("hello\n", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported extension"):
        load_task(DataSpec(train_file=str(tmp_path / "x.txt")))
    with pytest.raises(DataError, match="no data given"):
        load_task(DataSpec())
    assert issubclass(DataError, AutoPeftError)


def test_task_folders_tsv_and_json_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "data" / "cola"
    d.mkdir(parents=True)
    # GLUE-style TSV: quotes are literal; a sentence starting with '"' must not swallow the following lines
    (d / "train.tsv").write_text('sentence\tlabel\n"quoted start\t1\nplain\t0\nmore\t1\n', encoding="utf-8")
    (d / "dev.json").write_text(json.dumps([{"sentence": "x", "label": 0}, {"sentence": "y", "label": 1}]), encoding="utf-8")
    monkeypatch.setenv("AUTOPEFT_DATA_DIR", str(tmp_path / "data"))
    t = load_task(DataSpec(task="cola"))
    assert t.train_texts == [('"quoted start',), ("plain",), ("more",)] and t.train_labels == [1, 0, 1]
    assert t.validation_labels == [0, 1]
    assert (t.metric, t.metric_reason) == ("matthews", "by task name cola")
    with pytest.raises(DataError, match="data dir not found: .*missing"):
        load_task(DataSpec(task="cola", data_dir=str(tmp_path / "missing")))
    (tmp_path / "data" / "empty_task").mkdir()
    with pytest.raises(DataError, match="has no train.jsonl"):
        load_task(DataSpec(task="empty_task"))


def test_unknown_task_tries_the_hub_then_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls: list[tuple[Any, ...]] = []

    def offline(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        raise ConnectionError("Couldn't reach 'imdb' on the Hub (offline)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    msg = (rf"task 'imdb' not found in data dir {tmp_path} \(looked for {tmp_path}/imdb/train.jsonl\) and could not be "
           r"loaded from the Hugging Face hub: ConnectionError: Couldn't reach 'imdb' on the Hub \(offline\); "
           r"pass --data-dir or --train-file$")
    with pytest.raises(DataError, match=msg):
        load_task(DataSpec(task="imdb", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="could not be loaded"):
        load_task(DataSpec(task="glue/qnli", data_dir=str(tmp_path)))
    assert calls == [("imdb",), ("nyu-mll/glue", "qnli")]


def test_hub_dataset_is_converted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["neg", "pos"])})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["good ", "bad", "ok"], "label": [1, 0, 1]}, features=feats),
        "test": datasets.Dataset.from_dict({"text": ["fine", "unlabelled"], "label": [1, -1]}, features=feats),
    })
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: dd)
    d = load_task(DataSpec(task="someone/reviews", data_dir=str(tmp_path)))
    assert (d.name, d.text_columns, d.label_names) == ("reviews", ("text",), ["neg", "pos"])
    assert d.train_texts[0] == ("good",) and d.train_labels == [1, 0, 1]
    assert d.validation_texts == [("fine",)] and d.validation_labels == [1]  # "test" split, -1 rows dropped


def test_spec_round_trips_and_cache_sees_edits(tmp_path: Path) -> None:
    spec = DataSpec(task="x", data_dir="/d", text_columns=("a", "b"), label_column="y", metric="f1")
    assert DataSpec(**asdict(spec)) == spec
    assert DataSpec(**json.loads(json.dumps(asdict(spec)))) == spec  # list -> tuple, still hashable
    assert hash(DataSpec(**json.loads(json.dumps(asdict(spec))))) == hash(spec)
    assert DataSpec(text_columns="sentence1,sentence2").text_columns == ("sentence1", "sentence2")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="text_columns"):
        DataSpec(text_columns=("a", "b", "c"))
    path = write_jsonl(tmp_path / "t.jsonl", binary_rows(4, 2))
    a = load_task(DataSpec(train_file=str(path)))
    write_jsonl(path, binary_rows(6, 3))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    b = load_task(DataSpec(train_file=str(path)))
    assert len(a.train_labels) == 4 and len(b.train_labels) == 6
    clear_cache()
    assert "train_texts" not in repr(b)  # a 67k-row task must not print its rows


# ----------------------------------------------------------------------------- metrics
def test_metrics_hand_checked() -> None:
    preds, labels = [1, 0, 1, 1], [1, 0, 0, 1]
    assert compute_metric("accuracy", preds, labels) == 0.75
    assert compute_metric("f1", preds, labels) == pytest.approx(0.8)  # tp 2, fp 1, fn 0
    assert compute_metric("matthews", preds, labels) == pytest.approx(2 / math.sqrt(12))  # (2*1 - 1*0)/sqrt(3*2*1*2)
    assert compute_metric("macro_f1", preds, labels) == pytest.approx((0.8 + 2 / 3) / 2)
    assert compute_metric("f1", [0, 0], [1, 0]) == 0.0 and compute_metric("matthews", [1, 1], [1, 0]) == 0.0
    with pytest.raises(DataError, match="unknown metric"):
        compute_metric("roc", preds, labels)
    with pytest.raises(DataError, match="same length"):
        compute_metric("accuracy", [1], [1, 0])
    with pytest.raises(DataError, match="empty"):
        compute_metric("accuracy", [], [])


def test_metrics_match_sklearn() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        for _ in range(5):
            y, p = rng.integers(0, k, 200), rng.integers(0, k, 200)
            p[:120] = y[:120]
            assert compute_metric("accuracy", p, y) == pytest.approx(sk.accuracy_score(y, p))
            assert compute_metric("matthews", p, y) == pytest.approx(sk.matthews_corrcoef(y, p))
            assert compute_metric("macro_f1", p, y) == pytest.approx(sk.f1_score(y, p, average="macro"))
            if k == 2:
                assert compute_metric("f1", p, y) == pytest.approx(sk.f1_score(y, p))
                sc = np.round(rng.normal(size=200) + y, 1)  # rounded: many ties
                assert compute_metric("auc", p, y, sc) == pytest.approx(sk.roc_auc_score(y, sc))


def test_auc_hand_checked_ties_and_errors() -> None:
    # positives score 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4) (0.9>0.1) (0.4=0.4: half) (0.4>0.1) -> 3.5/4
    assert compute_metric("auc", [1, 0, 0, 0], [1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    assert compute_metric("auc", [1, 1, 1, 1], [1, 0, 1, 0], [5.0, 1.0, 3.0, 2.0]) == 1.0  # argmax flat, ranking perfect
    assert compute_metric("auc", [1, 1, 1, 1], [1, 0, 1, 0], [0.0] * 4) == 0.5
    assert compute_metric("auc", [1, 1], [1, 1], [0.3, 0.2]) == 0.5  # one class only: undefined
    with pytest.raises(DataError, match="needs the model's scores"):
        compute_metric("auc", [1, 0], [1, 0])
    with pytest.raises(DataError, match="binary labels"):
        compute_metric("auc", [1, 0, 2], [1, 0, 2], [0.1, 0.2, 0.3])
    assert chance_score("auc", [1, 1, 1, 0]) == 0.5


def test_chance_score_is_majority_prediction() -> None:
    labels = [1, 1, 1, 0]
    assert chance_score("accuracy", labels) == 0.75
    assert chance_score("f1", labels) == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert chance_score("matthews", labels) == 0.0
    assert chance_score("macro_f1", labels) == pytest.approx((2 * 3 / 7 + 0) / 2)
    assert chance_score("f1", [0, 0, 1]) == 0.0  # majority 0: no positive predicted
    assert chance_score("macro_f1", [2, 2, 0, 1]) == pytest.approx((0 + 0 + 2 * 2 / 6) / 3)
    assert set(METRICS) == {"accuracy", "f1", "matthews", "macro_f1", "auc"}


# ----------------------------------------------------------------------------- search split
def _task(n: int) -> TaskData:
    return TaskData("t", ("text",), "label", [(str(i),) for i in range(n)], [i % 2 for i in range(n)], None, None,
                    2, ["0", "1"], "accuracy", "")


def test_search_split_is_deterministic_and_disjoint() -> None:
    t = _task(1000)
    tr, ev = search_split(t, 300, 100, seed=7)
    assert (tr, ev) == search_split(t, 300, 100, seed=7)
    assert len(tr) == 300 and len(ev) == 100 and not set(tr) & set(ev)
    assert all(0 <= i < 1000 for i in tr + ev)
    tr_all, ev_all = search_split(t, None, 100, seed=7)
    assert ev_all == ev and tr_all[:300] == tr and len(tr_all) == 900 and sorted(tr_all + ev_all) == list(range(1000))
    assert search_split(t, 300, 100, seed=8) != (tr, ev)
    with pytest.raises(DataError, match="n_eval 1000 must be smaller than the 1000 training rows"):
        search_split(t, None, 1000, seed=0)
    with pytest.raises(DataError, match="n_train"):
        search_split(t, 0, 10, seed=0)


def test_search_split_on_glue(glue: Path) -> None:
    d = load_task(DataSpec(task="rte", data_dir=str(glue)))
    tr, ev = search_split(d, 500, 200, seed=0)
    assert len(tr) == 500 and len(ev) == 200 and not set(tr) & set(ev)
    assert 0.35 < np.mean([d.train_labels[i] for i in ev]) < 0.65


def test_no_data_options_use_the_demo_copy_shipped_in_the_package(monkeypatch: pytest.MonkeyPatch, glue: Path) -> None:
    """A fresh machine with no data: task sst2 loads the embedded demo set (6,000 training rows of GLUE's SST-2 and
    the whole validation split), which is a true subset of the full copy."""
    monkeypatch.delenv("AUTOPEFT_DATA_DIR", raising=False)
    t = load_task(DataSpec(task="sst2"))
    assert t.embedded and len(t.train_labels) == 6000 and len(t.validation_labels or []) == 872
    assert (t.train_labels.count(0), t.train_labels.count(1)) == (2629, 3371) and t.metric == "accuracy"
    full = load_task(DataSpec(task="sst2", data_dir=str(glue)))
    assert not full.embedded and len(full.train_labels) == 67349
    assert set(zip(t.train_texts, t.train_labels)) <= set(zip(full.train_texts, full.train_labels))
    assert list(t.validation_texts or []) == list(full.validation_texts or [])


def test_a_hub_style_task_name_finds_its_folder_in_the_data_dir(glue: Path) -> None:
    """studies/ray-cluster.yaml's ``task: glue/mrpc`` with ``--data-dir DATA`` reads DATA/mrpc (no DATA/glue/mrpc)."""
    t = load_task(DataSpec(task="glue/mrpc", data_dir=str(glue)))
    assert t.name == "mrpc" and len(t.train_labels) == 3668 and t.metric == "f1"


def test_dataset_and_its_config_name_a_hub_task(monkeypatch: pytest.MonkeyPatch, glue: Path) -> None:
    """--dataset NAME --dataset-config CONFIG, as in transformers' examples: load_dataset(NAME, CONFIG) (glue: the
    nyu-mll/glue repository), the task named by its config; with --data-dir the config's folder is used."""
    import datasets

    from autopeft.config import hub_task

    assert hub_task("glue", "sst2") == "glue:sst2" and hub_task("imdb", None) == "imdb" and hub_task(None, None) is None
    with pytest.raises(AutoPeftError, match="--dataset-config needs --dataset"):
        hub_task(None, "sst2")
    calls = []

    def fake(*args: str) -> dict:
        calls.append(args)
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.delenv("AUTOPEFT_DATA_DIR", raising=False)
    for task, want in (("glue:sst2", ("nyu-mll/glue", "sst2")), ("stanfordnlp/imdb:plain_text", ("stanfordnlp/imdb", "plain_text"))):
        with pytest.raises(DataError, match="could not be loaded from the Hugging Face hub: ConnectionError: offline"):
            load_task(DataSpec(task=task))
        assert calls[-1] == want
    t = load_task(DataSpec(task="glue:mrpc", data_dir=str(glue)))  # a local copy of the config is used first
    assert t.name == "mrpc" and t.metric == "f1" and len(t.train_labels) == 3668
