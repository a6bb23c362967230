"""Accuracy computed by timebox itself: argmax against integer labels, never a Keras metric name."""

from __future__ import annotations

import numpy as np


def accuracy(probs_or_pred: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of class probabilities (N, C) or predicted ids (N,) against ids (N,)."""
    pred = probs_or_pred.argmax(1) if probs_or_pred.ndim == 2 else probs_or_pred
    return float(np.mean(pred == labels)) if len(labels) else 0.0


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class."""
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.mean(np.log(p))) if len(labels) else 0.0


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true, predicted]."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix (rows: true class); NaN for a class with no labelled examples."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(cm) / cm.sum(1)


def accuracy_noise(accuracy_value: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` images: sqrt(p(1-p)/n)."""
    return float(np.sqrt(accuracy_value * (1 - accuracy_value) / max(n, 1)))


def noise_margin(accuracy_value: float, n: int) -> float:
    """How far below ``accuracy_value`` (on ``n`` images) another accuracy may be and still not count as
    clearly worse: 2 standard errors."""
    return 2 * accuracy_noise(accuracy_value, n)

