"""The finalise phase's val prediction for the report: a refit output's is its predecessor's (unseen val images)
when known; it never cuts into the end reserve."""

from types import SimpleNamespace

import numpy as np

from fakes import context, planner
from timebox.outputs import OutputRecord
from timebox.phases.finalise import _output_val_probs
from timebox.plan import Counts


def _scorer(output_val=None):
    return SimpleNamespace(output_weights=lambda: None, last=SimpleNamespace(source="finetune epoch 5"),
                           candidates={}, val_probs=lambda source: np.ones((3, 2)) / 2, output_val=output_val)


def test_a_refit_outputs_val_report_is_its_predecessors_without_a_prediction(tmp_path):
    """The output before the refit was scored on the val images unseen: its probabilities are the report's, kept
    from scoring, so even a late refit output gets its val report."""
    p = planner(Counts(train=100, val=300, test=500, views=1), top_rate=10.0, budget_s=20.0)  # no time to predict
    ctx = context(tmp_path, p, OutputRecord(0.9, "finetune epoch 5", refit=True, final=True))
    unseen = np.eye(2)[[0, 1, 1]]
    probs = _output_val_probs(ctx, _scorer(output_val=unseen), SimpleNamespace(model=None))
    assert probs is unseen and not ctx.session.notes


def test_a_refit_output_late_gets_no_val_prediction_and_a_note(tmp_path):
    p = planner(Counts(train=100, val=300, test=500, views=1), top_rate=10.0, budget_s=20.0)  # 30 s to predict val
    ctx = context(tmp_path, p, OutputRecord(0.9, "finetune epoch 5", refit=True, final=True))
    probs = _output_val_probs(ctx, _scorer(), SimpleNamespace(model=None))
    assert probs is None
    assert any("confusion matrix" in n for n in ctx.session.notes)


def test_a_refit_output_with_time_left_is_predicted_on_the_val_images(tmp_path):
    p = planner(Counts(train=100, val=300, test=500, views=1), top_rate=10.0, budget_s=1e6)
    ctx = context(tmp_path, p, OutputRecord(0.9, "finetune epoch 5", refit=True, final=True))
    probs = _output_val_probs(ctx, _scorer(), SimpleNamespace(model=None))
    assert probs.shape == (3, 2) and not ctx.session.notes


def test_the_output_model_is_the_checkpoint_its_predictions_came_from_not_the_best_ranked(tmp_path):
    """A later model that ties the output's val accuracy with a lower loss ranks first among the checkpoints but
    does not replace the predictions: the weights finalise loads (OUT/model, a pretrain's backbone) are the
    output's own checkpoint, which is kept even when k later ties push it out of the top k."""
    import keras

    from timebox.checkpoints import CheckpointManager
    from timebox.outputs import Outputs
    from timebox.phases.scoring import Scorer
    from timebox.predict import LabelMap
    from timebox.recovery import RunState

    p = planner(Counts(train=4, val=4, test=2, views=1))
    ctx = context(tmp_path, p)
    ctx.outputs = Outputs(tmp_path / "OUT", ["a.jpg", "b.jpg"], LabelMap([0, 1], ["x", "y"], 0, 8, "m"),
                          RunState(tmp_path / "state"), log=lambda m: None)
    ctx.session.__dict__.update(collect_garbage=lambda: None, scores=[], events=SimpleNamespace(scalars=lambda *a: None))
    ctx.spec = SimpleNamespace(name="m")
    x = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
    acts = SimpleNamespace(val=[x], y_val=np.array([0, 1, 0, 1]), test=[x[:2]], n_test=2, usable=np.ones(2, bool))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax", use_bias=False)])
    scorer = Scorer(ctx, acts, model, 1, CheckpointManager(tmp_path / "checkpoints", k=2))
    for epoch, scale in enumerate((1.0, 3.0, 5.0, 7.0)):  # all right on val, each surer: lower val loss
        model.set_weights([np.eye(2, dtype=np.float32) * scale])
        scorer.score("head" if epoch == 0 else "finetune", epoch, epoch)
    record = ctx.outputs.record
    assert record.source == "head epoch 0" and scorer.checkpoints.best()["epoch"] == 3
    assert [e["epoch"] for e in scorer.checkpoints.entries] == [3, 2, 0], "the top 2 and the output's"
    path, source = scorer.output_weights()
    model.load_weights(path)
    assert source == "head epoch 0" and np.allclose(model.get_weights()[0], np.eye(2))
