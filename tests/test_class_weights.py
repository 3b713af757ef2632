"""Balanced class weights for imbalanced tasks scored by Matthews or macro-F1 (issue 17: on a binary task with a
30 % minority, every short trial of a default search sat at the majority class): chosen when a study is created,
stored in its fidelity, used by the trials and by `autopeft train`."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from autopeft.data import auto_class_weights, balanced_weights

LORA = {"methods": {"lora": {"r": 4, "alpha_ratio": 2.0, "dropout": 0.0, "targets": ["q", "v"]}}, "layers": [0, 1]}
FID = dict(n_train=48, n_eval=32, epochs=1, max_length=24, batch_size=16)


def _task(metric: str, labels: list[int], lm: bool = False) -> SimpleNamespace:
    return SimpleNamespace(is_lm=lm, metric=metric, train_labels=labels, num_labels=max(labels) + 1)


def test_auto_weights_only_imbalanced_tasks_scored_without_a_majority_reward() -> None:
    skewed = [0] * 70 + [1] * 30
    assert auto_class_weights(_task("matthews", skewed)) == "balanced"
    assert auto_class_weights(_task("macro_f1", [0] * 50 + [1] * 30 + [2] * 20)) == "balanced"
    assert auto_class_weights(_task("macro_f1", [0] * 34 + [1] * 33 + [2] * 33)) == "none"  # balanced classes
    assert auto_class_weights(_task("accuracy", skewed)) == "none"  # the majority class is a fair answer
    assert auto_class_weights(_task("f1", skewed)) == "none"  # MRPC: F1 of the positive (majority) class
    assert auto_class_weights(_task("matthews", skewed, lm=True)) == "none"
    assert balanced_weights([0, 0, 0, 1], 2) == pytest.approx([4 / 6, 2.0])
    assert balanced_weights([0, 0, 2], 3) == pytest.approx([0.75, 1.0, 1.5])  # an absent class: 1


def _skewed_task(tmp_path: Path) -> Path:
    """A binary CSV task with a 25 % minority and no task name autopeft knows: scored by Matthews."""
    rng = random.Random(0)
    good = ["a gripping film", "warm and funny", "a joy to watch", "beautifully made", "moving and sharp"]
    bad = ["dull and slow", "a mess", "tedious", "flat and lifeless", "badly acted"]
    d = tmp_path / "skew"
    d.mkdir()
    for split, n in (("train", 240), ("validation", 80)):
        rows = [(rng.choice(good), 1) if rng.random() < 0.25 else (rng.choice(bad), 0) for _ in range(n)]
        (d / f"{split}.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return d


def test_a_new_study_stores_balanced_weights_and_its_trials_use_them(tiny_model: str, glue_dir: Path,
                                                                     tmp_path: Path) -> None:
    from autopeft import api
    from autopeft.config import data_spec_dict
    from autopeft.contract import OK, TrialSpec
    from autopeft.trial import run_trial

    d = _skewed_task(tmp_path)
    res = api.search(model=tiny_model, train_file=str(d / "train.csv"), validation_file=str(d / "validation.csv"),
                     space="tiny", n_trials=1, study_name="skew", storage=f"sqlite:///{tmp_path / 's.db'}",
                     executor="inline", n_startup=1, **FID)
    meta = res.study.user_attrs
    assert meta["metric"] == "matthews" and meta["fidelity"]["class_weights"] == "balanced"
    # the weighted loss is what the trial trains on: same seed and rows, another first loss
    data = data_spec_dict(train_file=str(d / "train.csv"), validation_file=str(d / "validation.csv"))
    losses = {}
    for cw in ("none", "balanced"):
        r = run_trial(TrialSpec(0, LORA, tiny_model, data, fidelity={**FID, "epochs": 0.3, "class_weights": cw}))
        assert r.status == OK, r.reason
        losses[cw] = r.loss
    assert losses["none"] != pytest.approx(losses["balanced"], abs=1e-4)
    # SST-2 (accuracy) keeps the plain loss; --class-weights overrides auto
    for given, want in ((None, "none"), ("balanced", "balanced")):
        opts = {"class_weights": given} if given else {}
        r2 = api.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=1,
                        study_name=f"sst2-{want}", storage=f"sqlite:///{tmp_path / 's.db'}", executor="inline",
                        n_startup=1, **FID, **opts)
        assert r2.study.user_attrs["fidelity"]["class_weights"] == want


def test_final_training_uses_the_same_rule(tiny_model: str, tmp_path: Path) -> None:
    from autopeft.candidate import Candidate
    from autopeft.config import data_spec_dict
    from autopeft.errors import ConfigError
    from autopeft.final import train_final

    d = _skewed_task(tmp_path)
    data = data_spec_dict(train_file=str(d / "train.csv"), validation_file=str(d / "validation.csv"))
    cand = Candidate.from_dict(LORA)
    res = train_final(cand, tiny_model, data, tmp_path / "out", epochs=1, n_train=64, max_length=24, progress=False)
    assert res["class_weights"] == "balanced" and res["metric"] == "matthews"
    assert json.loads((tmp_path / "out" / "autopeft_result.json").read_text())["class_weights"] == "balanced"
    # the Trainer trains on the weighted loss: the same seed and rows with the plain loss log another first loss
    train_final(cand, tiny_model, data, tmp_path / "plain", epochs=1, n_train=64, max_length=24, progress=False,
                class_weights="none")

    def first_loss(d: str) -> float:
        hist = json.loads((tmp_path / d / "seeds" / "seed0.json").read_text())["log_history"]
        return next(h["loss"] for h in hist if "loss" in h)

    assert first_loss("out") != pytest.approx(first_loss("plain"), abs=1e-4)
    with pytest.raises(ConfigError, match=r"^--class-weights must be one of none, balanced or auto, got 'even'$"):
        train_final(cand, tiny_model, data, tmp_path / "o2", epochs=1, n_train=64, class_weights="even")
