"""Issue 29, decoding: signals to the process group mid-decode, the worker count in a container, peak memory
on large images, and truncated test images (predicted from the part that decodes, reported)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from fakes import context, planner
from timebox.data.cache import build_cache
from timebox.data.decode import PARTIAL, REDUCING_GAP
from timebox.data.unreadable import quarantined, unreadable_test, usable_test_files
from timebox.data.workers import usable_cpus
from timebox.plan import Counts
from timebox.predict import LabelMap, prediction_rows

SUBMISSION = str(Path(__file__).resolve().parents[1] / "submission")
ENV = {**os.environ, "PYTHONPATH": SUBMISSION}

DECODE_RUN = """
import json, signal, sys
from pathlib import Path
from timebox.data.cache import build_cache
from timebox.data.workers import Stopped

def main():
    image, cache_dir, result = map(Path, sys.argv[1:4])
    stop, done = [], [0]
    for s in (signal.SIGTERM, signal.SIGINT):  # as the session's handlers do: set the stop flag
        signal.signal(s, lambda *_: stop.append(1))

    def progress(n, total):
        done[0] = n
        if n:
            print("decoding", flush=True)
    try:
        build_cache([image] * 4000, 32, cache_dir, workers=2, progress=progress, should_stop=lambda: bool(stop))
        stopped = False
    except Stopped:
        stopped = True
    result.write_text(json.dumps({"stopped": stopped, "done": done[0]}))

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_group_signal_mid_decode_stops_within_a_chunk_and_exits_cleanly(tmp_path, sig):
    """Scenario 1: Ctrl-C / a group SIGTERM reaches the workers too; they ignore it, the parent stops."""
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.jpg")
    (tmp_path / "run.py").write_text(DECODE_RUN)
    result = tmp_path / "result.json"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "a.jpg"),
                             str(tmp_path / "cache"), str(result)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "decoding"
        signalled = time.time()
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "BrokenProcessPool" not in err and proc.returncode == 0, err[-2000:]
    assert time.time() - signalled < 15
    outcome = json.loads(result.read_text())
    assert outcome["stopped"] and 0 < outcome["done"] < 4000
    assert not list((tmp_path / "cache").glob("*/complete"))  # a stopped build is never published as complete


def test_a_decode_stopped_by_the_session_ends_the_extract_phase_before_any_model(tmp_path):
    """Scenario 1, the run's side: the session's stop flag (or its final reserve) stops decoding; extraction ends
    as interrupted (the run then writes the prior class) and no cache is published as complete."""
    from timebox.phases.extract import ExtractPhase

    files = []
    for i in range(2):
        Image.new("RGB", (20, 20), (i * 200, 0, 0)).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    ctx = context(tmp_path, planner(Counts(1, 1, 1), interrupted=True, workers=1))
    ctx.cache_dir = tmp_path / "cache"
    phase = ExtractPhase(ctx, SimpleNamespace(files=files, labels=np.array([0, 1])), files, None, 16)
    assert phase.run(time.time()) is None
    assert not list(ctx.cache_dir.glob("*/complete"))


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "100000 100000\n"}, 1),  # v2: one CPU's worth
    ({"cpu.max": "50000 100000\n"}, 1),  # half a CPU: still one worker
    ({"cpu.max": "max 100000\n"}, None),  # v2, no quota: the affinity mask
    ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1: 1.5 CPUs
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no quota
    ({"cpu.max": "garbage"}, None),  # unreadable: no cap
    ({}, None),  # no cgroup files at all
])
def test_worker_count_respects_the_cgroup_cpu_quota(tmp_path, files, expected):
    """Scenario 2: a 2-CPU container on a 64-core host gets its quota's worth of workers, not 64."""
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(_cgroup(tmp_path, files)) == (min(expected, affinity) if expected else affinity)


def test_worker_count_respects_cpu_affinity(tmp_path):
    """Scenario 2: a process pinned to one CPU (taskset) gets one worker, whatever os.cpu_count() says."""
    code = ("import os, sys; from timebox.data.workers import usable_cpus; os.sched_setaffinity(0, {min("
            "os.sched_getaffinity(0))}); print(usable_cpus(__import__('pathlib').Path(sys.argv[1])), os.cpu_count())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=ENV, capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[0]) == 1 and int(out[1]) == os.cpu_count()


PEAK_RUN = """
import re, sys
from pathlib import Path
import numpy as np
from PIL import Image
from timebox.data.decode import decode_image

def high_water_bytes():  # this process's peak RSS (not ru_maxrss: that one keeps the parent's peak across exec)
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

path, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with Image.open(path) as img:  # the plugins imported, the header read: all but the decoding in the baseline
    img.size
before = high_water_bytes()
decoded = decode_image(path, size)
peak = high_water_bytes() - before
with Image.open(path) as img:  # the reference: converted at full resolution, then resized as before
    rgb = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img.convert("RGBA")).convert("RGB")
reference = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=%r))
np.savez(out, image=decoded.image, reference=reference, peak=peak)
""" % REDUCING_GAP


def _large_image(width: int, height: int) -> np.ndarray:
    """Gradients, a fine checkerboard (to alias if reduced carelessly) and a varying alpha: RGBA uint8."""
    y, x = np.ogrid[:height, :width]
    image = np.empty((height, width, 4), np.uint8)
    image[..., 0] = x * 255 // width
    image[..., 1] = y * 255 // height
    image[..., 2] = ((x // 3 + y // 3) % 2) * 255
    image[..., 3] = (x + y) * 255 // (width + height)
    return image


def _decode_in_subprocess(tmp_path, path: Path, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    (tmp_path / "peak.py").write_text(PEAK_RUN)
    subprocess.run([sys.executable, str(tmp_path / "peak.py"), str(path), str(size), str(tmp_path / "out.npz")],
                   env=ENV, check=True)
    out = np.load(tmp_path / "out.npz")
    return out["image"], out["reference"], int(out["peak"])


def test_large_rgba_png_is_reduced_before_conversion(tmp_path):
    """Scenario 3: a 12-megapixel RGBA PNG costs its decoded pixels plus a strip and the decoder's buffers, not
    several converted full-resolution copies (about 6 times its pixels before); the pixels at the target size
    are those of converting first."""
    width, height, size = 4000, 3000, 224
    Image.fromarray(_large_image(width, height), "RGBA").save(tmp_path / "big.png", compress_level=1)
    image, reference, peak = _decode_in_subprocess(tmp_path, tmp_path / "big.png", size)
    decoded_bytes = width * height * 4
    assert peak < decoded_bytes + 32e6, f"peak {peak / 1e6:.0f} MB for {decoded_bytes / 1e6:.0f} MB of pixels"
    assert image.shape == (size, size, 3)
    assert np.abs(image.astype(int) - reference).mean() < 2


def test_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    """Scenario 3: a 12-megapixel JPEG is decoded at a DCT scale near the target: a few MB, not 36."""
    width, height, size = 4000, 3000, 224
    Image.fromarray(_large_image(width, height)[..., :3]).save(tmp_path / "big.jpg", quality=90)
    image, reference, peak = _decode_in_subprocess(tmp_path, tmp_path / "big.jpg", size)
    assert peak < 16e6, f"peak {peak / 1e6:.0f} MB"
    assert np.abs(image.astype(int) - reference).mean() < 2


def _truncated_jpeg(path: Path) -> np.ndarray:
    """A 200 x 200 JPEG, top half red, bottom half blue, cut off in its bottom half; returns the pixels."""
    array = np.zeros((200, 200, 3), np.uint8)
    array[:100] = (220, 30, 30)
    array[100:] = (30, 30, 220)
    array[100:] += np.random.default_rng(0).integers(0, 30, (100, 200, 3), dtype=np.uint8)
    Image.fromarray(array).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.75)])
    return array


def test_truncated_test_jpeg_is_predicted_from_the_part_that_decodes_and_reported(tmp_path):
    """Scenario 4: the truncated test file gets the model's class (not the prior, confidence > 0) from the part
    that decodes and is listed as truncated; the same file among the training images stays quarantined."""
    cut = tmp_path / "cut.jpg"
    original = _truncated_jpeg(cut)
    Image.new("RGB", (40, 40), (0, 200, 0)).save(tmp_path / "good.jpg")
    files = [cut, tmp_path / "good.jpg"]
    cache = build_cache(files, 32, tmp_path / "cache", workers=1)
    assert cache.errors == [PARTIAL, None]
    top = cache.images[0][:12].astype(int)
    assert np.abs(top - original[0, 0]).max() < 12  # the part that decodes is there, not zeros
    assert usable_test_files(cache.errors).tolist() == [True, True]
    labels = LabelMap(["a", "b"], ["a", "b"], prior_class=0, input_size=32, backbone="x")
    probs = np.array([[0.2, 0.8], [0.9, 0.1]])
    rows = prediction_rows(["cut.jpg", "good.jpg"], probs, usable_test_files(cache.errors), labels)
    assert rows[0] == ("cut.jpg", "b", "b", 0.8)
    (entry,) = unreadable_test(files, cache.errors)
    assert entry["file"] == str(cut) and "truncated" in entry["reason"] and "predicted" in entry["reason"]
    assert quarantined(files, cache.errors) == [{"file": str(cut), "reason": PARTIAL}]
