"""Stand-ins for the parts a phase reads, so that a phase's logic is tested without a backbone: a real
Planner on a real OnlineConfig, a real RunState, a session that records notes, and a scored model of plain
arrays."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from timebox.budget import Budget
from timebox.config import OnlineConfig
from timebox.plan import Counts, Planner
from timebox.recovery import RunState


class Weights:
    """Stands in for the scored model: weights that can be read, set and saved."""

    def __init__(self, value: float):
        self.w = [np.full(3, value)]

    def get_weights(self):
        return [w.copy() for w in self.w]

    def set_weights(self, weights):
        self.w = [np.array(w, dtype=float) for w in weights]

    def save_weights(self, path):
        np.save(path + ".npy", self.w[0])


def planner(counts: Counts, cut: int | None = 3, top_rate: float = 100.0, ft_image_s: float = 0.01,
            n_views: int = 2, budget_s: float = 1e6, interrupted: bool = False, **settings) -> Planner:
    """A planner with these counts and rates (cut 0 is the image cut)."""
    cfg = OnlineConfig(Path("train"), None, Path("out"), budget_s, **settings)
    budget = Budget(budget_s)
    if interrupted:
        budget.interrupt()
    p = Planner(cfg, budget, SimpleNamespace(image=0, default=12))
    p.counts, p.cut, p.n_views = counts, cut, n_views
    p.measured.top_rate, p.measured.ft_image_s, p.measured.rate = top_rate, ft_image_s, 100.0
    return p


def context(tmp_path: Path, planner: Planner, record=None) -> SimpleNamespace:
    """A context whose session keeps notes, whose outputs hold ``record`` (an OutputRecord) and whose predict
    asks the model."""
    from timebox.outputs import OutputRecord  # here: the planner's tests run without Keras

    notes = []
    session = SimpleNamespace(notes=notes, note=notes.append,
                              phase=lambda *a, **k: None)
    outputs = SimpleNamespace(record=record or OutputRecord(), path=Path("OUT/predictions.csv"))
    return SimpleNamespace(planner=planner, state=RunState(tmp_path), session=session, outputs=outputs,
                           budget=planner.budget, log=lambda message: None, cfg=planner.cfg,
                           predict=lambda model, views: model.predict(views))
