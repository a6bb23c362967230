"""Fine-tuning on several replicas (setting ``replicas``, tf.distribute.MirroredStrategy), on this CPU split into two
logical devices. TensorFlow can only be split before it starts, so each case runs in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from timebox.data.synthetic import make_synthetic

ROOT = Path(__file__).resolve().parents[1]
STEP = textwrap.dedent("""
    import numpy as np, keras
    from timebox.train.replicas import Replicas, setup_devices

    devices = setup_devices(2)
    def build():
        keras.utils.set_random_seed(0)
        inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu")], name="inner")
        x = keras.Input((4,))
        return keras.Model(x, keras.layers.Dense(3, activation="softmax")(inner(x)))
    single, source = build(), build()
    twin = Replicas(devices, source)
    single.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    with twin.scope():
        twin.model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    rng, losses = np.random.default_rng(0), []
    for _ in range(3):
        x, y = rng.normal(size=(10, 4)).astype("float32"), rng.integers(0, 3, 10)
        w = rng.uniform(0.5, 2, 10).astype("float32")
        losses.append([float(single.train_on_batch(x, y, sample_weight=w)), twin.step(x, y, w)])
    twin.copy_back()
    parts = twin.strategy.experimental_local_results(twin.split(x, y, w))
    print(json.dumps({"devices": devices, "losses": losses, "parts": [len(p[0]) for p in parts],
                      "gap": max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), source.get_weights()))}))
""")


def _python(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "submission")}
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_step_split_between_two_replicas_is_the_step_of_the_whole_batch():
    """Each replica gets half the batch; their summed gradients make the same weighted step as one device on the
    whole batch (SGD: the weights agree to float precision), and the twin's weights come back into the model."""
    seen = _python(STEP)
    assert seen["devices"] == ["/cpu:0", "/cpu:1"] and seen["parts"] == [5, 5]
    assert all(abs(a - b) < 1e-5 for a, b in seen["losses"])
    assert seen["gap"] < 1e-5


def test_online_fine_tunes_on_two_replicas_and_says_so(tmp_path):
    """``--replicas 2`` with no GPU: the fine-tune trains on the CPU split in two, its epochs scored as usual; the
    console holds timebox's lines only."""
    data = make_synthetic(tmp_path / "data", n_per_class=10, n_test_per_class=2, size=64,
                          classes=("circle", "square"))
    out, config = tmp_path / "OUT", tmp_path / "c.json"
    config.write_text(json.dumps({"deep_min_epochs": 1e-3, "train_mirror_min_epochs": 0}))  # fine-tune at once
    env = {k: v for k, v in os.environ.items() if k not in ("TIMEBOX_START", "TF_CPP_MIN_LOG_LEVEL", "TIMEBOX_VERBOSE")}
    env["PYTHONPATH"] = str(ROOT / "submission")
    run = subprocess.run([sys.executable, "-m", "timebox", "online", "--train-dir", str(data / "train"), "--test-dir",
                          str(data / "test"), "--out", str(out), "--budget", "60s", "--size", "64", "--workers", "1",
                          "--replicas", "2", "--finetune-cut", "12", "--no-refit", "--config", str(config)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["finetune_devices"] == ["/cpu:0", "/cpu:1"]
    assert "on 2 replicas (/cpu:0, /cpu:1)" in run.stdout + run.stderr
    history = json.loads((out / "report" / "history.json").read_text())
    assert history["finetune"]["epochs_run"] >= 1, "an epoch trained on the replicas was scored"
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + 4
    foreign = [line for line in run.stderr.splitlines() if not line.startswith("[")]
    assert not foreign, "the console holds timebox's lines only (float16 activations: TensorFlow's half notice held)"
