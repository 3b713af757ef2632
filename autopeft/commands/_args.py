"""Argument types and option groups shared by several commands."""

from __future__ import annotations

import argparse
import math


def _number(s: str, kind: type) -> float:
    try:
        return kind(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {s[:40]!r}") from None


def positive_int(s: str) -> int:
    v = int(_number(s, int))
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def positive_float(s: str) -> float:
    v = _number(s, float)
    if not v > 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s[:40]}")
    return v


def non_negative_float(s: str) -> float:
    v = _number(s, float)
    if not v >= 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {s[:40]}")
    return v


def seed(s: str) -> int:
    v = int(_number(s, int))
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(f"must be in 0..{2**32 - 1}, got {s[:40]}")
    return v


def study_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--study", required=required, help="study name")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///studies/<study>.db)")
