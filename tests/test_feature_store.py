"""The feature store (online --feature-cache): what tune's trials share so a trial that differs only after the
cut skips extraction. A hit must be exactly what the same model computes on the same images and view, and a
run that loads one still plans with the seconds the extraction took."""

import json

import keras
import numpy as np
import pytest

from timebox.data.synthetic import make_synthetic
from timebox.models.feature_store import FeatureStore
from timebox.online import OnlineConfig, run_online
from timebox.phases import extract as extract_phase
from timebox.phases.activations import Activations
from timebox.phases.extract import ExtractPhase
from timebox.recovery import RunState


def _model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def test_the_key_names_the_exact_model_images_view_and_type(tmp_path):
    store, idx = FeatureStore(tmp_path), np.arange(5)
    m = _model(0)
    key = store.key(m, "cacheA", idx, False, np.float16)
    assert key == store.key(m, "cacheA", idx.copy(), False, np.float16)
    assert key == FeatureStore(tmp_path).key(_model(0), "cacheA", idx, False, np.float16), "same weights, same key"
    others = [store.key(_model(1), "cacheA", idx, False, np.float16),  # other weights
              store.key(m, "cacheB", idx, False, np.float16),  # other images
              store.key(m, "cacheA", idx[::-1], False, np.float16),  # other order
              store.key(m, "cacheA", idx, True, np.float16),  # mirrored
              store.key(m, "cacheA", idx, False, np.float32)]
    assert len({key, *others}) == 6


def test_an_entry_round_trips_and_a_damaged_one_is_a_miss(tmp_path):
    store = FeatureStore(tmp_path)
    values = np.arange(12, dtype=np.float16).reshape(4, 3)
    assert store.load("k") is None
    store.save("k", values, 2.5)
    loaded, seconds = store.load("k")
    assert loaded.dtype == np.float16 and np.array_equal(loaded, values) and seconds == 2.5
    (tmp_path / "k.npz").write_bytes((tmp_path / "k.npz").read_bytes()[:40])  # a torn copy
    assert store.load("k") is None


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two online runs on the same images with one feature store; the second counts its extractions."""
    root = make_synthetic(tmp_path_factory.mktemp("data"), n_per_class=8, n_test_per_class=3, size=64)
    store, cache = tmp_path_factory.mktemp("features"), tmp_path_factory.mktemp("cache")
    outs, extracted = [tmp_path_factory.mktemp(f"out{i}") for i in range(2)], []
    real = extract_phase.features
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TIMEBOX_START", raising=False)
        mp.setattr(ExtractPhase, "bottom_image_s", lambda self, cache, idx: 0.01)  # the same size choice each run
        for i, out in enumerate(outs):
            if i == 1:
                mp.setattr(extract_phase, "features", lambda *a, **k: extracted.append(a[3]) or real(*a, **k))
            run_online(OnlineConfig(root / "train", root / "test", out, 25.0, size=64, finetune=False, ensemble=False,
                                    cache_dir=cache, feature_dir=store, workers=1))
    return outs, store, extracted


def test_a_second_run_on_the_same_images_loads_every_view_instead_of_extracting(two_runs):
    outs, store, extracted = two_runs
    assert list(store.glob("*.npz")), "the first run stored its extractions"
    again = [len(idx) for idx in extracted if len(idx)]
    assert again == [], f"the second run extracted {sum(again)} images again"
    first, second = (Activations.load(RunState(out / "state")) for out in outs)
    for part in ("val", "test", "train"):
        assert all(np.array_equal(a, b) for a, b in zip(getattr(first, part), getattr(second, part)))
    assert second.rate == pytest.approx(first.rate, rel=0.05), "planned with the speed the extraction had"


def test_the_cut_plan_counts_only_the_extraction_the_store_does_not_spare():
    from fakes import planner as make_planner
    from timebox.models.registry import get_backbone
    from timebox.plan import Counts

    p = make_planner(Counts(150, 300, 850), budget_s=40.0, head="softmax")  # the early head is the head: no head plan
    p.cuts, p.measured.full_image_s = get_backbone("efficientnet-lite0").cuts, 0.02  # 2,600 views: 52 s
    args = ({12: 0.004}, 224, Counts(150, 300, 850), False, 1e12)
    cold = p.cut_plan(*args).epochs[12]
    p.measured.stored_s = 45.0
    assert cold == 0 < p.cut_plan(*args).epochs[12], "a trial whose activations are stored plans to fine-tune"
