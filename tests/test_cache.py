"""build_cache: decode once, reuse while files are unchanged, rebuild when stale or incomplete."""

import os

import numpy as np
import pytest
from PIL import Image

from timebox.data import cache
from timebox.data.cache import build_cache, cache_key
from timebox.errors import UsageError

SIZE = 8


def make_images(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        Image.new("RGB", (12, 10), (i % 256, 255 - i % 256, 7)).save(path)
        files.append(path)
    return files


@pytest.fixture
def decode_calls(monkeypatch):
    """Count decode_image calls made in this process (workers=1 decodes in-process)."""
    calls = []

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    real = cache.decode_image
    monkeypatch.setattr(cache, "decode_image", counting)
    return calls


def test_built_once_then_reused_without_decoding(tmp_path, decode_calls):
    files = make_images(tmp_path / "img", 5)
    first = build_cache(files, SIZE, tmp_path / "cache", workers=1)
    assert len(decode_calls) == 5
    assert first.images.shape == (5, SIZE, SIZE, 3) and first.images.dtype == np.uint8
    assert first.images[3, 0, 0].tolist() == [3, 252, 7] and first.errors == [None] * 5
    assert {p.name for p in first.path.iterdir()} == {"images.u8", "errors.json", "complete"}
    progress = []
    second = build_cache(files, SIZE, tmp_path / "cache", workers=1, progress=lambda d, t: progress.append((d, t)))
    assert len(decode_calls) == 5 and progress == [(5, 5)]
    assert second.path == first.path and np.array_equal(second.images, first.images)


def test_cached_images_are_read_only(tmp_path):
    loaded = build_cache(make_images(tmp_path / "img", 2), SIZE, tmp_path / "cache", workers=1)
    with pytest.raises(ValueError):
        loaded.images[0, 0, 0, 0] = 1


def test_touched_file_changes_key_and_rebuilds(tmp_path, decode_calls):
    files = make_images(tmp_path / "img", 3)
    first = build_cache(files, SIZE, tmp_path / "cache", workers=1)
    stat = files[1].stat()
    os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = build_cache(files, SIZE, tmp_path / "cache", workers=1)
    assert second.path != first.path and len(decode_calls) == 6


def test_cache_key_depends_on_size_order_and_file_stamps(tmp_path):
    files = make_images(tmp_path / "img", 2)
    assert cache_key(files, 8) == cache_key(list(files), 8)
    assert cache_key(files, 8) != cache_key(files, 9)
    assert cache_key(files, 8) != cache_key(files[::-1], 8)
    before = cache_key(files, 8)
    files[0].write_bytes(files[0].read_bytes() + b"\0")
    assert cache_key(files, 8) != before


@pytest.mark.parametrize("damage", ["no marker", "bad marker", "short images"])
def test_incomplete_or_damaged_cache_is_rebuilt(tmp_path, decode_calls, damage):
    files = make_images(tmp_path / "img", 4)
    key_dir = build_cache(files, SIZE, tmp_path / "cache", workers=1).path
    if damage == "no marker":
        (key_dir / "complete").unlink()
    elif damage == "bad marker":
        (key_dir / "complete").write_text("{")
    else:
        os.truncate(key_dir / "images.u8", 10)
    rebuilt = build_cache(files, SIZE, tmp_path / "cache", workers=1)
    assert len(decode_calls) == 8
    assert rebuilt.images[2, 0, 0].tolist() == [2, 253, 7] and (key_dir / "complete").is_file()


def test_decode_errors_are_recorded_per_file_with_blank_images(tmp_path):
    files = make_images(tmp_path / "img", 2)
    (tmp_path / "img" / "empty.jpg").write_bytes(b"")
    (tmp_path / "img" / "text.jpg").write_text("hello")
    files = [files[0], tmp_path / "img" / "empty.jpg", files[1], tmp_path / "img" / "text.jpg"]
    loaded = build_cache(files, SIZE, tmp_path / "cache", workers=1)
    assert loaded.errors == [None, "zero-byte file", None, "not an image"]
    assert not loaded.images[1].any() and not loaded.images[3].any() and loaded.images[2].any()
    assert build_cache(files, SIZE, tmp_path / "cache", workers=1).errors == loaded.errors


def test_parallel_build_matches_serial_and_reports_progress(tmp_path):
    files = make_images(tmp_path / "img", 2 * cache.CHUNK + 5)
    serial = build_cache(files, SIZE, tmp_path / "serial", workers=1)
    progress = []
    parallel = build_cache(files, SIZE, tmp_path / "parallel", workers=2, progress=lambda d, t: progress.append((d, t)))
    assert np.array_equal(parallel.images, serial.images) and parallel.errors == serial.errors
    done = [d for d, _ in progress]
    assert done == sorted(done) and progress[0] == (0, len(files)) and progress[-1] == (len(files), len(files))
    assert len(progress) == 4


def test_uncreatable_cache_dir_is_a_usage_error(tmp_path):
    files = make_images(tmp_path / "img", 1)
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(UsageError, match="blocker"):
        build_cache(files, SIZE, tmp_path / "blocker" / "cache", workers=1)


def test_build_interrupted_midway_leaves_no_complete_marker(tmp_path, monkeypatch):
    files = make_images(tmp_path / "img", cache.CHUNK + 3)
    real = cache.decode_image

    def dies_after_first_chunk(path, size):
        if path.name == f"{cache.CHUNK:03d}.png":
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(cache, "decode_image", dies_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        build_cache(files, SIZE, tmp_path / "cache", workers=1)
    (key_dir,) = (tmp_path / "cache").iterdir()
    assert not (key_dir / "complete").exists() and not (key_dir / "images.u8").exists()
    monkeypatch.setattr(cache, "decode_image", real)
    rebuilt = build_cache(files, SIZE, tmp_path / "cache", workers=1)
    assert rebuilt.errors == [None] * len(files) and (key_dir / "complete").is_file()


def test_a_run_waiting_for_another_runs_build_stops_when_told(tmp_path, decode_calls):
    """While another process holds the key's build lock, a run's SIGTERM (should_stop) ends its wait: a blocked
    flock alone would be retried after the signal and wait as long as the other build."""
    import time

    from timebox.data.workers import Stopped
    from timebox.filelock import FileLock

    files = make_images(tmp_path / "imgs", 3)
    other = FileLock(tmp_path / "cache" / cache_key(files, SIZE) / cache.BUILDING)
    other.take(exclusive=True)  # another builder (a second open file: flock conflicts even in one process)
    start = time.time()
    with pytest.raises(Stopped):
        build_cache(files, SIZE, tmp_path / "cache", workers=1, should_stop=lambda: time.time() - start > 0.5)
    assert decode_calls == [] and not (tmp_path / "cache" / cache_key(files, SIZE) / cache.MARKER).exists()
    other.release()
    assert build_cache(files, SIZE, tmp_path / "cache", workers=1).images.shape == (3, SIZE, SIZE, 3)
