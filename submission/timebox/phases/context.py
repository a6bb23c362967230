"""What every phase of one session shares: the settings, the session, the planner and the outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import keras
import numpy as np

from ..budget import Budget
from ..config import OnlineConfig
from ..models.feature_store import FeatureStore
from ..models.registry import BackboneSpec
from ..outputs import Outputs
from ..plan import Planner
from ..predict import predict_batches
from ..progress import Progress
from ..recovery import RunState
from ..session import Session
from ..train.recipe import Recipe


@dataclass
class Context:
    cfg: OnlineConfig
    session: Session
    planner: Planner
    outputs: Outputs
    spec: BackboneSpec
    num_classes: int
    cache_dir: Path
    feature_store: FeatureStore | None = None  # activations shared with other runs (--feature-cache)
    recipe: Recipe = Recipe()  # the loss, class weights and costs every trainer follows
    devices: tuple[str, ...] = ()  # the fine-tune's replicas (setting replicas; empty: one device)

    @property
    def log(self) -> Progress:
        return self.session.log

    @property
    def budget(self) -> Budget:
        return self.session.budget

    @property
    def state(self) -> RunState:
        return self.session.state

    def predict(self, model: keras.Model, views: list[np.ndarray]) -> np.ndarray:
        """``model``'s outputs averaged over ``views``, in batches of the setting ``activation_batch``."""
        return predict_views(model, views, self.cfg.activation_batch)


def predict_views(model: keras.Model, views: list[np.ndarray], batch: int = 32) -> np.ndarray:
    """The model's outputs averaged over views (e.g. original and mirrored), in fixed-size batches."""
    return sum(predict_batches(model, view, batch) for view in views) / len(views)
