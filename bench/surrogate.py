"""A surrogate benchmark made from a recorded table: every proposal is answered, not snapped to a recorded config.

The task score of a candidate is predicted by a random forest fitted to the table's real low-cost scores; its
trainable parameters and training memory are computed exactly, as a real trial computes them (parameter count from
shapes; memory by counting the bytes autograd saves on max-length batches of 1 and 2 rows). This is the
"surrogate fitted to the table for the score with costs computed exactly" protocol of NAS-Bench-301-style
benchmarks. A random forest on hand-made structural features is a different model family from every sampler compared
(our GP on the flat encoding, Optuna's GP, TPE's Parzen estimators), so the protocol does not favour any of them;
its quality is reported as the out-of-fold Spearman rho and R^2 on the table (``cross_validate``).

    python -m bench.surrogate --table bench/tables/sst2-mixed-cpu.csv      # cross-validated quality of the surrogate
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import spearman

# every registered method that a shipped space can hold; a method not listed here is a user error in the table
METHODS = ("lora", "dora", "ia3", "prefix", "serial_adapter", "parallel_adapter", "full")
SIZE_KEYS = ("r", "size", "length")


def features(cand: Any, num_layers: int, params: int, memory_mib: float) -> np.ndarray:
    """Structural features of a candidate (method, log size, targets, placement, sparsity, lr) plus its exact costs."""
    d = cand.to_dict()
    f: list[float] = []
    for m in METHODS:
        cfg = d["methods"].get(m)
        size = next((cfg[k] for k in SIZE_KEYS if cfg is not None and k in cfg), None)
        f += [1.0 if cfg is not None else 0.0, float(np.log2(size)) if size else 0.0,
              float(len(cfg.get("targets", []))) if cfg is not None else 0.0]
    unknown = set(d["methods"]) - set(METHODS)
    if unknown:
        raise ValueError(f"surrogate: method(s) {sorted(unknown)} have no features; add them to METHODS")
    layers = set(d["layers"])
    f += [1.0 if i in layers else 0.0 for i in range(num_layers)]
    f += [float(len(layers)), float(min(layers)) if layers else float(num_layers)]
    sp = d.get("sparsity") or {}
    f += [float(sp.get("fraction", 0.0)), 1.0 if sp.get("criterion") == "magnitude" else 0.0]
    f += [float(np.log(d.get("lr_multiplier", 1.0))), float(np.log10(max(1, params))), float(np.log10(memory_mib))]
    return np.array(f)


def _forest(seed: int = 0) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=300, min_samples_leaf=2, max_features=0.5, random_state=seed, n_jobs=1)


class ExactCosts:
    """Trainable parameters and training memory (MiB) of any candidate, computed as a real trial computes them.

    Parameters come from shapes (``count_params``). Memory needs a model built and two short forward passes; it does
    not depend on the learning rate or on sparsity (masks act on gradients and weights, not on what autograd saves),
    so it is cached per structure (methods and layers)."""

    def __init__(self, model: str | None, num_labels: int, max_length: int = 128, memory_batch_size: int = 32) -> None:
        from autopeft.builder import model_info

        self.model, self.num_labels = model, num_labels
        self.info = model_info(model, num_labels)
        self.max_length = min(max_length, self.info.arch.max_positions)
        self.memory_batch_size = memory_batch_size
        self._memory: dict[str, float] = {}

    def memory_mib(self, cand: Any) -> float:
        from autopeft.builder import build_model, load_base
        from autopeft.candidate import Candidate
        from autopeft.trial import memory_parts

        structure = Candidate.make(cand.methods, cand.layers)
        if structure.key not in self._memory:
            base, tok = load_base(self.model, self.num_labels)
            built = build_model(structure, base, self.info)
            tb = sum(p.numel() * p.element_size() for p in built.model.parameters() if p.requires_grad)
            fixed, per_row = memory_parts(built.model, self.max_length, int(getattr(base.config, "vocab_size", 30000)),
                                          tb, "token_type_ids" in tok.model_input_names)
            self._memory[structure.key] = (fixed + per_row * self.memory_batch_size) / 2**20
        return self._memory[structure.key]

    def __call__(self, cand: Any) -> tuple[int, float]:
        from autopeft.builder import count_params

        return count_params(cand, self.info), self.memory_mib(cand)


class TableSurrogate:
    """Score of any candidate: a random forest fitted to the table's recorded scores (exact costs as features)."""

    def __init__(self, cands: list[Any], vals: np.ndarray, num_layers: int, seed: int = 0) -> None:
        self.num_layers = num_layers
        X = np.stack([features(c, num_layers, int(v[1]), float(v[2])) for c, v in zip(cands, vals)])
        self.forest = _forest(seed).fit(X, vals[:, 0])

    def score(self, cand: Any, params: int, memory_mib: float) -> float:
        return float(self.forest.predict(features(cand, self.num_layers, params, memory_mib)[None, :])[0])


def cross_validate(cands: list[Any], vals: np.ndarray, num_layers: int, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Out-of-fold Spearman rho and R^2 of the surrogate's score on the table (how far to trust it)."""
    from sklearn.model_selection import KFold

    X = np.stack([features(c, num_layers, int(v[1]), float(v[2])) for c, v in zip(cands, vals)])
    y = vals[:, 0]
    pred = np.empty_like(y)
    for tr, te in KFold(folds, shuffle=True, random_state=seed).split(X):
        pred[te] = _forest(seed).fit(X[tr], y[tr]).predict(X[te])
    rho = spearman(pred, y)
    r2 = float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return {"rho": rho, "r2": r2, "rows": len(y), "folds": folds}


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", required=True, help="a table CSV from `python -m bench.tabular export`")
    ap.add_argument("--folds", type=int, default=5)
    a = ap.parse_args(argv)
    if a.folds < 2:
        ap.error(f"--folds must be at least 2, got {a.folds}")
    from bench.compare_samplers import load_table

    cands, vals, meta = load_table(Path(a.table))
    out = cross_validate(cands, vals, int(meta["num_layers"]), a.folds)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
