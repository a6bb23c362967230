"""Scoring: every model a phase trains (the head, each fine-tune epoch) is scored on val, kept among the top
checkpoints if it is one of the best, kept as an ensemble candidate, and offered to the outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ..checkpoints import CheckpointManager
from ..metrics import accuracy, log_loss
from ..outputs import OutputRecord
from .activations import Activations
from .context import Context


@dataclass
class Candidate:
    """A scored model kept for the ensemble: its val probabilities per view, and its checkpoint (or, for the last
    epoch when it is not among the top checkpoints, its weights)."""

    val: list[np.ndarray]
    path: Path | None
    val_accuracy: float
    weights: list[np.ndarray] | None


@dataclass
class Scored:
    """The last model scored: its val accuracy (None: it trained on the val images) and source."""

    val_accuracy: float | None = -1.0
    source: str | None = None


class Scorer:
    """The scored model (the top from the cut, and the head) and what scoring it keeps: the checkpoints, the
    ensemble's candidates, the last model scored, and the output's val probabilities (``output_val``, when this
    session scored it: a refit output's report shows the output before it, on val images it had not trained on)."""

    def __init__(self, ctx: Context, acts: Activations, scored: keras.Model, n_views: int,
                 checkpoints: CheckpointManager):
        self.ctx, self.acts, self.scored, self.n_views, self.checkpoints = ctx, acts, scored, n_views, checkpoints
        self.candidates: dict[str, Candidate] = {}  # source -> candidate
        self.last = Scored(ctx.outputs.record.val_accuracy, ctx.outputs.record.source)
        self.output_val: np.ndarray | None = None
        checkpoints.protected = ctx.outputs.record.checkpoint

    def score(self, phase: str, epoch: int, step: int,
              known: tuple[list[np.ndarray], np.ndarray | None] | None = None) -> Path | None:
        """Checkpoint the scored model if it is in the top k (returns its file); new predictions if it is the best
        yet. ``known``: its val probabilities per view and its test ones (or None), when known (see
        :func:`timebox.phases.head`)."""
        ctx, acts = self.ctx, self.acts
        ctx.session.collect_garbage()
        per_view = known[0] if known else [ctx.predict(self.scored, [view]) for view in acts.val]  # all: candidates
        probs = self.averaged(per_view)
        acc, loss = accuracy(probs, acts.y_val), log_loss(probs, acts.y_val)
        t = time.time()
        path = self.checkpoints.consider(lambda p: self.scored.save_weights(str(p)), model=ctx.spec.name,
                                         phase=phase, epoch=epoch, step=step, val_accuracy=acc, val_loss=loss)
        if path is not None:
            ctx.planner.measured.save_s = max(ctx.planner.measured.save_s, time.time() - t)
        self.last = Scored(float(acc), f"{phase} epoch {epoch}")
        ctx.session.scores.append({"time": time.time(), "phase": phase, "epoch": epoch, "val_accuracy": float(acc)})
        ctx.session.events.scalars(phase, epoch, {"val_accuracy": acc, "val_loss": loss,
                                                  "time_left_s": ctx.budget.remaining()})
        self.candidates[self.last.source] = Candidate(per_view, path, float(acc),
                                                      None if path else self.scored.get_weights())
        kept = {e["file"] for e in self.checkpoints.entries}
        self.candidates = {k: c for k, c in self.candidates.items()
                           if k == self.last.source or (c.path is not None and c.path.name in kept)}
        record = ctx.outputs.record
        if ctx.outputs.improves(acc) and (record.source is None or not ctx.planner.expired()):
            self.write(OutputRecord(float(acc), self.last.source, checkpoint=path.name if path else None),
                       test_probs=known[1] if known else None)
            self.output_val = probs
        return path

    def write(self, record: OutputRecord, test_probs: np.ndarray | None = None) -> None:
        """The scored model's test predictions (``test_probs`` if known) become the output, described by ``record``."""
        acts = self.acts
        if test_probs is None:
            test_probs = (self.ctx.predict(self.scored, [v[: acts.n_test] for v in acts.test[: self.n_views]])
                          if acts.n_test else np.zeros((0, self.ctx.num_classes), np.float32))
        self.ctx.outputs.adopt(test_probs, acts.usable, record)
        self.checkpoints.protected = record.checkpoint

    def averaged(self, per_view: list[np.ndarray]) -> np.ndarray:
        """Probabilities per view averaged over the views the output uses (its flip TTA)."""
        return sum(per_view[: self.n_views]) / self.n_views

    def stands(self, record: OutputRecord, val_probs: list[np.ndarray] | None = None) -> None:
        """The predictions written are those of ``record`` (see :meth:`timebox.outputs.Outputs.stands`);
        ``val_probs``: its val probabilities per view, when known."""
        self.ctx.outputs.stands(record)
        self.checkpoints.protected = record.checkpoint
        if val_probs is not None:
            self.output_val = self.averaged(val_probs)

    def output_weights(self) -> tuple[str, str] | None:
        """The file with the output's weights and the output's source, unless the output is final (its weights are
        the scored model's in memory): its checkpoint, or the best one when it has none (written while k better
        checkpoints were kept); None when no checkpoint is kept."""
        record, top = self.ctx.outputs.record, self.checkpoints.best()
        if record.final:
            return None
        own = self.checkpoints.path(record.checkpoint) if record.checkpoint else None
        if own is not None:
            return str(own), record.source
        return (top["path"], f"{top['phase']} epoch {top['epoch']}") if top is not None else None

    def sync_with_checkpoints(self) -> None:
        """After a kill between a checkpoint and its predictions: predict with the best checkpoint."""
        top, record = self.checkpoints.best(), self.ctx.outputs.record
        if top is not None and top["val_accuracy"] > record.val_accuracy and not record.final:
            current = self.scored.get_weights()
            self.scored.load_weights(top["path"])
            self.write(OutputRecord(top["val_accuracy"], f"{top['phase']} epoch {top['epoch']}",
                                    checkpoint=top["file"]))
            self.scored.set_weights(current)

    def val_probs(self, source: str) -> np.ndarray:
        """The val probabilities of the model ``source`` on its views: kept if scored in this session, else those
        of the scored model in memory."""
        if source in self.candidates:
            return self.averaged(self.candidates[source].val)
        return self.ctx.predict(self.scored, self.acts.val[: self.n_views])
