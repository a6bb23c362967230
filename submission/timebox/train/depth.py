"""How deep fine-tuning goes: the deepest cut of the backbone whose epochs still fit the budget.

Fine-tuning trains the blocks after a cut on cached activations. Cutting deeper trains more of
the backbone, for more compute per step and more memory per cached image. On trashnet, at equal
epochs (8), fine-tuning EfficientNet-Lite0 from block 5 scored better than from block 12, at
about 2.7 times the time per epoch (bench/RESULTS.md). A deep cut needs its epochs, though, so
the deepest cut is chosen at which ``min_epochs`` epochs still fit in the time fine-tuning will
get and whose activations fit in memory; else the default cut (the last blocks).

Example::

    plan = choose_cut([CutCost(12, 0.0026, 18_816), CutCost(5, 0.0084, 62_720)], time_s=600, n_train=1700,
                      n_scored=800, images=5000, free_bytes=20e9, min_epochs=10)
    plan.cut, plan.reason
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CutCost:
    """One cut: where it is, seconds per image of the part after it (inference), and bytes of one image's
    cached activations."""

    cut: int
    top_s: float
    image_bytes: int


@dataclass(frozen=True)
class CutPlan:
    cut: int
    epochs: dict[int, float]  # cut -> estimated fine-tune epochs in the time given
    cost_ratio: float  # the chosen cut's cost per image relative to the default cut's
    reason: str


MEMORY_SHARE = 0.5  # cached activations may take at most this share of the free memory (and disk: a copy is kept)
TRAIN_PER_INFER = 3.0  # a training step per image over inference per image, of the same part (2.7-3.3 measured)


def choose_cut(costs: list[CutCost], time_s: float, n_train: int, n_scored: int, images: int, free_bytes: float,
               min_epochs: float, train_per_infer: float = TRAIN_PER_INFER, image_cut: int | None = None,
               image_min_epochs: float | None = None, n_once: int = 0) -> CutPlan:
    """The deepest of ``costs`` (the default cut first, then deeper ones) whose estimated epochs in
    ``time_s`` reach ``min_epochs`` and whose cached activations of ``images`` images fit in
    ``MEMORY_SHARE`` of ``free_bytes``; the default cut when none does.

    ``n_once`` images go through the part after the cut once, outside the epochs (pooled for the head,
    the output's test predictions): the deeper the cut, the more of ``time_s`` they take.
    An epoch trains ``n_train`` images (``train_per_infer`` times the inference cost each) and
    scores ``n_scored`` (val and test views), all with the part after the cut. ``image_cut`` is the cut
    whose activations are the images (the whole backbone trained on random crops): it needs
    ``image_min_epochs`` (default ``min_epochs``), as crops pay off only over more epochs.

    >>> choose_cut([CutCost(12, 0.002, 100), CutCost(5, 0.008, 400)], time_s=600, n_train=1000, n_scored=500,
    ...            images=3000, free_bytes=1e9, min_epochs=10).cut
    5
    """
    default = costs[0]
    epochs = {c.cut: max(time_s - c.top_s * n_once, 0.0) / max(c.top_s * (n_train * train_per_infer + n_scored), 1e-9)
              for c in costs}
    wanted = {c.cut: image_min_epochs if c.cut == image_cut and image_min_epochs is not None else min_epochs
              for c in costs}
    fits = [c for c in costs[1:]
            if epochs[c.cut] >= wanted[c.cut] and c.image_bytes * images <= MEMORY_SHARE * free_bytes]
    if not fits:
        return CutPlan(default.cut, epochs, 1.0, f"fine-tuning from block {default.cut}: no deeper cut fits "
                                                 f"{min_epochs:g} epochs and its activations in memory")
    chosen = fits[-1]
    where = ("the whole backbone, on augmented images" if chosen.cut == image_cut
             else f"from block {chosen.cut}")
    return CutPlan(chosen.cut, epochs, chosen.top_s / default.top_s,
                   f"fine-tuning {where} (default: from block {default.cut}): ~{epochs[chosen.cut]:.0f} epochs "
                   f"fit, at least {wanted[chosen.cut]:g} wanted")
