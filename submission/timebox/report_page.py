"""``OUT/report/index.html``: the run on one page a contestant opens in a browser: the summary, the pictures, the
notes, the per-class table and links to the files. Plain HTML, no script, no network.

Example::

    write_index(out / "report", summary, ["cardboard", "glass"], cm, pictures=["timeline.png"])
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .fileio import atomic_write_text
from .metrics import per_class_accuracy

_FILES = (("../predictions.csv", "predictions"), ("../model/", "the exported model"),
          ("summary.json", "summary (machine-readable)"), ("log.txt", "log"), ("history.json", "training history"),
          ("config.json", "settings used"), ("timeline.json", "timeline"), ("confusion_val.csv", "confusion matrix"),
          ("environment.json", "machine"), ("tensorboard/", "TensorBoard events"))
_STYLE = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
          "img{max-width:100%;border:1px solid #eee;margin:6px 0}code{background:#f4f4f4}")


def _recipe(settings: dict) -> str:
    """The training recipe's settings in a line (timebox.train.recipe)."""
    g = settings.get
    parts = [f"{g('loss')} loss, label smoothing {g('label_smoothing')}, class weights {g('class_weight')}",
             f"{g('head')} head" + (f" with a hidden layer of {g('head_hidden')}" if g("head_hidden") else ""),
             f"{g('sampling')} sampling", f"lr schedule {g('lr_schedule')}"]
    parts += [f"{k} {g(k)}" for k in ("mixup", "cutmix", "tta_crops") if g(k)]
    parts += [f"cost matrix {g('cost_matrix')}"] if g("cost_matrix") else []
    return "; ".join(parts)


def write_index(folder: Path, summary: dict, class_names: list[str], cm: np.ndarray | None,
                pictures: list[str]) -> Path:
    """Write ``folder/index.html`` from the run's ``summary`` (as in summary.json), its val confusion matrix ``cm``
    (None: none) and the ``pictures`` written in ``folder``; returns its path."""
    e = html.escape
    settings = summary.get("settings", {})
    macro = summary.get("val_macro_accuracy")
    rows = [("val accuracy", f"{100 * summary['val_accuracy']:.2f}%" +
             ("" if macro is None else f" (macro: {100 * macro:.2f}%, the mean of the classes')")),
            ("predictions from", summary.get("predictions_from")),
            ("wall time", f"{summary['wall_s']:.1f} s of {summary['budget_s']:.0f} s (margin {summary['margin_s']:.1f} s)"),
            ("backbone", f"{settings.get('backbone')} at {settings.get('input_size')} px, fine-tuned from block "
                         f"{summary.get('cut')}"),
            ("images", f"{summary.get('train_images')} train, {summary.get('val_images')} val"),
            ("started from", settings.get("init")),
            ("training recipe", _recipe(settings))]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>timebox run: {e(str(settings.get('out')))}"
             f"</title><style>{_STYLE}</style></head><body>",
             f"<h1>timebox run</h1><p><code>{e(str(settings.get('out')))}</code></p>",
             "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows) + "</table>"]
    parts += [f"<h2>{e(p.removesuffix('.png').replace('_', ' '))}</h2><img src='{e(p)}' alt='{e(p)}'>"
              for p in pictures]
    if cm is not None:
        rows = zip(class_names, cm.sum(axis=1), np.nan_to_num(per_class_accuracy(cm)))  # a class with no image: 0
        parts.append("<h2>per class (val)</h2><table><tr><th>class</th><th>images</th><th>accuracy</th></tr>" + "".join(
            f"<tr><td>{e(n)}</td><td>{int(c)}</td><td>{100 * a:.1f}%</td></tr>" for n, c, a in rows) + "</table>")
    notes = summary.get("notes") or []
    parts.append("<h2>notes</h2>" + ("<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>" if notes
                                     else "<p>none</p>"))
    parts.append("<h2>files</h2><ul>" + "".join(f"<li><a href='{e(h)}'>{e(t)}</a></li>" for h, t in _FILES) +
                 "</ul><p>Curves: <code>tensorboard --logdir " + e(str(settings.get("out"))) + "</code></p>")
    parts.append("</body></html>\n")
    path = Path(folder) / "index.html"
    atomic_write_text(path, "\n".join(parts))
    return path
