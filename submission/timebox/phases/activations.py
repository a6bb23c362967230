"""The cached activations of every view (the extract phase's result, kept in ``OUT/state/``), and the pooled
features computed from them (through the backbone's top), reused by every phase that needs them.

Runs sharing an output folder take ``activations.lock`` there: exclusive to save, shared to load, so none
reads a record another is replacing or writes the same generation's files at once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..filelock import FileLock
from ..recovery import RunState

if TYPE_CHECKING:
    import keras

RECORD = "activations"


@dataclass
class Activations:
    """Cached activations of every view (original, mirrored) and what extraction learned."""

    val: list[np.ndarray]
    test: list[np.ndarray]
    train: list[np.ndarray]
    y_val: np.ndarray
    y_train: np.ndarray
    usable: np.ndarray  # test files that get a model's prediction (readable and extracted)
    rate: float  # images per second through the bottom
    ft_image_s: float  # estimated seconds of a fine-tune step per image (until fine-tuning measures it)
    cut: int | None  # the block the cached activations enter (None: the backbone is not split)
    size: int | None  # the input size they were extracted at (None: a state written before sizes could shrink)
    quarantine: list[dict]
    unreadable_test: list[dict]
    notes: list[str]

    @property
    def n_test(self) -> int:
        return len(self.test[0])

    def save(self, state: RunState) -> None:
        arrays = {f"{part}{i}": v for part in ("val", "test", "train") for i, v in enumerate(getattr(self, part))}
        arrays.update(y_val=self.y_val, y_train=self.y_train, usable=self.usable)
        with _lock(state).held(exclusive=True):
            state.write(RECORD, {"views": [len(self.val), len(self.test), len(self.train)], "rate": self.rate,
                                 "ft_image_s": self.ft_image_s, "cut": self.cut, "size": self.size,
                                 "quarantine": self.quarantine, "unreadable_test": self.unreadable_test,
                                 "notes": self.notes}, arrays=arrays)

    @classmethod
    def load(cls, state: RunState) -> "Activations | None":
        if not state.folder.is_dir():
            return None
        with _lock(state).held(exclusive=False):
            record = state.read(RECORD)
        if record is None:
            return None
        info, a = record["info"], record["arrays"]
        views = {part: [a[f"{part}{i}"] for i in range(n)] for part, n in zip(("val", "test", "train"), info["views"])}
        return cls(**views, y_val=a["y_val"], y_train=a["y_train"], usable=a["usable"], rate=info["rate"],
                   ft_image_s=info["ft_image_s"], cut=info["cut"], size=info.get("size"), quarantine=info["quarantine"],
                   unreadable_test=info["unreadable_test"], notes=info["notes"])


def _lock(state: RunState) -> FileLock:
    return FileLock(state.folder / f"{RECORD}.lock")


class Pooler:
    """Views of cached activations through the top (pooled features), each computed once and kept until
    :meth:`clear`; ``rate`` is the top's measured images per second."""

    def __init__(self, top: keras.Model | None, predict: Callable[[keras.Model, list[np.ndarray]], np.ndarray]):
        self.top, self.predict = top, predict
        self.rate: float | None = None
        self._pooled: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(activations) -> (them, pooled features)

    def __call__(self, views: list[np.ndarray]) -> list[np.ndarray]:
        """Each view's pooled features (without a top, the activations are the features)."""
        if self.top is None:
            return list(views)
        todo = [v for v in views if id(v) not in self._pooled]
        t = time.time()
        for v in todo:
            self._pooled[id(v)] = (v, self.predict(self.top, [v]))  # the array kept: its id stays unique
        if n := sum(len(v) for v in todo):  # no test files: an empty view says nothing of the speed
            self.rate = n / max(time.time() - t, 1e-3)
        return [self._pooled[id(v)][1] for v in views]

    def known(self, views: list[np.ndarray]) -> list[np.ndarray] | None:
        """The pooled features of ``views`` if every one was pooled already, else None."""
        kept = [self._pooled.get(id(v)) for v in views]
        return None if None in kept else [p for _, p in kept]

    def clear(self) -> None:
        self._pooled.clear()
