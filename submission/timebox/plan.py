"""The budget's arithmetic in one place: what was measured, and what fits in the time left.

Phases record what they measure in :class:`Measured` and ask the :class:`Planner` whether a step
fits and how long it may take; they do no budget arithmetic of their own. The planner reads the
settings (:mod:`timebox.settings`, group "plan"), the image counts, the measurements and the time
left on the :class:`~timebox.budget.Budget`. No TensorFlow or Keras here: the tests table-drive it.

Example::

    planner = Planner(cfg, Budget(300), Cuts(...))
    planner.counts = Counts(val=300, test=500, train=1700)
    planner.measured.rate = 150.0
    if planner.fine_tune_fits(planner.fine_tune_time()): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .budget import Budget
from .train.depth import CutCost, CutPlan, choose_cut

CACHED_VIEWS = 2  # views extracted with the training images (original, mirrored); the zoomed ones come later
ZOOMED_VIEWS = 2  # the zoomed view and its mirror (timebox.models.ensemble_model.VIEWS[2:4]); then the corner
# crops (setting tta_crops, VIEWS[4:])


@dataclass
class Counts:
    """Images per part (``train``: those extracted) and cached views of val and test."""

    val: int
    test: int
    train: int
    views: int = 1


@dataclass
class Measured:
    """What the run measured so far (seconds unless said)."""

    rate: float = 0.0  # images per second through the bottom
    top_rate: float | None = None  # images per second through the top, pooling cached activations
    full_image_s: float | None = None  # one image through the whole backbone (None: not measured, or the image cut)
    ft_image_s: float = 0.0  # a fine-tune step per image (estimated until fine-tuning measures it)
    trace_s: float = 0.0  # tracing one view of a model: the largest planned or measured
    top_trace_s: dict[int, float] = field(default_factory=dict)  # a cut's top's inference trace
    ft_setup_s: float = 0.0  # the longest fine-tune round's setup measured
    save_s: float = 0.0  # the longest save of the scored model's weights
    export_s: float = 0.0  # the final export (a guess until the first export)
    single_latency_ms: float = 0.0  # p95 of the one-view backbone on one image (0: not measured)
    second_image_s: float | None = None  # one image through the second backbone (None: no second member)
    stored_s: float = 0.0  # extraction the feature store spares this run (the seconds its entries took)


@dataclass(frozen=True)
class HeadPlan:
    """The head's seconds, whether the ensemble phase keeps its time, whether the early head stays the head."""

    time_s: float
    ensemble_time: bool
    early: bool
    note: str | None


class Planner:
    """Every "does it fit / how long" of an online run, from the settings ``cfg``, the ``budget`` and ``cuts``
    (the backbone's cut points: ``default``, ``image``, ``share(cut)``, ``shape(size, cut)``, ``automatic()``)."""

    def __init__(self, cfg: Any, budget: Budget, cuts: Any = None):
        self.cfg, self.budget, self.cuts = cfg, budget, cuts
        self.measured = Measured(trace_s=cfg.trace_s, export_s=cfg.export_guess_s)
        self.counts: Counts | None = None
        self.margin_s = cfg.margin_s if cfg.margin_s is not None else max(5.0, 0.02 * cfg.budget_s)
        self.head_s = float(np.clip(cfg.head_share * cfg.budget_s, cfg.head_min_s, cfg.head_max_s))
        self.cut: int | None = None  # the block the cached activations enter (None: the backbone is not split)
        self.n_views = 1  # test-time views the scored model averages
        self.voting = False  # the run has an ensemble phase (no refit)
        self.ensemble_time = True  # False once the head gave the ensemble phase's time to fine-tuning
        self.second_planned = False  # a second backbone may join the candidates
        self.zoom_sources = False  # the decoded val and test images are at hand (not a resumed session)

    # the end reserve and the clock
    def reserve_s(self) -> float:
        """Seconds kept for the end: the final export (measured once it ran), the report and the margin."""
        return self.cfg.export_factor * self.measured.export_s + self.cfg.report_s + self.margin_s

    def left_s(self) -> float:
        """Seconds left before the end reserve."""
        return self.budget.remaining() - self.reserve_s()

    def expired(self, extra_s: float = 0.0) -> bool:
        """Whether less than ``extra_s`` is left before the end reserve, or the run was interrupted."""
        return self.budget.expired(self.reserve_s() + extra_s)

    def starts(self, planned_s: float, keep_s: float = 0.0) -> bool:
        """Whether a step planned at ``planned_s`` may start, leaving ``keep_s``: plans run over, so it starts
        when ``plan_overrun`` of it is left."""
        return not self.expired(keep_s + self.cfg.plan_overrun * planned_s)

    # extraction
    def size_time_s(self) -> float:
        """Seconds for every image's original view and the head (the input size shrinks if they do not fit)."""
        return self.left_s() - self.head_s

    def mirrors_fit(self, train_mirror: bool, finetune: bool) -> bool:
        """Whether the mirrored views are worth their time: fine-tuning still gets ``min_ft_epochs`` after them."""
        c, m = self.counts, self.measured
        if self.cut is None or not finetune:
            return True
        flips_s = (c.test + c.val + c.train * train_mirror) / m.rate
        left = (self.budget.remaining() - self.reserve_s() - self.head_s * train_mirror - flips_s
                - self.cfg.early_output_s)
        return left > self.cfg.min_ft_epochs * c.train * m.ft_image_s

    def early_output_fits(self, keep_s: float) -> bool:
        return self.budget.remaining() > keep_s + self.cfg.early_output_s

    def cut_plan(self, top_s: dict[int, float], size: int, n: Counts, mirror: bool, free_bytes: float) -> CutPlan:
        """The deepest cut whose epochs fit (see :func:`timebox.train.depth.choose_cut`) in what is left after
        every view's extraction at the whole backbone's speed and its pooling through the cut's top, the early
        output, the head, the second backbone, the first export, a round's setup and the end reserve, less the
        ensemble phase's largest share. ``top_s``: cut -> seconds per image of its top (inference)."""
        cfg, full_s = self.cfg, self.measured.full_image_s
        images = 2 * (n.val + n.test) + (1 + mirror) * n.train
        extract_s = max(images * full_s - self.measured.stored_s, 0.0)
        before_s = (extract_s + cfg.early_output_s + self.head_s * (mirror or self.keras_head) + self.reserve_s()
                    + self.second_plan_s(n.val + n.test + n.train) + cfg.export_guess_s + cfg.ft_setup_s)
        time_s = (self.budget.remaining() - before_s) * (1 - cfg.ensemble_max_share * self.voting)
        costs = [CutCost(c, s, 2 * int(np.prod(self.cuts.shape(size, c)))) for c, s in top_s.items()]
        return choose_cut(costs, time_s, n.train, 2 * n.val + n.test, images, free_bytes, cfg.deep_min_epochs,
                          image_cut=self.cuts.image, image_min_epochs=cfg.image_min_epochs,
                          n_once=images + 2 * n.test)

    def optimistic_top_s(self, cut: int) -> float:
        """A cut's top's seconds per image before it is timed: a quarter of its share of the backbone's
        multiply-adds times the whole backbone's measured time (the default top ran at about 0.4 of that)."""
        return 0.25 * self.measured.full_image_s * self.cuts.share(cut)

    # the head
    @property
    def keras_head(self) -> bool:
        """Whether the head is always fitted in Keras: a head the early (numpy) head is not, one with a hidden layer
        (setting ``head_hidden``)."""
        return self.cfg.head_hidden > 0

    def head_plan(self, early: bool, interrupted: bool) -> HeadPlan:
        """The head's seconds (none when the early head is the head), and whether the ensemble phase keeps its
        time: not when it would take over ``ensemble_max_share`` of the time after the head and fine-tuning
        fits without it, nor when fine-tuning fits only without it; with no room for fine-tuning, the head
        gets the time."""
        cfg, c = self.cfg, self.counts
        head_s = 0.0 if early else min(self.head_s, self.left_s())
        top_rate = self.measured.top_rate
        outputs_s = cfg.export_guess_s + (c.views * c.test / top_rate if top_rate else 0.0)
        after_s = self.left_s() - head_s - outputs_s - self.second_plan_s(c.val + c.test + c.train)
        ensemble_s = self.ensemble_s()
        if ensemble_s > cfg.ensemble_max_share * after_s and self.fine_tune_fits(after_s - ensemble_s):
            return HeadPlan(head_s, False, early, f"the ensemble phase ({ensemble_s:.0f}s) would take over "
                            f"{cfg.ensemble_max_share:.0%} of the {after_s:.0f}s after the head: fine-tuning gets it")
        if self.fine_tune_fits(after_s - ensemble_s):
            return HeadPlan(head_s, self.ensemble_time, early, None)
        if self.fine_tune_fits(after_s):  # the ensemble needs fine-tuned checkpoints: they come first
            return HeadPlan(head_s, False, early, "no time for both fine-tuning and the ensemble phase: "
                            "fine-tuning gets it")
        head_s = max(head_s, self.left_s() - outputs_s)
        return HeadPlan(head_s, self.ensemble_time, early and interrupted,  # the time is the head's: fitted again
                        f"fine-tuning cannot fit a useful epoch after the head: the head gets {head_s:.0f}s")

    # the second backbone
    def second_plan_s(self, n_images: int) -> float:
        """Seconds planned for the second backbone's head on ``n_images``: its setup, the images at
        ``second_cost_ratio`` times the main backbone's time per image, and a head; 0 when that is over
        ``second_share`` of the budget, or there is no second backbone to plan."""
        cfg, full_s = self.cfg, self.measured.full_image_s
        if not self.second_planned or full_s is None:
            return 0.0
        plan_s = cfg.second_setup_s + cfg.second_cost_ratio * n_images * full_s + self.head_s
        return plan_s if plan_s <= cfg.second_share * cfg.budget_s else 0.0

    def second_share_s(self) -> float:
        return self.cfg.second_share * self.cfg.budget_s

    def fine_tune_fits_after(self, spend_s: float) -> bool:
        """Whether fine-tuning still fits after ``spend_s`` more and the ensemble phase."""
        return self.fine_tune_fits(self.left_s() - self.ensemble_s() - spend_s)

    # fine-tuning
    def epoch_s(self) -> float:
        return self.counts.train * self.measured.ft_image_s

    def ft_setup_s(self) -> float:
        """A fine-tune round's setup (to the end of its first step): the longest of ``ft_setup_s``,
        ``train_trace_ratio`` times the cut's top's measured inference trace and the rounds' measured setups."""
        m = self.measured
        return max(self.cfg.ft_setup_s, self.cfg.train_trace_ratio * m.top_trace_s.get(self.cut, 0.0), m.ft_setup_s)

    def fine_tune_fits(self, time_s: float) -> bool:
        """Whether ``time_s`` holds a round's setup and a quarter of an epoch (the shortest it runs)."""
        if self.cut is None or not self.cfg.finetune:
            return False
        return time_s >= self.ft_setup_s() + 0.25 * self.epoch_s()

    def scoring_s(self) -> float:
        """Seconds to score one epoch: every val view (ensemble candidates) and, when it is the best, the test
        views it uses (counted at half)."""
        c = self.counts
        return (c.views * c.val + 0.5 * self.n_views * c.test) / self.measured.top_rate

    def rounds(self, time_s: float, eval_s: float) -> int:
        """Fine-tune rounds in ``time_s``: two when each gets ``round_min_epochs`` epochs (``image_min_epochs``
        at the image cut), else one."""
        least = self.cfg.image_min_epochs if self.cut == self.cuts.image else self.cfg.round_min_epochs
        return 2 if time_s >= 2 * (self.ft_setup_s() + least * (self.epoch_s() + eval_s)) else 1

    def fine_tune_time(self) -> float:
        """Seconds fine-tuning may take: all but the end reserve, the ensemble phase, the annealed end's test
        predictions and ``ft_slack_s``."""
        return self.left_s() - self.ensemble_s() - self.end_test_s() - self.cfg.ft_slack_s

    def round_time(self, r: int, rounds: int, eval_s: float, scored_end: bool) -> float:
        """Round ``r``'s seconds: its share of :meth:`fine_tune_time`, less the end's scoring (``scored_end``)
        and the weight saves after it (each round's end, and the average's)."""
        saves = rounds - r + (rounds > 1)
        return (self.fine_tune_time() - (eval_s if scored_end else 0.0)
                - saves * self.measured.save_s) / (rounds - r)

    def state_due(self, since_s: float, cost_s: float) -> bool:
        """Whether a fine-tune recovery state is due ``since_s`` after the last, which took ``cost_s``."""
        return since_s >= max(self.cfg.state_every_s, cost_s / self.cfg.state_share)

    def end_test_s(self) -> float:
        """Seconds to predict the test views with the scored model (making the annealed end the output)."""
        return self.n_views * self.counts.test / self.measured.top_rate

    def check_s(self) -> float:
        """Seconds to predict the val images' original view with the scored model."""
        return self.counts.val / self.measured.top_rate

    # the ensemble phase
    def votes(self) -> bool:
        """Whether this run can have an ensemble phase: fine-tuned checkpoints to vote over, their speed known."""
        return bool(self.voting and self.cfg.finetune and self.cut is not None and self.measured.top_rate
                    and self.ensemble_time)

    def zoom_view_s(self, part: str | None = None) -> float:
        """One zoomed view of the val or test images (``part``; None: both): the bottom (traced per part) and the
        candidates' tops (the top ``keep`` checkpoints and the last epoch) on them."""
        m, c = self.measured, self.counts
        n = {"val": c.val, "test": c.test}
        n = n[part] if part else sum(n.values())
        return (1 if part else 2) * m.trace_s + n / m.rate + (self.cfg.keep + 1) * n / m.top_rate

    def zoom_views(self) -> int:
        """How many zoomed views fit in ``zoom_share`` of the budget."""
        if not self.zoom_sources or not self.votes() or self.cfg.zoom_share <= 0:
            return 0
        return min(max(int(self.cfg.zoom_share * self.cfg.budget_s // self.zoom_view_s()), 0),
                   ZOOMED_VIEWS + self.cfg.tta_crops)

    def zoom_views_left(self, planned: int, keep_s: float) -> int:
        """How many of ``planned`` zoomed views of the val images still fit, leaving ``keep_s``."""
        spare_s = self.left_s() - keep_s
        return min(planned, max(int(spare_s // (self.cfg.plan_overrun * self.zoom_view_s("val"))), 0))

    def one_image_s(self) -> float:
        """One image alone through the bottom and top: measured, else from their rates."""
        m = self.measured
        if m.single_latency_ms:
            return m.single_latency_ms / 1000
        return 1 / m.rate + (1 / m.top_rate if m.top_rate else 0.0)

    def member_latency_s(self) -> float:
        """One view's member latency measurement (compose, trace, time)."""
        return self.measured.trace_s + (self.cfg.member_latency_images + 3) * self.one_image_s()

    def latency_rounds(self, views: int, estimate_ms: float) -> int:
        """Latency measurements planned: one, or one per possible drop when the largest ensemble's estimated
        p95 latency could come near ``latency_ms``."""
        cfg = self.cfg
        if cfg.latency_ms is None or (self.measured.single_latency_ms and 1.5 * estimate_ms <= cfg.latency_ms):
            return 1
        return cfg.keep + views + 1

    def ensemble_plan(self) -> dict[str, float]:
        """The ensemble phase's parts in seconds: loading the candidates, the zoomed views of the val images,
        the candidates' test predictions on the cached views, the latency measurements, and one of those
        (``round``, inside ``latency``). Its export falls within the end reserve."""
        if not self.votes():
            return {}
        cfg, m, c = self.cfg, self.measured, self.counts
        zoomed = self.zoom_views()
        views = c.views + zoomed
        top_share = m.rate / m.top_rate  # a member's top, relative to the bottom it reads
        ensemble_s = views * self.one_image_s() * (1 + cfg.keep * top_share) / (1 + top_share)  # the largest vote
        ensemble_s += m.second_image_s or 0.0  # the second backbone, on the original view
        latency_s = views * m.trace_s + (cfg.latency_images + 3) * ensemble_s
        return {"members": (cfg.keep + 1) * cfg.member_load_s,
                "zoomed": zoomed * self.zoom_view_s("val"),
                "test": (cfg.keep + 1) * c.views * c.test / m.top_rate,
                "latency": self.latency_rounds(views, 1000 * ensemble_s) * latency_s,
                "round": latency_s}

    def ensemble_s(self) -> float:
        """The ensemble phase's planned seconds (see :meth:`ensemble_plan`)."""
        plan = self.ensemble_plan()
        return sum(plan[part] for part in ("members", "zoomed", "test", "latency")) if plan else 0.0
