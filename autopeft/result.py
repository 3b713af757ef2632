"""SearchResult: the Pareto front, all trials, and the best configuration under a budget."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from autopeft.candidate import Candidate
from autopeft.errors import StudyError
from autopeft.pareto import ANSWER_SE, front_mask, hypervolume, noise_margin, to_max
from autopeft.storage import A


def fidelity_label(trial: Any) -> str:
    """A trial's training fidelity as rows x epochs, and its rung when it was promoted: ``2000x2 (rung 1)``."""
    from autopeft.storage import rung_of

    f = trial.user_attrs.get(A.FIDELITY) or {}
    rung = rung_of(trial)
    text = f"{f.get('n_train', '?')}x{float(f.get('epochs', 0)):g}" if f else "?"
    return text + (f" (rung {rung})" if rung else "")


def structure_key(trial: Any) -> str:
    """A stored trial's configuration without its learning rate: trials with one key differ only in learning rate."""
    from autopeft.candidate import structure_key as key_of

    cand = trial.user_attrs.get(A.CANDIDATE) or {}
    return key_of(cand) if any(k != "lr_multiplier" for k in cand) else f"trial {trial.number}"


def _origin(trial: Any, by_number: dict[int, Any], through_rate_steps: bool = True) -> Any:
    """The trial a stored trial's config was first evaluated as: back through its promotions (``promoted_from``) and,
    with ``through_rate_steps``, through ``--refine-rate``'s steps (``rate_from``); without, None for a rate step (or a
    promotion of one).  None also when a link is missing."""
    while trial is not None and (A.PROMOTED_FROM in trial.user_attrs or A.RATE_FROM in trial.user_attrs):
        if A.RATE_FROM in trial.user_attrs and not through_rate_steps:
            return None
        trial = by_number.get(trial.user_attrs.get(A.PROMOTED_FROM, trial.user_attrs.get(A.RATE_FROM)))
    return trial


class SearchResult:
    """A view of a stored study (``autopeft.search`` returns one; ``autopeft.load_study`` opens one)."""

    def __init__(self, study: Any, storage: str) -> None:
        self.study = study
        self.storage = storage
        self.name: str = study.study_name
        self.meta: dict[str, Any] = dict(study.user_attrs)
        self.objectives: list[str] = list(self.meta[A.OBJECTIVES])
        self.ref_point: list[float] = list(self.meta[A.REF_POINT])
        #: whether configs were promoted to higher fidelities (``--promote``): tables then say each row's fidelity
        self.laddered: bool = bool(self.meta.get(A.LADDER))
        #: the study's fidelity level (autopeft.escalation; 0: it never raised it): front and tables are of this level
        self.level: int = int(self.meta.get(A.LEVEL_NOW, 0) or 0)
        #: how far, in standard errors of a difference of two scores on the search rows, a config must score above a
        #: seeded one to answer in its place (:func:`autopeft.pareto.noise_margin`); 0 turns the preference off
        self.answer_se: float = ANSWER_SE

    # ------------------------------------------------------------------ tables
    def complete_trials(self, every_rung: bool = False) -> list[Any]:
        """The complete trials (FrozenTrials with values), in trial order; with promotions (``--promote``) each config
        once, at the highest fidelity it finished (``every_rung``: every evaluation)."""
        from autopeft.storage import complete_trials

        return complete_trials(self.study, every_rung)

    def promotions(self) -> int:
        """How many complete evaluations at the study's current level were promotions (``--promote``): trials of a
        config already evaluated one rung below (not ``--refine-rate``'s steps, which are configs of their own)."""
        from autopeft.storage import current_level, rung_of

        return sum(1 for t in current_level(self.complete_trials(every_rung=True), self.level)
                   if rung_of(t) and A.RATE_FROM not in t.user_attrs)

    def rate_steps(self) -> int:
        """How many complete configs at the study's current level are steps of ``--refine-rate``'s line search (another
        config at another learning rate; each is a config of its own)."""
        from autopeft.storage import current_level

        return sum(1 for t in current_level(self.complete_trials(every_rung=True), self.level) if A.RATE_FROM in t.user_attrs)

    @property
    def trials(self) -> Any:
        """Every trial: number, state, status, objectives, config summary, candidate JSON, reason."""
        import pandas as pd

        rows = []
        for t in self.study.get_trials(deepcopy=False):
            ua = t.user_attrs
            row = {"trial": t.number, "state": t.state.name, "status": ua.get(A.STATUS), "summary": ua.get(A.SUMMARY)}
            for o, v in zip(self.objectives, t.values or [None] * len(self.objectives)):
                row[o] = v
            if t.values is None:
                if ua.get(A.SCORE) is not None:  # stopped early by the pruner: its last rung score
                    row[self.objectives[0]] = ua.get(A.SCORE)
                row["params"] = ua.get(A.PARAMS)
                row["memory"] = ua.get(A.MEMORY_MIB)
            row.update({"trainable_pct": ua.get(A.TRAINABLE_PCT), "wall_s": ua.get(A.WALL_S), "sampler_s": ua.get(A.SAMPLER_S),
                        "reason": ua.get(A.REASON), "candidate": ua.get(A.CANDIDATE)})
            if self.laddered or self.level:
                row["fidelity"] = fidelity_label(t)
            if self.level:
                row["level"] = int(ua.get(A.LEVEL, 0) or 0)
            rows.append(row)
        return pd.DataFrame(rows)

    def level_note(self) -> str:
        """``; fidelity level 1 (1990x2 rows x epochs); 10 complete trial(s) at lower levels: --all`` for a study that
        raised its fidelity (:mod:`autopeft.escalation`), else empty."""
        if not self.level:
            return ""
        from autopeft.storage import level_of

        comp = self.complete_trials()
        lower = sum(level_of(t) < self.level for t in self.complete_trials(every_rung=True))
        where = f" ({fidelity_label(comp[0])} rows x epochs)" if comp else ""
        return f"; fidelity level {self.level}{where}; {lower} complete trial(s) at lower levels: --all"

    def rung_offsets(self) -> list[float]:
        """With promotions (``--promote``): per rung, how far scores move from the rung below (made to maximise; the
        median over the configs scored at both, :func:`autopeft.promotion.rung_offsets`); ``[0.0]`` without."""
        from autopeft.promotion import Evaluated, rung_offsets
        from autopeft.storage import current_level, rung_of

        if not self.laddered:
            return [0.0]
        return rung_offsets([Evaluated(t.number, t.user_attrs.get(A.CANDIDATE_KEY) or f"#{t.number}", rung_of(t),
                                       tuple(to_max(self.objectives, t.values)))
                             for t in current_level(self.complete_trials(every_rung=True), self.level)])

    def ranked_values(self, trials: list[Any]) -> np.ndarray:
        """The trials' objective vectors made to maximise (:func:`autopeft.pareto.to_max`), each score moved onto the
        top rung's scale in a study with promotions (:meth:`rung_offsets`): what the front, ``best`` and the
        hypervolume compare, so that a config scored only at a lower rung is not ranked on another scale."""
        from autopeft.promotion import on_top_rung
        from autopeft.storage import rung_of

        Y = np.array([to_max(self.objectives, t.values) for t in trials], dtype=float).reshape(-1, len(self.objectives))
        offsets = self.rung_offsets()
        if len(Y) and any(offsets):
            Y[:, 0] = [on_top_rung(y, rung_of(t), offsets) for y, t in zip(Y[:, 0], trials)]
        return Y

    def scores_on_top(self, trials: list[Any]) -> list[float]:
        """The trials' first objective (score, or loss) on the top rung's scale (:meth:`ranked_values`), in its own
        sense: as scored at the top rung, estimated for a config scored at a lower rung only."""
        sign = to_max(self.objectives[:1], [1.0])[0]
        return [float(sign * y) for y in self.ranked_values(trials)[:, 0]]

    def front_trials(self) -> list[Any]:
        """The complete trials on the Pareto front (one learning rate per config), best score first; with promotions
        the scores are compared on the top rung's scale (:meth:`ranked_values`)."""
        return [t for t, _ in self._front()]

    def _front(self) -> list[tuple[Any, float]]:
        """The front's trials, best first, each with its score made to maximise on the top rung's scale."""
        comp = self.complete_trials()
        if not comp:
            return []
        Y = self.ranked_values(comp)
        mask = front_mask(Y, [structure_key(t) for t in comp], self.preferred(comp), self.margins(Y, comp))
        return [(t, -ny) for ny, _, t in sorted((-float(y[0]), t.number, t) for t, y, m in zip(comp, Y, mask) if m)]

    @property
    def pareto_front(self) -> Any:
        """One row per non-dominated complete trial, best score (lowest loss) first."""
        import pandas as pd

        rows = []
        sign = to_max(self.objectives[:1], [1.0])[0]
        top = f"{self.objectives[0]}_on_top"  # with promotions: the score on the top rung's scale, as compared
        for t, y in self._front():
            est = sign * y
            ua = t.user_attrs
            row = {"trial": t.number, "summary": ua.get(A.SUMMARY)}
            for o, v in zip(self.objectives, t.values):
                row[o] = v
            row[top] = est
            row["trainable_pct"] = ua.get(A.TRAINABLE_PCT)
            row["fidelity"] = fidelity_label(t)
            row["candidate"] = ua.get(A.CANDIDATE)
            rows.append(row)
        cols = ["trial", "summary", *self.objectives, *([top] if self.laddered else []), "trainable_pct",
                *(["fidelity"] if self.laddered else []), "candidate"]
        return pd.DataFrame(rows, columns=cols)

    # ------------------------------------------------------------------ choices
    def best_trial(self, max_params: Any = None, max_memory: Any = None) -> Any:
        """The complete trial that answers the budgets (:meth:`best_config`)."""
        return self._best_of(self._feasible(max_params, max_memory))[0]

    def _feasible(self, max_params: Any, max_memory: Any) -> list[Any]:
        from autopeft.config import parse_budget

        mp = parse_budget(max_params, self.meta.get(A.BASE_PARAMS), "max-params")
        mm = parse_budget(max_memory, None, "max-memory")
        feas = []
        for t in self.complete_trials():  # all complete trials: the budget may bind an objective the study does not have
            ua = t.user_attrs
            if mp is not None and ua.get(A.PARAMS, float("inf")) > mp:
                continue
            if mm is not None and ua.get(A.MEMORY_MIB, float("inf")) > mm:
                continue
            feas.append(t)
        if not feas:
            if not self.complete_trials():
                raise StudyError(f"study {self.name!r} has no completed trial yet")
            raise StudyError(f"no completed trial of study {self.name!r} fits the budget "
                             f"(max params {max_params}, max memory {max_memory})")
        return feas

    def _best_of(self, feas: list[Any]) -> tuple[Any, Any]:
        """The answer among ``feas`` and the higher-scoring trial it was preferred over (None if it scores best): the
        best score on the top rung's scale (ties: fewer parameters, then the earlier trial), unless a seeded config at
        its own rate (:meth:`preferred`) scores within the noise of the search rows of it (:meth:`margins`): then the
        best such seeded config."""
        Y = self.ranked_values(feas)  # with promotions: on the top rung's scale
        order = sorted(range(len(feas)), key=lambda i: (-Y[i, 0], feas[i].user_attrs.get(A.PARAMS, 0), feas[i].number))
        top = order[0]
        margin = self.margins(Y[top:top + 1], feas[top:top + 1])[0]
        if margin <= 0:  # no search rows, or a loss whose trial stored no standard error: the best as scored
            return feas[top], None
        prefer = self.preferred(feas)
        near = [i for i in order if prefer[i] and Y[i, 0] >= Y[top, 0] - margin]
        if not near or near[0] == top:
            return feas[top], None
        return feas[near[0]], feas[top]

    def preferred(self, trials: list[Any]) -> list[bool]:
        """Per trial: whether it is a config the study seeded itself (a method's hand-designed baseline or an
        ``--enqueue`` config, :data:`autopeft.promotion.FIRST_SOURCES`), at its own learning rate (itself or a
        promotion of it, not a ``--refine-rate`` step).  Such a config is the answer over one that scores higher by
        less than the noise (:meth:`margins`): the search has not shown the other to be better."""
        from autopeft.promotion import FIRST_SOURCES

        by_number = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        origins = [_origin(t, by_number, through_rate_steps=False) for t in trials]
        return [o is not None and str(o.user_attrs.get(A.SEEDED_BY) or "").startswith(FIRST_SOURCES) for o in origins]

    def margins(self, Y: np.ndarray, trials: Sequence[Any] | None = None) -> list[float]:
        """Per row of ``Y`` (made to maximise; ``trials``: its trials): how much more a config must score than a
        seeded one to be the answer in its place, :func:`autopeft.pareto.noise_margin` of its score on the search
        rows; for a loss, ``answer_se x sqrt(2) x`` the standard error its trial stored (the per-row spread of the
        loss on the search rows, :func:`autopeft.trial.ratio_se`; 0 for a trial that stored none)."""
        n_eval = int((self.meta.get("fidelity") or {}).get("n_eval") or 0)
        if self.objectives[0] != "score":
            ses = [t.user_attrs.get(A.SCORE_SE) for t in trials] if trials is not None else [None] * len(Y)
            return [self.answer_se * math.sqrt(2.0) * float(se) if isinstance(se, (int, float)) and se > 0 else 0.0
                    for se in ses]
        metric = str(self.meta.get(A.METRIC) or "auc")
        return [noise_margin(float(y[0]), n_eval, self.answer_se, metric)
                for y in np.asarray(Y, dtype=float).reshape(len(Y), -1)]

    def best_config(self, max_params: Any = None, max_memory: Any = None) -> "FoundConfig":
        """The highest-scoring complete configuration within the budgets (``"1%"`` of base params allowed; on the
        Pareto front whenever the budgets bind only the study's objectives), or a config the study seeded itself (a
        hand-designed baseline, ``--enqueue``), at its own rate, that fits the budgets and scores within the noise of
        the search rows of it (:data:`autopeft.pareto.ANSWER_SE`; ``preferred_over`` then names the other).  Such a
        seeded config may be off the front (a cheaper config within the noise of it stays there as a trade-off)."""
        t, over = self._best_of(self._feasible(max_params, max_memory))
        found = FoundConfig(Candidate.from_dict(t.user_attrs[A.CANDIDATE]), self.meta, t, self.seeded_by(t))
        if over is not None:
            mine, theirs = self.scores_on_top([t, over])
            found.preferred_over = {"trial": over.number, "summary": over.user_attrs.get(A.SUMMARY),
                                    "score": theirs, "score_here": mine}
        return found

    def seeded_by(self, trial: Any) -> str | None:
        """Where a trial's config came from when the study queued it (``baseline:NAME``, ``enqueue:FILE entry N``,
        ``warm-start:STUDY#TRIAL``; a promoted trial, or a step of ``--refine-rate``'s line search: the config it came
        from), or None for the sampler's own proposals."""
        origin = _origin(trial, {t.number: t for t in self.study.get_trials(deepcopy=False)})
        return None if origin is None else origin.user_attrs.get(A.SEEDED_BY)

    def hypervolume(self) -> float:
        """Hypervolume of the front in (score, -log10 params, -log10 memory MiB, ...) above the study's ref point (with
        promotions, scores on the top rung's scale: :meth:`ranked_values`)."""
        return hypervolume(self.ranked_values(self.complete_trials()), self.ref_point)

    @property
    def warnings(self) -> list[str]:
        """Warnings the driver stored in the study, e.g. that most trials scored at the majority-class level; if every
        complete trial scored at that level, that the front only ranks costs; and if the best trial ran at a bound of
        the space's learning-rate range where the rate still helped (:func:`autopeft.rate_bound.rate_bound_notice`)."""
        out = [str(v).split(": ", 1)[-1] for k, v in sorted(self.meta.items()) if k.startswith(A.NOTICE_PREFIX)]
        chance, metric = self.meta.get(A.CHANCE_SCORE), self.meta.get(A.METRIC)
        objectives = list(self.meta.get(A.OBJECTIVES) or [])
        comp = self.complete_trials()
        if chance is not None and "score" in objectives and comp:
            i = objectives.index("score")
            best = max(float(t.values[i]) for t in comp)
            if best <= float(chance) + 0.005:
                out.append(f"every one of the {len(comp)} complete trials scored at the majority-class level ({metric} "
                           f"{float(chance):.3f}; best {best:.3f}), so this front only ranks parameter counts and memory: "
                           "start a new study (--study NAME) with longer trials and higher learning rates, e.g. "
                           "--n-train 2000 --epochs 3 --batch-size 32 --lr-scale 3, or rank by --metric auc")
        if chance is not None and "loss" in objectives and comp:
            i = objectives.index("loss")
            best = min(float(t.values[i]) for t in comp)
            if best >= float(chance) - 1e-3:
                out.append(f"none of the {len(comp)} complete trials lowered the loss below the untrained model's "
                           f"({float(chance):.4f}; best {best:.4f}), so this front only ranks parameter counts and "
                           "memory: start a new study (--study NAME) with more rows or epochs (--n-train, --epochs) or "
                           "a higher --lr-scale")
        if len(comp) > 1 and A.SPACE_DEF in self.meta:
            from autopeft.rate_bound import rate_bound_notice

            Y = self.ranked_values(comp)  # a twin must score worse by more than the answer rule's noise margin
            note = rate_bound_notice(self.meta[A.SPACE_DEF], comp, list(Y[:, 0]), [structure_key(t) for t in comp],
                                     str(metric), self.margins(Y, comp))
            out += [note] if note else []
        return out

    def __repr__(self) -> str:
        return f"SearchResult({self.name!r}, {len(self.complete_trials())} complete trials, front {len(self.front_trials())})"


class FoundConfig:
    """A chosen candidate with the settings it was found with; exportable."""

    def __init__(self, candidate: Candidate, meta: dict[str, Any], trial: Any = None, seeded_by: str | None = None) -> None:
        self.candidate = candidate
        self.meta = meta
        self.trial = trial
        self.seeded_by = seeded_by  # queued by the study (e.g. "baseline:lora r=8 q,v"), not proposed by the sampler
        #: the higher-scoring trial within the budgets that this seeded config answers in place of, as it scored less
        #: than the noise of the search rows above it (:meth:`SearchResult.preferred`): trial, summary, both scores
        self.preferred_over: dict[str, Any] | None = None

    @property
    def model(self) -> str:
        return self.meta[A.MODEL]

    def to_dict(self) -> dict[str, Any]:
        fidelity = self.meta.get("fidelity")
        if self.trial is not None and self.trial.user_attrs.get(A.RUNG):  # promoted: the fidelity it was scored at
            fidelity = self.trial.user_attrs.get(A.FIDELITY, fidelity)
        d = {"candidate": self.candidate.to_dict(), "summary": self.candidate.summary(), "model": self.meta.get("model"),
             "task": self.meta.get("task"), "num_labels": self.meta.get("num_labels"), "metric": self.meta.get("metric"),
             "fidelity": fidelity}
        if self.trial is not None:
            d["trial"] = self.trial.number
            if self.trial.user_attrs.get(A.RUNG):
                d["rung"] = int(self.trial.user_attrs[A.RUNG])
            d["values"] = dict(zip(self.meta[A.OBJECTIVES], self.trial.values))
        if self.seeded_by:
            d["seeded_by"] = self.seeded_by
        if self.preferred_over:
            d["preferred_over"] = dict(self.preferred_over)
        return d

    def to_peft_config(self) -> Any:
        from autopeft.export import peft_config_for

        return peft_config_for(self.candidate, None if self.model == "all-MiniLM-L6-v2" else self.model, self.meta[A.NUM_LABELS])

    def save(self, directory: str) -> Any:
        from autopeft.export import export_config

        return export_config(self, directory)

    def __repr__(self) -> str:
        return f"FoundConfig({self.candidate.summary()})"


def load_study(name: str, storage: str | None = None) -> SearchResult:
    """Open an existing study (never creates one)."""
    from autopeft.storage import default_storage, load_optuna_study

    study = load_optuna_study(name, storage)
    return SearchResult(study, storage or default_storage(name))
