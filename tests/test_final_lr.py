"""``autopeft train --lr-scale auto`` (issue 17's held-out task): a seed whose best held-out score stays at the chance
level trains again at higher learning rates, and the run with the best held-out score is kept."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from autopeft import escalation
from autopeft.candidate import Candidate
from autopeft.final import train_final

GOOD = ["a good film", "good and fine", "very good", "it was good", "good fun", "so good"]
BAD = ["a bad film", "bad and dull", "very bad", "it was bad", "bad fun", "so bad"]


def _keyword_task(d: Path, n: int = 240) -> dict:
    """A task any model learns at a working rate: the label is whether the sentence says good or bad."""
    d.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", n), ("validation", 60)):
        with open(d / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sentence", "label"])
            for i in range(rows):
                w.writerow([(GOOD if i % 2 else BAD)[i % 6], i % 2])
    return {"train_file": str(d / "train.csv"), "validation_file": str(d / "validation.csv")}


def _exported(tiny_model: str, tmp_path: Path) -> tuple[dict, Path]:
    """The keyword task and a LoRA config at x2.5 exported as 'autopeft export' writes it (learns only at x4)."""
    from autopeft.export import export_config
    from autopeft.result import FoundConfig

    data = _keyword_task(tmp_path / "kw")
    cand = Candidate.make({"lora": {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}}, [0, 1], {},
                          lr_multiplier=2.5)
    meta = {"model": tiny_model, "num_labels": 2, "task": data, "metric": "accuracy", "objectives": ["score", "params"],
            "fidelity": dict(n_train=48, n_eval=48, epochs=1, max_length=16, batch_size=16)}
    return data, export_config(FoundConfig(cand, meta), tmp_path / "cfg")


def test_the_ladder_and_the_flat_rule() -> None:
    assert escalation.final_lr_scales() == [1.0, 2.0, 4.0]
    assert escalation.final_lr_scales(4.0) == [4.0, 1.0, 2.0]  # the scale the seed before kept, then the others
    assert escalation.flat(0.52, 0.5) and not escalation.flat(0.53, 0.5)  # within 0.02 of chance
    assert not escalation.flat(None, 0.5)  # no held-out score: nothing to judge by


def test_the_loss_rule_judges_a_run_by_its_held_out_loss_against_the_class_prior() -> None:
    """loss_gain_z: a constant prediction at the training rows' class shares gains nothing (0); a model that predicts
    the labels gains many standard errors; one whose logits carry no information about the labels gains none
    (|z| < 2), even when its accuracy lands 0.06 above the majority class by chance; with balanced class weights the
    reference is the weighted loss's constant (uniform for two classes), not the raw shares."""
    import numpy as np

    rng = np.random.default_rng(0)
    train = [0] * 600 + [1] * 400
    y = rng.permutation([0] * 130 + [1] * 119)  # 249 held-out rows, majority 0.522
    prior = np.log([0.6, 0.4])
    assert escalation.loss_gain_z(np.tile(prior, (249, 1)), y, train) == 0.0
    learned = np.where(np.eye(2)[y] > 0, 1.0, -1.0)  # a margin of 2 towards the label on every row
    assert escalation.loss_gain_z(learned, y, train) < -20
    assert escalation.loss_gain_z(-learned, y, train) > 20  # confidently wrong: far above the prior's loss
    # noise around an even prior (as RTE's): small random logits, whatever their accuracy
    zs, accs = [], []
    for k in range(200):
        noise = np.random.default_rng(k).normal(0, 0.05, (249, 2))
        zs.append(escalation.loss_gain_z(noise, y, [0, 1] * 500))
        accs.append(float((noise.argmax(1) == y).mean()))
    by_loss = sum(z < -escalation.FLAT_LOSS_Z for z in zs)  # judged to have learned: a one-sided 2-SE test's rate
    by_accuracy = sum(a > 0.522 + escalation.FLAT_MARGIN for a in accs)  # the accuracy rule alone
    assert by_loss <= 10 and by_accuracy >= 20, (by_loss, by_accuracy)  # 2 and 25 of 200 here
    assert max(accs) >= 0.522 + 0.06  # some beat the majority class by as much as RTE's seed 0 did
    # balanced weights: the uniform prediction is the weighted loss's constant for two classes
    w = [1000 / (2 * 600), 1000 / (2 * 400)]
    assert escalation.loss_gain_z(np.zeros((249, 2)), y, train, w) == 0.0
    # the raw shares are worse than that constant under the weighted loss: the minority class's rows weigh more
    assert escalation.loss_gain_z(np.tile(prior, (249, 1)), y, train, w) > escalation.FLAT_LOSS_Z
    # the rule: flat when the score is within 0.02 of chance, or the loss is not 2 standard errors below the prior's
    assert escalation.flat(0.60, 0.52, loss_z=-1.0) and not escalation.flat(0.60, 0.52, loss_z=-3.0)
    assert escalation.flat(0.53, 0.52, loss_z=-3.0)
    # the loss judges only a score within 3 standard errors (0.5 / sqrt(rows)) of chance: 0.095 on 249 rows
    assert escalation.flat(0.60, 0.52, loss_z=-1.0, n_rows=249)  # +0.08: the loss decides
    assert not escalation.flat(0.29, 0.0, loss_z=-1.5, n_rows=366)  # Matthews +0.29 on 366 rows: learned


def test_auto_raises_the_rate_of_a_seed_that_learns_nothing_and_keeps_the_best_run(tiny_model: str,
                                                                                   tmp_path: Path) -> None:
    """On a task the tiny model learns only at about 10x LoRA's default rate, a config at x2.5 learns nothing at x1
    or x2 (held-out accuracy at the majority class) and everything at x4: ``auto`` trains seed 0 at x1, x2, x4 and
    keeps x4 (validation accuracy 1.0); a given scale trains once at it (0.5); seed 1 starts at the scale seed 0
    kept."""
    data = _keyword_task(tmp_path / "kw")
    cand = Candidate.make({"lora": {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}}, [0, 1], {},
                          lr_multiplier=2.5)
    kw = dict(epochs=3, max_length=16, batch_size=16, progress=False)
    fixed = train_final(cand, tiny_model, data, tmp_path / "fixed", lr_scale=1.0, **kw)
    assert [r[:2] for r in fixed["lr_tried"][0]] == [[1.0, 0.5]] and fixed["scores"] == [0.5]  # nothing learned at x1

    auto = train_final(cand, tiny_model, data, tmp_path / "auto", seeds=(0, 1), **kw)
    assert [s for s, *_ in auto["lr_tried"][0]] == [1.0, 2.0, 4.0]
    assert [h for _, h, *_ in auto["lr_tried"][0]] == [0.5, 0.5, 1.0]  # flat at x1 and x2 by the held-out rows
    z = [r[2] for r in auto["lr_tried"][0]]  # the held-out loss against the class prior's, in standard errors
    assert z[0] > -escalation.FLAT_LOSS_Z and z[2] < -10  # x1: nothing learned; x4: far below the prior's loss
    assert auto["scores"][0] == 1.0 and auto["lr_scale"] == 4.0 and auto["lr_scale_option"] == "auto"
    assert auto["lr_tried"][1][0][0] == 4.0  # seed 1 starts where seed 0 ended
    assert auto["majority"] == {"accuracy": 0.5} and auto["accuracies"] == auto["scores"]  # the bar, and the result
    saved = json.loads((tmp_path / "auto" / "seeds" / "seed0.json").read_text())
    assert saved["lr_scale"] == 4.0 and (tmp_path / "auto" / "checkpoints" / "seed0-lr4").is_dir()
    # whether each seed's best held-out epoch was its last (the score still rising): as its log says
    for seed, last in zip((0, 1), auto["best_last"]):
        log = json.loads((tmp_path / "auto" / "seeds" / f"seed{seed}.json").read_text())
        evals = [(h["epoch"], h["eval_score"]) for h in log["log_history"] if "eval_score" in h]
        first_best = next(e for e, v in evals if v == max(v for _, v in evals))  # the Trainer keeps the first best
        assert last is (first_best == evals[-1][0]) and log["best_last"] is last, (seed, evals)
    assert fixed["best_last"] in ([True], [False])
    import torch

    from autopeft.final import evaluate, load_trained

    model, tok, _ = load_trained(tmp_path / "auto")  # the saved model is the kept run's
    with torch.no_grad():
        assert evaluate(model, tok, data, 16) == 1.0


def test_the_cli_says_which_rates_it_tried(tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from autopeft.cli import main

    data, cfg = _exported(tiny_model, tmp_path)
    assert main(["train", "--config", str(cfg), "--train-file", data["train_file"], "--validation-file",
                 data["validation_file"], "--epochs", "3", "--max-length", "16", "--batch-size", "16", "--no-progress",
                 "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "accuracy on validation 1.0000" in out and "autopeft: note:" not in out  # the label is named "label"
    assert "seed 0: held-out accuracy by learning-rate scale x1 0.5000, x2 0.5000, x4 1.0000; kept x4 (--lr-scale auto)" in out
    line = next(x for x in out.splitlines() if x.startswith("seed 0: held-out loss against the class prior's"))
    z = [float(p.split()[1]) for p in line.split(": ")[-1].split(", ")]  # x1, x2, x4 in standard errors
    assert len(z) == 3 and z[0] > -2 and z[2] < -2, line
    assert "always the majority class on validation: accuracy 0.5000\n" in out
    res = json.loads((tmp_path / "out" / "autopeft_result.json").read_text())
    late = "the best held-out accuracy came in the last epoch for seed(s) 0: still improving when training ended; " \
           "more epochs may score higher (--epochs, now 3)"
    assert (late in out) is res["best_last"][0], res["best_last"]
    # another metric: the majority class's score in it, and accuracy beside the majority class's
    assert main(["train", "--config", str(cfg), "--train-file", data["train_file"], "--validation-file",
                 data["validation_file"], "--epochs", "3", "--max-length", "16", "--batch-size", "16", "--no-progress",
                 "--metric", "f1", "--lr-scale", "4", "-o", str(tmp_path / "out-f1")]) == 0
    out = capsys.readouterr().out
    assert "f1 on validation 1.0000" in out
    assert "always the majority class on validation: f1 0.0000; accuracy 1.0000 here, 0.5000 for the majority class" in out
    # a label column of another name is found by its values (as the search finds it), and the CLI says so
    for name in ("train", "validation"):
        text = Path(data[f"{name}_file"]).read_text().replace("sentence,label", "sentence,verdict", 1)
        (tmp_path / f"{name}-verdict.csv").write_text(text)
    assert main(["train", "--config", str(cfg), "--train-file", str(tmp_path / "train-verdict.csv"), "--validation-file",
                 str(tmp_path / "validation-verdict.csv"), "--epochs", "1", "--max-length", "16", "--batch-size", "16",
                 "--lr-scale", "4", "--no-progress", "-o", str(tmp_path / "out-verdict")]) == 0
    out = capsys.readouterr().out
    assert "autopeft: note: label column 'verdict' taken by its values (no column is named label); --label-column " \
           "sets it\n" in out
    # "--seeds 3" reads like "three seeds": the CLI says it trains seed 3 only (here before a missing file stops it)
    assert main(["train", "--config", str(cfg), "--train-file", data["train_file"], "--validation-file",
                 str(tmp_path / "missing.csv"), "--seeds", "3", "--no-progress", "-o", str(tmp_path / "out-3")]) == 2
    err = capsys.readouterr().err
    assert "autopeft: training seed 3 only (--seeds takes seed numbers; for 3 seeds give --seeds 0,1,2)" in err


def test_the_still_improving_line_says_how_to_train_longer() -> None:
    """At --epochs auto's cap the line says that a number of epochs trains that many with no early stop (an MRPC
    seed's best epoch was its 10th); at a fixed --epochs it names the number; no seed late, no line."""
    from autopeft.commands.train import still_improving

    auto = {"metric": "matthews", "epochs": 10.0, "patience": 2, "best_last": [False, True, False]}
    assert still_improving(auto, [0, 3, 4]) == (
        "the best held-out matthews came in the last epoch for seed(s) 3: still improving when training ended; more "
        "epochs may score higher (--epochs auto trains at most 10; --epochs N trains N, with no early stop)")
    fixed = {"metric": "accuracy", "epochs": 3.0, "patience": None, "best_last": [True, True]}
    assert still_improving(fixed, [0, 1]).endswith("for seed(s) 0, 1: still improving when training ended; more "
                                                   "epochs may score higher (--epochs, now 3)")
    assert still_improving({**auto, "best_last": [False, False, False]}, [0, 3, 4]) is None


def test_epoch_plan_reads_auto_and_numbers() -> None:
    from autopeft.errors import ConfigError
    from autopeft.training import AUTO_MAX_EPOCHS, AUTO_PATIENCE, epoch_plan

    assert epoch_plan("auto", True) == (AUTO_MAX_EPOCHS, AUTO_PATIENCE) == (10.0, 2)
    assert epoch_plan("auto", False) == (3.0, None)  # nothing held out to stop on: the old fixed default
    assert epoch_plan(6, True) == (6.0, None) and epoch_plan(0.5, False) == (0.5, None)
    for bad in (0, -1, float("inf"), "six", True):
        with pytest.raises(ConfigError, match="^--epochs must be auto or a finite number > 0, got "):
            epoch_plan(bad, True)


def test_auto_epochs_stop_two_epochs_after_the_best_held_out_score(tiny_model: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """``autopeft train`` with no --epochs: each seed trains until two epochs in a row bring no better held-out score
    (or 10 epochs), and the best epoch is the one kept and saved.  On the keyword task at x4 the held-out accuracy
    reaches 1.0 at epoch 3 and cannot rise, so training stops at epoch 5, far short of 10."""
    from autopeft.cli import main
    from autopeft.final import evaluate, load_trained

    data, cfg = _exported(tiny_model, tmp_path)
    assert main(["train", "--config", str(cfg), "--train-file", data["train_file"], "--validation-file",
                 data["validation_file"], "--max-length", "16", "--batch-size", "16", "--no-progress", "--lr-scale", "4",
                 "--seeds", "0,1", "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "out" / "autopeft_result.json").read_text())
    assert res["epochs_option"] == "auto" and res["epochs"] == 10 and res["patience"] == 2
    for seed, (ran, best) in zip((0, 1), res["epochs_run"]):
        log = json.loads((tmp_path / "out" / "seeds" / f"seed{seed}.json").read_text())["log_history"]
        evals = [(h["epoch"], h["eval_score"]) for h in log if "eval_score" in h]
        first_best = next(e for e, v in evals if v == max(v for _, v in evals))
        assert best == first_best and ran == evals[-1][0] == min(10, first_best + 2), (seed, evals)
        assert ran < 10 and max(v for _, v in evals) == 1.0  # stopped early, after learning the task
        assert [e for e, _ in evals] == [float(k) for k in range(1, int(ran) + 1)]  # one evaluation per epoch
    assert res["scores"] == [1.0, 1.0]
    runs = ", ".join(f"seed {s} {r:g} ({b:g})" for s, (r, b) in zip((0, 1), res["epochs_run"]))
    assert (f"epochs trained (best held-out epoch kept): {runs} (--epochs auto: up to 10, stopping after 2 without a "
            f"better held-out score)") in out
    model, tok, _ = load_trained(tmp_path / "out")
    assert evaluate(model, tok, data, 16) == 1.0
    # a number trains that many epochs, all of them (the best still kept), and says so
    assert main(["train", "--config", str(cfg), "--train-file", data["train_file"], "--validation-file",
                 data["validation_file"], "--max-length", "16", "--batch-size", "16", "--no-progress", "--lr-scale", "4",
                 "--epochs", "4", "-o", str(tmp_path / "out4")]) == 0
    res4 = json.loads((tmp_path / "out4" / "autopeft_result.json").read_text())
    assert res4["epochs_run"][0][0] == 4 and res4["patience"] is None
    assert "(--epochs 4)" in capsys.readouterr().out


class _Killed(Exception):
    pass


@pytest.mark.parametrize("event", ["step", "save"])
def test_auto_epochs_resume_where_the_interrupted_run_would_have_stopped(tiny_model: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         event: str) -> None:
    """Killed in the middle of an epoch after one epoch without a better held-out score (``step``), --resume carries
    the early-stopping counter on and stops where the whole run stopped, not two epochs later; killed just after the
    checkpoint of the epoch that stopped it (``save``), --resume trains nothing more.  Either way the same epochs,
    best epoch and score as the uninterrupted run."""
    from transformers import TrainerCallback

    from autopeft import final

    data = _keyword_task(tmp_path / "kw")
    cand = Candidate.make({"lora": {"r": 4, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.0}}, [0, 1], {},
                          lr_multiplier=2.5)
    kw = dict(max_length=16, batch_size=16, progress=False, lr_scale=4.0, seeds=(1,))
    whole = train_final(cand, tiny_model, data, tmp_path / "whole", **kw)
    ran, best = whole["epochs_run"][0]
    assert ran == best + 2 < 10
    steps = json.loads((tmp_path / "whole" / "seeds" / "seed1.json").read_text())["log_history"][-1]["step"] / ran
    kill_at = int((best + 1.5) * steps) if event == "step" else int(ran * steps)  # mid-epoch / the stop's checkpoint

    class Kill(TrainerCallback):
        def on_step_end(self, args: object, state: object, control: object, **_: object) -> None:
            if event == "step" and state.global_step == kill_at:
                raise _Killed()

        def on_save(self, args: object, state: object, control: object, **_: object) -> None:
            if event == "save" and state.global_step == kill_at:
                raise _Killed()

    real = final.run_trainer

    def killed_once(trainer: object, *a: object) -> None:
        trainer.add_callback(Kill())
        real(trainer, *a)

    monkeypatch.setattr(final, "run_trainer", killed_once)
    with pytest.raises(_Killed):
        train_final(cand, tiny_model, data, tmp_path / "cut", **kw)
    monkeypatch.setattr(final, "run_trainer", real)
    again = train_final(cand, tiny_model, data, tmp_path / "cut", resume=True, **kw)
    assert again["epochs_run"] == whole["epochs_run"] and again["scores"] == whole["scores"]


def test_a_run_still_flat_after_three_epochs_stops_so_the_next_rate_is_tried(tmp_path: Path) -> None:
    """--epochs auto with --lr-scale auto: a run whose best held-out score is still flat (escalation.flat) after 3
    epochs stops even while that score creeps up by noise (which keeps early stopping's counter at 0): the next
    learning-rate scale is tried after 3 epochs, as at the old fixed default, not after up to 10.  A run that has
    learned goes on; the same rule tells --resume that a checkpoint's run had stopped."""
    from transformers import TrainerControl, TrainerState

    from autopeft.training import stop_rules, stopped_early

    chance, rows = 0.52, 249
    callbacks, still_flat = stop_rules(2, lambda s, z: escalation.flat(s, chance, z, rows))
    assert [type(c).__name__ for c in callbacks] == ["EarlyStoppingCallback", "FlatStop"]
    flat_stop = callbacks[1]

    def stops(scores: list[float], zs: list[float]) -> bool:
        state = TrainerState()
        state.log_history = [{"eval_score": s, "eval_loss_z": z, "epoch": float(k + 1)}
                             for k, (s, z) in enumerate(zip(scores, zs))]
        state.epoch = float(len(scores))
        control = TrainerControl()
        flat_stop.on_evaluate(None, state, control)
        return control.should_training_stop

    creeping = [0.518, 0.526, 0.534, 0.542]  # better each epoch, never clear of chance; loss not below the prior's
    assert not stops(creeping[:2], [-0.5, -0.8])  # 2 epochs: too early to judge
    assert stops(creeping[:3], [-0.5, -0.8, -1.0]) and stops(creeping, [-0.5, -0.8, -1.0, -1.2])
    assert not stops([0.55, 0.70, 0.78], [-3.0, -9.0, -12.0])  # learned: goes on (early stopping decides)
    assert not stops([0.52, 0.53, 0.57], [-0.2, -0.4, -2.5])  # the best epoch's loss clearly below the prior's
    assert stop_rules(None, None) == ([], None)  # a fixed --epochs: no stopping rule
    assert [type(c).__name__ for c in stop_rules(2, None)[0]] == ["EarlyStoppingCallback", "FlatStop"]
    assert not stop_rules(2, None)[1]([{"eval_score": 0.5, "epoch": 3.0}], 3.0)  # a given scale: never flat-stopped
    # --resume: a checkpoint whose log is flat at epoch 3 is a finished run; at epoch 2 it is not
    for epoch, done in ((3, True), (2, False)):
        ck = tmp_path / f"e{epoch}" / f"checkpoint-{epoch * 10}"
        ck.mkdir(parents=True)
        log = [{"eval_score": s, "eval_loss_z": -0.5, "epoch": float(k + 1)} for k, s in enumerate(creeping[:epoch])]
        (ck / "trainer_state.json").write_text(json.dumps({"log_history": log, "epoch": float(epoch)}))
        assert (stopped_early(ck.parent, 2, still_flat) == ck) is done


def test_train_floors_the_heads_rate_when_asked_and_refuses_a_negative_floor(tiny_model: str, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """``autopeft train --head-lr`` (API ``head_lr=``) gives the head the rate floor a search's trials use: the
    model it builds has the head's group at 0.01 x the config's multiplier 2.5 (then x ``--lr-scale``), LoRA's at
    its own 5e-4 x 2.5; without it the head trains at LoRA's rate; the result records the floor; a negative floor
    is one line (exit 2 from the CLI)."""
    import autopeft.export
    from autopeft.cli import main
    from autopeft.errors import ConfigError

    seen: list[dict[str, float]] = []
    real = autopeft.export.trainable

    def spy(*args, **kwargs):  # the rate groups of every model train_final builds (its optimizer: x --lr-scale)
        built = real(*args, **kwargs)
        seen.append({g["name"]: g["lr"] for g in built.param_groups})
        return built

    monkeypatch.setattr(autopeft.export, "trainable", spy)
    data, cfg = _exported(tiny_model, tmp_path)
    base = ["train", "--config", str(cfg), "--train-file", data["train_file"], "--validation-file",
            data["validation_file"], "--epochs", "1", "--max-length", "16", "--batch-size", "16", "--no-progress",
            "--lr-scale", "2"]
    assert main([*base, "--head-lr", "0.01", "-o", str(tmp_path / "floored")]) == 0
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    assert seen == [pytest.approx({"lora": 5e-4 * 2.5, "head": 0.01 * 2.5}),
                    pytest.approx({"lora": 5e-4 * 2.5, "head": 5e-4 * 2.5})]
    assert json.loads((tmp_path / "floored" / "autopeft_result.json").read_text())["head_lr"] == 0.01
    assert json.loads((tmp_path / "plain" / "autopeft_result.json").read_text())["head_lr"] == 0.0
    capsys.readouterr()
    assert main([*base, "--head-lr", "-1", "-o", str(tmp_path / "neg")]) == 2
    err = capsys.readouterr().err
    assert "argument --head-lr: must be a finite number >= 0, got -1" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match=r"^--head-lr must be a finite number >= 0, got -0.5$"):
        train_final(Candidate.make({"lora": {"r": 4, "targets": ["q"]}}, [0]), tiny_model, data, tmp_path / "x",
                    head_lr=-0.5)
    assert not (tmp_path / "x").exists()  # refused before any model loads or file is written
