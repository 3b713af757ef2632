"""The task metrics: which one a task is scored by, computing it (scikit-learn's definitions), its chance level
(the hypervolume reference), and exact match of final answers for generative tasks such as GSM8K."""

from __future__ import annotations

import re
from typing import Any, Sequence, Union

import numpy as np

from autopeft.config import METRICS
from autopeft.errors import DataError

__all__ = ["IntLabels", "LM_METRIC", "SCORE_METRICS", "TASK_METRICS", "chance_score", "choose_metric", "compute_metric",
           "exact_match", "final_answer"]

IntLabels = Union[Sequence[int], "np.ndarray[Any, Any]"]  # label/prediction ids: a list or a 1-D numpy array
# Binary tasks only: ROC AUC of the positive class's margin; threshold-free, so it still ranks models whose argmax is
# still the majority class everywhere (short MRPC trials), where F1 and accuracy are flat.
SCORE_METRICS: frozenset[str] = frozenset({"auc"})
# The metric GLUE reports for a task (MRPC/QQP: F1 of the positive class; CoLA: Matthews correlation).
TASK_METRICS: dict[str, str] = {"sst2": "accuracy", "rte": "accuracy", "qnli": "accuracy", "wnli": "accuracy",
                                "mnli": "accuracy", "mrpc": "f1", "qqp": "f1", "cola": "matthews"}
#: the search metric of a causal-LM task: mean cross-entropy of the response tokens on the search split (minimised)
LM_METRIC = "loss"
_MINORITY = 0.40  # binary tasks whose minority class is rarer than this are scored with Matthews correlation


def choose_metric(task: str, labels: IntLabels, num_labels: int, override: str | None) -> tuple[str, str]:
    """(metric, reason): the override, else GLUE's metric by task name, else from the label distribution."""
    if override is not None:
        if override not in METRICS:
            raise DataError(f"unknown metric {override!r}; choose one of {', '.join(METRICS)}")
        if override in SCORE_METRICS and num_labels != 2:
            raise DataError(f"metric {override!r} needs a binary task, but {task} has {num_labels} classes; "
                            "choose accuracy, macro_f1 or matthews")
        return override, "--metric override"
    key = task.lower().replace("-", "").replace("_", "")
    if key in TASK_METRICS:
        return TASK_METRICS[key], f"by task name {key}"
    if num_labels >= 3:
        return "macro_f1", f"{num_labels} classes"
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2)
    share = float(counts.min() / counts.sum())
    if share < _MINORITY:
        return "matthews", f"binary, minority class {share:.1%} < {_MINORITY:.0%}"
    return "accuracy", f"binary, minority class {share:.1%} >= {_MINORITY:.0%}"


def _check(metric: str) -> None:
    if metric not in METRICS:
        raise DataError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def compute_metric(metric: str, preds: IntLabels, labels: IntLabels, scores: Sequence[float] | None = None) -> float:
    """accuracy; f1 of the positive class (id 1); matthews (multiclass MCC); macro_f1 over the classes present in
    labels or predictions; auc: ROC AUC of ``scores`` (the positive class's margin, logit 1 - logit 0) against
    binary labels, ties counted half.  Ill-defined values are 0.0 (auc: 0.5), as in scikit-learn."""
    _check(metric)
    p, y = np.asarray(preds, dtype=np.int64).ravel(), np.asarray(labels, dtype=np.int64).ravel()
    if len(p) != len(y):
        raise DataError(f"cannot score {len(p)} predictions against {len(y)} labels; they must have the same length")
    if len(y) == 0:
        raise DataError("cannot score an empty evaluation set; use a larger --n-eval")
    if metric == "auc":
        return _auc(y, scores)
    import warnings

    from sklearn import metrics as skm  # scikit-learn's definitions; ill-defined values are 0.0

    with warnings.catch_warnings():  # one class predicted (a collapsed trial) is a normal case here, not a warning
        warnings.simplefilter("ignore")
        if metric == "accuracy":
            return float(skm.accuracy_score(y, p))
        if metric == "f1":
            return float(skm.f1_score(y, p, labels=[1], average="macro", zero_division=0.0))
        if metric == "macro_f1":
            return float(skm.f1_score(y, p, average="macro", zero_division=0.0))
        return float(skm.matthews_corrcoef(y, p))


def _auc(y: np.ndarray, scores: Sequence[float] | None) -> float:
    if scores is None:
        raise DataError("metric auc needs the model's scores, not only its predictions")
    sc = np.asarray(scores, dtype=np.float64).ravel()
    if len(sc) != len(y):
        raise DataError(f"cannot score {len(sc)} scores against {len(y)} labels; they must have the same length")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise DataError("metric auc needs binary labels 0/1; choose accuracy, macro_f1 or matthews")
    if y.min() == y.max():
        return 0.5  # one class only: a score ranks nothing (scikit-learn raises here)
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, sc))


_GSM8K_ANSWER = re.compile(r"####\s*([^\n]*)")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def final_answer(text: str) -> str:
    """The final answer of a response, for exact match: what follows ``####`` (GSM8K's convention), else the last
    number in the text, else the whole text; numbers lose thousands separators, ``$`` and a trailing ``.0``."""
    m = _GSM8K_ANSWER.search(text)
    ans = m.group(1).strip() if m else None
    if ans is None:
        nums = _NUMBER.findall(text)
        ans = nums[-1] if nums else text.strip()
    num = _NUMBER.fullmatch(ans.strip().rstrip("."))
    if num:
        ans = num.group(0).replace(",", "").replace("$", "")
        if "." in ans:
            ans = ans.rstrip("0").rstrip(".")
    return ans.strip()


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions whose :func:`final_answer` equals the reference's (GSM8K accuracy)."""
    if len(predictions) != len(references):
        raise DataError(f"cannot score {len(predictions)} answers against {len(references)} references")
    if not references:
        raise DataError("cannot score an empty evaluation set")
    return sum(final_answer(p) == final_answer(r) for p, r in zip(predictions, references)) / len(references)


def chance_score(metric: str, labels: IntLabels) -> float:
    """The metric of always predicting the majority label (ties: the smallest id); the hypervolume reference.
    For auc, 0.5 (a constant score ranks nothing)."""
    _check(metric)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if len(y) == 0:
        raise DataError("cannot compute the chance score of an empty evaluation set; use a larger --n-eval")
    if metric in SCORE_METRICS:
        return 0.5
    major = int(np.bincount(y - y.min()).argmax() + y.min())
    return compute_metric(metric, np.full(len(y), major), y)
