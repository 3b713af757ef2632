"""Low-cost trials: real numbers on the tiny model and on the real MiniLM + SST-2."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopeft.candidate import Candidate
from autopeft.trial import FAILED, INFEASIBLE, OK, TrialSpec, run_trial

LORA = {"r": 8, "targets": ["q", "v"], "alpha_ratio": 2.0, "dropout": 0.1}
FAST = {"n_train": 64, "n_eval": 64, "epochs": 1, "max_length": 32, "batch_size": 16}


def spec(model: str, glue: Path, cand: Candidate, **kw: object) -> TrialSpec:
    return TrialSpec(trial_id=kw.pop("trial_id", 0), candidate=cand.to_dict(), model=model,  # type: ignore[arg-type]
                     data={"task": "sst2", "data_dir": str(glue)}, fidelity=kw.pop("fidelity", FAST), **kw)  # type: ignore[arg-type]


def test_trial_is_deterministic(tiny_model: str, glue_dir: Path) -> None:
    c = Candidate.make({"lora": LORA}, [0, 1], {"fraction": 0.5, "criterion": "random"})
    a = run_trial(spec(tiny_model, glue_dir, c, seed=1))
    b = run_trial(spec(tiny_model, glue_dir, c, seed=1))
    assert a.status == OK, a.reason
    assert (a.score, a.params, a.memory_bytes, a.loss) == (b.score, b.params, b.memory_bytes, b.loss)
    assert a.metric == "accuracy" and 0.0 <= a.score <= 1.0 and a.steps == 4


def test_auc_metric_scores_the_same_training_by_ranking(tiny_model: str, glue_dir: Path) -> None:
    """--metric auc: the same trial (same seed, same training) scored by the positive margin's ROC AUC."""
    c = Candidate.make({"lora": LORA}, [0, 1])
    acc = run_trial(spec(tiny_model, glue_dir, c, seed=3))
    s = spec(tiny_model, glue_dir, c, seed=3)
    s.data["metric"] = "auc"
    auc = run_trial(s)
    assert acc.status == auc.status == OK, (acc.reason, auc.reason)
    assert (acc.metric, auc.metric) == ("accuracy", "auc") and acc.loss == auc.loss and acc.steps == auc.steps
    assert 0.0 <= auc.score <= 1.0 and auc.score != acc.score


def test_memory_is_repeatable_and_ranks_placement(tiny_model: str, glue_dir: Path) -> None:
    fid = {**FAST, "n_train": 16}
    all_l = run_trial(spec(tiny_model, glue_dir, Candidate.make({"lora": LORA}, [0, 1]), fidelity=fid))
    all_2 = run_trial(spec(tiny_model, glue_dir, Candidate.make({"lora": LORA}, [0, 1]), fidelity=fid, seed=5))
    top = run_trial(spec(tiny_model, glue_dir, Candidate.make({"lora": LORA}, [1]), fidelity=fid))
    head = run_trial(spec(tiny_model, glue_dir, Candidate.make({}, []), fidelity=fid))
    assert abs(all_l.memory_bytes - all_2.memory_bytes) <= 0.05 * all_l.memory_bytes
    assert head.memory_bytes < top.memory_bytes < all_l.memory_bytes  # backward stops at the lowest adapted layer


def test_trials_in_one_worker_process_do_not_accumulate_tensors(tiny_model: str, glue_dir: Path) -> None:
    """A worker runs trial after trial: nothing of a finished trial may stay alive (the memory count once left each
    trial's whole model copy in a reference cycle through autograd, which killed 2 MiniLM workers at 12 GiB)."""
    import gc

    import torch

    def live() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    fid = {**FAST, "n_train": 16}
    cands = [Candidate.make({"lora": LORA}, [0, 1]), Candidate.make({"ia3": {"targets": ["k", "v", "ffn_down"]}}, [1]),
             Candidate.make({"serial_adapter": {"size": 8, "scaling": 1.0}}, [0, 1], {"fraction": 0.5, "criterion": "magnitude"})]
    for c in cands:  # warm the per-process caches (base model, data)
        assert run_trial(spec(tiny_model, glue_dir, c, fidelity=fid)).status == OK
    before = live()
    for _ in range(2):
        for c in cands:
            assert run_trial(spec(tiny_model, glue_dir, c, fidelity=fid)).status == OK
    assert live() == before


def test_memory_is_reported_at_the_memory_batch_not_the_trial_batch(tiny_model: str, glue_dir: Path) -> None:
    from autopeft.trial import Fidelity

    c = Candidate.make({"lora": LORA}, [0, 1])
    fid = {**FAST, "n_train": 16}
    small = run_trial(spec(tiny_model, glue_dir, c, fidelity={**fid, "batch_size": 4, "memory_batch_size": 16}))
    big = run_trial(spec(tiny_model, glue_dir, c, fidelity={**fid, "batch_size": 16, "memory_batch_size": 16}))
    small4 = run_trial(spec(tiny_model, glue_dir, c, fidelity={**fid, "batch_size": 4, "memory_batch_size": 4}))
    assert small.steps == 4 and big.steps == 1  # the trial batch is really used for training
    assert small.memory_bytes == big.memory_bytes > small4.memory_bytes
    # a fidelity stored before memory_batch_size existed measured memory at its trial batch
    assert Fidelity.from_stored({"batch_size": 8}).memory_batch_size == 8
    assert Fidelity.from_stored({"batch_size": 8, "memory_batch_size": 32}).memory_batch_size == 32
    assert Fidelity().memory_batch_size == 32


def test_fidelity_lr_scale_multiplies_every_learning_rate(tiny_model: str, glue_dir: Path) -> None:
    import pytest

    from autopeft.errors import ConfigError
    from autopeft.trial import Fidelity

    plain = run_trial(spec(tiny_model, glue_dir, Candidate.make({"lora": LORA}, [0, 1])))
    scaled = run_trial(spec(tiny_model, glue_dir, Candidate.make({"lora": LORA}, [0, 1]), fidelity={**FAST, "lr_scale": 3.0}))
    tripled = run_trial(spec(tiny_model, glue_dir, Candidate.make({"lora": LORA}, [0, 1], lr_multiplier=3.0)))
    assert plain.status == scaled.status == tripled.status == OK
    assert scaled.loss == tripled.loss and scaled.loss != plain.loss  # same as tripling the candidate's multiplier
    assert Fidelity.from_stored({"batch_size": 8}).lr_scale == 1.0  # studies stored before lr_scale keep their rates
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises(ConfigError, match="lr-scale must be a finite number > 0"):
            Fidelity(lr_scale=bad)


def test_default_fidelity_is_the_cpu_preset_unless_on_gpu_or_any_preset_key_is_given() -> None:
    from autopeft.errors import ConfigError
    from autopeft.trial import CPU_FIDELITY, Fidelity, default_fidelity

    h = {"head_lr": 0.01}  # every new classification study's trials: the head's rate floor
    assert default_fidelity(None, gpu=False) == Fidelity(n_train=600, epochs=2.0, batch_size=8, lr_scale=2.0, **h)
    assert default_fidelity({"n_eval": 100}, gpu=False) == Fidelity(**{**CPU_FIDELITY, "n_eval": 100, **h})
    assert default_fidelity({"n_train": 4000}, gpu=False) == Fidelity(n_train=4000, **h)  # batch 32, lr x1: not mixed
    assert default_fidelity({"lr_scale": 1.0}, gpu=False) == Fidelity(**h)
    assert default_fidelity(None, gpu=True) == Fidelity(**h) == Fidelity(n_train=2000, batch_size=32, lr_scale=1.0, **h)
    assert default_fidelity({"head_lr": 0.0}, gpu=False).head_lr == 0.0  # off: the methods' rate, as at full budget
    assert default_fidelity(None, gpu=False, lm=True).head_lr == 0.0  # a causal LM has no head
    assert Fidelity.from_stored({"n_train": 600, "batch_size": 8}).head_lr == 0.0  # studies from before it keep theirs
    with pytest.raises(ConfigError, match=r"^head-lr must be a finite number >= 0, got -0.01$"):
        Fidelity(head_lr=-0.01)


def test_failures_are_reported_not_raised(tiny_model: str, glue_dir: Path) -> None:
    c = Candidate.make({"lora": LORA}, [0, 1])
    nan = run_trial(spec(tiny_model, glue_dir, c, fault="nan"))
    assert nan.status == FAILED and nan.reason.startswith("NaN loss at step 2")
    boom = run_trial(spec(tiny_model, glue_dir, c, fault="raise"))
    assert boom.status == FAILED and "RuntimeError: injected fault" in boom.reason
    deep = run_trial(spec(tiny_model, glue_dir, Candidate.make({"lora": LORA}, [0, 9])))
    assert deep.status == FAILED and "layer index 9 is beyond the model's depth" in deep.reason
    over = run_trial(spec(tiny_model, glue_dir, c, max_memory=1024.0))
    assert over.status == INFEASIBLE and over.steps == 0 and "> budget" in over.reason


def test_max_length_is_capped_at_the_model_limit(tiny_model: str, glue_dir: Path) -> None:
    r = run_trial(spec(tiny_model, glue_dir, Candidate.make({}, []), fidelity={**FAST, "max_length": 10_000}))
    assert r.status == OK, r.reason  # the tiny model has 128 positions; longer would crash


def test_real_minilm_trial_on_sst2_beats_chance(glue_dir: Path) -> None:
    """The packaged all-MiniLM-L6-v2, LoRA r=8 on q,v of all layers, 1,600 real SST-2 rows: well above chance."""
    c = Candidate.make({"lora": LORA}, list(range(6)), lr_multiplier=4.0)
    r = run_trial(TrialSpec(0, c.to_dict(), None, {"task": "sst2", "data_dir": str(glue_dir)},
                            {"n_train": 1600, "n_eval": 300, "epochs": 1, "max_length": 64, "batch_size": 32}, threads=2))
    assert r.status == OK, r.reason
    assert r.score >= 0.70, r.score  # the majority class of SST-2 is 0.56
    assert r.params == 74_498  # 6 layers x 2 modules x 8 x (384 + 384) + the 770-parameter head (peft's 74.5 K)


def test_memory_counts_only_what_the_output_graph_keeps() -> None:
    """A side computation whose graph is dropped during the forward (peft's DoRA computes its weight norm so) frees
    what it saved: it is not training memory, and counting it made DoRA's memory vary from run to run."""
    import torch

    from autopeft.trial import memory_parts

    class Toy(torch.nn.Module):
        def __init__(self, side: bool) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(100, 16)
            self.w = torch.nn.Parameter(torch.ones(16, 16))
            self.side = side

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            h = self.emb(input_ids)
            if self.side:  # saves a (b, L, 16) tanh output, then drops its graph
                (h @ self.w).tanh().sum().detach()
            return (h @ self.w).relu().sum()

    plain, side = (memory_parts(Toy(s), 8, 100, 0, False) for s in (False, True))
    assert plain == side
    # per row: the relu's output and the matmul's saved input h (8 x 16 float32 each), the embedding's ids (8 int64)
    assert plain[1] == 2 * 8 * 16 * 4 + 8 * 8


def test_a_trial_trains_on_transformers_trainer_with_the_final_trainings_schedule(tiny_model: str, glue_dir: Path,
                                                                                  monkeypatch: object) -> None:
    """Low-cost trials and ``autopeft train`` share one path (issue 19): transformers' Trainer, the same linear schedule
    after 6 % warm-up, rows grouped by length, no evaluation and nothing saved; each step's loss is seen (a NaN stops)."""
    from transformers import Trainer

    seen: list[tuple[object, list[float]]] = []
    real_train = Trainer.train

    def spy(self: Trainer, *a: object, **kw: object) -> object:
        out = real_train(self, *a, **kw)
        seen.append((self.args, [g["lr"] for g in self.optimizer.param_groups]))
        return out

    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    mp.setattr(Trainer, "train", spy)
    c = Candidate.make({"lora": LORA}, [0, 1])
    r = run_trial(spec(tiny_model, glue_dir, c, fidelity={**FAST, "n_train": 40, "batch_size": 8, "epochs": 2}))
    assert r.status == OK, r.reason
    assert len(seen) == 1
    args, lrs_after = seen[0]
    assert r.steps == args.max_steps == 10  # ceil(40 / 8) x 2 epochs
    assert (args.warmup_steps, args.lr_scheduler_type.value, args.weight_decay) == (1, "linear", 0.01)
    assert args.train_sampling_strategy == "group_by_length" and args.save_strategy.value == "no"
    assert args.eval_strategy.value == "no" and args.report_to == [] and args.logging_steps == 1
    assert lrs_after == [0.0, 0.0]  # the linear decay ends at zero after the last step, for both groups


def test_the_head_floor_after_the_scale_is_the_floor_over_the_trials_own_scale(tiny_model: str, glue_dir: Path) -> None:
    """``head_lr_after_scale``: the head trains at max(methods' rate x multiplier x lr_scale, head_lr): a LoRA trial
    at x2 with lr_scale 2 and a floor of 0.02 after scaling trains exactly as one with the floor 0.005 before scaling
    (0.005 x 2 x 2), and differently from the floor 0.02 before scaling (the head at 0.08); where the scaled rate is
    above the floor the floor does nothing."""
    from autopeft.errors import ConfigError
    from autopeft.trial import Fidelity

    c = Candidate.make({"lora": LORA}, [0, 1], lr_multiplier=2.0)
    fid = {**FAST, "lr_scale": 2.0}
    after = run_trial(spec(tiny_model, glue_dir, c, fidelity={**fid, "head_lr": 0.02, "head_lr_after_scale": True}))
    before = run_trial(spec(tiny_model, glue_dir, c, fidelity={**fid, "head_lr": 0.005}))
    steep = run_trial(spec(tiny_model, glue_dir, c, fidelity={**fid, "head_lr": 0.02}))
    assert after.status == before.status == steep.status == OK
    assert after.loss == before.loss and after.loss != steep.loss
    assert Fidelity(lr_scale=2.0, head_lr=0.001, head_lr_after_scale=True).head_floor(2.0) == 0.00025  # below LoRA's
    assert Fidelity.from_stored({"head_lr": 0.01}).head_lr_after_scale is False  # session-28 studies keep theirs
    with pytest.raises(ConfigError, match=r"^head-lr-after-scale must be true or false, got 'yes'$"):
        Fidelity(head_lr_after_scale="yes")  # type: ignore[arg-type]
