"""Make the `timebox`, `offline_tuning` and `offline_pretrain` packages importable without setting PYTHONPATH."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "submission"))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # offline_tuning, offline_pretrain

import os  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TensorFlow's C++ start-up logging

from timebox.watchdog import Watchdog  # noqa: E402

# An in-process online run that overruns its budget fires its watchdog, which ends the process. Inside
# pytest that must read as a failure (an overrun is a bug), never as a suite that passed.
Watchdog.exit_code = 70


def pytest_configure(config) -> None:
    # Keras 3's TensorFlow backend converts tensors with np.array(x, copy=False) (keras/src/backend/tensorflow/
    # core.py), which numpy 2 reports at every call: some 78,000 lines per suite that say nothing about timebox.
    config.addinivalue_line("filterwarnings",
                            "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
