"""A budget too short for every image at the chosen input size shrinks the size (down to --min-size)
instead of dropping training images: the rule (cost a power of the size, multiples of 16, within its floor), and
an `online` run whose measured speed is made too slow for its size, end to end."""

import json

import pytest

from timebox.phases.extract import ExtractPhase
from timebox.data.synthetic import make_synthetic
from timebox.online import OnlineConfig, run_online
from timebox.predict import LABELS_FILE, LabelMap, predict_dir
from timebox.recovery import RunState
from timebox.score import score
from timebox.train.image_size import COST_EXPONENT, FIT, STEP, affordable_size


def test_the_size_is_kept_when_its_need_fits():
    assert affordable_size(224, need_s=20.0, time_s=20.0, min_size=128) == 224


def test_the_shrunk_size_is_the_largest_multiple_of_the_step_whose_need_fits_after_setup_with_margin():
    size = affordable_size(224, need_s=30.0, time_s=20.0, min_size=64, setup_s=4.0)
    assert size % STEP == 0 and size < 224
    assert 30.0 * (size / 224) ** COST_EXPONENT <= FIT * (20.0 - 4.0)  # fits, with the estimate's margin
    assert 30.0 * ((size + STEP) / 224) ** COST_EXPONENT > FIT * (20.0 - 4.0)  # the next step up would not


def test_the_size_never_goes_below_min_size_nor_above_the_size_given():
    assert affordable_size(224, need_s=1000.0, time_s=10.0, min_size=128) == 128
    assert affordable_size(224, need_s=1000.0, time_s=-5.0, min_size=128) == 128  # nothing left: the floor
    assert affordable_size(224, need_s=30.0, time_s=20.0, min_size=128, setup_s=25.0) == 128  # setup eats it all
    assert affordable_size(64, need_s=1000.0, time_s=10.0, min_size=128) == 64  # min_size above the size: kept


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An online run at 64 px with --min-size 32 whose bottom is timed (patched) at 10 s an image."""
    root = make_synthetic(tmp_path_factory.mktemp("data"), n_per_class=10, n_test_per_class=3, size=64)
    out = tmp_path_factory.mktemp("out")
    cfg = OnlineConfig(root / "train", root / "test", out, 40.0, size=64, min_size=32, ensemble=False,
                       cache_dir=tmp_path_factory.mktemp("cache"), workers=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TIMEBOX_START", raising=False)  # `./run.sh test` exports it: count from now instead
        mp.setattr(ExtractPhase, "bottom_image_s", lambda self, cache, idx: 10.0)
        result = run_online(cfg)
    return {"root": root, "out": out, "cfg": cfg, "result": result}


def test_a_run_too_slow_for_its_size_extracts_every_image_at_the_smaller_size(run):
    report = run["out"] / "report"
    notes = json.loads((report / "summary.json").read_text())["notes"]
    assert any(n.startswith("input size 64px -> 32px: the 52 images' features at 64px would take 520.0s") for n in notes)
    assert not any("the budget allowed features of" in n for n in notes), "no training image was dropped"
    extract = next(p for p in json.loads((report / "timeline.json").read_text())["phases"] if p["phase"] == "extract")
    assert extract["size"] == 32
    assert json.loads((report / "config.json").read_text())["input_size"] == 32


def test_the_shrunk_size_is_what_the_model_predicts_at_and_what_resume_extracted_at(run, tmp_path):
    labels = LabelMap.load(run["result"].model_dir / LABELS_FILE)
    assert labels.input_size == 32
    n = predict_dir(run["result"].model_dir, run["root"] / "test", tmp_path / "again.csv", run["cfg"].cache_dir)
    assert n == 12 and score(tmp_path / "again.csv", run["root"] / "test_labels.csv").missing == 0
    assert score(run["out"] / "predictions.csv", run["root"] / "test_labels.csv").missing == 0
    state = RunState(run["out"] / "state")
    assert state.read("activations", load_arrays=False)["info"]["size"] == 32  # a --resume extracts nothing anew
