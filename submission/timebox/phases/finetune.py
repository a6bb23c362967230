"""Fine-tune: the backbone's blocks after the cut and the head, trained on the cached activations for the time the
planner gives, in one round or two (each from the head on the pretrained top, with its own shuffling; their
annealed ends' weights averaged: bench/RESULTS.md, 2026-11-25 night). With refit, the last round trains on the
val images too (bench/RESULTS.md, 2026-11-25 morning). Each round keeps a recovery state in ``OUT/state/``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.rows import ConcatRows
from ..train.callbacks import DeadlineStop, EpochEvents
from ..train.finetune import FineTuneState, RecoveryState, ScoreEpoch, fine_tune, freeze_batch_norm
from .context import Context
from .output_rules import prefer_annealed_end, refit_output
from .scoring import Scored, Scorer

AVERAGE = "finetune_average"  # the state record of the rounds' average


@dataclass
class FineTuneOutcome:
    """The rounds run (each one's result as :class:`timebox.train.finetune.FineTuneResult` fields), how many were
    planned, and whether the refit round finished."""

    results: list[dict] = field(default_factory=list)
    rounds: int = 0
    refit: bool = False
    averaged: bool = False  # two rounds' ends were averaged

    def info(self) -> dict:
        if not self.results:
            return {}
        info = {**self.results[-1], "rounds": self.rounds, "refit": self.refit}
        return {**info, "round_results": self.results} if self.averaged else info


@dataclass
class _Round:
    """Round ``r`` (from 0) of ``rounds``: its record and phase names."""

    r: int
    rounds: int
    refit: bool

    @property
    def record(self) -> str:
        return "finetune" if self.r == 0 else f"finetune{self.r + 1}"

    @property
    def phase(self) -> str:
        return "finetune" if self.r == 0 else f"finetune {self.r + 1}"


class FineTunePhase:
    """Fine-tuning in rounds (see the module's docstring); ``round`` can be replaced to test the rounds' logic."""

    def __init__(self, ctx: Context, scorer: Scorer, image_cut: bool):
        self.ctx, self.scorer, self.image_cut = ctx, scorer, image_cut

    def run(self, refit: bool) -> FineTuneOutcome:
        """The rounds, then the end the output rules weigh: the refit model, or the annealed end (the average of
        two rounds' ends)."""
        ctx, planner, scorer = self.ctx, self.ctx.planner, self.scorer
        refit = refit and len(scorer.acts.y_val) > 0
        eval_s = planner.scoring_s()  # every val view is scored (candidates); test when it is the best
        first = ctx.state.read("finetune", load_arrays=False)
        rounds = first["info"].get("rounds", 1) if first else planner.rounds(planner.fine_tune_time() - eval_s, eval_s)
        start = scorer.scored.get_weights()  # where every round starts
        outcome, ends = FineTuneOutcome(rounds=rounds), []
        for r in range(rounds):
            if r:
                scorer.scored.set_weights(start)
            # each round ends by saving its weights, and so does the average; the end is scored after the last
            time_s = planner.round_time(r, rounds, eval_s, scored_end=rounds > 1 or refit)
            done = self.round(_Round(r, rounds, refit and r == rounds - 1), time_s, eval_s)
            if done is None:
                break
            result, end = done
            outcome.results.append(result)
            if end is None:  # stopped by the deadline: the best checkpoint stands
                break
            ends.append(end)
        if not outcome.results:
            return outcome
        outcome.refit = refit and len(ends) == rounds  # the refit round finished
        outcome.averaged = len(ends) == 2
        if outcome.averaged:
            self.average(ends, outcome.results, scored=not refit)
        if outcome.refit:
            refit_output(ctx, scorer)
        elif ends and len(ends) == len(outcome.results):  # the last round run ended annealed, scored on val
            prefer_annealed_end(ctx, scorer)
        return outcome

    def average(self, ends: list[list[np.ndarray]], results: list[dict], scored: bool) -> None:
        """The rounds' ends' weights averaged into the scored model, scored on val if ``scored`` (not after a refit:
        its round trained on the val images), and recorded for a resumed session."""
        ctx, scorer = self.ctx, self.scorer
        record = ctx.state.read(AVERAGE)
        if record is not None:
            scorer.scored.load_weights(record["weights"])
            scorer.last = Scored(**record["info"]["last"])
            return
        scorer.scored.set_weights([np.mean(w, axis=0) for w in zip(*ends)])  # all float32 (frozen BN's too)
        epochs, steps = sum(r["epochs_run"] for r in results), sum(r["steps_planned"] for r in results)
        if scored:
            scorer.score("finetune average", epochs, steps)
        else:
            scorer.last = Scored(None, f"finetune average epoch {epochs}")
        ctx.state.write(AVERAGE, {"last": asdict(scorer.last)}, weights=scorer.scored)

    def round(self, rnd: _Round, time_s: float, eval_s: float) -> tuple[dict, list[np.ndarray] | None] | None:
        """One round for ``time_s`` from the weights in the scored model (or from where a killed session left it):
        its result and its end's weights (None if the deadline stopped it), or None if it was skipped. A refit
        round trains on the val images too, so its epochs are not scored: no checkpoint, no output until its end."""
        ctx, scorer = self.ctx, self.scorer
        record = ctx.state.read(rnd.record)
        if record is not None and record["info"].get("finished"):
            if not record["weights"]:  # no epoch fitted: as the session that ran it returned
                return record["info"]["result"], None
            scorer.scored.load_weights(record["weights"])
            scorer.last = Scored(**record["info"]["last"])
            return record["info"]["result"], scorer.scored.get_weights()
        if ctx.planner.expired():
            return None
        if record is None and not ctx.planner.fine_tune_fits(time_s):
            ctx.session.note(f"fine-tuning skipped: {max(time_s, 0):.0f}s left cannot fit its setup and a useful epoch")
            return None
        t = time.time()
        freeze_batch_norm(scorer.scored)
        resume = None
        if record is not None:
            scorer.scored.load_weights(record["weights"])
            resume = FineTuneState(**record["info"]["state"], optimizer_variables=list(record["arrays"].values()))
            ctx.log(f"fine-tuning resumed after epoch {resume.epoch} of {resume.epochs_planned}")
        self._announce(rnd, time_s)
        ft = self._train(rnd, time_s, eval_s, resume)
        result = asdict(ft)
        ctx.planner.measured.ft_setup_s = max(ctx.planner.measured.ft_setup_s, ft.setup_s)
        ctx.session.phase(rnd.phase, t, time_s, **result, refit=rnd.refit, save_s=round(ctx.planner.measured.save_s, 2))
        if ft.epochs_planned == 0:
            ctx.session.note("fine-tuning skipped: not one epoch fits in the time left")
        if ft.stopped_by_deadline:
            return result, None
        if ft.epochs_run == 0:
            ctx.state.write(rnd.record, {"finished": True, "result": result, "rounds": rnd.rounds})
            return result, None
        ctx.state.write(rnd.record, {"finished": True, "result": result, "last": asdict(scorer.last),
                                     "rounds": rnd.rounds}, weights=scorer.scored)
        return result, scorer.scored.get_weights()

    def _announce(self, rnd: _Round, time_s: float) -> None:
        ctx = self.ctx
        where = f"whole, on images augmented by {ctx.recipe.augment}" if self.image_cut else \
            f"from block {ctx.planner.cut}"
        line = (f"fine-tuning {ctx.spec.name} {where} for up to {time_s:.0f}s"
                + (" on the training and val images (refit)" if rnd.refit else "")
                + (f" (round {rnd.r + 1} of {rnd.rounds})" if rnd.rounds > 1 else "")
                + (f" on {len(ctx.devices)} replicas ({', '.join(ctx.devices)})" if ctx.devices else ""))
        ctx.log(line)
        size = self.scorer.acts.size
        ctx.session.events.text("plan", line + (f"; input size {size} px" if size else ""), step=rnd.r)

    def _train(self, rnd: _Round, time_s: float, eval_s: float, resume: FineTuneState | None):
        """:func:`timebox.train.finetune.fine_tune` on the round's images, scoring each epoch (not a refit's) and
        writing the recovery state at most every ``state_every_s``."""
        ctx, scorer, acts = self.ctx, self.scorer, self.scorer.acts
        views, labels = acts.train, acts.y_train
        if rnd.refit:
            views = [ConcatRows([t, v]) for t, v in zip(acts.train, acts.val)]
            labels = np.concatenate([acts.y_train, acts.y_val])
        name = rnd.phase.replace("finetune", "fine-tune")

        def on_epoch(epoch: int, step: int) -> float | None:
            if rnd.refit:  # the val images are training images now: nothing to score
                scorer.last = Scored(None, f"{rnd.phase} epoch {epoch}")
                ctx.log(f"{name} epoch {epoch} (refit)")
                return
            scorer.score(rnd.phase, epoch, step)
            ctx.log(f"{name} epoch {epoch}: best val accuracy {ctx.outputs.record.val_accuracy:.4f}")
            return scorer.last.val_accuracy

        saved = {"at": -np.inf, "cost": 0.0}  # the last recovery state: when, and its seconds to write

        def on_state(s: FineTuneState) -> None:
            ctx.log.status(rnd.phase, s.epoch, s.epochs_planned, best=ctx.outputs.record.val_accuracy)
            if not ctx.planner.state_due(time.time() - saved["at"], saved["cost"]):
                return
            started = time.time()
            info = {k: v for k, v in asdict(s).items() if k != "optimizer_variables"}
            ctx.state.write(rnd.record, {"state": info, "rounds": rnd.rounds}, weights=scorer.scored,
                            arrays={f"v{i:04d}": v for i, v in enumerate(s.optimizer_variables)})
            saved.update(at=time.time(), cost=time.time() - started)

        callbacks = [DeadlineStop(ctx.planner.expired), ScoreEpoch(on_epoch),
                     EpochEvents(ctx.session.events, rnd.phase, ctx.budget.remaining), RecoveryState(on_state)]
        augment = ctx.recipe.image_augment(ctx.cfg.seed, ctx.spec.preprocess) if self.image_cut else None
        return fine_tune(scorer.scored, views, labels, ctx.num_classes, time_s, 0.0 if rnd.refit else eval_s,
                         callbacks, seed=ctx.cfg.seed + rnd.r, batch_size=ctx.cfg.batch_size, lr=ctx.cfg.finetune_lr,
                         resume=resume, augment=augment, recipe=ctx.recipe, devices=list(ctx.devices))
