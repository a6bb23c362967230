"""A quiet console: timebox's own lines and nothing else, unless ``--verbose`` (or ``TIMEBOX_VERBOSE=1``).

What TensorFlow would print, and where each is stopped:

- its C++ logs (oneDNN notes, CPU feature notes): ``TF_CPP_MIN_LOG_LEVEL=2`` before it loads;
- what its C++ start-up writes before absl's logging is set up ("All log messages before absl::InitializeLog()",
  "oneDNN custom operations are on"), which no setting reaches: :func:`tensorflow_quietly` loads TensorFlow with
  stderr held and passes on every other line;
- its one-time notice at the first half-precision op ("oneDNN supports DT_HALF only on platforms with AVX-512",
  cached activations are float16), an ERROR-level line the log level would only hide with real errors:
  :func:`half_precision_quietly` runs a first half-precision op with stderr held;
- "triggered tf.function retracing": each new Keras model traces its own predict function (timebox builds a
  model per cut, size and ensemble member), which TensorFlow counts as retracing: dropped from its logger.

``quiet()`` runs first in every entry point; subprocesses inherit the environment.

Example::

    quiet(args.verbose)
    tf = tensorflow_quietly()
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

VERBOSE_ENV = "TIMEBOX_VERBOSE"
_NOTICES = re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                       rb"|^I0000 [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on"
                       rb"|^E0000 [\d:. ]+\d+ util\.cc:\d+\] oneDNN supports DT_HALF only on platforms with AVX-512")
_RETRACING = "triggered tf.function retracing"


def _drop_retracing(record: logging.LogRecord) -> bool:
    return _RETRACING not in record.getMessage()


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def quiet(verbose_wanted: bool = False) -> None:
    """Set the console's policy for this process and its children, before TensorFlow loads."""
    if verbose_wanted:
        os.environ[VERBOSE_ENV] = "1"
    if verbose():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logger = logging.getLogger("tensorflow")
    if _drop_retracing not in logger.filters:
        logger.addFilter(_drop_retracing)


def tensorflow_quietly() -> ModuleType:
    """``import tensorflow`` (and Keras), with the start-up lines no setting reaches held back (see above)."""
    if "tensorflow" in sys.modules or verbose():
        import keras  # noqa: F401
        import tensorflow

        return tensorflow
    with _held_stderr():
        import keras  # noqa: F401
        import tensorflow
    return tensorflow


def half_precision_quietly() -> None:
    """TensorFlow's first half-precision op (a tiny cast), with its one-time notice held back (see above). It starts
    TensorFlow's runtime: call it once the devices are set up."""
    if verbose() or "tensorflow" not in sys.modules:
        return
    import tensorflow as tf

    with _held_stderr():
        tf.cast(tf.zeros((1,), tf.float16), tf.float32).numpy()


@contextlib.contextmanager
def _held_stderr() -> Iterator[None]:
    """File descriptor 2 held while the block runs; then every line but the notices above is passed on."""
    sys.stderr.flush()
    held, saved = tempfile.TemporaryFile(), os.dup(2)
    os.dup2(held.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        for line in held:
            if not _NOTICES.search(line):
                os.write(2, line)
        held.close()
