"""The recipe's other settings (timebox.train.sampling, .schedules, .augment, models.heads): balanced sampling
draws classes evenly; mixup and cutmix mix samples, labels and weights by the same share; the cosine head is
NormFace's and saves; the step and plateau schedules decay as specified; image augmentation and Keras' MixUp and
CutMix layers keep shapes and labels summing to one; each trainer learns with them; bad settings are refused."""

import json

import keras
import numpy as np
import pytest

from timebox.config import OnlineConfig, read_settings
from timebox.errors import UsageError
from timebox.models.ensemble_model import VIEWS
from timebox.models.heads import CosineDense, HeadSpec, build_head, transfer_rows
from timebox.train.augment import ImageAugment, ImageMixer
from timebox.train.finetune import ScoreEpoch, fine_tune
from timebox.train.head import FeatureBatches, fit_head
from timebox.train.recipe import Recipe
from timebox.train.sampling import Mixer, epoch_order
from timebox.models.schedules import WarmupCosine
from timebox.train.callbacks import PlateauDecay


def _problem(counts=(60, 30, 10), dim=8, seed=0):
    centres = np.random.default_rng(0).normal(0, 1.5, (len(counts), dim))
    rng = np.random.default_rng(seed + 1)
    y = np.repeat(np.arange(len(counts)), counts)
    return (centres[y] + rng.normal(0, 1.0, (len(y), dim))).astype(np.float32), y


def test_uniform_order_is_a_permutation_and_balanced_draws_classes_evenly():
    y = np.repeat([0, 1, 2], [900, 90, 10])
    assert sorted(epoch_order(y, np.random.default_rng(0), "uniform")) == list(range(1000))
    order = epoch_order(y, np.random.default_rng(0), "balanced")
    shares = np.bincount(y[order], minlength=3) / len(order)
    assert len(order) == 1000 and np.all(np.abs(shares - 1 / 3) < 0.05)  # was 0.90 / 0.09 / 0.01


def test_mixup_mixes_samples_labels_and_weights_by_one_share_per_sample():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 5)).astype(np.float32), np.arange(16) % 4
    w = np.linspace(0.5, 2.0, 16).astype(np.float32)
    mx, soft, mw = Mixer(mixup=0.4, num_classes=4)(x, y, w, np.random.default_rng(1))
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
    perm = np.random.default_rng(1).permutation(16)  # the mixer's first draw
    for i in range(16):
        if y[i] == y[perm[i]]:
            continue
        share = soft[i, y[i]]  # lam of sample i
        np.testing.assert_allclose(mx[i], share * x[i] + (1 - share) * x[perm[i]], rtol=1e-5, atol=1e-6)
        assert mw[i] == pytest.approx(share * w[i] + (1 - share) * w[perm[i]], rel=1e-5)
    assert not np.allclose(mx, x)


def test_cutmix_pastes_one_box_and_labels_follow_its_area():
    x = np.zeros((8, 6, 6, 2), np.float32)
    x[4:] = 1.0
    y = np.array([0] * 4 + [1] * 4)
    mx, soft, _ = Mixer(cutmix=1.0, num_classes=2)(x, y, None, np.random.default_rng(3))
    for i in range(8):
        foreign = np.mean(mx[i] != x[i])  # the share of positions taken from a sample of the other class
        other = 1 - y[i]
        if soft[i, other] > 0:
            assert soft[i, other] == pytest.approx(foreign, abs=1e-6)
    np.testing.assert_allclose(soft.sum(1), 1.0)
    assert Mixer(cutmix=1.0, num_classes=2)(x[:, 0, 0], y, None, np.random.default_rng(0))[1].max() == 1.0  # 2-D: no cut


def test_the_cosine_head_is_normface_scale_times_cosine_and_round_trips(tmp_path):
    layer = CosineDense(3, scale=10.0, learn_scale=False)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    out = keras.ops.convert_to_numpy(layer(x))
    k = keras.ops.convert_to_numpy(layer.kernel)
    want = 10.0 * (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (k / np.linalg.norm(k, axis=0, keepdims=True))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(3 * x)), out, rtol=1e-5, atol=1e-5)  # scale-free
    assert not layer.scale.trainable and np.all(np.abs(out) <= 10.0 + 1e-5)
    head = build_head(5, 3, spec=HeadSpec("cosine", dropout=0.1, hidden=7))
    assert head.get_layer("head_hidden").units == 7 and isinstance(head.get_layer("head_dense"), CosineDense)
    head.save(tmp_path / "h.keras")
    again = keras.models.load_model(tmp_path / "h.keras")
    np.testing.assert_allclose(again.predict_on_batch(x), head.predict_on_batch(x), rtol=1e-6)
    rebuilt = keras.models.model_from_json(head.to_json())
    assert [w.shape for w in rebuilt.get_weights()] == [w.shape for w in head.get_weights()]


def test_a_pretrained_cosine_head_gives_its_rows_to_a_cosine_head_and_a_hidden_layer_is_refused(tmp_path):
    source = build_head(5, 3, spec=HeadSpec("cosine"), seed=1)
    source.save_weights(tmp_path / "head.weights.h5")
    rows = transfer_rows(tmp_path / "head.weights.h5", ["a", "b", "c"], ["c", "new"], 5, kind="cosine")
    kernel = source.get_layer("head_dense").get_weights()[0]
    assert rows.kind == "cosine" and rows.matched.tolist() == [True, False] and not rows.bias.any()
    target = build_head(5, 2, spec=HeadSpec("cosine"), seed=2).get_layer("head_dense")
    rows.apply(target)
    np.testing.assert_array_equal(target.get_weights()[0][:, 0], kernel[:, 2])
    build_head(5, 3, spec=HeadSpec("softmax", hidden=4)).save_weights(tmp_path / "hidden.weights.h5")
    with pytest.raises(UsageError, match="hidden.weights.h5: not a softmax head without a hidden layer.*--init "
                                         "imagenet"):
        transfer_rows(tmp_path / "hidden.weights.h5", ["a", "b", "c"], ["a"], 5)


def test_step_schedule_divides_by_ten_at_half_and_three_quarters_and_plateau_halves_on_stalls():
    step = WarmupCosine(1.0, warmup_steps=10, total_steps=110, shape="step")
    lr = [float(step(s)) for s in (0, 10, 59, 60, 84, 85, 109)]
    np.testing.assert_allclose(lr, [0.1, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01], rtol=1e-5)
    plateau = WarmupCosine(1.0, warmup_steps=10, total_steps=110, shape="plateau")
    watch = PlateauDecay(plateau, factor=0.5, patience=2)
    for acc in (0.5, 0.6, 0.6, 0.55, 0.7, 0.7):
        watch.on_epoch_end(0, {"val_accuracy": acc})
    assert float(plateau(50)) == pytest.approx(0.5)  # halved once: after 0.6, 0.55; 0.7 reset the wait
    with pytest.raises(ValueError, match="one of cosine, step, plateau"):
        WarmupCosine(1.0, 1, 2, shape="linear")


def test_feature_batches_are_balanced_mixed_and_a_function_of_seed_epoch_and_index():
    x, y = _problem()
    recipe = Recipe(sampling="balanced", mixup=0.2, class_weight="none")
    a, b = FeatureBatches(x, y, 3, 32, recipe, seed=5), FeatureBatches(x, y, 3, 32, recipe, seed=5)
    np.testing.assert_array_equal(a[2][0], b[2][0])
    xb, soft = a[1]
    assert xb.shape == (32, 8) and soft.shape == (32, 3) and np.allclose(soft.sum(1), 1.0)
    a.on_epoch_end()
    assert not np.array_equal(a[1][0], b[1][0])


@pytest.mark.parametrize("recipe", [
    Recipe(head=HeadSpec("cosine")),
    Recipe(head=HeadSpec(hidden=16, dropout=0.1), sampling="balanced", lr_schedule="step"),
    Recipe(mixup=0.4, lr_schedule="plateau"),
    Recipe(loss="focal", mixup=0.2, head=HeadSpec("cosine", learn_scale=False, cosine_scale=10.0)),
])
def test_the_keras_head_learns_with_the_options(recipe):
    x, y = _problem()
    vx, vy = _problem(counts=(20, 20, 20), seed=1)
    result = fit_head(x, y, vx, vy, 3, time_s=600.0, max_epochs=40, recipe=recipe)  # epochs, not time, end it
    losses = [h["val_loss"] for h in result.history]  # (mixed labels' training loss need not fall)
    assert losses[-1] < losses[0] and result.val_accuracy > 0.5  # chance: 1/3


def test_the_fine_tune_loop_learns_with_mixup_cutmix_balanced_sampling_and_a_plateau():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = rng.normal(0.0, 0.1, (60, 4, 4, 6)).astype(np.float32)
    for c in range(3):
        x[y == c, :, :, 2 * c:2 * c + 2] += 1.0
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 6))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp)))
    before = float(keras.losses.SparseCategoricalCrossentropy()(y, model.predict_on_batch(x)))
    seen = []
    fine_tune(model, [x], y, 3, time_s=1e6, eval_s=0.0, batch_size=16, lr=1e-2, max_epochs=12,
              callbacks=[ScoreEpoch(lambda epoch, step: seen.append(epoch) or 0.5)],
              recipe=Recipe(mixup=0.3, cutmix=0.5, sampling="balanced", lr_schedule="plateau"))
    after = float(keras.losses.SparseCategoricalCrossentropy()(y, model.predict_on_batch(x)))
    assert after < before and seen == list(range(1, 13))
    assert float(model.optimizer.learning_rate) < 1e-2 * 0.6  # the flat val accuracy halved the rate


def test_image_augment_layers_and_keras_mixers_keep_shapes_and_label_sums():
    batch = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    out = ImageAugment("crop,flip,rotate,color,randaugment,erase", seed=0)(batch, np.random.default_rng(0))
    assert out.shape == batch.shape and out.dtype == np.float32 and not np.allclose(out, batch)
    y = np.array([0, 1, 2, 0])
    for mixer in (ImageMixer(mixup=0.4, num_classes=3), ImageMixer(cutmix=1.0, num_classes=3)):
        images, soft, w = mixer(batch, y, np.ones(4, np.float32), np.random.default_rng(0))
        assert images.shape == batch.shape and soft.shape == (4, 3) and w.shape == (4,)
        np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-5)


def test_the_options_are_settings_refused_with_the_file_when_wrong(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"head": "cosine", "head_hidden": 64, "head_dropout": 0.2, "cosine_scale": 20,
                                "sampling": "balanced", "mixup": 0.2, "cutmix": 0.5, "lr_schedule": "step",
                                "augment": "crop,randaugment"}))
    recipe = Recipe.of(OnlineConfig("t", None, "o", 60.0, **read_settings(good)))
    assert recipe.head == HeadSpec("cosine", 0.2, 64, 20.0, False) and recipe.sampling == "balanced"
    assert (recipe.mixup, recipe.cutmix, recipe.lr_schedule, recipe.augment) == (0.2, 0.5, "step", "crop,randaugment")
    bad = tmp_path / "bad.json"
    for settings, message in (({"augment": "crop,blur"}, "unknown augmentation 'blur'"),
                              ({"head": "arcface"}, "head is 'arcface'; it must be one of softmax, cosine"),
                              ({"mixup": -1}, "mixup is -1")):
        bad.write_text(json.dumps(settings))
        with pytest.raises(UsageError, match=f"{bad}.*{message}"):
            read_settings(bad)
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"pairs": []}))
    with pytest.raises(UsageError, match="cost_matrix.*mixup and cutmix"):
        Recipe.of(OnlineConfig("t", None, "o", 60.0, cost_matrix=str(costs), mixup=0.2))


def test_the_corner_crop_views_keep_eighty_percent_of_each_side_at_their_corner():
    image = np.zeros((1, 10, 10, 3), np.uint8)
    image[:, :8, :8] = 200  # the top-left 80% of each side
    crops = {v.name: keras.ops.convert_to_numpy(v(image)) for v in VIEWS[4:]}
    assert sorted(crops) == ["crop bottom-left", "crop bottom-right", "crop top-left", "crop top-right"]
    assert np.all(crops["crop top-left"] == 200) and crops["crop top-left"].shape == image.shape
    assert np.any(crops["crop bottom-right"] == 0) and np.any(crops["crop bottom-right"] == 200)
