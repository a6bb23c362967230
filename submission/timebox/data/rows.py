"""The rows of several arrays read as one array, without copying them: e.g. the cached activations of the
training images followed by those of the val images, for a fine-tune round that trains on both.

Example::

    both = ConcatRows([train_views[0], val_views[0]])
    both[np.array([0, len(train_views[0])])]  # the first training image's and the first val image's rows
"""

from __future__ import annotations

import numpy as np


class ConcatRows:
    """``parts`` (arrays with the same trailing shape and dtype) stacked along their first axis, read-only,
    indexed with an integer array."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.offsets[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range 0..{len(self) - 1}")
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        part = np.searchsorted(self.offsets, idx, side="right") - 1
        for p, array in enumerate(self.parts):
            sel = part == p
            if sel.any():
                out[sel] = array[idx[sel] - self.offsets[p]]
        return out
