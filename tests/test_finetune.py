"""fine_tune: steps planned from the measured step time and time_s (whole epochs, then a shortened
last epoch that fills the rest), per-batch deadline checks that leave an unfinished epoch unscored,
a learning-rate schedule sized to exactly the planned steps; freeze_batch_norm reaching nested models."""

import keras
import numpy as np
import pytest

import timebox.train.finetune as ft_module
from timebox.train.callbacks import DeadlineStop
from timebox.train.finetune import ScoreEpoch, fine_tune, freeze_batch_norm, plan_steps

NUM_CLASSES = 3
N = 60
BATCH = 16
STEPS_PER_EPOCH = int(np.ceil(N / BATCH))  # 4


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    a = keras.Input((4, 4, 8))
    x = keras.layers.GlobalAveragePooling2D()(a)
    return keras.Model(a, keras.layers.Dense(NUM_CLASSES, activation="softmax")(x))


def _data(seed=0):
    """Separable activations: class c lights channels 2c and 2c+1; views[1] is views[0] mirrored."""
    rng = np.random.default_rng(seed)
    y = np.arange(N) % NUM_CLASSES
    x = rng.normal(0.0, 0.1, (N, 4, 4, 8)).astype(np.float32)
    for c in range(NUM_CLASSES):
        x[y == c, :, :, 2 * c : 2 * c + 2] += 1.0
    return [x, x[:, :, ::-1, :].copy()], y


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, epoch, step):
        self.calls.append((epoch, step))


class _VirtualTime:
    """A perf_counter that only moves when the model trains a batch (``step_s`` each, or
    ``step_costs[i]`` for the i-th batch) or ``on_epoch`` evaluates (``eval_s``): exact timings."""

    def __init__(self, step_s, eval_s=0.0, step_costs=None):
        self.now, self.step_s, self.eval_s, self.steps = 0.0, step_s, eval_s, 0
        self.step_costs = step_costs

    def perf_counter(self):
        return self.now

    def install(self, monkeypatch, model):
        monkeypatch.setattr(ft_module, "time", self)
        real = model.train_on_batch

        def timed_train_on_batch(*args, **kwargs):
            out = real(*args, **kwargs)
            cost = self.step_costs(self.steps) if self.step_costs else self.step_s
            self.steps += 1
            self.now += cost
            return out

        model.train_on_batch = timed_train_on_batch

    def on_epoch(self, rec):
        def call(epoch, step):
            self.now += self.eval_s
            rec(epoch, step)
        return call


def _run(time_s, eval_s=0.0, expired=lambda: False, max_epochs=100, model=None, clock=None, monkeypatch=None,
         **kw):
    views, y = _data()
    model = model or _tiny_model()
    rec = _Recorder()
    on_epoch = rec
    if clock is not None:
        clock.install(monkeypatch, model)
        on_epoch = clock.on_epoch(rec)
    result = fine_tune(model, views, y, NUM_CLASSES, time_s=time_s, eval_s=eval_s,
                       callbacks=[DeadlineStop(expired), ScoreEpoch(on_epoch)], batch_size=BATCH,
                       max_epochs=max_epochs, **kw)
    return model, result, rec


def test_tiny_time_plans_zero_epochs_and_never_scores():
    model, result, rec = _run(time_s=1e-9)
    assert result.epochs_planned == 0 and result.epochs_run == 0
    assert not result.stopped_by_deadline
    assert rec.calls == []
    assert result.step_time_s > 0


def test_eval_cost_larger_than_time_plans_zero_epochs():
    _, result, rec = _run(time_s=5.0, eval_s=10.0)
    assert result.epochs_planned == 0 and rec.calls == []


def test_generous_time_runs_max_epochs_and_scores_each_with_increasing_steps():
    model, result, rec = _run(time_s=1e6, max_epochs=5)
    assert result.epochs_planned == 5 and result.epochs_run == 5
    assert not result.stopped_by_deadline
    assert rec.calls == [(e, e * STEPS_PER_EPOCH) for e in range(1, 6)]
    assert int(model.optimizer.iterations.numpy()) == 5 * STEPS_PER_EPOCH


def test_augment_transforms_every_training_batch_with_the_run_s_generator():
    seen = []

    def augment(batch, rng):
        seen.append((batch.shape, isinstance(rng, np.random.Generator)))
        return batch[:, ::-1]

    model, result, _ = _run(time_s=1e6, max_epochs=2, augment=augment)
    assert len(seen) == int(model.optimizer.iterations.numpy()) == 2 * STEPS_PER_EPOCH
    assert all(shape[1:] == (4, 4, 8) and is_generator for shape, is_generator in seen)


def test_planned_epochs_follow_measured_step_time_and_eval_cost(monkeypatch):
    # step 0.1 s, 4 steps per epoch, eval 0.3 s: 0.7 s an epoch -> 3.8 s fit 5 epochs
    clock = _VirtualTime(0.1, eval_s=0.3)
    _, result, rec = _run(time_s=3.8, eval_s=0.3, clock=clock, monkeypatch=monkeypatch)
    assert result.step_time_s == pytest.approx(0.1)
    assert result.epochs_planned == result.epochs_run == 5
    assert not result.stopped_by_deadline
    assert [e for e, _ in rec.calls] == [1, 2, 3, 4, 5]


def test_expired_mid_epoch_stops_within_that_batch_and_leaves_it_unscored():
    calls = {"n": 0}
    stop_after = STEPS_PER_EPOCH + 2  # 2 batches into epoch 2

    def expired():
        calls["n"] += 1
        return calls["n"] >= stop_after

    model, result, rec = _run(time_s=1e6, max_epochs=5, expired=expired)
    assert result.stopped_by_deadline
    assert result.epochs_planned == 5
    assert result.epochs_run == 1
    assert rec.calls == [(1, STEPS_PER_EPOCH)]  # epoch 2 was not scored
    assert calls["n"] == stop_after  # no further batch was checked...
    assert int(model.optimizer.iterations.numpy()) == stop_after  # ...or trained


def test_expired_on_the_first_batch_scores_nothing():
    model, result, rec = _run(time_s=1e6, max_epochs=5, expired=lambda: True)
    assert result.stopped_by_deadline and result.epochs_run == 0
    assert rec.calls == []
    assert int(model.optimizer.iterations.numpy()) == 1


def test_learning_rate_schedule_is_sized_to_the_planned_steps(monkeypatch):
    # 0.125 s a step, 4 steps an epoch: 3.25 s plan 6 epochs and a last one of 2 steps, far fewer than max_epochs
    lr = 1e-3
    model, result, rec = _run(time_s=3.25, max_epochs=100, lr=lr, clock=_VirtualTime(0.125), monkeypatch=monkeypatch)
    assert result.epochs_planned == result.epochs_run == 7
    total = 6 * STEPS_PER_EPOCH + 2
    assert result.steps_planned == total and result.last_epoch_steps == 2
    assert rec.calls[-1] == (7, total)
    opt = model.optimizer
    assert int(opt.iterations.numpy()) == total
    schedule = opt._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
    peak = max(float(schedule(s)) for s in range(total + 1))
    assert peak == pytest.approx(lr, rel=1e-3)
    # after the last step the rate has decayed to (about) zero
    assert float(opt.learning_rate) < 0.01 * peak
    assert float(schedule(total)) < 0.01 * peak
    # ...and not long before: the last epoch still trains at a useful rate
    assert float(schedule(total - STEPS_PER_EPOCH)) > 0.05 * peak


def test_epochs_slowing_down_are_replanned_and_still_end_annealed(monkeypatch):
    # 0.125 s a step for two epochs, then 0.25 s: 3.5 s first plan 7 epochs, then 4 and a last one of 2 steps
    clock = _VirtualTime(0.125, step_costs=lambda i: 0.125 if i < 2 * STEPS_PER_EPOCH else 0.25)
    lr = 1e-3
    model, result, rec = _run(time_s=3.5, max_epochs=100, lr=lr, clock=clock, monkeypatch=monkeypatch)
    assert result.epochs_run == result.epochs_planned == 5
    assert rec.calls == [(1, 4), (2, 8), (3, 12), (4, 16), (5, 18)]
    assert clock.now == 3.5
    assert float(model.optimizer.learning_rate) < 0.01 * lr


def test_fine_tune_learns_the_separable_task():
    model, result, rec = _run(time_s=1e6, max_epochs=30, lr=1e-2)
    views, y = _data()
    for view in views:
        acc = (np.asarray(model.predict_on_batch(view)).argmax(1) == y).mean()
        assert acc >= 0.9


def test_freeze_batch_norm_reaches_nested_models():
    inner_in = keras.Input((4, 4, 8))
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="inner_bn")(
        keras.layers.Conv2D(8, 1, name="inner_conv")(inner_in)), name="inner")
    deeper = keras.Sequential([keras.Input((4, 4, 8)), inner, keras.layers.BatchNormalization(name="mid_bn")],
                              name="deeper")
    a = keras.Input((4, 4, 8))
    x = keras.layers.BatchNormalization(name="outer_bn")(a)
    x = deeper(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(a, keras.layers.Dense(NUM_CLASSES, name="dense")(x))

    freeze_batch_norm(model)

    bns = [model.get_layer("outer_bn"), deeper.get_layer("mid_bn"), inner.get_layer("inner_bn")]
    assert all(not bn.trainable for bn in bns)
    assert model.get_layer("dense").trainable and inner.get_layer("inner_conv").trainable
    assert model.trainable and deeper.trainable and inner.trainable
    bn_weights = {id(w) for bn in bns for w in bn.weights}
    assert not bn_weights & {id(w) for w in model.trainable_weights}


def test_frozen_batch_norm_statistics_do_not_move_during_fine_tune():
    a = keras.Input((4, 4, 8))
    x = keras.layers.BatchNormalization(name="bn")(a)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(a, keras.layers.Dense(NUM_CLASSES, activation="softmax")(x))
    freeze_batch_norm(model)
    before = [w.copy() for w in model.get_layer("bn").get_weights()]
    _run(time_s=1e6, max_epochs=2, model=model)
    after = model.get_layer("bn").get_weights()
    for b, c in zip(before, after):
        np.testing.assert_array_equal(b, c)


# --- plan_steps: whole epochs, then a shortened last epoch -----------------------------------------

@pytest.mark.parametrize("left_s, expected", [
    (8.0, 8),     # two whole epochs of 4 steps, each 4 s with its evaluation (0.75 s a step, 1 s to evaluate)
    (9.0, 8),     # 1 s more: the evaluation alone, no step: no third epoch
    (9.75, 9),    # one step and its evaluation: a shortened third epoch
    (11.25, 11),  # three steps
    (12.0, 12),   # a whole third epoch
])
def test_plan_fills_the_time_left_with_whole_epochs_then_a_shortened_one(left_s, expected):
    assert plan_steps(0, 0, left_s, step_s=0.75, eval_s=1.0, steps_per_epoch=4, min_epoch_steps=1) == expected


def test_plan_skips_a_shortened_epoch_below_the_minimum():
    # 1 step of a third epoch fits, but an epoch needs 3 to be worth its evaluation
    assert plan_steps(0, 0, 10.0, step_s=0.75, eval_s=1.0, steps_per_epoch=4, min_epoch_steps=1) == 9
    assert plan_steps(0, 0, 10.0, step_s=0.75, eval_s=1.0, steps_per_epoch=4, min_epoch_steps=3) == 8


def test_plan_mid_epoch_shortens_the_epoch_in_progress_or_abandons_it():
    # 2 steps into an epoch of 4 (1 s each, evaluation 1 s): 2.5 s left finish 1 more step and the evaluation
    assert plan_steps(2, 0, 2.5, step_s=1.0, eval_s=1.0, steps_per_epoch=4, min_epoch_steps=1) == 3
    # 0.5 s left: not even the evaluation; the epoch in progress is abandoned (a result below step)
    assert plan_steps(2, 0, 0.5, step_s=1.0, eval_s=1.0, steps_per_epoch=4, min_epoch_steps=1) == 0
    # between epochs (step == epoch_start) it is a plain plan from there
    assert plan_steps(4, 4, 5.0, step_s=1.0, eval_s=1.0, steps_per_epoch=4, min_epoch_steps=1) == 8


def test_each_epoch_is_scored_with_its_number_and_step_as_integers():
    """Keras' CallbackList turns an epoch's logs into floats: ScoreEpoch gives the step back as the integer that
    checkpoint names are formatted with."""
    model, result, rec = _run(time_s=1e6, max_epochs=2)
    assert rec.calls and all(type(e) is int and type(s) is int for e, s in rec.calls)
