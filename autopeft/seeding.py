"""The configs a study evaluates first: ``--enqueue`` (files of candidates, or ``baselines``: the hand-designed
configs the space's methods declare) and ``--warm-start`` (another study's Pareto front, mapped to this model's depth
and re-evaluated here: with the default sampler only its best config, the other trials being the sampler's prior,
:func:`prior_points` and :mod:`autopeft.sampler_prior`).

Why Optuna's own queue (``study.enqueue_trial``, through :meth:`StudyStore.enqueue`) and not a queue in the proposer:

- it lives in the study: a killed driver loses nothing of it, and every driver of the study shares it.  Optuna pops a
  WAITING trial by a state change only one driver wins, so two drivers never take the same entry;
- a queued trial carries every active dimension as a fixed param, so :meth:`BoundSpace.suggest` reads the candidate
  back through the public ``suggest_*`` calls and our sampler is never asked (Optuna calls ``sample_relative`` lazily,
  only for a parameter that is not fixed): no model is fitted for it.  It works the same with every sampler (tpe, gp,
  ...) and driver (Ray Tune's searcher asks through the same proposer);
- de-duplication stays in one place: a queued trial carries its candidate key, so the proposer's ``CandidateIndex``
  counts it as held while it waits (a proposal of the same candidate is a duplicate), and :func:`queue` adds only what
  the study does not hold (evaluated, running or waiting), so a resume re-queues nothing already trained.

A queue in the proposer would be one process's: lost on a kill, unseen by the other drivers, a second index to keep
consistent.  Queued configs count toward ``--n-startup`` (they are data like any trial), and the queue outlives a
search that stops first: entries left waiting run when the study is extended.

An explicit entry (a file's, or one given to the API) that is outside the space or over ``--max-params`` is refused
with a :class:`ConfigError` naming it; ``baselines`` and a warm start's front are lists the user did not write entry by
entry, so theirs are left out with a printed note (an error only if none is left).  With neither option, a new
study queues the baselines its space can express (:data:`DEFAULT`: no note, no error when none fits): without them
the model-based steps may never train the all-layer configs people use (BENCHMARKS.md, MRPC with promotion).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from autopeft.candidate import CANDIDATE_FILE, Candidate
from autopeft.contract import ABANDONED, SURPLUS
from autopeft.errors import AutoPeftError, ConfigError
from autopeft.storage import A
from autopeft.yamlio import excerpt, load_yaml

#: the ``--enqueue`` word for the hand-designed baselines of the space's methods
BASELINES = "baselines"
#: where the baselines come from when the user gave no ``--enqueue`` (nor ``--warm-start``): a new study runs those its
#: space can express first, without a note for the others (a search of a space too small for any runs none)
DEFAULT = "default"
MAX_FILE_BYTES = 1024 * 1024
#: keys of a candidate (``autopeft_candidate.json``); a dict with ``candidate`` is a row of ``show --json``/``best``
_CANDIDATE_KEYS = ("methods", "layers", "sparsity", "lr_multiplier")


@dataclass(frozen=True)
class Seed:
    """A config to evaluate first: the candidate, a label for messages, the source stored with its trial."""

    candidate: Candidate
    label: str
    source: str


# ----------------------------------------------------------------------------- reading --enqueue
def read_sources(sources: Sequence[Any]) -> list[tuple[str, Any]]:
    """(where, entry) for every entry of every ``--enqueue`` source: a file (YAML/JSON: one entry or a list), an
    export folder, ``baselines``, or (API) a candidate dict.  Read before any model loads: a bad file fails at once."""
    out: list[tuple[str, Any]] = []
    for i, src in enumerate(sources):
        if isinstance(src, Mapping):
            out.append((f"enqueue item {i + 1}", dict(src)))
        elif src == BASELINES:
            out.append((BASELINES, BASELINES))
        else:
            out += _read_file(str(src))
    return out


def _read_file(path: str) -> list[tuple[str, Any]]:
    p = Path(path)
    if p.is_dir():
        p = p / CANDIDATE_FILE
    if not p.is_file():
        raise ConfigError(f"--enqueue {path}: no such file (give a YAML/JSON file of configs, an export folder, "
                          f"or '{BASELINES}')")
    try:
        data = load_yaml(p, "enqueue file", MAX_FILE_BYTES)  # JSON is YAML
    except ValueError as exc:
        raise ConfigError(f"--enqueue: {exc}") from None
    entries = data if isinstance(data, list) else [data]
    if not entries:
        raise ConfigError(f"--enqueue {path}: the file lists no config")
    return [(f"--enqueue {path} entry {i + 1}", e) for i, e in enumerate(entries)]


def entry_candidate(entry: Any, where: str, num_layers: int) -> Candidate:
    """One entry as a candidate: a candidate dict (``layers: all`` allowed), a dict holding one under ``candidate``
    (``show --json``, ``best``), or a baseline's name."""
    from autopeft.methods import baseline_candidates

    if isinstance(entry, str):
        named = baseline_candidates(num_layers)
        if entry in named:
            return named[entry]
        raise ConfigError(f"{where}: {excerpt(entry)} is no baseline name (known: {', '.join(named)}); an entry is a "
                          "config like autopeft_candidate.json, a row of 'autopeft show --format json', or a baseline name")
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a config (a mapping with keys {', '.join(_CANDIDATE_KEYS)}), got "
                          f"{excerpt(entry)}")
    d = dict(entry)
    if "candidate" in d and not set(d) & set(_CANDIDATE_KEYS):
        d = d["candidate"]
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: 'candidate' must be a mapping with keys {', '.join(_CANDIDATE_KEYS)}")
        d = dict(d)
    if d.get("layers") == "all":
        d["layers"] = list(range(num_layers))
    try:
        cand = Candidate.from_dict(d)
    except AutoPeftError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    bad = [i for i in cand.layers if i >= num_layers]
    if bad:
        raise ConfigError(f"{where}: layer {bad[0]} does not exist, the model has {num_layers} layers (0..{num_layers - 1})")
    return cand


def complete(bound: Any, cand: Candidate) -> Candidate:
    """What an entry leaves out, filled in as a space file would: a setting the space fixes takes its value, any
    other its method's default; a single value of a per-layer setting holds for every layer."""
    from autopeft.methods import get_method

    methods: dict[str, dict[str, Any]] = {}
    n = len(cand.layers)
    for name, cfg in cand.methods.items():
        declared = bound.space.methods.get(name, {})
        for pname, decl in get_method(name).params.items():
            p = declared.get(pname)
            per_layer = p is not None and p.per_layer
            if pname not in cfg:
                v = p.value if p is not None and p.kind is None else decl.default
                if v is None:
                    continue
                cfg[pname] = [v] * n if per_layer else v
            elif per_layer and not isinstance(cfg[pname], list):
                cfg[pname] = [cfg[pname]] * n
        methods[name] = cfg
    return Candidate.make(methods, cand.layers, cand.sparsity, cand.lr_multiplier)


def why_outside(bound: Any, cand: Candidate) -> str | None:
    """Why ``cand`` is no point of the bound space (None if it is one): the first dimension it leaves."""
    if bound.contains(cand):
        return None
    other = [m for m in cand.methods if m not in bound.space.methods]
    if other:
        return f"method {other[0]} is not in search space {bound.space.name!r} ({', '.join(bound.space.methods)})"
    from autopeft.space_dims import _in_dim

    try:
        vals = bound.values_of(cand)
    except (KeyError, ValueError, TypeError, AutoPeftError):
        return f"its methods ({', '.join(cand.methods) or 'none'}) are not those of search space {bound.space.name!r}"
    for k, v in vals.items():
        d = bound.by_name.get(k)
        if d is not None and not _in_dim(d, v):
            allowed = ", ".join(map(str, d.choices)) if d.choices else f"{d.low:g}..{d.high:g}"
            return f"{k} = {excerpt(v)} is outside search space {bound.space.name!r} ({allowed})"
    return (f"search space {bound.space.name!r} cannot express it (methods {', '.join(cand.methods) or 'none'}, a fixed "
            "setting or the layer placement differs)")


# ----------------------------------------------------------------------------- warm start
def remap_layers(cand: Candidate, src_layers: int, dst_layers: int) -> Candidate:
    """``cand`` of a ``src_layers``-deep model placed on a ``dst_layers``-deep one by relative depth.  Deeper: each
    layer takes the nearest source layer (its switch and per-layer settings); shallower: each source layer goes to the
    layer at its depth, and of several landing on one layer the lowest gives the settings."""
    from autopeft.methods import get_method

    src = cand.layers
    if src_layers == dst_layers or not src:
        return cand
    pairs: list[tuple[int, int]] = []  # (new layer, source layer)
    if dst_layers >= src_layers:
        for j in range(dst_layers):
            s = min(src_layers - 1, int((j + 0.5) * src_layers / dst_layers))
            if s in src:
                pairs.append((j, s))
    else:
        for s in src:
            j = min(dst_layers - 1, int((s + 0.5) * dst_layers / src_layers))
            if not any(j == p for p, _ in pairs):
                pairs.append((j, s))
    pos = {s: i for i, s in enumerate(src)}
    methods: dict[str, dict[str, Any]] = {}
    for name, cfg in cand.methods.items():
        m = get_method(name)
        out = {}
        for k, v in cfg.items():
            per_layer = isinstance(v, list) and k in m.params and m.params[k].kind != "targets" and len(v) == len(src)
            out[k] = [v[pos[s]] for _, s in pairs] if per_layer else v
        methods[name] = out
    return Candidate.make(methods, [j for j, _ in pairs], cand.sparsity, cand.lr_multiplier)


def source_ref(ref: str, default_url: str | None) -> tuple[str, str]:
    """``--warm-start``'s study name and storage URL (``NAME`` alone: in ``default_url``, this search's
    ``--storage``; None: NAME's default storage)."""
    from autopeft.config import split_ref
    from autopeft.storage import default_storage

    name, url = split_ref(ref)
    return name, url or default_url or default_storage(name)


def front_seeds(ref: str, default_url: str | None, this: tuple[str, str], num_layers: int) -> tuple[list[Seed], str]:
    """The other study's front (best score first) mapped to ``num_layers`` layers (labelled ``--warm-start NAME trial
    N``), and a line saying what was read.
    ``default_url``: where NAME is looked for without ``@URL`` (this search's ``--storage``; None: NAME's default)."""
    from autopeft.result import SearchResult
    from autopeft.storage import load_optuna_study

    name, url = source_ref(ref, default_url)
    if (name, url) == this:
        raise ConfigError(f"--warm-start {name}: a study cannot warm-start itself; name another study")
    res = SearchResult(load_optuna_study(name, url), url)
    src_layers = int(res.meta.get(A.NUM_LAYERS) or num_layers)
    front = res.front_trials()
    if not front:
        raise ConfigError(f"--warm-start {name}: the study has no complete trial yet, so no front to start from")
    seeds = [Seed(remap_layers(Candidate.from_dict(t.user_attrs[A.CANDIDATE]), src_layers, num_layers),
                  f"--warm-start {ref} trial {t.number}", f"warm-start:{name}#{t.number}") for t in front]
    mapped = "" if src_layers == num_layers else f", layers mapped by relative depth from {src_layers} to {num_layers}"
    return seeds, (f"--warm-start {name}: {len(front)} front configs of {res.meta.get(A.MODEL)} on "
                   f"{res.meta.get(A.TASK_NAME)} ({res.meta.get(A.METRIC)}{mapped})")


def prior_points(ref: str, default_url: str | None, num_layers: int, chance: float) -> list[tuple[Candidate, float]]:
    """The other study's trials at its own fidelity as the default sampler's prior (:mod:`autopeft.sampler_prior`):
    (candidate mapped to ``num_layers`` layers, score on this study's scale, ``chance`` being its chance score), at
    most :data:`~autopeft.sampler_prior.MAX_PRIOR_POINTS`; empty when that study is scored by a loss."""
    from optuna.trial import TrialState

    from autopeft.sampler_prior import map_scores, select
    from autopeft.storage import level_of, load_optuna_study, rung_of, study_level

    study = load_optuna_study(*source_ref(ref, default_url))
    meta = study.user_attrs
    if (meta.get(A.OBJECTIVES) or ["score"])[0] != "score":
        return []
    src_layers = int(meta.get(A.NUM_LAYERS) or num_layers)
    pts = [(remap_layers(Candidate.from_dict(t.user_attrs[A.CANDIDATE]), src_layers, num_layers), *t.values)
           for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
           if t.values is not None and len(t.values) >= 3 and A.CANDIDATE in t.user_attrs and not rung_of(t)
           and level_of(t) == study_level(study)]
    keep = select(pts)
    scores = map_scores([pts[i][1] for i in keep], float(meta[A.REF_POINT][0]), chance)
    return [(pts[i][0], float(y)) for i, y in zip(keep, scores)]


def install_prior(sampler: Any, prior: dict[str, Any], given: bool, num_layers: int, chance: float) -> None:
    """Give the default sampler a warm start's prior with the study's stored settings
    (:func:`autopeft.sampler_prior.resume_prior`).  A source that cannot be read now goes unused, with a note, when the
    search did not name it (a resume); one named by ``--warm-start`` must be readable."""
    import sys

    from autopeft.errors import StudyError

    try:
        sampler.set_prior(prior_points(prior["source"], None, num_layers, chance))
    except StudyError as e:
        if given:
            raise
        print(f"autopeft: note: the warm start's source cannot be read ({e}): going on without its prior", file=sys.stderr)
    sampler.prior_until, sampler.learn_with_prior = prior["until"], prior["learn_with_prior"]


# ----------------------------------------------------------------------------- resolving
def resolve(entries: Sequence[tuple[str, Any]], warm: Sequence[Seed], bound: Any, count: Callable[[Candidate], int],
            max_params: float | None, warm_start: str | None = None,
            warm_limit: int | None = None) -> tuple[list[Seed], list[str]]:
    """The seeds to queue, in order (explicit entries, then the warm start's front: its first ``warm_limit`` that fit
    when given), and notes for the user.

    Explicit entries outside the space or over ``max_params`` raise :class:`ConfigError`; baselines and the warm
    start's front (``warm``, read from study ``warm_start``) leave them out with a note (and raise if none fits)."""
    from autopeft.methods import baseline_candidates

    seeds: list[Seed] = []
    notes: list[str] = []
    for where, entry in entries:
        if entry == BASELINES and where in (BASELINES, DEFAULT):
            named = [Seed(c, f"baseline {n}", f"baseline:{n}") for n, c in baseline_candidates(bound.num_layers).items()]
            if where == DEFAULT:
                seeds += [s for s in named if _why_not(s, bound, count, max_params) is None]
            else:
                seeds += _fitting(named, "--enqueue baselines", bound, count, max_params, notes)
            continue
        cand = complete(bound, entry_candidate(entry, where, bound.num_layers))
        why = why_outside(bound, cand)
        if why is None and max_params is not None and count(cand) > max_params:
            why = f"{count(cand):,} trainable params > --max-params {max_params:,.0f}"
        if why is not None:
            raise ConfigError(f"{where} ({cand.summary()}): {why}")
        seeds.append(Seed(cand, where, "enqueue:" + where.removeprefix("--enqueue ").removeprefix("enqueue ")))
    if warm:
        seeds += _fitting(list(warm), f"--warm-start {warm_start}", bound, count, max_params, notes)[:warm_limit]
    return seeds, notes


def _why_not(s: Seed, bound: Any, count: Callable[[Candidate], int], max_params: float | None) -> str | None:
    """Why a listed seed (a baseline, a warm start's config) does not fit this search, or None."""
    why = why_outside(bound, s.candidate)
    if why is None and max_params is not None and count(s.candidate) > max_params:
        why = f"{count(s.candidate):,} params > --max-params {max_params:,.0f}"
    return why


def _fitting(seeds: list[Seed], what: str, bound: Any, count: Callable[[Candidate], int], max_params: float | None,
             notes: list[str]) -> list[Seed]:
    keep, left = [], []
    for s in seeds:
        why = _why_not(s, bound, count, max_params)
        if why is None:
            keep.append(s)
        else:
            left.append(f"{s.label.removeprefix(what).strip() or s.label} ({s.candidate.summary()}): {why}")
    if not keep:
        raise ConfigError(f"{what}: none of its {len(seeds)} configs fits this search; first: {left[0]}")
    if left:
        notes.append(f"{what}: {len(left)} of {len(seeds)} configs left out: " + "; ".join(left))
    return keep


# ----------------------------------------------------------------------------- queueing
def requeue(trials: Sequence[Any]) -> list[Seed]:
    """Queued configs whose trial was stopped before it finished (a killed driver's, or withdrawn over the total):
    they go back to the queue (:func:`queue` skips any the study holds again)."""
    out = []
    for t in trials:
        ua = t.user_attrs
        if ua.get(A.SEEDED_BY) and ua.get(A.STATUS) in (ABANDONED, SURPLUS) and A.CANDIDATE in ua:
            out.append(Seed(Candidate.from_dict(ua[A.CANDIDATE]), f"trial {t.number}", ua[A.SEEDED_BY]))
    return out


def queue(store: Any, bound: Any, seeds: Sequence[Seed], held: Callable[[str], bool]) -> list[Seed]:
    """Put the seeds the study does not hold (``held(key)``: evaluated, running or waiting) in its queue, in order;
    return those queued."""
    done: set[str] = set()
    out = []
    for s in seeds:
        key = s.candidate.key
        if key in done or held(key):
            continue
        done.add(key)
        store.enqueue(bound.optuna_params(s.candidate), s.candidate, s.source)
        out.append(s)
    return out


def describe(queued: Sequence[Seed]) -> str:
    """One line: how many configs were queued, from where."""
    kinds: dict[str, int] = {}
    for s in queued:
        k = s.source.split(":", 1)[0]
        kinds[k] = kinds.get(k, 0) + 1
    return f"{len(queued)} config(s) queued to run first ({', '.join(f'{n} {k}' for k, n in kinds.items())})"


__all__ = ["Seed", "BASELINES", "DEFAULT", "read_sources", "entry_candidate", "complete", "why_outside", "remap_layers",
           "source_ref", "front_seeds", "prior_points", "install_prior", "resolve", "requeue", "queue", "describe"]
