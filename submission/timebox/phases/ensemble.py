"""Ensemble (no refit): a vote over the kept checkpoints and test-time views, and the second backbone's head, used
only if it beats the best single candidate on held-out val (:func:`timebox.ensemble.choose`); under
``latency_ms``, members are dropped least weight first (:mod:`.members`). The zoomed views join the candidates
when their cost fits ``zoom_share`` of the budget."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import numpy as np

from ..ensemble import vote
from ..metrics import accuracy
from ..models.ensemble_model import VIEWS
from ..outputs import OutputRecord
from ..plan import CACHED_VIEWS
from .context import Context
from .extract import Extraction
from .latency import measure_latency
from .members import Members, candidate_name
from .model import single_model
from .scoring import Scorer
from .second import SecondMember


@dataclass
class EnsembleOutcome:
    """The phase's report (rule, reason, candidates, members...) and, when the vote is the output, its model and
    val probabilities."""

    info: dict = field(default_factory=dict)
    model: keras.Model | None = None
    val_probs: np.ndarray | None = None


class EnsemblePhase:
    def __init__(self, ctx: Context, ext: Extraction, scorer: Scorer, second: SecondMember | None, head: keras.Model):
        self.ctx, self.ext, self.scorer, self.second, self.head = ctx, ext, scorer, second, head
        self.members = Members(ctx, ext, scorer, second)

    def run(self) -> EnsembleOutcome:
        ctx, planner = self.ctx, self.ctx.planner
        t = time.time()
        if len(self.scorer.candidates) + (self.second is not None) < 2:
            ctx.session.note("no ensemble: fewer than two scored models to vote over in this session")
            return EnsembleOutcome()
        if not planner.ensemble_time:  # the head gave its time to fine-tuning, and said so
            return EnsembleOutcome({"used": False})
        ctx.session.collect_garbage(0.0)
        plan, planned_s = planner.ensemble_plan(), planner.ensemble_s()
        if ctx.budget.interrupted or not plan or not planner.starts(plan["test"] + plan["round"]):
            ctx.session.note("ensemble phase skipped: interrupted, or no time left to predict the test set with the "
                             "candidates")
            return EnsembleOutcome({"used": False})
        planned = planner.zoom_views()  # as many as still fit before the test predictions and latency rounds
        zoom_views = list(range(CACHED_VIEWS, CACHED_VIEWS + planner.zoom_views_left(
            planned, plan["test"] + plan["latency"])))
        if len(zoom_views) < planned:
            ctx.session.note(f"{planned - len(zoom_views)} zoomed view(s) skipped: the phases before ran past their "
                             "plan")
        keys, val, choice, used_zoomed = self.members.choose(zoom_views, plan)
        info = {"rule": choice.rule, "reason": choice.reason, "heldout": choice.heldout,
                "single_heldout": choice.single_heldout, "candidates": [
                    {"source": source, "view": VIEWS[v].name, "val_accuracy": accuracy(val[i], self.acts.y_val),
                     "weight": float(choice.weights[i])} for i, (source, v) in enumerate(keys)]}
        ctx.log(f"ensemble: {choice.reason}")
        ctx.session.note(f"ensemble: {choice.reason}")
        test = self.members.test_probs(keys, used_zoomed, ctx.cfg.plan_overrun * plan["round"])
        if test is None:
            ctx.session.note("ensemble phase stopped: the deadline came while predicting the test set")
            return EnsembleOutcome({**info, "used": False})
        self._save_probs(keys, val, test)
        if choice.rule == "single":
            latency = measure_latency(single_model(self.ext.extractor, self.head, self.scorer.scored,
                                                   self.scorer.n_views),
                                      self.ext.size, self.scorer.n_views, ctx.cfg.latency_images, planner.measured)
            ctx.session.phase("ensemble", t, planned_s, rule=choice.rule, p95_latency_ms=latency)
            return EnsembleOutcome({**info, "used": False, "p95_latency_ms": latency,
                                    "latency_budget_ms": ctx.cfg.latency_ms})
        return self._adopt(keys, val, test, choice, info, t, planned_s)

    @property
    def acts(self):
        return self.ext.acts

    def _save_probs(self, keys, val, test) -> None:
        """Every candidate's test and val probabilities, to study other rules offline."""
        report = self.ctx.session.out / "report"
        np.savez_compressed(report / "ensemble_test_probs.npz", **{candidate_name(key): p for key, p in test.items()})
        np.savez_compressed(report / "ensemble_val_probs.npz", labels=self.acts.y_val,
                            **{candidate_name(key): p for key, p in zip(keys, val)})

    def _adopt(self, keys, val, test, choice, info: dict, t: float, planned_s: float) -> EnsembleOutcome:
        """The chosen vote, within the latency budget, becomes the output unless pruning took it below the output."""
        ctx, planner = self.ctx, self.ctx.planner
        used = [int(i) for i in np.flatnonzero(choice.weights > 0)]
        if planner.expired(ctx.cfg.plan_overrun * planner.ensemble_plan()["round"]):  # re-planned: traces measured
            ctx.session.note("ensemble not used: no time left to build it and measure its latency")
            return EnsembleOutcome({**info, "used": False})
        weights = choice.weights[used] / choice.weights[used].sum()
        n_chosen = len(used)
        used, weights, model, latency = self.members.within_latency(keys, used, weights, choice.confidence)
        val_probs = vote(val[used], weights, choice.confidence).astype(np.float32)
        test_probs = vote(np.stack([test[keys[i]] for i in used]), weights, choice.confidence)
        acc, record = accuracy(val_probs, self.acts.y_val), ctx.outputs.record
        latency_info = {"p95_latency_ms": latency, "latency_budget_ms": ctx.cfg.latency_ms}
        if len(used) < n_chosen and acc < record.val_accuracy:  # pruned below the guard's choice
            ctx.session.note(f"ensemble not used: pruned to {len(used)} candidates for the latency budget, its val "
                             f"accuracy {acc:.4f} is below the output's {record.val_accuracy:.4f}")
            return EnsembleOutcome({**info, "used": False, **latency_info})
        if ctx.budget.interrupted:
            return EnsembleOutcome({**info, "used": False})
        source = f"ensemble ({choice.rule}, {len(used)} members)"
        ctx.outputs.export(model, float(acc))  # OUT/model must hold what predictions.csv says, also after a kill
        ctx.outputs.adopt(test_probs, self.acts.usable, OutputRecord(float(acc), source, final=True, exported=True))
        info.update(used=True, members=self.members.report(keys, used, weights, val), val_accuracy=acc,
                    **latency_info)
        if ctx.cfg.latency_ms is not None and latency > ctx.cfg.latency_ms:
            ctx.session.note(f"p95 latency {latency:.0f}ms of the output stays over --latency-ms "
                             f"{ctx.cfg.latency_ms:.0f}")
        ctx.session.phase("ensemble", t, planned_s, rule=choice.rule, members=len(used), p95_latency_ms=latency)
        ctx.log(f"wrote {ctx.outputs.path} from {source} (val accuracy {acc:.4f}, p95 latency {latency:.0f}ms a image)")
        return EnsembleOutcome(info, model, val_probs)
