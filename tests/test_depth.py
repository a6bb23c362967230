"""How deep fine-tuning goes: the cut rule (the deepest cut whose epochs fit the time and whose
activations fit in memory), and the Lite backbone split at every cut it offers."""

import numpy as np
import pytest

from timebox.errors import UsageError
from timebox.models.efficientnet_lite import cut_activation_shape, top_share
from timebox.models.registry import build_extractor, get_backbone, split_extractor
from timebox.train.depth import CutCost, choose_cut

COSTS = [CutCost(12, 0.002, 100), CutCost(8, 0.004, 200), CutCost(5, 0.008, 400)]
KW = dict(n_train=1000, n_scored=500, images=3000, free_bytes=1e9, min_epochs=10, train_per_infer=3.0)


def _epoch_s(top_s):  # the rule's epoch cost: training (3x inference) and scoring, with the part after the cut
    return top_s * (1000 * 3.0 + 500)


def test_the_deepest_cut_whose_epochs_fit_is_chosen():
    plan = choose_cut(COSTS, time_s=10 * _epoch_s(0.008), **KW)
    assert plan.cut == 5 and plan.cost_ratio == pytest.approx(4.0)
    assert plan.epochs[5] == pytest.approx(10.0) and plan.epochs[12] == pytest.approx(40.0)


def test_a_shallower_deep_cut_when_the_deepest_does_not_fit():
    plan = choose_cut(COSTS, time_s=10 * _epoch_s(0.004), **KW)
    assert plan.cut == 8 and plan.cost_ratio == pytest.approx(2.0)


def test_the_default_cut_when_no_deeper_one_fits_the_epochs():
    plan = choose_cut(COSTS, time_s=9.9 * _epoch_s(0.004), **KW)
    assert (plan.cut, plan.cost_ratio) == (12, 1.0)
    assert "no deeper cut fits" in plan.reason


def test_images_run_once_through_the_part_after_the_cut_take_their_time_from_its_epochs():
    """Pooling every view for the head and predicting the test images cost more at a deeper cut: what they leave
    decides, so a cut that fits its epochs alone can fall short with them."""
    time_s = 10 * _epoch_s(0.008)
    plan = choose_cut(COSTS, time_s=time_s, **KW, n_once=500)
    assert plan.cut == 8
    assert plan.epochs[5] == pytest.approx((time_s - 0.008 * 500) / _epoch_s(0.008))
    assert plan.epochs[12] == pytest.approx((time_s - 0.002 * 500) / _epoch_s(0.002))


def test_a_cut_whose_activations_do_not_fit_in_memory_is_passed_over():
    plan = choose_cut(COSTS, time_s=1e9, **{**KW, "free_bytes": 2 * 3000 * 300})  # 200-byte images fit, 400 not
    assert plan.cut == 8


def test_no_time_at_all_keeps_the_default_cut():
    assert choose_cut(COSTS, time_s=-5.0, **KW).cut == 12


def test_deeper_cuts_run_a_larger_share_of_the_backbone():
    shares = [top_share(0, c) for c in (15, 12, 8, 5, 1, 0)]
    assert shares == sorted(shares) and 0 < shares[0] and shares[-2] < 1 and shares[-1] == 1.0


@pytest.fixture(scope="module")
def lite0():
    return get_backbone("efficientnet-lite0"), build_extractor(get_backbone("efficientnet-lite0"), 64, "none")


def test_lite0_offers_the_default_cut_then_deeper_stage_starts_then_the_image(lite0):
    spec, extractor = lite0
    assert spec.cuts.options() == (12, 11, 8, 5, 3, 1, 0) and spec.cuts.image == 0
    assert extractor.cut == 12


def test_the_budget_never_chooses_the_half_resolution_cut_a_user_still_may(lite0):
    """Block 1 scored no better than block 3 at more time per epoch: only --finetune-cut starts from it."""
    spec, extractor = lite0
    assert spec.cuts.automatic() == (12, 11, 8, 5, 3, 0)
    assert cut_activation_shape(0, 224, 1) == (112, 112, 16)
    assert split_extractor(extractor, spec, 1).cut == 1


@pytest.mark.parametrize("cut", [12, 8, 5, 1, 0])
def test_bottom_then_top_at_any_cut_equals_the_whole_backbone(lite0, cut):
    spec, extractor = lite0
    split = split_extractor(extractor, spec, cut)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    acts = np.asarray(split.bottom.predict_on_batch(images))
    assert acts.shape[1:] == cut_activation_shape(0, 64, cut)
    np.testing.assert_allclose(np.asarray(split.top.predict_on_batch(acts)),
                               np.asarray(extractor.full.predict_on_batch(images)), rtol=1e-4, atol=1e-4)


def test_a_cut_the_backbone_does_not_offer_is_a_usage_error_listing_the_choices(lite0):
    spec, extractor = lite0
    with pytest.raises(UsageError, match="choose one of: 12, 11, 8, 5, 3, 1, 0"):
        split_extractor(extractor, spec, 7)


def test_at_the_image_cut_the_cached_activations_are_the_scaled_images_and_the_top_is_the_backbone(lite0):
    spec, extractor = lite0
    split = split_extractor(extractor, spec, 0)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(split.bottom.predict_on_batch(images)),
                               np.asarray(extractor.full.get_layer("preprocess")(images)), atol=1e-6)
    assert split.top is extractor.full.layers[-1]  # training the top trains every layer of the backbone


def test_a_cut_for_a_backbone_that_cannot_be_split_is_a_usage_error():
    with pytest.raises(UsageError, match="cannot be split"):
        build_extractor(get_backbone("MobileNetV3Small"), 32, "none", cut=5)


def test_the_image_cut_is_named_as_training_the_whole_backbone_on_crops():
    costs = [*COSTS, CutCost(0, 0.01, 500)]
    plan = choose_cut(costs, time_s=1e9, **KW, image_cut=0)
    assert plan.cut == 0
    assert plan.reason.startswith("fine-tuning the whole backbone, on augmented images (default: from block 12)")


def test_the_image_cut_needs_its_own_number_of_epochs():
    costs = [*COSTS, CutCost(0, 0.01, 500)]
    kw = {**KW, "image_cut": 0, "image_min_epochs": 20}
    assert choose_cut(costs, time_s=19.9 * _epoch_s(0.01), **kw).cut == 5  # block 5 fits its 10 epochs
    plan = choose_cut(costs, time_s=20 * _epoch_s(0.01), **kw)
    assert plan.cut == 0 and plan.reason.endswith("at least 20 wanted")
