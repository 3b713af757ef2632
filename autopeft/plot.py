"""Plots of a study: the Pareto front (interactive HTML with plotly, PNG with matplotlib) and
hypervolume over trials.  Hand-designed baselines present in the study are drawn as reference points."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from autopeft.errors import AutoPeftError
from autopeft.pareto import front_mask, hypervolume, to_max
from autopeft.storage import A


def _points(res: Any) -> tuple[list[Any], np.ndarray, np.ndarray]:
    comp = res.complete_trials()
    Y = res.ranked_values(comp)  # with --promote: scores on the top rung's scale, as the front compares them
    from autopeft.result import structure_key

    mask = (front_mask(Y, [structure_key(t) for t in comp], res.preferred(comp), res.margins(Y, comp)) if len(Y)
            else np.zeros(0, dtype=bool))
    return comp, Y, mask


def baseline_keys(num_layers: int) -> set[str]:
    """Keys of the hand-designed configurations for a model of ``num_layers`` layers: every method's
    :meth:`~autopeft.methods.PeftMethod.baselines`, and each method that trains the whole base model at its
    defaults (full fine-tuning)."""
    from autopeft.candidate import Candidate
    from autopeft.methods import baseline_candidates, get_method, method_names

    cands = list(baseline_candidates(num_layers).values())
    for name in method_names():
        m = get_method(name)
        if m.trains_base:
            defaults = {k: d.default for k, d in m.params.items()}
            cands.append(Candidate.make({name: defaults}, list(range(num_layers)) if m.uses_layers else []))
    return {c.key for c in cands if c.methods}  # with no layers a layered baseline vanishes: not a reference


def is_baseline(candidate: Mapping[str, Any] | None, keys: set[str]) -> bool:
    """Whether a trial's stored candidate (``user_attrs["candidate"]``) is one of the hand-designed ``keys``."""
    from autopeft.candidate import Candidate

    if candidate is None:
        return False
    try:
        return Candidate.from_dict(candidate).key in keys
    except AutoPeftError:  # e.g. a method this process does not know: not one of its baselines
        return False


def hypervolume_curve(res: Any) -> list[float]:
    """Hypervolume of the complete trials among the first k trials, for k = 1..n (trial order); with ``--promote``,
    each config at the highest rung it reached so far, its score on that top rung's scale as estimated from those
    trials (:func:`autopeft.promotion.rung_offsets`)."""
    from autopeft.promotion import Evaluated, on_top_rung, rung_offsets
    from autopeft.storage import level_of, rung_of, study_level

    trials, level = res.study.get_trials(deepcopy=False), study_level(res.study)
    ys: dict[str, tuple[int, list[float]]] = {}  # each config at the highest rung it reached so far (--promote)
    done: list[Evaluated] = []
    out = []
    for t in trials:
        if t.state.name == "COMPLETE" and t.values is not None and level_of(t) == level:  # the current level's
            key = t.user_attrs.get(A.CANDIDATE_KEY) or f"#{t.number}"
            y = to_max(res.objectives, t.values)
            done.append(Evaluated(t.number, key, rung_of(t), tuple(y)))
            if key not in ys or rung_of(t) >= ys[key][0]:
                ys[key] = (rung_of(t), y)
        offsets = rung_offsets(done) if res.laddered else [0.0]
        Y = np.array([[on_top_rung(y[0], r, offsets), *y[1:]] for r, y in ys.values()])
        out.append(hypervolume(Y, res.ref_point) if ys else 0.0)
    return out


def _count(v: float, _: Any = None) -> str:
    """A parameter count as a short tick label: 3k, 25k, 1.2M."""
    return f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}"


def _axis(axis: Any, set_scale: Any, x: Any, counts: bool) -> None:
    """Log scale with plain labels on the decades only (the default labels every minor tick as 3x10^2 and they
    overlap); a linear scale when the values span less than one decade (memory usually does)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    finite = np.asarray(x, dtype=float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if not counts and (finite.size == 0 or finite.max() / finite.min() < 10):
        set_scale("linear")
        axis.set_major_locator(MaxNLocator(6))
        return
    set_scale("log")
    axis.set_major_locator(LogLocator(base=10, numticks=8))
    axis.set_major_formatter(FuncFormatter(_count if counts else lambda v, _=None: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_study(res: Any, out_dir: str | Path) -> dict[str, Path]:
    """Write ``<study>_pareto.html``, ``<study>_pareto.png`` and ``<study>_hypervolume.png``."""
    try:
        import matplotlib
    except ImportError:
        from autopeft.errors import ConfigError

        raise ConfigError("autopeft plot needs matplotlib (and plotly for the HTML): pip install matplotlib plotly, "
                          "or pip install 'autopeft[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comp, Y, mask = _points(res)
    if not comp:
        from autopeft.errors import StudyError

        raise StudyError(f"study {res.name!r} has no completed trial to plot")
    score = np.array([t.values[0] for t in comp])
    params = np.array([t.user_attrs.get(A.PARAMS, np.nan) for t in comp], dtype=float)
    mem = np.array([t.user_attrs.get(A.MEMORY_MIB, np.nan) for t in comp], dtype=float)
    summaries = [t.user_attrs.get(A.SUMMARY, "") for t in comp]
    keys = baseline_keys(int(res.meta.get(A.NUM_LAYERS, 0)))
    base = np.array([is_baseline(t.user_attrs.get(A.CANDIDATE), keys) for t in comp], dtype=bool)
    metric = res.meta.get(A.METRIC, "score")
    from autopeft.result import fidelity_label
    from autopeft.storage import rung_of

    #: with --promote: each config is drawn at the highest rung it finished; promoted ones get a ring
    promoted = np.array([rung_of(t) > 0 for t in comp], dtype=bool)
    fids = [fidelity_label(t) if res.laddered else "" for t in comp]
    paths: dict[str, Path] = {}

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, x, xl in ((axes[0], params, "trainable parameters"), (axes[1], mem, "training memory (MiB)")):
        sc = ax.scatter(x[~mask], score[~mask], c=mem[~mask] if ax is axes[0] else params[~mask], s=18, alpha=0.45,
                        cmap="viridis", label="trials")
        ax.scatter(x[mask], score[mask], c="crimson", s=40, label="Pareto front", zorder=3)
        if promoted.any():
            ax.scatter(x[promoted], score[promoted], facecolors="none", edgecolors="k", s=90, linewidths=1.2,
                       label="scored at a promoted fidelity", zorder=5)
        if base.any():
            ax.scatter(x[base], score[base], marker="*", s=160, c="orange", edgecolor="k", label="hand-designed", zorder=4)
            for xi, yi, s in zip(x[base], score[base], np.array(summaries)[base]):
                ax.annotate(s.split(" |")[0], (xi, yi), fontsize=7, xytext=(4, -10), textcoords="offset points")
        _axis(ax.xaxis, ax.set_xscale, x, counts=ax is axes[0])
        ax.set_xlabel(xl)
        ax.set_ylabel(f"{metric} (held-out search split{', lower is better' if metric == 'loss' else ''})")
        ax.grid(alpha=0.3)
        cb = fig.colorbar(sc, ax=ax, label="memory (MiB)" if ax is axes[0] else "trainable parameters")
        if ax is not axes[0]:
            cb.formatter = FuncFormatter(_count)
            cb.update_ticks()
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{res.name}: {len(comp)} trials, {int(mask.sum())} on the front")
    fig.tight_layout()
    paths["png"] = out / f"{res.name}_pareto.png"
    fig.savefig(paths["png"], dpi=110)
    plt.close(fig)

    hv = hypervolume_curve(res)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(hv) + 1), hv)
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"{res.name}: hypervolume over trials")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths["hypervolume_png"] = out / f"{res.name}_hypervolume.png"
    fig.savefig(paths["hypervolume_png"], dpi=110)
    plt.close(fig)

    try:
        import plotly.graph_objects as go
    except ImportError:
        return paths
    top = res.scores_on_top(comp)  # with --promote: the score as the front compares it (on the top rung's scale)
    hover = [f"trial {t.number}<br>{s}<br>{metric} {v:.4f}<br>{int(p):,} params<br>{m:.1f} MiB"
             + (f"<br>fidelity {f}" if f else "") + (f"<br>{metric} on the top rung's scale {e:.4f}" if abs(e - v) > 1e-12 else "")
             for t, s, v, p, m, f, e in zip(comp, summaries, score, params, mem, fids, top)]
    fig2 = go.Figure()
    fig2.add_trace(go.Scatter(x=params[~mask], y=score[~mask], mode="markers", name="trials",
                              marker=dict(color=mem[~mask], colorscale="Viridis", showscale=True, colorbar=dict(title="MiB")),
                              text=np.array(hover)[~mask], hoverinfo="text"))
    fig2.add_trace(go.Scatter(x=params[mask], y=score[mask], mode="markers", name="Pareto front",
                              marker=dict(color="crimson", size=10), text=np.array(hover)[mask], hoverinfo="text"))
    if base.any():
        fig2.add_trace(go.Scatter(x=params[base], y=score[base], mode="markers", name="hand-designed",
                                  marker=dict(symbol="star", size=16, color="orange"), text=np.array(hover)[base], hoverinfo="text"))
    fig2.update_layout(title=f"{res.name}: Pareto front", xaxis_type="log", xaxis_title="trainable parameters",
                       yaxis_title=metric)
    paths["html"] = out / f"{res.name}_pareto.html"
    # plotly.js once beside the pages (``plotly.min.js``, 4.6 MB), not inlined into each; works offline, unlike the CDN
    fig2.write_html(str(paths["html"]), include_plotlyjs="directory")
    return paths
