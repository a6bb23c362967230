"""`pretrain` (offline_pretrain/) and the second transfer (`online --init`): which pretrained folder a run starts
from, the errors when it does not fit the run, and a real pretraining run on synthetic images whose folder an
online run on other classes then starts from."""

import json

import numpy as np
import pytest

from offline_pretrain.pretrain import PretrainConfig, run_pretrain
from timebox.cli import main
from timebox.config import files_fingerprint
from timebox.data.synthetic import make_synthetic
from timebox.errors import UsageError
from timebox.pretrained import META, PretrainedMeta, init_settings, read_meta, resolve_init

SIZE = 64


def _fake_folder(folder, **changes):
    folder.mkdir(parents=True)
    (folder / "backbone.weights.h5").write_bytes(b"")
    meta = {**dict(backbone="efficientnet-lite0", input_size=SIZE, preprocess="lite", class_names=["a", "b"],
                   class_ids=[0, 1], val_accuracy=0.9, data=None, cut=12, timebox_version="0.1.0"), **changes}
    PretrainedMeta(**meta).save(folder)
    return folder


def test_init_auto_takes_the_only_pretrained_model_and_refuses_to_guess_between_several(tmp_path):
    models = tmp_path / "models"
    assert resolve_init("auto", models) is None, "no models folder: ImageNet"
    assert resolve_init("imagenet", models) is None
    one = _fake_folder(models / "flowers")
    (models / "notes").mkdir()  # a folder without meta.json is not a model
    assert resolve_init("auto", models) == one
    _fake_folder(models / "birds")
    with pytest.raises(UsageError, match=r"several pretrained models \(birds, flowers\)"):
        resolve_init("auto", models)
    assert resolve_init(str(one), models) == one


def test_a_folder_that_is_not_pretrained_or_does_not_fit_the_run_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="not a pretrained model folder .meta.json is missing"):
        resolve_init(str(tmp_path / "OUT" / "model"))
    folder = _fake_folder(tmp_path / "m")
    assert init_settings(folder, {"batch_size": 16}) == {
        "weights": str(folder / "backbone.weights.h5"), "backbone": "efficientnet-lite0", "size": SIZE}
    with pytest.raises(UsageError, match="pretrained with size 64, this run asks for 96"):
        init_settings(folder, {"size": 96})
    with pytest.raises(UsageError, match="pretrained with backbone efficientnet-lite0, this run asks for "
                                         "efficientnet-lite1"):
        init_settings(folder, {"backbone": "efficientnet-lite1"})
    (folder / META).write_text("{broken")
    with pytest.raises(UsageError, match="meta.json: unreadable"):
        read_meta(folder)


def test_head_rows_are_matched_by_name_reordered_missing_and_new(tmp_path):
    from timebox.models.heads import build_head, transfer_rows
    from timebox.train.linear_head import fit_linear_head

    source = build_head(5, 3, seed=1)
    kernel, bias = np.arange(15, dtype=np.float32).reshape(5, 3), np.array([0.1, 0.2, 0.3], np.float32)
    source.get_layer("head_dense").set_weights([kernel, bias])
    source.save_weights(str(tmp_path / "head.weights.h5"))
    rows = transfer_rows(tmp_path / "head.weights.h5", ["a", "b", "c"], ["c", "a", "new"], 5)  # b is missing
    assert rows.matched.tolist() == [True, True, False]
    assert np.array_equal(rows.kernel[:, :2], kernel[:, [2, 0]]) and np.allclose(rows.bias[:2], [0.3, 0.1])
    x, y = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32) + 3, np.arange(12) % 3
    start = fit_linear_head(x, y, x, y, 3, init=rows, iterations=0).model.get_layer("head_dense").get_weights()
    assert np.allclose(start[0][:, :2], kernel[:, [2, 0]], atol=1e-4)
    assert np.allclose(start[1][:2], [0.3, 0.1], atol=1e-4)
    assert not start[0][:, 2].any(), "a new class starts where the fitter starts: zero"
    dense = build_head(5, 3, seed=2).get_layer("head_dense")
    fresh = dense.get_weights()[0][:, 2].copy()
    rows.apply(dense)
    after = dense.get_weights()[0]
    assert np.array_equal(after[:, 0], kernel[:, 2]) and np.array_equal(after[:, 2], fresh), "new: still fresh"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 45 s pretraining run on synthetic circles/squares/stripes, fine-tuning as soon as any epoch fits."""
    data = make_synthetic(tmp_path_factory.mktemp("own"), n_per_class=12, n_test_per_class=1, size=SIZE,
                          classes=("circle", "square", "stripes"))
    models, pre = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("PRE")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TIMEBOX_START", raising=False)
        result = run_pretrain(PretrainConfig(data / "train", 45.0, pre, "shapes", models_dir=models,
                                             settings=dict(size=SIZE, workers=1, deep_min_epochs=1e-3,
                                                           train_mirror_min_epochs=0)))
    return data, result, pre


def test_pretrain_writes_a_complete_folder_with_its_metadata(pretrained):
    data, result, _ = pretrained
    names = sorted(p.name for p in result.folder.iterdir())
    assert names == ["backbone.weights.h5", "head.weights.h5", "labels.json", "meta.json", "model.keras"]
    meta = read_meta(result.folder)
    assert meta.class_names == ["circle", "square", "stripes"] and meta.class_ids == [0, 1, 2]
    assert meta.input_size == SIZE and meta.backbone == "efficientnet-lite0" and meta.preprocess
    assert meta.data == files_fingerprint(data / "train") and meta.val_accuracy == result.val_accuracy
    assert meta.cut is not None, "it fine-tuned from a cut"


def test_the_pretrained_backbone_is_the_fine_tuned_one_and_online_starts_from_it(pretrained, tmp_path):
    from timebox.models.registry import build_extractor, get_backbone

    _, result, pre = pretrained
    spec = get_backbone("efficientnet-lite0")
    ours = build_extractor(spec, SIZE, str(result.folder / "backbone.weights.h5")).full.get_weights()
    imagenet = build_extractor(spec, SIZE, "imagenet").full.get_weights()
    source = json.loads((pre / "run" / "report" / "summary.json").read_text())["predictions_from"]
    changed = any(not np.array_equal(a, b) for a, b in zip(ours, imagenet))
    assert changed == ("finetune" in source), f"the output's backbone is saved (the output: {source})"
    other = make_synthetic(tmp_path / "judge", n_per_class=8, n_test_per_class=2, size=SIZE,
                           classes=("triangle", "circle"))  # the judge's classes: one new, one shared
    out = tmp_path / "OUT"
    assert main(["online", "--train-dir", str(other / "train"), "--test-dir", str(other / "test"), "--out", str(out),
                 "--budget", "30s", "--init", str(result.folder), "--workers", "1"]) == 0
    config = json.loads((out / "report" / "config.json").read_text())
    assert config["init"] == str(result.folder) and config["weights"].endswith("backbone.weights.h5")
    assert config["input_size"] == SIZE
    assert main(["online", "--train-dir", str(other / "train"), "--test-dir", str(other / "test"), "--out",
                 str(tmp_path / "OUT2"), "--budget", "30s", "--init", str(result.folder), "--size", "96"]) == 2


def test_pretrain_killed_mid_fine_tune_resumes_within_its_budget_keeping_the_best(tmp_path):
    """SIGKILL once fine-tuning kept a checkpoint, then the same command with --resume: the run ends by itself,
    both sessions within the one budget; the published model is at least the best kept before the kill, with the
    cut it trained from (a resumed run's own timeline has no extract phase)."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    data = make_synthetic(tmp_path / "own", n_per_class=12, n_test_per_class=1, size=SIZE,
                          classes=("circle", "square", "stripes"))
    (tmp_path / "c.json").write_text(json.dumps(dict(size=SIZE, deep_min_epochs=1e-3, train_mirror_min_epochs=0,
                                                     finetune_cut=12, val_fraction=0.25)))
    run_sh = Path(__file__).resolve().parents[1] / "run.sh"
    argv = [str(run_sh), "pretrain", "--data", str(data / "train"), "--budget", "75s", "--out", str(tmp_path / "PRE"),
            "--name", "shapes", "--models-dir", str(tmp_path / "models"), "--config", str(tmp_path / "c.json")]
    env = {k: v for k, v in os.environ.items() if k not in ("TIMEBOX_START", "TIMEBOX_START_PID")}
    manifest = tmp_path / "PRE" / "run" / "checkpoints" / "manifest.json"
    start = time.time()
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    kept = []
    while first.poll() is None and time.time() - start < 70 and not kept:
        time.sleep(0.5)
        if manifest.is_file():
            kept = [c for c in json.loads(manifest.read_text())["checkpoints"] if c["phase"] == "finetune"]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert kept, "a fine-tune checkpoint before the kill"
    best_before = max(c["val_accuracy"] for c in json.loads(manifest.read_text())["checkpoints"])
    second = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads((tmp_path / "PRE" / "run" / "report" / "summary.json").read_text())
    assert summary["spent_by_earlier_sessions_s"] > 0 and summary["cut"] == 12
    assert summary["wall_s"] <= 75 - 5, "both sessions together (wall_s counts the earlier one), the publish kept"
    meta = read_meta(tmp_path / "models" / "shapes")
    assert meta.cut == 12 and meta.val_accuracy >= best_before
