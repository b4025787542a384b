"""Continual-learning metrics from the accuracy matrix.

A[i][j] is the accuracy on task j's test set after training task i (j <= i is filled;
entries above the diagonal are evaluated too only when asked, and are None otherwise).
With T tasks:
  final average accuracy        = mean_j A[T-1][j]
  average incremental accuracy  = mean_i ( mean_{j<=i} A[i][j] )        (Rebuffi et al., 2017)
  forgetting                    = mean_{j<T-1} ( max_{i in [j, T-2]} A[i][j] - A[T-1][j] )
                                                                        (Chaudhry et al., 2018)
  backward transfer             = mean_{j<T-1} ( A[T-1][j] - A[j][j] )  (Lopez-Paz & Ranzato, 2017)
Forgetting and backward transfer are 0 for a single task.
"""
from __future__ import annotations

import numpy as np


def _rows(matrix) -> list[list[float]]:
    return [[float(v) for v in row if v is not None] for row in matrix]


def final_average_accuracy(matrix) -> float:
    rows = _rows(matrix)
    return float(np.mean(rows[-1])) if rows else 0.0


def average_incremental_accuracy(matrix) -> float:
    rows = _rows(matrix)
    return float(np.mean([np.mean(r[: i + 1]) for i, r in enumerate(rows)])) if rows else 0.0


def forgetting(matrix) -> float:
    rows = _rows(matrix)
    t = len(rows)
    if t < 2:
        return 0.0
    return float(np.mean([max(rows[i][j] for i in range(j, t - 1)) - rows[-1][j] for j in range(t - 1)]))


def backward_transfer(matrix) -> float:
    rows = _rows(matrix)
    t = len(rows)
    if t < 2:
        return 0.0
    return float(np.mean([rows[-1][j] - rows[j][j] for j in range(t - 1)]))


def summary(matrix) -> dict:
    return {
        "final_average_accuracy": final_average_accuracy(matrix),
        "average_incremental_accuracy": average_incremental_accuracy(matrix),
        "forgetting": forgetting(matrix),
        "backward_transfer": backward_transfer(matrix),
    }
