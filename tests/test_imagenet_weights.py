"""THE weights-correctness check: EfficientNet-Lite0 with its real ImageNet weights recognises daisies.

If any transposition, padding, BN order or storage offset in the .pth reader or the Keras port were
wrong, the 1000-way predictions would be near-random. Here the whole pipeline is checked against
ImageNet itself: every flowers5 daisy image, resized whole to 224 (bilinear), scaled (x - 127) / 128,
should mostly come out as ImageNet class 985 ("daisy").
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from timebox.models.efficientnet_lite import efficientnet_lite, load_lite_weights
from timebox.models.torch_weights import read_legacy_state_dict
from timebox.models.weights import resolve_weights

DAISY_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flowers5" / "train" / "daisy"
IMAGENET_DAISY = 985
SIZE, BATCH = 224, 32


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32)


def test_lite0_imagenet_weights_classify_daisies_as_daisy():
    files = sorted(p for p in DAISY_DIR.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) \
        if DAISY_DIR.is_dir() else []
    if not files:
        pytest.skip(f"{DAISY_DIR} not available")

    model = efficientnet_lite(0, input_shape=(SIZE, SIZE, 3), include_top=True)
    load_lite_weights(model, read_legacy_state_dict(resolve_weights("efficientnet-lite0", "lite", "imagenet")))

    top1, in_top5 = [], 0
    for i in range(0, len(files), BATCH):
        batch = np.stack([_load(p) for p in files[i : i + BATCH]])
        logits = np.asarray(model.predict_on_batch((batch - 127.0) / 128.0))
        assert logits.shape == (len(batch), 1000)
        top5 = np.argsort(-logits, axis=1)[:, :5]
        top1.extend(top5[:, 0].tolist())
        in_top5 += int((top5 == IMAGENET_DAISY).any(axis=1).sum())

    most_common, count = Counter(top1).most_common(1)[0]
    share_top5 = in_top5 / len(files)
    summary = f"{len(files)} images: top-1 mode {most_common} ({count}x), daisy in top-5 for {share_top5:.1%}"
    assert most_common == IMAGENET_DAISY, summary
    assert share_top5 >= 0.45, summary
