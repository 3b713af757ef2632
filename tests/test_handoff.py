"""Hand-off: export -> PeftConfig.from_pretrained -> final training -> save -> reload with the same score;
plots; the dashboard over HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import dashboard_data

import autopeft
from autopeft.candidate import Candidate
from autopeft.cli import main
from autopeft.export import export_config, load_config
from autopeft.final import evaluate, load_trained, train_final
from autopeft.result import FoundConfig

FID = dict(n_train=48, n_eval=48, epochs=1, max_length=32, batch_size=16)


@pytest.fixture(scope="module")
def study(tiny_model: str, glue_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    storage = f"sqlite:///{tmp_path_factory.mktemp('st') / 'h.db'}"
    autopeft.search(model=tiny_model, task="sst2", data_dir=str(glue_dir), space="tiny", n_trials=4, storage=storage,
                    study_name="handoff", executor="inline", n_startup=2, **FID)
    return "handoff", storage


def _meta(tiny_model: str, glue_dir: Path) -> dict:
    return {"model": tiny_model, "num_labels": 2, "task": {"task": "sst2"}, "metric": "accuracy",
            "fidelity": FID, "objectives": ["score", "params", "memory"]}


@pytest.mark.parametrize("methods,layers", [
    ({"lora": {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}}, [0, 1]),
    ({"serial_adapter": {"size": 8, "scaling": 1.0}}, [1]),
])
def test_export_train_save_reload_same_score(methods: dict, layers: list[int], tiny_model: str, glue_dir: Path,
                                             tmp_path: Path) -> None:
    from peft import PeftConfig, PeftModel

    cand = Candidate.make(methods, layers, {"fraction": 0.5, "criterion": "random"} if "serial_adapter" in methods else {})
    cfg_dir = export_config(FoundConfig(cand, _meta(tiny_model, glue_dir)), tmp_path / "cfg")
    assert load_config(cfg_dir) == cand  # round trip
    info = json.loads((cfg_dir / "autopeft_config.json").read_text())
    assert info["base_model"] == tiny_model and info["num_labels"] == 2 and info["learning_rates"]
    # full-budget training uses the memory batch and the plain per-method rates, not the short trials' settings
    assert info["batch_size"] == 16 and info["search_fidelity"]["n_train"] == 48
    if "lora" in methods:
        pc = PeftConfig.from_pretrained(str(cfg_dir))
        assert pc.peft_type.value == "LORA" and pc.r == 4
    data = {"task": "sst2", "data_dir": str(glue_dir)}
    res = train_final(cand, tiny_model, data, tmp_path / "out", epochs=1, n_train=96, max_length=32, seeds=[0, 1])
    assert len(res["scores"]) == 2 and 0 <= res["mean"] <= 1
    model, tok, c2 = load_trained(tmp_path / "out")
    assert c2 == cand
    assert evaluate(model, tok, data, 32) == pytest.approx(res["saved_score"])
    if "lora" in methods:  # plain peft reloads it too, without autopeft's code path
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
        pm = PeftModel.from_pretrained(base, str(tmp_path / "out"))
        assert evaluate(pm, AutoTokenizer.from_pretrained(tiny_model), data, 32) == pytest.approx(res["saved_score"])


def test_cli_export_best_and_train(study: tuple[str, str], tiny_model: str, glue_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    name, storage = study
    assert main(["export", "--study", name, "--storage", storage, "--best", "-o", str(tmp_path / "cfg")]) == 0
    best = autopeft.load_study(name, storage).best_config()
    assert load_config(tmp_path / "cfg") == best.candidate
    assert main(["train", "--config", str(tmp_path / "cfg"), "--data-dir", str(glue_dir), "--epochs", "1",
                 "--n-train", "64", "--max-length", "32", "-o", str(tmp_path / "out")]) == 0
    assert "accuracy on validation" in capsys.readouterr().out
    assert (tmp_path / "out" / "autopeft_result.json").is_file()
    assert main(["train", "--config", str(tmp_path / "cfg"), "--data-dir", str(glue_dir), "--epochs", "1", "--metric", "auc",
                 "--n-train", "64", "--max-length", "32", "-o", str(tmp_path / "out2")]) == 0
    auc = json.loads((tmp_path / "out2" / "autopeft_result.json").read_text())
    assert auc["metric"] == "auc" and 0.0 <= auc["mean"] <= 1.0 and "auc on validation" in capsys.readouterr().out
    assert main(["train", "--config", str(tmp_path / "cfg"), "--data-dir", str(glue_dir), "--metric", "roc",
                 "-o", str(tmp_path / "out3")]) == 2
    assert "unknown metric 'roc'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "cfg"), "--data-dir", str(glue_dir), "--lr-scale", "0",
                 "-o", str(tmp_path / "out4")]) == 2
    assert "argument --lr-scale: must be auto or a finite number > 0, got 0" in capsys.readouterr().err


def test_every_export_says_what_loads_where_and_loads_from_elsewhere(tiny_model: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A peft-only export loads with plain peft from another working directory (its base model is an absolute
    path); one with our adapters or sparsity says plain peft cannot load it and builds with load_for_training."""
    from peft import PeftConfig

    from autopeft.export import describe

    lora = Candidate.make({"lora": {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}}, [0, 1], {})
    serial = Candidate.make({"serial_adapter": {"size": 8, "scaling": 1.0}}, [1], {"fraction": 0.5, "criterion": "random"})
    mixed = Candidate.make({"lora": {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0},
                            "serial_adapter": {"size": 8, "scaling": 1.0}}, [0, 1], {})
    rel = os.path.relpath(tiny_model, tmp_path)  # the model as typed, relative to where the search ran
    monkeypatch.chdir(tmp_path)
    meta = {**_meta(tiny_model, Path(".")), "model": rel}
    lines = {}
    for name, cand in (("lora", lora), ("serial", serial), ("mixed", mixed)):
        d = export_config(FoundConfig(cand, meta), tmp_path / name)
        lines[name] = describe(d)
        assert json.loads((d / "autopeft_config.json").read_text())["base_model"] == str(Path(tiny_model).resolve())
    assert lines["lora"].startswith("plain peft loads it: PeftConfig.from_pretrained(")
    assert lines["serial"].startswith("plain peft cannot load it (no adapter_config.json: serial_adapter and sparsity")
    assert lines["mixed"].startswith("serial_adapter need(s) autopeft") and "loads only the peft part" in lines["mixed"]
    assert not (tmp_path / "serial" / "adapter_config.json").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    pc = PeftConfig.from_pretrained(str(tmp_path / "lora"))
    assert pc.base_model_name_or_path == str(Path(tiny_model).resolve()) and Path(pc.base_model_name_or_path).is_dir()


def test_the_default_model_is_exported_by_its_hub_id() -> None:
    from autopeft.builder import resolve_model
    from autopeft.export import model_reference

    assert model_reference(None) == model_reference("all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), "config.json").is_file()  # the packaged copy


def test_a_sparse_bottleneck_export_trains_with_transformers_trainer(tiny_model: str, glue_dir: Path,
                                                                     tmp_path: Path) -> None:
    """The documented path for exports plain peft cannot load: load_for_training, then transformers' Trainer with
    its optimizer and callbacks; the masked half of the adapter weights stays exactly zero, the rest trains."""
    import torch
    from transformers import Trainer, TrainingArguments

    cand = Candidate.make({"serial_adapter": {"size": 8, "scaling": 1.0}}, [0, 1], {"fraction": 0.5, "criterion": "random"})
    d = export_config(FoundConfig(cand, _meta(tiny_model, glue_dir)), tmp_path / "cfg")
    t = autopeft.load_for_training(d)
    assert len(t.callbacks) == 1
    before = {n: p.detach().clone() for n, p in t.model.named_parameters() if p.requires_grad and p.ndim >= 2
              and "adapter" in n}
    rows = [json.loads(x) for x in (glue_dir / "sst2" / "train.jsonl").read_text().splitlines()[:64]]
    enc = t.tokenizer([r["sentence"] for r in rows], padding="max_length", truncation=True, max_length=32)
    ds = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": r["label"]}
          for i, r in enumerate(rows)]
    args = TrainingArguments(output_dir=str(tmp_path / "tr"), per_device_train_batch_size=16, num_train_epochs=2,
                             report_to=[], save_strategy="no", use_cpu=True, logging_strategy="no")
    opt = t.optimizer()
    assert [g["lr"] for g in t.optimizer(lr_scale=4.0).param_groups] == [4 * g["lr"] for g in opt.param_groups]
    Trainer(model=t.model, args=args, train_dataset=ds, optimizers=(opt, None), callbacks=t.callbacks).train()
    after = dict(t.model.named_parameters())
    assert set(t.masks.masks) == set(before)
    for n, keep in t.masks.masks.items():
        w, w0 = after[n].detach(), before[n]
        assert int((~keep).sum()) == round(0.5 * w.numel()) and not w[~keep].any(), n  # the masked half stays zero
        assert not torch.equal(w[keep], w0[keep]), n  # and the kept half trained
    assert t.trainable_params < sum(p.numel() for p in t.model.parameters() if p.requires_grad)


def test_final_training_runs_on_transformers_trainer_and_resumes(tiny_model: str, glue_dir: Path, tmp_path: Path) -> None:
    """`autopeft train` runs transformers' Trainer: evaluation and a checkpoint (with every trainable tensor) each
    epoch on a held-out tenth of the training rows, loss logged, the best epoch kept; after an interruption,
    --resume continues from the checkpoints and gives the same model."""
    cand = Candidate.make({"lora": {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0},
                           "serial_adapter": {"size": 8, "scaling": 1.0}}, [0, 1], {})
    cfg = export_config(FoundConfig(cand, _meta(tiny_model, glue_dir)), tmp_path / "cfg")
    out = tmp_path / "out"
    argv = ["train", "--config", str(cfg), "--data-dir", str(glue_dir), "--n-train", "200", "--epochs", "2",
            "--max-length", "32", "--batch-size", "16", "-o", str(out), "--no-progress", "--training-args",
            "logging_steps=1"]
    assert main(argv) == 0
    r = json.loads((out / "autopeft_result.json").read_text())
    assert r["trainer"] == "transformers.Trainer" and r["holdout"] == 20 and r["device"] == "cpu"
    ckpts = sorted((out / "checkpoints" / "seed0").glob("checkpoint-*"))
    assert ckpts and all((c / "autopeft_trainable.pt").is_file() for c in ckpts)
    log = json.loads((out / "seeds" / "seed0.json").read_text())["log_history"]  # the whole run's log
    assert len([h for h in log if "eval_score" in h]) == 2  # evaluated each epoch
    assert len([h for h in log if "loss" in h]) >= 20  # 180 rows / 16 = 12 steps an epoch, each logged
    (out / "seeds" / "seed0.json").unlink()  # interrupted before the seed was recorded: its checkpoints remain
    assert main(argv + ["--resume"]) == 0
    assert json.loads((out / "autopeft_result.json").read_text())["scores"] == r["scores"]
    model, tok, _ = load_trained(out)
    assert evaluate(model, tok, {"task": "sst2", "data_dir": str(glue_dir)}, 32) == pytest.approx(r["scores"][0])


def test_final_training_device_and_trainer_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    from autopeft import api, final
    from autopeft.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert final.pick_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert final.pick_device() == "cpu"
    kw = final.training_arguments(tmp_path, seed=3, epochs=2, batch_size=8, total_steps=100, device="cuda",
                                  eval_each_epoch=True, bf16=True, grad_accum=4, grad_ckpt=True, report_to="tensorboard",
                                  extra={"max_grad_norm": 0.5})
    assert (kw["bf16"], kw["gradient_accumulation_steps"], kw["gradient_checkpointing"], kw["report_to"], kw["use_cpu"],
            kw["max_grad_norm"], kw["warmup_steps"], kw["load_best_model_at_end"], kw["seed"]) == (
        True, 4, True, ["tensorboard"], False, 0.5, 6, True, 3)
    with pytest.raises(ConfigError, match="'learning_rat' is not a field of transformers' TrainingArguments"):
        final.training_arguments(tmp_path, seed=0, epochs=1, batch_size=8, total_steps=10, device="cpu",
                                 eval_each_epoch=False, extra={"learning_rat": 1})
    with pytest.raises(ConfigError, match="--fp16 needs a CUDA GPU"):
        final.training_arguments(tmp_path, seed=0, epochs=1, batch_size=8, total_steps=10, device="cpu",
                                 eval_each_epoch=False, fp16=True)
    seen: dict = {}

    def fake_train(config_dir: str, output: str, **kw: object) -> dict:
        seen.update(kw)
        return {"summary": "s", "metric": "accuracy", "mean": 0.5, "std": 0.0}

    monkeypatch.setattr(api, "train", fake_train)
    (tmp_path / "ta.yaml").write_text("max_grad_norm: 0.5\noptim: adamw_torch\n")
    assert main(["train", "--config", "c", "-o", "o", "--bf16", "--gradient-accumulation-steps", "4",
                 "--gradient-checkpointing", "--resume", "--report-to", "tensorboard", "--device", "cuda",
                 "--training-args", "eval_steps=7", "--training-args", str(tmp_path / "ta.yaml"),
                 "--text-columns", "title,body", "--label-column", "y"]) == 0
    assert {k: seen[k] for k in ("bf16", "grad_accum", "grad_ckpt", "resume", "report_to", "device", "training_args",
                                 "text_columns", "label_column")} == {
        "bf16": True, "grad_accum": 4, "grad_ckpt": True, "resume": True, "report_to": "tensorboard", "device": "cuda",
        "training_args": {"eval_steps": 7, "max_grad_norm": 0.5, "optim": "adamw_torch"}, "text_columns": "title,body",
        "label_column": "y"}


def test_plot_writes_html_and_png(study: tuple[str, str], tmp_path: Path) -> None:
    name, storage = study
    assert main(["plot", "--study", name, "--storage", storage, "-o", str(tmp_path)]) == 0
    png = tmp_path / f"{name}_pareto.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    html = (tmp_path / f"{name}_pareto.html").read_text()
    assert 'src="plotly.min.js"' in html and len(html) < 100_000  # plotly.js once beside the pages, not inlined
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    assert (tmp_path / f"{name}_hypervolume.png").is_file()


@pytest.mark.parametrize("cmd", ["show", "best", "export", "plot", "dashboard"])
def test_missing_study_is_one_line_and_creates_nothing(cmd: str, study: tuple[str, str], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _, storage = study
    extra = {"export": ["--best", "-o", str(tmp_path / "x")], "plot": ["-o", str(tmp_path / "p")]}.get(cmd, [])
    assert main([cmd, "--study", "nope", "--storage", storage, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "no study named 'nope'" in err and len(err.splitlines()) == 1
    import optuna

    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["handoff"]
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert main([cmd, "--study", "nope", "--storage", missing, *extra]) == 2
    assert not (tmp_path / "none.db").exists()


def test_dashboard_serves_the_study(study: tuple[str, str]) -> None:
    name, storage = study
    summary, detail = dashboard_data(name, storage)
    assert summary["directions"] == ["maximize", "minimize", "minimize"]
    import optuna

    assert len(detail["trials"]) == len(optuna.load_study(study_name=name, storage=storage).trials)
    assert detail["objective_names"] == ["score (accuracy)", "trainable params", "memory (MiB)"]


def test_notebook_runs_top_to_bottom(study: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    name, storage = study
    monkeypatch.setenv("AUTOPEFT_STUDY", name)
    monkeypatch.setenv("AUTOPEFT_STORAGE", storage)
    monkeypatch.setenv("AUTOPEFT_PLOTS", str(tmp_path / "plots"))
    monkeypatch.setenv("AUTOPEFT_EXPORT", str(tmp_path / "export"))
    repo = str(Path(__file__).resolve().parents[1])  # the kernel imports this checkout, installed or not
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p))
    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "inspect_study.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert (tmp_path / "plots" / f"{name}_pareto.png").is_file()
    assert (tmp_path / "export" / "autopeft_candidate.json").is_file()
