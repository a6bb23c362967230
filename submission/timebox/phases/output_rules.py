"""Which model is the output at the end of fine-tuning: the annealed end of the schedule unless clearly worse on
val; after a refit, the refit model unless it fits the val images it trained on worse than the output did unseen."""

from __future__ import annotations

from ..metrics import accuracy, noise_margin
from ..outputs import OutputRecord
from .context import Context
from .scoring import Scorer


def end_test_fits(ctx: Context, candidate: str) -> bool:
    """Whether the scored model's test predictions fit before the end reserve; if not, the notes say that
    ``candidate`` (the scored model) is not the output."""
    test_s = ctx.planner.end_test_s()
    if ctx.planner.expired(test_s):
        ctx.session.note(f"{candidate} is not the output: its test predictions ({test_s:.0f}s) would not fit "
                         "before the end reserve")
        return False
    return True


def prefer_annealed_end(ctx: Context, scorer: Scorer) -> None:
    """Make the last epoch of a finished schedule the output unless it is more than 2 standard errors below the
    output's val accuracy. The output so far is the maximum of many noisy scores, biased upwards; the annealed end
    is the model the plan aimed at, and scored better on test (bench/RESULTS.md, "Choosing the output")."""
    record, last = ctx.outputs.record, scorer.last
    if record.final or record.source == last.source or ctx.budget.interrupted:
        return
    best, tolerance = record.val_accuracy, noise_margin(record.val_accuracy, len(scorer.acts.y_val))
    if last.val_accuracy < best - tolerance:
        return
    if not end_test_fits(ctx, f"the fine-tune's last epoch (val accuracy {last.val_accuracy:.4f})"):
        return
    scorer.write(OutputRecord(last.val_accuracy, f"{last.source} (end of the schedule)", final=True))
    ctx.session.note(f"the output is the fine-tune's last epoch (val accuracy {last.val_accuracy:.4f}): within 2 "
                     f"standard errors ({tolerance:.4f}) of the best earlier val accuracy {best:.4f}")
    ctx.log(f"wrote {ctx.outputs.path} from the end of the fine-tune schedule (val accuracy {last.val_accuracy:.4f}; "
            f"best earlier {best:.4f}, within 2 standard errors)")


def refit_output(ctx: Context, scorer: Scorer) -> None:
    """Make the refit model (its last round trained on the val images too) the output, unless it fits those val
    images (original view) worse than the output so far did unseen: a broken round, not noise. When the time left
    holds its test predictions but not that check, it is the output unchecked. Its val accuracy measures nothing:
    the output keeps the last unseen estimate."""
    record, planner = ctx.outputs.record, ctx.planner
    if record.final or ctx.budget.interrupted:  # written by an earlier session; or no time
        return
    unseen, source = record.val_accuracy, f"{scorer.last.source} (refit on the training and val images)"
    if not end_test_fits(ctx, "the refit model"):
        return
    check_s = planner.check_s()
    if planner.expired(planner.end_test_s() + check_s):  # a slowed machine: the output it was trained to be
        checked = f"not checked on the val images: its {check_s:.0f}s would not fit"
    else:
        seen = accuracy(ctx.predict(scorer.scored, scorer.acts.val[:1]), scorer.acts.y_val)  # the original view
        if seen < unseen:
            ctx.session.note(f"the refit model is not the output: on the val images it trained on it scored "
                             f"{seen:.4f}, below the output's {unseen:.4f} on them unseen")
            return
        checked = f"it scored {seen:.4f} on the val images it trained on"
    before = record.source
    scorer.write(OutputRecord(unseen, source, final=True, refit=True))
    ctx.session.note(f"the output is {source}: {checked}; the val accuracy reported, {unseen:.4f}, is that of the "
                     f"output before it ({before})")
    ctx.log(f"wrote {ctx.outputs.path} from {source}")
