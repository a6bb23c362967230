"""The training recipe every trainer of a run follows: the loss, its label smoothing, the class weights, the head's
shape, the epochs' sampling and mixing, the learning-rate schedule and the image augmentation (settings ``loss``,
``label_smoothing``, ``class_weight``, ``cost_matrix``, ``head``, ``head_dropout``, ``head_hidden``,
``cosine_scale``, ``sampling``, ``mixup``, ``cutmix``, ``lr_schedule``, ``augment``).

- ``loss``: ``crossentropy``, or ``focal`` (Lin et al. 2017, gamma 2: well-classified images weigh less).
- ``class_weight``: ``none``; ``balanced`` (each class weighs as much in total: n / (k * n_c)); ``effective``
  (Cui et al. 2019, by the effective number of samples, beta 0.999). Weights are scaled so that the mean weight of
  a training image is 1, so the learning rate means the same with and without them.

- ``cost_matrix``: a JSON file of confusion costs (:mod:`timebox.train.costs`) added to the loss.
- ``head`` and the rest: :class:`timebox.models.heads.HeadSpec`, :mod:`timebox.train.sampling`,
  :mod:`timebox.train.schedules`, :mod:`timebox.train.augment`.

The early head (numpy) follows the class weights and the smoothing, with cross-entropy whatever ``loss`` says and
no costs.

Example::

    recipe = Recipe(loss="focal", class_weight="balanced")
    model.compile(optimizer, loss=recipe.keras_loss(y, 5))
    model.fit(x, y, class_weight=recipe.class_weights(y, 5))
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from ..errors import UsageError
from ..models.heads import HeadSpec
from ..models.losses import FOCAL_GAMMA, SmoothedSparse, SparseFocal, select_loss
from ..settings import SETTING
from .augment import ImageAugment, ImageMixer
from .costs import read_costs
from .sampling import Mixer

EFFECTIVE_BETA = 0.999


@dataclass(frozen=True)
class Recipe:
    """The defaults are the settings' (timebox.settings)."""

    loss: str = SETTING["loss"].default
    label_smoothing: float = SETTING["label_smoothing"].default
    class_weight: str = SETTING["class_weight"].default
    costs: tuple[tuple[float, ...], ...] | None = None  # the confusion costs (timebox.train.costs), rows: true class
    head: HeadSpec = HeadSpec(SETTING["head"].default, SETTING["head_dropout"].default, SETTING["head_hidden"].default)
    sampling: str = SETTING["sampling"].default
    mixup: float = SETTING["mixup"].default
    cutmix: float = SETTING["cutmix"].default
    lr_schedule: str = SETTING["lr_schedule"].default
    augment: str = SETTING["augment"].default

    @classmethod
    def of(cls, cfg, class_names: list[str] = ()) -> "Recipe":
        """The recipe a run's settings give (its cost matrix read by the run's ``class_names``)."""
        if cfg.cost_matrix is not None and (cfg.mixup or cfg.cutmix):
            raise UsageError(f"cost_matrix {cfg.cost_matrix} weighs confusions of one true class; mixup and cutmix "
                             "train on mixed labels: set mixup and cutmix to 0, or cost_matrix to null")
        costs = None if cfg.cost_matrix is None else tuple(map(tuple, read_costs(cfg.cost_matrix, list(class_names))))
        scale = cfg.cosine_scale
        head = HeadSpec(cfg.head, cfg.head_dropout, cfg.head_hidden, HeadSpec.cosine_scale if scale is None else scale,
                        scale is None)  # null: learnt, from HeadSpec's default
        return cls(cfg.loss, cfg.label_smoothing, cfg.class_weight, costs, head, cfg.sampling, cfg.mixup, cfg.cutmix,
                   cfg.lr_schedule, cfg.augment)

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (mixup or cutmix): trained on soft labels."""
        return self.mixup > 0 or self.cutmix > 0

    def mixer(self, num_classes: int, images: bool = False) -> Mixer | ImageMixer:
        """The batch mixer (its ``on`` False: no mixing): numpy's on features and activations, Keras' layers on
        images."""
        return (ImageMixer if images else Mixer)(self.mixup, self.cutmix, num_classes)

    def image_augment(self, seed: int = 0, preprocess: str = "raw") -> ImageAugment:
        """The augmentation of training images (the image cut only), scaled by the backbone's ``preprocess``."""
        return ImageAugment(self.augment, seed, preprocess)

    def weights(self, labels: np.ndarray, num_classes: int) -> np.ndarray | None:
        """Each class's weight (None: all 1), a training image's mean weight 1; a class with no image gets 0."""
        if self.class_weight == "none":
            return None
        counts = np.bincount(np.asarray(labels).reshape(-1), minlength=num_classes).astype(np.float64)
        present = counts > 0
        w = np.zeros(num_classes)
        if self.class_weight == "balanced":
            w[present] = 1.0 / counts[present]
        else:
            w[present] = (1 - EFFECTIVE_BETA) / (1 - EFFECTIVE_BETA ** counts[present])
        return w * counts.sum() / (w * counts).sum()

    def class_weights(self, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
        """:meth:`weights` as Keras' ``class_weight`` argument."""
        w = self.weights(labels, num_classes)
        return None if w is None else {k: float(v) for k, v in enumerate(w)}

    def keras_loss(self, labels: np.ndarray, num_classes: int, soft: bool = False) -> keras.losses.Loss:
        """The Keras loss for ``labels`` (class ids or one-hot/soft labels; ``soft``: trained on mixed labels)."""
        ids = np.asarray(labels).ndim == 1 and not soft
        costs = None if self.costs is None else [list(row) for row in self.costs]
        if costs is not None and not ids:
            raise UsageError("a cost matrix needs class ids, not soft labels")
        if self.loss == "focal":
            return SparseFocal(num_classes, self.label_smoothing, costs=costs) if ids else \
                keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=FOCAL_GAMMA,
                                                          label_smoothing=self.label_smoothing)
        if costs is not None:
            return SmoothedSparse(num_classes, self.label_smoothing, costs=costs)
        if soft:
            return keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing)
        return select_loss(labels, num_classes, label_smoothing=self.label_smoothing)

