"""Every setting of an online run, written once: name, type, default, check and help.

Everything else derives from :data:`SETTINGS`: the fields of :class:`timebox.config.OnlineConfig`,
the settings a ``--config`` file may hold (all of them: ``tune`` searches them), the command-line
flags of those that have one, the config file's checks and the table in docs/settings.md
(:func:`markdown_table`). A default a measurement chose names its evidence in ``evidence``.

No TensorFlow here: the command line reads settings before it loads.

Example::

    SETTING["deep_min_epochs"].check(4.5)      # 4.5, or a UsageError saying the range
    [s.name for s in SETTINGS if s.flag]       # the settings with a command-line flag
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from .errors import UsageError
from .export.judge_input import FLINK_TEMPLATE, JudgeInput
from .train.costs import check_cost_file

AUGMENTS = ("crop", "flip", "rotate", "color", "randaugment", "erase")  # timebox.train.augment
MIN_INPUT_SIZE = 32  # the backbones' stride: smaller images leave no spatial position at their last block
RESULTS = "bench/RESULTS.md"


@dataclass(frozen=True)
class Setting:
    """One setting. ``kind`` is its Python type (int settings also take whole numbers, float ones ints);
    ``nullable``: None is allowed (and means "derived", as ``help`` says). ``low``/``high`` bound numbers;
    ``flag`` is its command-line flag (None: ``--config`` only); ``evidence`` where its default was measured."""

    name: str
    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    flag: str | None = None
    choices: tuple[str, ...] | None = None
    evidence: str = ""
    group: str = "run"  # "run": what the run does; "plan": how the budget is planned (measured defaults)
    rule: str = ""  # the range in words, when "between low and high" says it badly
    parse: Callable[[Any], Any] | None = None  # a format's own check: the value, or a UsageError saying what is wrong

    @property
    def json_types(self) -> tuple[type, ...]:
        """The JSON value types a config file may give."""
        kinds = (float, int) if self.kind is float else (self.kind,)
        return kinds + ((type(None),) if self.nullable else ())

    def check(self, value: Any, where: str = "") -> Any:
        """``value`` if it is of this setting's type and range, else a UsageError (prefixed by ``where``)."""
        prefix = f"{where}: " if where else ""
        if value is None and self.nullable:
            return value
        if not isinstance(value, self.json_types) or (isinstance(value, bool) and self.kind is not bool):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in self.json_types)
            raise UsageError(f"{prefix}setting {self.name} is {json.dumps(value)}; it must be {wanted}")
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"{prefix}{self.name} is {value!r}; it must be one of {', '.join(self.choices)}")
        low = -float("inf") if self.low is None else self.low
        high = float("inf") if self.high is None else self.high
        if self.kind in (int, float) and not low <= value <= high:
            raise UsageError(f"{prefix}{self.name} is {value:g}; it must be {self.range_text()}")
        if self.parse is not None:
            try:
                self.parse(value)
            except UsageError as e:
                raise UsageError(f"{prefix}{self.name}: {e}") from None
        return value

    def range_text(self) -> str:
        if self.rule:
            return self.rule
        if self.low is not None and self.high is not None:
            return f"between {self.low:g} and {self.high:g}"
        return f"at least {self.low:g}" if self.low is not None else f"at most {self.high:g}"


def augment_names(value: str) -> tuple[str, ...]:
    """The names in a comma-separated ``augment`` setting, or a UsageError naming the unknown one.

    >>> augment_names("crop, flip")
    ('crop', 'flip')
    """
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown:
        raise UsageError(f"unknown augmentation {unknown[0]!r}; choose from {', '.join(AUGMENTS)}")
    return names


def _s(name, kind, default, help, **kw) -> Setting:
    return Setting(name, kind, default, help, **kw)


def _p(name, kind, default, help, **kw) -> Setting:
    return Setting(name, kind, default, help, low=kw.pop("low", 0), group="plan", **kw)


_R = RESULTS
SETTINGS: tuple[Setting, ...] = (
    # what the run does
    _s("backbone", str, "efficientnet-lite0", "backbone (efficientnet-lite0/1/2, a keras.applications name, "
       "efn-b0..b7)", flag="--backbone"),
    _s("weights", str, "imagenet", "'imagenet' (local files only, see fetch-weights), another named set, a file "
       "path, or 'none'", flag="--weights"),
    _s("init", str, "auto", "the model the run starts from: auto (the one pretrained model in submission/models/, "
       "else imagenet), imagenet (--weights), or a folder `pretrain` wrote", flag="--init"),
    _s("size", int, None, "input size in pixels (null: the backbone's own)", nullable=True, low=MIN_INPUT_SIZE,
       flag="--size"),
    _s("min_size", int, 128, "smallest input size the run may shrink to when the budget cannot extract every "
       "image's features at size; equal to size: never shrink", low=MIN_INPUT_SIZE, flag="--min-size",
       rule=f"at least {MIN_INPUT_SIZE} (pixels)"),
    _s("seed", int, 0, "seed of the split and of training", flag="--seed"),
    _s("layout", str, "auto", "training data layout (auto: detected)", flag="--layout",
       choices=("auto", "folders", "modelarts", "csv")),
    _s("val_fraction", float, 0.15, "share of the training images held out for validation", low=0.0, high=0.9,
       flag="--val-fraction"),
    _s("batch_size", int, 32, "training batch size", low=1),
    _s("loss", str, "crossentropy", "the loss of the heads and fine-tuning: crossentropy, or focal (gamma 2; the early "
       "numpy head stays cross-entropy)", flag="--loss", choices=("crossentropy", "focal")),
    _s("label_smoothing", float, 0.1, "label smoothing of every trainer's loss", low=0.0, high=0.5,
       flag="--label-smoothing"),
    _s("class_weight", str, "balanced", "class weights against imbalance: none, balanced (n / (k * n_class)), or "
       "effective (by the effective number of samples, beta 0.999); a training image's mean weight is 1",
       flag="--class-weight", choices=("none", "balanced", "effective"), evidence=f"{_R}, 2026-12-07 recipes"),
    _s("cost_matrix", str, None, "a JSON file of confusion costs by class name (pairs, groups) added to the loss "
       "of the heads and fine-tuning (null: none); ./run.sh propose-costs drafts one from a run", nullable=True,
       flag="--cost-matrix", parse=check_cost_file),
    _s("head", str, "cosine", "the classifier layer: cosine (NormFace: normalised features and class weights, no "
       "bias, times a scale), or softmax (linear; then the early numpy head can be the head)", flag="--head",
       choices=("softmax", "cosine"), evidence=f"{_R}, 2026-12-07 (05:40Z-), the cosine head"),
    _s("cosine_scale", float, None, "the cosine head's scale, fixed (null: learnt, from 16)", nullable=True, low=1.0,
       high=100.0),
    _s("head_dropout", float, 0.3, "dropout before the head's layers", low=0.0, high=0.9),
    _s("head_hidden", int, 0, "units of one hidden ReLU layer in the head (0: none)", low=0, high=8192),
    _s("sampling", str, "uniform", "the samples of a training epoch: uniform (each once), or balanced (each draw a "
       "class uniformly, then one of its images)", flag="--sampling", choices=("uniform", "balanced")),
    _s("mixup", float, 0.0, "mixup's alpha (0: off): samples and labels blended with another of the batch; on "
       "pooled features and activations (numpy), on images (the image cut) Keras' MixUp layer", low=0.0, high=2.0,
       flag="--mixup"),
    _s("cutmix", float, 0.0, "cutmix's alpha (0: off): a box of another sample pasted in; on activation maps "
       "(numpy) and images (Keras' CutMix), never on the head's pooled features", low=0.0, high=1.0,
       flag="--cutmix"),
    _s("lr_schedule", str, "cosine", "learning rate after the warm-up, for the head and fine-tuning: cosine to zero, "
       "step (divided by 10 at 1/2 and 3/4), or plateau (halved after 2 epochs without a better val accuracy)",
       flag="--lr-schedule", choices=("cosine", "step", "plateau")),
    _s("augment", str, "crop", f"transforms of training images when the whole backbone trains on them (the image "
       f"cut), comma-separated: {', '.join(AUGMENTS)} (Keras layers but crop)", flag="--augment",
       parse=augment_names),
    _s("keep", int, 3, "checkpoints kept, best by val accuracy", low=1, flag="--keep"),
    _s("finetune", bool, True, "fine-tune the backbone's last blocks after the head"),
    _s("margin_s", float, None, "seconds left unused at the end (null: max(5 s, 2% of the budget))", nullable=True,
       low=0.0, flag="--margin"),
    _s("ensemble", bool, True, "vote over kept checkpoints and views when that beats the best single model on "
       "held-out val", flag="--no-ensemble"),
    _s("latency_ms", float, None, "p95 per-image latency (ms, batch of 1, this machine) the exported model must "
       "stay under: ensemble members and views are dropped, least useful first (null: no limit)", nullable=True,
       low=1e-9, flag="--latency-ms", rule="above 0"),
    _s("zoom_share", float, 0.1, "most of the budget the zoomed test-time views may cost as ensemble candidates; "
       "0: never", low=0.0, high=1.0, flag="--zoom-share"),
    _s("tta_crops", int, 0, "test-time crops (80% of each side at the corners: top-left, top-right, bottom-left, "
       "bottom-right) that join the zoomed views as ensemble candidates, within zoom_share", low=0, high=4,
       flag="--tta-crops"),
    _s("finetune_lr", float, 3e-4, "peak learning rate of fine-tuning (AdamW, warm-up then cosine)", low=1e-9,
       high=1.0, flag="--finetune-lr", rule="above 0 and at most 1", evidence=f"{_R}, 2026-11-24 late evening"),
    _s("refit", bool, True, "the last fine-tune round trains on the val images too (then no vote)",
       flag="--no-refit", evidence=f"{_R}, 2026-11-25 morning"),
    _s("replicas", int, 0, "devices fine-tuning trains on in parallel (tf.distribute.MirroredStrategy; the batch "
       "and the learning rate times the replicas): 0 every GPU when there are several, else one device; N: N GPUs, "
       "or with no GPU the CPU split into N logical devices (tests)", low=0, flag="--replicas"),
    _s("finetune_cut", int, None, "EfficientNet-Lite: the block fine-tuning starts from (Lite0: 12, 11, 8, 5, 3, "
       "1, or 0: the whole backbone on random crops; null: the deepest the budget fits)", nullable=True, low=0,
       flag="--finetune-cut"),
    _s("cache_max_gb", float, 20.0, "most gigabytes the decoded-image cache keeps: after a build, the least "
       "recently used entries go (never one a run is using)", low=0.0, flag="--cache-max-gb"),
    _s("second_backbone", str, "auto", "a head on this backbone's frozen features joins the ensemble's candidates "
       "(auto: efficientnet-lite1, or lite0 when that is the main one; none: never)", flag="--second-backbone"),
    _s("judge_input", str, FLINK_TEMPLATE, "the tensor the flink judge feeds the export (size, channels, mean, std "
       "or scale, value_max, dtype as key=value pairs; see judge_input.txt beside the SavedModel)",
       flag="--judge-input", parse=JudgeInput.parse),
    # how the budget is planned: defaults chosen by measurements
    _p("head_share", float, 0.05, "the head's share of the budget (then clipped to head_min_s..head_max_s)"),
    _p("head_min_s", float, 5.0, "least seconds planned for fitting the head"),
    _p("head_max_s", float, 30.0, "most seconds planned for fitting the head"),
    _p("export_guess_s", float, 5.0, "the final export's seconds until the first export measures it"),
    _p("export_factor", float, 1.5, "the end reserve holds this many final exports"),
    _p("report_s", float, 2.0, "seconds kept for writing the report's files"),
    _p("pictures_s", float, 3.0, "the report's pictures and index.html are drawn only if this many seconds are left "
       "after the outputs"),
    _p("plan_overrun", float, 0.8, "a step starts when this share of its planned seconds is left (plans run over)"),
    _p("ft_cost_ratio", float, 0.6, "first guess of a fine-tune step's cost per image over the bottom's"),
    _p("deep_min_epochs", float, 4.5, "fine-tuning starts from a deeper cut only if this many of its epochs fit",
       evidence=f"{_R}, 2026-12-02"),
    _p("image_min_epochs", float, 20.0, "... from the image (the whole backbone on random crops) only if this many",
       evidence=f"{_R}, 2026-11-24 day"),
    _p("min_ft_epochs", float, 4.0, "mirrored views are extracted only if this many fine-tune epochs still fit"),
    _p("train_mirror_min_epochs", float, 10.0, "the training images' mirrored view only if fine-tuning gets this "
       "many epochs with it", evidence=f"{_R}, 2026-11-25 afternoon"),
    _p("ft_setup_s", float, 5.0, "least seconds planned for a fine-tune round's setup (tracing its step)"),
    _p("train_trace_ratio", float, 12.0, "a round's setup planned at this times the cut's top's inference trace",
       evidence=f"{_R}, 2026-12-02 evening"),
    _p("round_min_epochs", float, 8.0, "two fine-tune rounds, their ends averaged, when each gets this many epochs",
       evidence=f"{_R}, 2026-11-25 night"),
    _p("ft_slack_s", float, 0.5, "seconds kept free after fine-tuning (it ran up to 0.11 s past its plan)"),
    _p("state_every_s", float, 10.0, "least seconds between two fine-tune recovery states"),
    _p("state_share", float, 0.05, "... or more, so that writing them takes at most this share of fine-tuning",
       high=1.0),
    _p("gc_every_s", float, 10.0, "Python's garbage collection runs between saves at most this often",
       evidence=f"{_R}, 2026-11-24 night"),
    _p("ensemble_max_share", float, 0.25, "the ensemble phase is planned only if it takes at most this share of the "
       "time after the head", high=1.0),
    _p("member_load_s", float, 0.5, "seconds to build an ensemble candidate and load its checkpoint"),
    _p("trace_s", float, 2.0, "least seconds planned to compose a one-view model and trace it"),
    _p("latency_images", int, 20, "single-image predictions timed for the p95 latency", low=1),
    _p("member_latency_images", int, 10, "the same for each member of the output alone", low=1),
    _p("rate_probe_images", int, 64, "val images timed through the default cut's bottom before the cut is chosen",
       low=1),
    _p("activation_batch", int, 32, "batch of cached activations through a top", low=1,
       evidence=f"{_R}, 2026-11-24 morning"),
    _p("early_output_s", float, 2.0, "seconds planned for the early output but its pooling",
       evidence=f"{_R}, 2026-12-02 evening"),
    _p("second_share", float, 0.10, "most of the budget the second backbone's head may cost", high=1.0,
       evidence=f"{_R}, 2026-11-25 early morning"),
    _p("second_cost_ratio", float, 1.2, "its planned time per image over the main backbone's",
       evidence=f"{_R}, 2026-11-24 midday"),
    _p("second_setup_s", float, 3.0, "seconds to build the second backbone, load its weights and trace it"),
    _p("resize_setup_s", float, 3.0, "seconds to rebuild the backbone at a smaller input size"),
)
SETTING: dict[str, Setting] = {s.name: s for s in SETTINGS}


def markdown_table() -> str:
    """The table of settings in docs/settings.md, one row per setting."""
    rows = ["| setting | flag | default | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "null" if s.default is None else str(s.default).lower() if s.kind is bool else f"{s.default}"
        help_text = s.help + (f" ({s.evidence})" if s.evidence else "")
        rows.append(f"| `{s.name}` | {f'`{s.flag}`' if s.flag else ''} | {default} | {help_text} |")
    return "\n".join(rows)
