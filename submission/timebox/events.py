"""TensorBoard event files of a run, in ``OUT/report/tensorboard/``: ``tensorboard --logdir OUT`` shows them,
and ``tensorboard --logdir TUNE`` a whole tuning study side by side (each trial is a run).

One folder per phase (``head``, ``finetune``, ...; a resumed run adds files to the same folders). Every scalar is
written twice: by step (the phase's epoch) under its name, and by the wall-clock second of the whole run under
``by_second/NAME``, so phases line up on one time axis. Text (the chosen cut and size, the summary) and images
(the confusion matrix) go to the ``run`` folder. TensorFlow's own ``tf.summary`` writes the files.

Example::

    events = RunEvents(out / "report" / "tensorboard", run_start=time.time())
    events.scalars("finetune", 3, {"val_accuracy": 0.91, "loss": 0.42})
    events.close()
"""

from __future__ import annotations

import time
from pathlib import Path


class RunEvents:
    """The run's event writers, one per phase folder, opened on first use."""

    def __init__(self, folder: Path, run_start: float):
        self.folder, self.run_start = Path(folder), run_start
        self._writers: dict = {}

    def _writer(self, phase: str):
        import tensorflow as tf

        if phase not in self._writers:
            self._writers[phase] = tf.summary.create_file_writer(str(self.folder / phase.replace(" ", "_")))
        return self._writers[phase]

    def scalars(self, phase: str, step: int, values: dict[str, float | None]) -> None:
        """``values`` (None: skipped) at ``step`` of ``phase``, and at this second of the run."""
        import tensorflow as tf

        second = int(time.time() - self.run_start)
        with self._writer(phase).as_default():
            for name, value in values.items():
                if value is not None:
                    tf.summary.scalar(name, float(value), step=int(step))
                    tf.summary.scalar(f"by_second/{name}", float(value), step=second)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        import tensorflow as tf

        with self._writer("run").as_default():
            tf.summary.text(tag, text, step=step)

    def image(self, tag: str, png: bytes, step: int = 0) -> None:
        import tensorflow as tf

        with self._writer("run").as_default():
            tf.summary.image(tag, tf.image.decode_png(png, channels=3)[None], step=step)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

