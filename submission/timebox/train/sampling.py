"""What a training epoch is made of (settings ``sampling``, ``mixup``, ``cutmix``): the order of its samples and
how a batch's samples are mixed. Shared by the head (pooled features) and fine-tuning (cached activations).

- ``sampling``: ``uniform`` (each sample once per epoch, shuffled) or ``balanced`` (as many draws as samples, each
  a class drawn uniformly, then one of its samples: rare classes are seen as often as common ones).
- ``mixup`` (Zhang et al. 2018): with ``alpha > 0``, each sample is blended with another of its batch,
  ``lam * x_i + (1 - lam) * x_j`` with ``lam ~ Beta(alpha, alpha)``, and so are its one-hot labels and weights.
  On pooled features and on activations alike.
- ``cutmix`` (Yun et al. 2019): a box of another sample pasted in, labels mixed by the box's area. Spatial inputs
  only (activation maps, images); the head's pooled features are never cut-mixed. With both on, each batch gets
  one of the two at random.

Images (the image cut) are mixed by Keras' ``MixUp``/``CutMix`` layers instead (:mod:`timebox.train.augment`).

Example::

    order = epoch_order(y, rng, "balanced")
    x, soft, w = Mixer(mixup=0.2, num_classes=6)(x[order[:32]], y[order[:32]], None, rng)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def epoch_order(labels: np.ndarray, rng: np.random.Generator, sampling: str = "uniform") -> np.ndarray:
    """One epoch's sample indices (``len(labels)`` of them)."""
    n = len(labels)
    if sampling == "uniform":
        return rng.permutation(n)
    classes = np.unique(labels)
    pick = rng.integers(0, len(classes), n)
    order = np.empty(n, np.int64)
    for k, c in enumerate(classes):
        members, chosen = np.flatnonzero(labels == c), pick == k
        order[chosen] = members[rng.integers(0, len(members), int(chosen.sum()))]
    return order


@dataclass(frozen=True)
class Mixer:
    """Mixes a batch: ``(x, class ids, weights or None) -> (x, soft labels, weights or None)``."""

    mixup: float = 0.0
    cutmix: float = 0.0
    num_classes: int = 2

    @property
    def on(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def kind(self, spatial: bool, rng: np.random.Generator) -> str | None:
        """The mixing a batch gets: ``"cutmix"`` (``spatial`` inputs only), ``"mixup"`` or None; a coin decides
        when both are on."""
        if self.cutmix > 0 and spatial and (self.mixup <= 0 or rng.random() < 0.5):
            return "cutmix"
        return "mixup" if self.mixup > 0 else None

    def __call__(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        soft = np.eye(self.num_classes, dtype=np.float32)[y]
        kind = self.kind(x.ndim == 4, rng)
        if kind is None:
            return x, soft, w
        perm = rng.permutation(len(x))
        if kind == "cutmix":
            x, lam = _cut(x, perm, rng.beta(self.cutmix, self.cutmix), rng)
            lam = np.full(len(x), lam, np.float32)
        else:
            lam = rng.beta(self.mixup, self.mixup, len(x)).astype(np.float32)
            shape = (-1,) + (1,) * (x.ndim - 1)
            x = lam.reshape(shape) * x + (1 - lam).reshape(shape) * x[perm]
        soft = lam[:, None] * soft + (1 - lam[:, None]) * soft[perm]
        if w is not None:
            w = lam * w + (1 - lam) * w[perm]
        return x.astype(np.float32, copy=False), soft, w


def _cut(x: np.ndarray, perm: np.ndarray, lam: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``x`` with one box (of area share ``1 - lam``, clipped at the edges) from ``x[perm]``; the share kept."""
    h, w = x.shape[1:3]
    ch, cw = int(round(h * np.sqrt(1 - lam))), int(round(w * np.sqrt(1 - lam)))
    cy, cx = rng.integers(0, h), rng.integers(0, w)
    top, bottom = max(0, cy - ch // 2), min(h, cy + (ch + 1) // 2)
    left, right = max(0, cx - cw // 2), min(w, cx + (cw + 1) // 2)
    out = np.array(x, np.float32, copy=True)
    out[:, top:bottom, left:right] = x[perm, top:bottom, left:right]
    return out, 1.0 - (bottom - top) * (right - left) / (h * w)
