"""Confusion costs (timebox.train.costs): the cost file read by class names and validated (wrong files refused with
the file and entry named), the loss term it adds, training with it, and `propose-costs` drafting one from a run."""

import json

import keras
import numpy as np
import pytest

from timebox.cli import main
from timebox.config import OnlineConfig, read_settings
from timebox.errors import UsageError
from timebox.train.costs import propose_costs, read_costs
from timebox.train.recipe import Recipe

NAMES = ["charger", "charging cable", "mop", "earphones"]


def _file(tmp_path, spec):
    path = tmp_path / "costs.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


def test_pairs_are_one_direction_and_groups_cost_every_mistake_between_their_classes(tmp_path):
    path = _file(tmp_path, {"pairs": [{"true": "mop", "predicted": "earphones", "cost": 1.0}],
                            "groups": [{"classes": ["charger", "charging cable"], "cost": 0.1}]})
    costs = read_costs(path, NAMES)
    want = np.zeros((4, 4), np.float32)
    want[2, 3], want[0, 1], want[1, 0] = 1.0, 0.1, 0.1
    np.testing.assert_array_equal(costs, want)


@pytest.mark.parametrize("spec, named", [
    ("{not json", "not a readable JSON file"),
    ({"pairs": [{"true": "mop", "predicted": "broom", "cost": 1}]}, "pairs[0]: predicted 'broom' is not a class"),
    ({"pairs": [{"true": "mop", "predicted": "earphones", "cost": -1}]}, "pairs[0]: cost -1 must be"),
    ({"pairs": [{"true": "mop", "predicted": "earphones", "cost": "high"}]}, "pairs[0]: cost 'high' must be"),
    ({"pairs": [{"true": "mop", "predicted": "mop", "cost": 1}]}, "a class paired with itself"),
    ({"groups": [{"classes": ["mop"], "cost": 1}]}, "groups[0]: \"classes\" must list two or more"),
    ({"weights": []}, "must be an object with \"pairs\" and/or \"groups\""),
])
def test_a_wrong_cost_file_is_refused_naming_the_file_and_the_entry(tmp_path, spec, named):
    path = _file(tmp_path, spec)
    with pytest.raises(UsageError) as e:
        read_costs(path, NAMES)
    assert str(path) in str(e.value) and named in str(e.value)


def test_the_setting_refuses_a_missing_file_before_the_run(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"cost_matrix": str(tmp_path / "nope.json")}))
    with pytest.raises(UsageError, match="cost_matrix.*nope.json: no such file"):
        read_settings(tmp_path / "c.json")


def test_the_loss_adds_minus_cost_times_log_one_minus_p_of_each_costly_class(tmp_path):
    path = _file(tmp_path, {"pairs": [{"true": "mop", "predicted": "earphones", "cost": 2.0}]})
    cfg = OnlineConfig("t", None, "o", 60.0, cost_matrix=str(path), label_smoothing=0.0)
    recipe = Recipe.of(cfg, NAMES)
    probs = np.array([[0.1, 0.1, 0.5, 0.3], [0.1, 0.1, 0.5, 0.3]], np.float32)
    y = np.array([2, 3])
    got = keras.ops.convert_to_numpy(recipe.keras_loss(y, 4).call(y, probs))
    np.testing.assert_allclose(got, [-np.log(0.5) - 2.0 * np.log(1 - 0.3), -np.log(0.3)], rtol=1e-5)
    focal = Recipe("focal", 0.0, "none", recipe.costs).keras_loss(y, 4)
    assert float(keras.ops.convert_to_numpy(focal.call(y, probs))[0]) > float(
        keras.ops.convert_to_numpy(Recipe("focal", 0.0).keras_loss(y, 4).call(y, probs))[0])


def test_training_with_a_cost_pushes_probability_off_the_costly_class():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)  # 2 classes that overlap near x0 = 0
    x[:, 0] += rng.normal(0, 0.7, 200)
    costs = ((0.0, 5.0), (0.0, 0.0))  # calling a class-0 image class 1 is costly
    mass = []
    for recipe in (Recipe(label_smoothing=0.0), Recipe(label_smoothing=0.0, costs=costs)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(keras.optimizers.Adam(0.05), loss=recipe.keras_loss(y, 2))
        model.fit(x, y, epochs=30, batch_size=50, verbose=0)
        mass.append(float(np.mean(model.predict_on_batch(x[y == 0])[:, 1])))
    assert mass[1] < mass[0]


def test_propose_costs_drafts_the_most_frequent_mistakes_from_a_run(tmp_path, capsys):
    report = tmp_path / "OUT" / "report"
    report.mkdir(parents=True)
    (report / "confusion_val.csv").write_text("true\\predicted,mop,earphones,charger\n"
                                              "mop,8,2,0\nearphones,1,9,0\ncharger,0,0,5\n")
    assert main(["propose-costs", "--run", str(tmp_path / "OUT"), "--out", str(tmp_path / "costs.json")]) == 0
    proposal = json.loads((tmp_path / "costs.json").read_text())
    assert proposal == {"pairs": [{"true": "mop", "predicted": "earphones", "cost": 1.0},
                                  {"true": "earphones", "predicted": "mop", "cost": 0.5}]}
    assert read_costs(tmp_path / "costs.json", ["mop", "earphones", "charger"])[0, 1] == 1.0
    assert main(["propose-costs", "--run", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    assert propose_costs(report / "confusion_val.csv", top=1)["pairs"][0]["true"] == "mop"


@pytest.mark.parametrize("summary, ok", [({"refit": True}, False), ({"refit": False}, True),
                                         ({"refit": True, "val_unseen": True}, True),
                                         ({"refit": True, "val_unseen": False}, False)])
def test_propose_costs_refuses_a_val_report_of_a_model_trained_on_val(tmp_path, capsys, summary, ok):
    """A refit run's val report is its predecessor's (``val_unseen``); one of a model that trained on the val images
    (or a summary from before ``val_unseen``, refit) is refused, naming --no-refit."""
    report = tmp_path / "OUT" / "report"
    report.mkdir(parents=True)
    (report / "confusion_val.csv").write_text("true\\predicted,mop,earphones\nmop,8,2\nearphones,1,9\n")
    (report / "summary.json").write_text(json.dumps(summary))
    assert main(["propose-costs", "--run", str(tmp_path / "OUT"), "--out", str(tmp_path / "costs.json")]) == (
        0 if ok else 2)
    assert ok == (tmp_path / "costs.json").exists() and ok != ("--no-refit" in capsys.readouterr().err)
