"""CheckpointManager: top-k by val accuracy (ties: lower val loss), files on disk == manifest,
a failed save leaves the previous state intact, a resumed manager keeps the earlier best, and
low disk space drops the worst checkpoints instead of failing."""

import json
from collections import namedtuple

import pytest

import timebox.checkpoints as ckpt_module
from timebox.checkpoints import MANIFEST, CheckpointManager


def _writer(payload: bytes = b"weights"):
    def save(path):
        with open(path, "wb") as f:
            f.write(payload)
    return save


def _consider(manager, epoch, acc, loss, save=None):
    return manager.consider(save or _writer(f"e{epoch}".encode()), model="m", phase="p", epoch=epoch,
                            step=10 * epoch, val_accuracy=acc, val_loss=loss)


def _manifest(folder):
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["checkpoints"]


def _files_on_disk(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)


def _assert_manifest_matches_disk(folder):
    listed = sorted(e["file"] for e in _manifest(folder))
    assert listed == _files_on_disk(folder)


def test_keeps_top_k_by_accuracy_and_deletes_the_rest_from_disk(tmp_path):
    m = CheckpointManager(tmp_path, k=3)
    scores = [(1, 0.50, 1.0), (2, 0.80, 0.5), (3, 0.60, 0.9), (4, 0.90, 0.4), (5, 0.70, 0.7), (6, 0.55, 0.2)]
    for epoch, acc, loss in scores:
        _consider(m, epoch, acc, loss)
        _assert_manifest_matches_disk(tmp_path)
    assert [e["epoch"] for e in m.entries] == [4, 2, 5]
    assert [e["epoch"] for e in _manifest(tmp_path)] == [4, 2, 5]
    assert len(_files_on_disk(tmp_path)) == 3
    assert m.best()["epoch"] == 4
    assert (tmp_path / m.best()["file"]).read_bytes() == b"e4"
    assert m.best()["path"] == str(tmp_path / m.best()["file"])


def test_equal_accuracy_is_ranked_by_lower_val_loss(tmp_path):
    m = CheckpointManager(tmp_path, k=2)
    _consider(m, 1, 0.8, 0.60)
    _consider(m, 2, 0.8, 0.40)
    _consider(m, 3, 0.8, 0.50)
    assert [e["epoch"] for e in m.entries] == [2, 3]
    assert m.best()["epoch"] == 2
    _assert_manifest_matches_disk(tmp_path)
    # equal accuracy and a higher loss than the k-th: not kept
    assert _consider(m, 4, 0.8, 0.55) is None
    assert [e["epoch"] for e in m.entries] == [2, 3]


def test_would_keep_is_false_for_a_score_worse_than_the_kth_once_full(tmp_path):
    m = CheckpointManager(tmp_path, k=2)
    assert m.would_keep(0.0, 99.0)  # empty: anything enters
    _consider(m, 1, 0.7, 0.5)
    assert m.would_keep(0.1, 9.0)  # not full yet
    _consider(m, 2, 0.9, 0.3)
    assert not m.would_keep(0.6, 0.1)
    assert not m.would_keep(0.7, 0.5)  # an exact tie with the k-th does not displace it
    assert not m.would_keep(0.7, 0.6)
    assert m.would_keep(0.7, 0.4)
    assert m.would_keep(0.95, 1.0)
    before = _files_on_disk(tmp_path)
    assert _consider(m, 3, 0.6, 0.1) is None
    assert _files_on_disk(tmp_path) == before


def test_consider_returns_the_final_path_of_a_kept_checkpoint(tmp_path):
    m = CheckpointManager(tmp_path, k=1, suffix=".bin")
    path = _consider(m, 7, 0.5, 0.5)
    assert path == tmp_path / "m-p-e0007-s0000070.bin"
    assert path.read_bytes() == b"e7"
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_save_that_raises_midway_leaves_previous_manifest_loadable(tmp_path):
    m = CheckpointManager(tmp_path, k=3)
    _consider(m, 1, 0.6, 0.5)
    _consider(m, 2, 0.7, 0.4)
    manifest_before = _manifest(tmp_path)

    def broken_save(path):
        with open(path, "wb") as f:
            f.write(b"half a checkp")
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        _consider(m, 3, 0.9, 0.1, save=broken_save)

    assert not (tmp_path / "m-p-e0003-s0000030.weights.h5").exists()
    assert _manifest(tmp_path) == manifest_before
    for entry in _manifest(tmp_path):
        assert (tmp_path / entry["file"]).is_file()
    # the in-memory manager is unchanged and a fresh one loads the same state
    assert [e["epoch"] for e in m.entries] == [2, 1]
    reopened = CheckpointManager(tmp_path, k=3)
    assert [e["epoch"] for e in reopened.entries] == [2, 1]
    assert reopened.best()["epoch"] == 2


def test_resume_keeps_the_earlier_best_against_a_worse_checkpoint(tmp_path):
    first = CheckpointManager(tmp_path, k=2)
    _consider(first, 1, 0.9, 0.2)
    _consider(first, 2, 0.8, 0.3)

    resumed = CheckpointManager(tmp_path, k=2)
    assert resumed.best()["epoch"] == 1
    _consider(resumed, 11, 0.85, 0.1)  # enters the top 2, but is not best
    assert resumed.best()["epoch"] == 1
    assert [e["epoch"] for e in resumed.entries] == [1, 11]
    _assert_manifest_matches_disk(tmp_path)
    assert _consider(resumed, 12, 0.5, 0.1) is None
    assert resumed.best()["epoch"] == 1

    _consider(resumed, 13, 0.95, 0.5)  # better: becomes best
    assert resumed.best()["epoch"] == 13
    assert [e["epoch"] for e in resumed.entries] == [13, 1]
    _assert_manifest_matches_disk(tmp_path)


def test_resume_ignores_manifest_entries_whose_file_is_missing(tmp_path):
    first = CheckpointManager(tmp_path, k=3)
    _consider(first, 1, 0.9, 0.2)
    _consider(first, 2, 0.8, 0.3)
    (tmp_path / first.entries[0]["file"]).unlink()
    resumed = CheckpointManager(tmp_path, k=3)
    assert [e["epoch"] for e in resumed.entries] == [2]
    assert (tmp_path / resumed.best()["file"]).is_file()


DiskUsage = namedtuple("DiskUsage", "total used free percent")


def test_low_disk_space_drops_worst_checkpoints_instead_of_failing(tmp_path, monkeypatch):
    m = CheckpointManager(tmp_path, k=3)
    _consider(m, 1, 0.9, 0.1)
    _consider(m, 2, 0.8, 0.2)
    _consider(m, 3, 0.7, 0.3)
    # free space grows by 100 MB for every checkpoint file deleted; 100 MB short at first
    base_files = len(_files_on_disk(tmp_path))

    def fake_usage(path):
        freed = base_files - len(_files_on_disk(tmp_path))
        return DiskUsage(10**12, 0, freed * 100 * 2**20 + 1, 0.0)

    monkeypatch.setattr(ckpt_module.psutil, "disk_usage", fake_usage)
    path = _consider(m, 4, 0.95, 0.05)
    assert path is not None and path.is_file()
    assert m.best()["epoch"] == 4
    assert not (tmp_path / "m-p-e0003-s0000030.weights.h5").exists()  # the worst was dropped
    assert [e["epoch"] for e in m.entries] == [4, 1, 2]
    _assert_manifest_matches_disk(tmp_path)


def test_low_disk_space_with_nothing_to_free_returns_none(tmp_path, monkeypatch):
    m = CheckpointManager(tmp_path, k=3)
    _consider(m, 1, 0.9, 0.1)
    monkeypatch.setattr(ckpt_module.psutil, "disk_usage", lambda path: DiskUsage(10**12, 10**12, 0, 100.0))
    assert _consider(m, 2, 0.95, 0.05) is None
    assert m.entries == [] and m.best() is None
    assert _files_on_disk(tmp_path) == []
    assert _manifest(tmp_path) == []
    assert not (tmp_path / "m-p-e0002-s0000020.weights.h5").exists()


def test_save_that_raises_leaves_no_partial_file_behind(tmp_path):
    m = CheckpointManager(tmp_path, k=3)
    _consider(m, 1, 0.6, 0.5)

    def broken_save(path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk on fire")

    with pytest.raises(OSError):
        _consider(m, 2, 0.9, 0.1, save=broken_save)
    _assert_manifest_matches_disk(tmp_path)


def test_low_disk_space_on_an_empty_manager_returns_none_without_saving(tmp_path, monkeypatch):
    m = CheckpointManager(tmp_path, k=3)
    monkeypatch.setattr(ckpt_module.psutil, "disk_usage", lambda path: DiskUsage(10**12, 10**12, 0, 100.0))
    called = []
    assert m.consider(lambda p: called.append(p), model="m", phase="p", epoch=1, step=1,
                      val_accuracy=0.9, val_loss=0.1) is None
    assert called == [] and m.best() is None


def test_low_disk_space_never_drops_a_better_checkpoint_for_a_worse_one(tmp_path, monkeypatch):
    m = CheckpointManager(tmp_path, k=3)
    _consider(m, 1, 0.9, 0.1)
    _consider(m, 2, 0.8, 0.2)
    # room for the new file only once both existing checkpoints are gone
    base_files = len(_files_on_disk(tmp_path))

    def fake_usage(path):
        freed = base_files - len(_files_on_disk(tmp_path))
        return DiskUsage(10**12, 0, (100 * 2**20 + 1) if freed >= 2 else 0, 0.0)

    monkeypatch.setattr(ckpt_module.psutil, "disk_usage", fake_usage)
    _consider(m, 3, 0.5, 0.9)  # worse than both, but the top 3 is not full
    assert m.best() is not None and m.best()["epoch"] == 1
