"""timebox.export: the Flink SavedModel (input_1, the judge's scaling undone, fresh-process TensorFlow
gives the Keras model's probabilities), its latency check, the ModelArts model/ folder with its
service run end to end through a stand-in base class, and atomic rewrites.

A tiny real classifier (EfficientNet-Lite0 at 32 px, ImageNet weights, a random head) with
non-contiguous contest ids [2, 0, 5] serves every test.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from timebox.config import read_settings
from timebox.data.decode import decode_image, decode_truncated
from timebox.errors import UsageError
from timebox.export import modelarts
from timebox.export.flink import JUDGE_INPUT_FILE, LATENCY_LIMIT_MS, export_flink, latency_check
from timebox.export.judge_input import FLINK_TEMPLATE, JudgeInput
from timebox.export.modelarts import export_modelarts, rule_names
from timebox.export.serving import decode_judge_input, replace_dir
from timebox.models.heads import build_head, compose_classifier
from timebox.models.registry import build_extractor, get_backbone
from timebox.predict import LABELS_FILE, MODEL_FILE, LabelMap, predict_dir

SIZE = 32
CLASS_IDS, CLASS_NAMES = [2, 0, 5], ["glass", "cardboard", "trash"]
TRASHNET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "trashnet" / "test_data"
STUB = Path(__file__).resolve().parents[1] / "submission" / "timebox" / "export" / "modelarts_stub"
BGR_UNIT = JudgeInput(size=SIZE, channels="BGR", value_max=1.0, mean=(0.406, 0.456, 0.485), std=(0.225, 0.224, 0.229))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, images):
    """A saved timebox model folder, written the way `online` writes one; its random head is centred
    and scaled on the test images' features so that its answers vary."""
    folder = tmp_path_factory.mktemp("model")
    extractor = build_extractor(get_backbone("efficientnet-lite0"), SIZE, "imagenet").full
    features = np.asarray(extractor.predict_on_batch(images))
    kernel = np.random.default_rng(0).normal(0, 1, (features.shape[1], len(CLASS_IDS)))
    kernel *= 3 / np.std((features - features.mean(0)) @ kernel)
    head = build_head(features.shape[1], len(CLASS_IDS), seed=0)
    head.get_layer("head_dense").set_weights([kernel, -features.mean(0) @ kernel])
    model = compose_classifier(extractor, head)
    model.save(folder / MODEL_FILE)
    LabelMap(CLASS_IDS, CLASS_NAMES, 1, SIZE, "efficientnet-lite0").save(folder / LABELS_FILE)
    return folder, model


@pytest.fixture(scope="module")
def images():
    """Smooth random colour fields (so scaling and channel order change the answer), uint8 RGB."""
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (12, 4, 4, 3)).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for s in small])


def contest_order(probs):
    """Keras probabilities (internal classes) laid out by contest id, zeros for unused ids."""
    out = np.zeros((len(probs), max(CLASS_IDS) + 1), np.float32)
    out[:, CLASS_IDS] = probs
    return out


@pytest.fixture(scope="module")
def expected(model_dir, images):
    probs = np.asarray(model_dir[1].predict_on_batch(images))
    assert len(set(np.argmax(probs, axis=1))) > 1, "the test model should not answer one class for all images"
    return contest_order(probs)


@pytest.fixture(scope="module")
def flink_exports(model_dir, tmp_path_factory):
    """The default judge input (at the model's size) and a BGR 0..1 mean/std one."""
    root = tmp_path_factory.mktemp("flink")
    return {judge: export_flink(model_dir[0], root / str(i), judge)
            for i, judge in enumerate((JudgeInput(size=SIZE), BGR_UNIT))}


# --- JudgeInput --------------------------------------------------------------------------------


@pytest.mark.parametrize("judge", [JudgeInput(), BGR_UNIT, JudgeInput(dtype="uint8", channels="BGR"),
                                   JudgeInput(mean=(123.68, 116.78, 103.94), std=(58.4, 57.1, 57.4))])
def test_judge_input_decode_undoes_encode_exactly(judge, images):
    pixels = decode_judge_input(judge, tf.constant(judge.encode(images))).numpy()
    np.testing.assert_array_equal(np.rint(pixels).astype(np.uint8), images)
    assert judge.encode(images).dtype == np.dtype(judge.dtype)


def test_default_judge_input_is_the_contestants_flink_template():
    """RunZoo3.java: channels reversed from OpenCV's BGR (RGB), mean 127.5, scale 127.5, 380 px."""
    assert JudgeInput.parse("") == JudgeInput.parse(FLINK_TEMPLATE) == JudgeInput(
        380, "RGB", "float32", 255.0, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5))


@pytest.mark.parametrize("text, want", [
    ("size=224,channels=bgr,mean=103.9/116.8/123.7", JudgeInput(224, "BGR", "float32", 255.0, (103.9, 116.8, 123.7),
                                                               (127.5,) * 3)),
    ("scale=58.4/57.1/57.4, dtype=uint8", JudgeInput(380, "RGB", "uint8", 255.0, (127.5,) * 3, (58.4, 57.1, 57.4))),
    ("value_max=1,mean=0,std=1", JudgeInput(380, "RGB", "float32", 1.0, (0.0,) * 3, (1.0,) * 3)),
])
def test_judge_input_parses_pairs_over_the_template_and_round_trips(text, want):
    assert JudgeInput.parse(text) == want
    assert JudgeInput.parse(want.spec()) == want


@pytest.mark.parametrize("text, named", [("size=big", "size='big'"), ("mean=1/2", "mean='1/2'"),
                                         ("colour=RGB", "'colour=RGB'"), ("380", "'380'"),
                                         ("channels=RBG", "channels 'RBG'"), ("std=0", "std must be positive")])
def test_judge_input_refuses_a_bad_pair_naming_it(text, named):
    with pytest.raises(UsageError, match=f"judge input.*{re.escape(named)}"):
        JudgeInput.parse(text)


def test_judge_input_setting_is_checked_from_a_config_file(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"judge_input": "size=0"}))
    with pytest.raises(UsageError, match=r"c\.json.*judge_input.*size"):
        read_settings(tmp_path / "c.json")
    (tmp_path / "c.json").write_text(json.dumps({"judge_input": "size=299,channels=BGR"}))
    assert read_settings(tmp_path / "c.json")["judge_input"] == "size=299,channels=BGR"


@pytest.mark.parametrize("bad", [{"channels": "RBG"}, {"dtype": "float16"}, {"std": (1.0, 0.0, 1.0)}, {"size": 0}])
def test_judge_input_refuses_bad_settings(bad):
    with pytest.raises(UsageError, match="judge input"):
        JudgeInput(**bad)


# --- Flink -------------------------------------------------------------------------------------


def test_flink_signature_takes_input_1_and_gives_output_1(flink_exports):
    path = flink_exports[JudgeInput(size=SIZE)]
    assert path.name == "SavedModel" and (path / "saved_model.pb").is_file()
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert list(serve.structured_input_signature[1]) == ["input_1"]
    assert spec.shape.as_list() == [None, SIZE, SIZE, 3] and spec.dtype == tf.float32
    assert list(serve.structured_outputs) == ["output_1"]


def test_flink_savedmodel_in_a_fresh_tensorflow_process_gives_the_keras_probabilities(
        flink_exports, images, expected, tmp_path):
    """Only `import tensorflow`: each SavedModel fed exactly what its JudgeInput says the judge feeds."""
    jobs = []
    for i, (judge, path) in enumerate(flink_exports.items()):
        np.save(tmp_path / f"in{i}.npy", judge.encode(images))
        jobs.append((str(path), str(tmp_path / f"in{i}.npy"), str(tmp_path / f"out{i}.npy")))
    script = textwrap.dedent("""
        import sys, json, numpy as np, tensorflow as tf
        for model, x, y in json.loads(sys.argv[1]):
            serve = tf.saved_model.load(model).signatures["serving_default"]
            np.save(y, serve(input_1=tf.constant(np.load(x)))["output_1"].numpy())
        print("timebox" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script, json.dumps(jobs)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
    for _, _, out in jobs:
        got = np.load(out)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_array_equal(np.argmax(got, axis=1), np.argmax(expected, axis=1))


def test_flink_resizes_a_larger_judge_image_to_the_model_size(model_dir, tmp_path):
    """Plain colours survive any resize unchanged, so the answer must equal the model's at its own size."""
    colours = np.array([[200, 30, 30], [20, 180, 40], [10, 10, 220], [128, 128, 128]], np.uint8)
    judge = JudgeInput(size=48)
    path = export_flink(model_dir[0], tmp_path, judge)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    big = np.broadcast_to(colours[:, None, None], (4, 48, 48, 3))
    got = serve(input_1=tf.constant(judge.encode(big)))["output_1"].numpy()
    small = np.ascontiguousarray(np.broadcast_to(colours[:, None, None], (4, SIZE, SIZE, 3)))
    np.testing.assert_allclose(got, contest_order(np.asarray(model_dir[1].predict_on_batch(small))), atol=1e-5)


def test_flink_default_judge_input_gives_timebox_labels_when_fed_what_the_template_feeds(model_dir, tmp_path):
    """380 px image files: timebox decodes them itself; the template's judge decodes them at 380 px, reverses
    OpenCV's BGR to RGB, subtracts 127.5 and divides by 127.5. The export must answer timebox's labels; and
    judge_input.txt beside it gives those exact values for the Java side."""
    rng = np.random.default_rng(2)
    files = []
    for i, small in enumerate(rng.integers(0, 256, (12, 4, 4, 3)).astype(np.uint8)):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(small).resize((380, 380), Image.Resampling.BILINEAR).save(files[-1])
    ours = np.asarray(model_dir[1].predict_on_batch(np.stack([decode_image(f, SIZE).image for f in files])))
    path = export_flink(model_dir[0], tmp_path / "flink")
    bgr = np.stack([np.asarray(Image.open(f).convert("RGB"))[..., ::-1] for f in files]).astype(np.float32)
    fed = (bgr[..., ::-1] - 127.5) / 127.5  # ifReverseInputChannels = true, meanValues = 127.5, scale = 127.5
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    got = serve(input_1=tf.constant(fed))["output_1"].numpy()
    assert len(set(np.argmax(ours, axis=1))) > 1
    np.testing.assert_array_equal(np.argmax(got, axis=1), np.asarray(CLASS_IDS)[np.argmax(ours, axis=1)])
    text = (tmp_path / "flink" / JUDGE_INPUT_FILE).read_text()
    assert "ifReverseInputChannels = true, meanValues = {127.5, 127.5, 127.5}, scale = 127.5" in text
    assert "inputShape = {1, 380, 380, 3}" in text and f"judge_input: {JudgeInput.parse('').spec()}" in text


def test_latency_check_measures_per_image_ms_under_the_limit(flink_exports):
    report = latency_check(flink_exports[JudgeInput(size=SIZE)], n=5)
    assert report["n"] == 5 and report["limit_ms"] == LATENCY_LIMIT_MS == 500.0
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["max_ms"] < LATENCY_LIMIT_MS


def test_a_missing_model_file_names_it(tmp_path):
    with pytest.raises(UsageError, match=r"model\.keras: missing"):
        export_flink(tmp_path, tmp_path / "out")


# --- atomic rewrites ---------------------------------------------------------------------------


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_rewrite_keeps_the_complete_old_export(model_dir, flink_exports, tmp_path, monkeypatch):
    shutil.copytree(flink_exports[JudgeInput(size=SIZE)], tmp_path / "SavedModel")
    before = _tree(tmp_path / "SavedModel")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        export_flink(model_dir[0], tmp_path, JudgeInput(size=SIZE))
    assert _tree(tmp_path / "SavedModel") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SavedModel"]  # no half-built folder left


def test_replace_dir_swaps_in_the_new_folder_and_restores_one_a_kill_left_aside(tmp_path):
    dest = tmp_path / "model"
    replace_dir(dest, lambda tmp: (tmp / "v").write_text("1"))
    replace_dir(dest, lambda tmp: (tmp / "v").write_text("2"))
    assert (dest / "v").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    os.replace(dest, tmp_path / ".model.old-12345")  # killed between the two renames
    (tmp_path / ".model.tmp-12345").mkdir()  # ...and a half-built folder of that run
    with pytest.raises(RuntimeError):
        replace_dir(dest, lambda tmp: (_ for _ in ()).throw(RuntimeError("build failed")))
    assert (dest / "v").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --- ModelArts ---------------------------------------------------------------------------------

RULE = {"0": "recyclable/cardboard", "1": "recyclable/paper", "2": "recyclable/glass", "5": "other/trash"}


@pytest.fixture(scope="module")
def modelarts_export(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("modelarts")
    (root / "rule.json").write_text(json.dumps(RULE), encoding="utf-8")
    return export_modelarts(model_dir[0], root / "dest", val_accuracy=0.875, rule_json=root / "rule.json")


def test_modelarts_folder_holds_the_savedmodel_service_and_configs(modelarts_export):
    assert modelarts_export.name == "model"
    names = {p.name for p in modelarts_export.iterdir()}
    assert {"config.json", "customize_service.py", "garbage_classify_rule.json", "labels.json", "metric.json",
            "saved_model.pb", "timebox_decode.py", "variables"} <= names
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in modelarts_export.rglob("*"))  # the server may be another user
    serve = tf.saved_model.load(str(modelarts_export)).signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert list(serve.structured_input_signature[1]) == ["input_img"] and spec.dtype == tf.uint8
    assert json.loads((modelarts_export / "garbage_classify_rule.json").read_text(encoding="utf-8")) == RULE
    assert json.loads((modelarts_export / "metric.json").read_text()) == {"accuracy": 0.875}


def test_modelarts_config_declares_the_api_runtime_and_dependencies(modelarts_export):
    config = json.loads((modelarts_export / "config.json").read_text())
    assert config["model_type"] == "TensorFlow" and config["runtime"] == modelarts.RUNTIME
    assert config["metrics"]["accuracy"] == 0.875
    (api,) = config["apis"]
    assert api["method"] == "post" and api["request"]["Content-type"] == "multipart/form-data"
    assert api["request"]["data"]["properties"] == {"input_img": {"type": "file"}}
    assert api["response"]["data"]["properties"] == {"result": {"type": "string"}}
    packages = {p["package_name"] for d in config["dependencies"] for p in d["packages"]}
    assert {"numpy", "Pillow"} <= packages


def test_rule_names_come_from_the_rule_file_or_from_labels(tmp_path):
    labels = LabelMap(CLASS_IDS, CLASS_NAMES, 1, SIZE, "efficientnet-lite0")
    assert rule_names(labels) == {"0": "cardboard", "2": "glass", "5": "trash"}
    (tmp_path / "rule.json").write_text(json.dumps({"0": "a", "2": "b"}), encoding="utf-8")
    with pytest.raises(UsageError, match=r"rule\.json: no names for class ids \[5\]"):
        rule_names(labels, tmp_path / "rule.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UsageError, match=r"bad\.json: cannot read"):
        rule_names(labels, tmp_path / "bad.json")


def _write_images(folder):
    """Files of several kinds (a large JPEG: draft decode, RGBA PNG, greyscale, EXIF-rotated, junk), and
    a few real photos when the shared datasets are there."""
    rng = np.random.default_rng(2)
    noise = lambda h, w: Image.fromarray(rng.integers(0, 256, (h // 8, w // 8, 3)).astype(np.uint8)).resize((w, h))
    noise(240, 320).save(folder / "big.jpg", quality=90)
    rgba = noise(40, 48).convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (40, 48)).astype(np.uint8)))
    rgba.save(folder / "alpha.png")
    noise(50, 30).convert("L").save(folder / "grey.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    noise(64, 96).save(folder / "rotated.jpg", exif=exif)
    (folder / "junk.jpg").write_bytes(b"not an image")
    return sorted(folder.iterdir()) + sorted(TRASHNET.glob("*.jpg"))[:3]


@pytest.fixture
def service(modelarts_export, monkeypatch):
    """The exported customize_service.py, imported beside the stand-in base class, built on the folder."""
    monkeypatch.syspath_prepend(str(STUB))
    spec = importlib.util.spec_from_file_location("customize_service", modelarts_export / "customize_service.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ImageClassifyService("model", str(modelarts_export))


def test_modelarts_service_answers_like_the_keras_model_on_timebox_decoded_images(service, model_dir, tmp_path):
    _, model = model_dir
    for path in _write_images(tmp_path):
        decoded = decode_image(path, SIZE)
        with open(path, "rb") as f:
            request = {"input_img": {path.name: f}}
            with open(path, "rb") as g:
                batch = service._preprocess({"input_img": {path.name: g}})
            answer = service.inference(request)
        if decoded.image is None:
            assert batch["usable"] == [False]
            want = CLASS_IDS[1]  # labels.json's prior class
        else:
            np.testing.assert_array_equal(batch["images"][0], decoded.image)  # same decode as training
            want = CLASS_IDS[int(np.argmax(model.predict_on_batch(decoded.image[None])[0]))]
        assert answer == {"result": RULE[str(want)]}, path.name


def test_modelarts_service_accepts_raw_bytes(service, tmp_path):
    path = _write_images(tmp_path)[0]
    with open(path, "rb") as f:
        from_file = service.inference({"input_img": {path.name: f}})
    assert service.inference({"input_img": {path.name: path.read_bytes()}}) == from_file


def test_modelarts_service_predicts_a_truncated_upload_from_the_part_that_decodes(service, tmp_path):
    """As `online` and `predict` do for a truncated test file: not the prior class with its image unread."""
    whole = _write_images(tmp_path)[0]  # big.jpg
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) * 6 // 10])
    assert decode_image(cut, SIZE).image is None, "a strict decode refuses it"
    with open(cut, "rb") as f:
        batch = service._preprocess({"input_img": {cut.name: f}})
    assert batch["usable"] == [True]
    np.testing.assert_array_equal(batch["images"][0], decode_truncated(cut, SIZE).image)


def test_predict_keeps_the_decode_cache_under_its_cap(model_dir, images, tmp_path):
    """`predict` evicts like `online`: after its build, a stale entry over the cap goes, its own stays."""
    cache = tmp_path / "cache"
    stale = cache / ("a" * 64)
    stale.mkdir(parents=True)
    (stale / "images.npy").write_bytes(b"\0" * 2_000_000)
    (stale / "complete").write_text("done")
    os.utime(stale / "complete", (1, 1))  # used long ago
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images[:3]):
        Image.fromarray(image).save(folder / f"{i}.png")
    assert predict_dir(model_dir[0], folder, tmp_path / "p.csv", cache, max_gb=0.001) == 3
    assert not stale.exists() and len([p for p in cache.iterdir() if p.is_dir()]) == 1
