"""The default sampler's score-focused turns: now and then a model-based proposal aims at the best score alone.

Expected hypervolume improvement over (score, parameters, memory) prices a config by the slice of the front it may
add, and while the score GP is unsure of the cheap corner that slice is wide: model-based steps go to few layers,
high sparsity, one-layer adapters, and the front's top end (the configs users pick when they ask for the best score
under a budget) is seldom varied.  In an MRPC search (BENCHMARKS.md, "MRPC with the baselines run first") the LoRA
baseline led the front from trial 0 and none of the 19 model-based steps tried it, or anything on every layer, at
another rate, rank or set of targets, while the same LoRA at x1.41 re-trains 0.014 F1 higher.  So every
:data:`FOCUS_EVERY`-th model-based proposal maximises the expected improvement of the score over the best so far
(EI, Jones et al. 1998) among the usual pool plus :data:`N_NEIGHBOURS` random neighbours of each of the
:data:`TOP` best-scoring configs, under the same budgets and collapse model.  Why EI and not a scalarisation of the
three objectives: the costs are known exactly, so the only thing a score-focused turn needs to model is the score.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

#: every FOCUS_EVERY-th model-based proposal is a score-focused turn (0: never)
FOCUS_EVERY = 4
#: neighbours generated around each of the TOP best-scoring configs for a focused turn
N_NEIGHBOURS = 32
TOP = 3


def turn(n_done: int, n_startup: int, every: int = FOCUS_EVERY) -> bool:
    """Whether the proposal made with ``n_done`` complete trials is a score-focused turn: the 4th, 8th, ... model-based
    one (the first ones go to the acquisition, which also has to learn the costs' shape)."""
    k = n_done - n_startup
    return every > 0 and k >= 0 and k % every == every - 1


def expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """E[max(f - best, 0)] for f ~ N(mu, sd^2), elementwise (scores maximised)."""
    sd = np.maximum(np.asarray(sd, dtype=float), 1e-12)
    z = (np.asarray(mu, dtype=float) - best) / sd
    return (mu - best) * norm.cdf(z) + sd * norm.pdf(z)
