"""What an executor sees: :class:`TrialSpec` in, :class:`TrialResult` out (as Syne Tune's ``TrialBackend``).

Plain, JSON-friendly dataclasses with no torch, optuna or ray import, so the search loop, the proposer
and every executor share them without pulling in a training stack.  :class:`Fidelity` says how cheap a
trial is; statuses are the strings results and stored trials carry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from autopeft.errors import ConfigError

#: statuses of a trial result (and of a stored trial)
OK, FAILED, INFEASIBLE = "ok", "failed", "infeasible"
#: a stored trial stopped before it finished (Ctrl-C, --timeout, a dead driver); its candidate stays eligible
ABANDONED = "abandoned"
#: a stored proposal that was not trained because the study already holds its candidate
DUPLICATE = "duplicate"
#: a stored proposal that was not trained because the study already held ``n_trials`` running or complete trials
#: (several drivers share one total)
SURPLUS = "surplus"
#: a trial the pruner stopped early (stored PRUNED with its last rung score and the reason; never proposed again)
PRUNED = "pruned"

#: what a spec asks the worker to do: a search trial, or the study's reference point (full fine-tuning's
#: training memory and the chance score of the search split; nothing is trained)
SEARCH, REFERENCE = "search", "reference"


#: the dtypes a trial may load the base model in (``--dtype``)
DTYPES = ("float32", "bfloat16", "float16")
#: classification loss weights of a trial (``--class-weights``; ``auto`` picks one when a study is created)
CLASS_WEIGHTS = ("none", "balanced")


@dataclass(frozen=True)
class Fidelity:
    """How cheap a trial is: training subset size, epochs, held-out slice, sequence length, batch.

    ``memory_batch_size`` is the batch the memory objective is reported for (the batch a user trains the
    chosen config with), independent of the trial's own ``batch_size``, so a cheaper trial batch does not
    change what the memory objective means."""

    n_train: int = 2000
    epochs: float = 2.0
    n_eval: int = 500
    max_length: int = 128
    batch_size: int = 32
    memory_batch_size: int = 32
    #: multiplies every learning rate of the trial (for short, small-batch fidelities, where the per-method
    #: defaults tuned at batch 32 leave LoRA at the majority class; see BENCHMARKS.md, proxy fidelity)
    lr_scale: float = 1.0
    #: the base model's weights and activations in trials (trainable adapters stay float32, as peft keeps them)
    dtype: str = "float32"
    #: recompute each transformer layer's activations in backward (less memory, about a third more compute)
    gradient_checkpointing: bool = False
    #: classification loss weights: ``balanced`` weighs each class by n / (classes x its count) in the trial's
    #: training rows (a new study sets it for imbalanced tasks scored by Matthews or macro-F1:
    #: :func:`autopeft.data.auto_class_weights`); ``none``: plain cross-entropy
    class_weights: str = "none"
    #: the classification head's learning rate before the config's multiplier and ``lr_scale`` when the methods'
    #: own rate is lower (0: the methods' rate, as full-budget training uses): a trial's head is a freshly initialised
    #: linear layer, and at LoRA's or an adapter's rate it does not leave the majority class in the ~150 steps of a
    #: low-cost trial unless the adapter carries the task (new studies: :data:`HEAD_LR`)
    head_lr: float = 0.0
    #: where ``head_lr`` floors the head's rate: False (studies since session 28), before the config's multiplier and
    #: ``lr_scale``, so the head trains at max(methods' rate, head_lr) x multiplier x lr_scale; True, after them: at
    #: max(methods' rate x multiplier x lr_scale, head_lr) (:meth:`head_floor`; measured in BENCHMARKS.md, "The head's
    #: rate in low-cost trials")
    head_lr_after_scale: bool = False

    @classmethod
    def from_stored(cls, d: dict[str, Any]) -> "Fidelity":
        """A fidelity stored by a study; studies written before ``memory_batch_size`` existed measured memory
        at their trial batch size."""
        d = dict(d)
        d.setdefault("memory_batch_size", d.get("batch_size", cls.batch_size))
        return cls(**d)

    def __post_init__(self) -> None:
        for name in ("n_train", "n_eval", "max_length", "batch_size", "memory_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, float)) or not 0 < self.epochs < math.inf:
            raise ConfigError(f"epochs must be a finite number > 0, got {self.epochs!r}")
        if isinstance(self.lr_scale, bool) or not isinstance(self.lr_scale, (int, float)) or not 0 < self.lr_scale < math.inf:
            raise ConfigError(f"lr-scale must be a finite number > 0, got {self.lr_scale!r}")
        if isinstance(self.head_lr, bool) or not isinstance(self.head_lr, (int, float)) or not 0 <= self.head_lr < math.inf:
            raise ConfigError(f"head-lr must be a finite number >= 0, got {self.head_lr!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {str(self.dtype)[:40]!r}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise ConfigError(f"class-weights must be one of {', '.join(CLASS_WEIGHTS)} (or auto), got "
                              f"{str(self.class_weights)[:40]!r}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ConfigError(f"gradient-checkpointing must be true or false, got {self.gradient_checkpointing!r}")
        if not isinstance(self.head_lr_after_scale, bool):
            raise ConfigError(f"head-lr-after-scale must be true or false, got {self.head_lr_after_scale!r}")

    def head_floor(self, lr_multiplier: float) -> float:
        """The floor to give :func:`autopeft.builder.build_model` (which applies it before the multiplier and
        ``lr_scale``) for a candidate of ``lr_multiplier``: ``head_lr``, or with :attr:`head_lr_after_scale` the same
        floor on the head's final rate, ``head_lr`` / (multiplier x lr_scale)."""
        return self.head_lr / (lr_multiplier * self.lr_scale) if self.head_lr_after_scale else self.head_lr

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The default fidelity when trials run on CPU and the user sets none of its keys: 600 rows x 2 epochs at batch 8,
#: every learning rate doubled: 0.20-0.57 of a full-budget run's wall time.  Its Spearman rho to the full-budget score
#: on the configs searches return is 0.47 on SST-2 (0.49 x the seed-to-seed ceiling on the same 16 configs) and 0.28
#: on MRPC (0.45 x): a weak ranking (issue 17; the earlier 0.842 was on configs chosen to span the score range);
#: without the doubled rates LoRA stays at the majority class (BENCHMARKS.md).  On a GPU
#: a batch-8 step costs about what a batch-32 step does, so GPUs keep the dataclass defaults.
CPU_FIDELITY: dict[str, Any] = {"n_train": 600, "epochs": 2.0, "batch_size": 8, "lr_scale": 2.0}


#: Causal-LM tasks: the cost is set by tokens, not rows (a GSM8K row is ~210 tokens with SmolLM2's chat template,
#: median; 90th percentile 315), and the LM head's logits (rows x tokens x vocabulary) dominate a small decoder's
#: activations, so the memory objective is reported at batch 8.  These replace the dataclass defaults.
LM_FIDELITY: dict[str, Any] = {"n_train": 1000, "epochs": 1.0, "n_eval": 200, "max_length": 256, "batch_size": 8,
                               "memory_batch_size": 8}
#: ... and on CPU: 16 steps of 4 rows (~14k tokens) and 32 scored rows.  Measured with SmolLM2-135M on GSM8K, one
#: thread: 156-183 s per trial; the untrained loss 1.450 fell to 1.164 (LoRA r=8 q,v), 1.046 (IA3) and rose to
#: 1.965 (prefix 20): the configs separate (BENCHMARKS.md, "Causal-LM search").
LM_CPU_FIDELITY: dict[str, Any] = {"n_train": 64, "epochs": 1.0, "batch_size": 4, "lr_scale": 2.0, "n_eval": 32}


#: The head's rate floor of a new classification study's trials (:attr:`Fidelity.head_lr`), on CPU and GPU alike.
#: Measured on SST-2 at the CPU fidelity (BENCHMARKS.md, "The head's rate in low-cost trials"; ``bench.head_lr``): all
#: 23 model-proposed trials that scored at the majority class in ten real searches learned when run again with it
#: (0.05-0.21 above chance, median 0.128; LoRA, DoRA, adapters and "head only" of 770-11 k parameters at x0.5-1.9),
#: while learners moved either way by up to about 0.03 (mean -0.005); in four new real searches with it 0 of 120
#: model-proposed trials collapsed (Optuna's GPSampler, beside them with it too: 3 of 111).
HEAD_LR = 1e-2


def default_fidelity(given: dict[str, Any] | None, gpu: bool, lm: bool = False) -> Fidelity:
    """The fidelity of a new study: the user's keys over the defaults; on CPU the defaults are
    :data:`CPU_FIDELITY` unless the user set any of its keys (then the preset is not mixed in).  A causal-LM task
    (``lm``) starts from :data:`LM_FIDELITY` and uses :data:`LM_CPU_FIDELITY` on CPU, by the same rule.  A
    classification task's trials get :data:`HEAD_LR` as the head's rate floor unless the user gave one."""
    given = dict(given or {})
    if not lm:
        given.setdefault("head_lr", HEAD_LR)
    base, preset = (LM_FIDELITY, LM_CPU_FIDELITY) if lm else ({}, CPU_FIDELITY)
    if gpu or any(k in given for k in preset):
        return Fidelity(**{**base, **given})
    return Fidelity(**{**base, **preset, **given})


def fidelity_note(given: dict[str, Any] | None, gpu: bool, lm: bool = False) -> str | None:
    """One line when the user's fidelity options switch the CPU preset off (so other defaults change with them), else
    None: e.g. ``--n-train 200`` alone also changes the batch size 8 -> 32 and the learning-rate scale 2 -> 1."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    base, preset = (LM_FIDELITY, LM_CPU_FIDELITY) if lm else ({}, CPU_FIDELITY)
    set_keys = [k for k in preset if k in given]
    if gpu or not set_keys or len(set_keys) == len(preset):
        return None
    plain = Fidelity(**base)
    changed = [f"{k.replace('_', '-')} {getattr(plain, k):g} (preset {v:g})" for k, v in preset.items()
               if k not in given and getattr(plain, k) != v]
    if not changed:
        return None
    opts = ", ".join("--" + k.replace("_", "-") for k in set_keys)
    return (f"{opts} turns the CPU trial preset off, so these take their plain defaults too: {', '.join(changed)}; "
            "give them as well to keep the preset")


@dataclass
class TrialSpec:
    """Everything a worker needs to run one trial (plain JSON types only)."""

    trial_id: int
    candidate: dict[str, Any]
    model: str | None
    data: dict[str, Any]  # autopeft.data.DataSpec as a dict
    fidelity: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    max_memory: float | None = None  # bytes; over it -> infeasible, before training
    threads: int = 1
    device: str = "auto"
    trust_remote_code: bool = False
    #: where the layers and projections are, when the user said (``autopeft.arch.Layout`` as lists); None: found
    layout: list[Any] | None = None
    #: :data:`SEARCH` (train and score the candidate) or :data:`REFERENCE` (measure the reference point)
    purpose: str = SEARCH
    #: fault injection for tests: "raise", "nan", "exit", "sleep:<s>"; "simulate:<s>" is a simulated trial
    fault: str | None = None
    #: early stopping: rungs and the cost peers' rung scores (:func:`autopeft.pruner.prune_spec`); None: train to the end
    prune: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrialResult:
    """What a trial measured. ``score`` of a :data:`REFERENCE` spec is the chance score, ``memory_bytes`` full
    fine-tuning's training memory."""

    trial_id: int
    status: str
    score: float | None = None
    params: int | None = None
    memory_bytes: int | None = None
    wall_s: float = 0.0
    train_s: float = 0.0
    metric: str | None = None
    reason: str | None = None
    steps: int = 0
    loss: float | None = None
    #: the learning curve: ``[fraction of training, step, search-split score]`` at each rung, then the final score
    curve: list[list[float]] | None = None
    #: the standard error of ``score`` over the search rows, where the trial measures it (a loss: per-row losses)
    score_se: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialResult":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
