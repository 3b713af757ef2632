"""The sampler's known-cost model: exact features of a config and a ridge regression on them for its training memory
(and time, when that is an objective), which are measured by every trial and close to linear in these features."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from autopeft.candidate import Candidate


def _features(cand: Candidate, n_layers: int, params: float) -> list[float]:
    from autopeft.methods import cost_feature_vector, get_method, method_names

    methods = cand.methods
    layers = cand.layers
    depth = max((get_method(n).backprop_depth(cfg, layers, n_layers) for n, cfg in methods.items()), default=0.0)
    frac = len(layers) / n_layers
    f = [1.0, depth, frac, params / 1e6]
    for name in method_names():
        on = name in methods
        f.append(float(on) * (frac if get_method(name).uses_layers else 1.0))
    f.extend(cost_feature_vector(methods, frac))
    return f


class _Ridge:
    """Tiny ridge regression for memory/time (features are exact; targets measured)."""

    def __init__(self, alpha: float = 1e-3) -> None:
        self.alpha = alpha
        self.w: np.ndarray | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_Ridge":
        self.mu, self.sd = y.mean(), y.std() + 1e-9
        A = X.T @ X + self.alpha * np.eye(X.shape[1])
        self.w = np.linalg.solve(A, X.T @ ((y - self.mu) / self.sd))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.w is None:
            return np.full(len(X), np.nan)
        return X @ self.w * self.sd + self.mu


class KnownCosts:
    """The cost objectives of candidates (all objectives but the first), in the maximised space: minus log10 of the
    exact parameter count, and of the memory (or time) a ridge regression on the exact features predicts, fitted on
    the complete trials ``done`` ((candidate, objective values) pairs)."""

    def __init__(self, objectives: Sequence[str], params: Callable[[Candidate], int],
                 features: Callable[[Candidate], list[float]], done: Sequence[tuple[Candidate, list[float]]]) -> None:
        self.objectives, self.params, self.features = list(objectives), params, features
        self.models: dict[str, _Ridge] = {}
        for j, name in enumerate(self.objectives):
            if name in ("memory", "time"):
                F = np.array([features(c) for c, _ in done])
                self.models[name] = _Ridge().fit(F, np.log10(np.maximum([v[j] for _, v in done], 1e-12)))

    def __call__(self, cands: Sequence[Candidate]) -> np.ndarray:
        P = np.array([self.params(c) for c in cands], dtype=float)
        F = None
        cols = []
        for name in self.objectives[1:]:
            if name == "params":
                cols.append(-np.log10(np.maximum(P, 1.0)))
            else:
                if F is None:
                    F = np.array([self.features(c) for c in cands])
                cols.append(-self.models[name].predict(F))
        return np.stack(cols, 1) if cols else np.zeros((len(cands), 0))
