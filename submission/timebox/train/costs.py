"""The confusion costs: what mistaking one class for another costs, read from a JSON file the contestant writes
(setting ``cost_matrix``, ``--cost-matrix FILE``), and a first proposal of one from a run's val confusion matrix
(``./run.sh propose-costs``). The loss adds ``-sum_j cost[true, j] * log(1 - p_j)`` to each image's
cross-entropy (:class:`timebox.models.losses.SmoothedSparse`): probability on a costly wrong class is pushed down
the harder the more it costs.

The file, by class names (pairs are one direction; a group costs every mistake between its classes)::

    {"pairs": [{"true": "mop", "predicted": "earphones", "cost": 1.0}],
     "groups": [{"classes": ["charger", "charging cable"], "cost": 0.1}]}

Example::

    costs = read_costs(Path("costs.json"), ["charger", "charging cable", "mop", "earphones"])   # (4, 4), 0 diagonal
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:  # numpy is imported where a matrix is made: the command line reads this module at every start
    import numpy as np


def read_costs(path: Path, class_names: list[str]) -> np.ndarray:
    """The (k, k) cost matrix ``path`` gives (rows: true class); a UsageError naming the file and the entry at
    fault otherwise."""
    import numpy as np

    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"--cost-matrix {path}: not a readable JSON file ({e}); write "
                         '{"pairs": [{"true": A, "predicted": B, "cost": 1.0}], "groups": [...]}') from None
    if not isinstance(spec, dict) or set(spec) - {"pairs", "groups"} or not spec:
        raise UsageError(f"--cost-matrix {path}: the file must be an object with \"pairs\" and/or \"groups\"")
    index = {name: i for i, name in enumerate(class_names)}
    costs = np.zeros((len(class_names), len(class_names)), np.float32)
    for n, entry in enumerate(spec.get("pairs", [])):
        where = f"--cost-matrix {path}: pairs[{n}]"
        true, predicted = (_class(entry, key, index, where) for key in ("true", "predicted"))
        costs[true, predicted] = _cost(entry, where)
    for n, entry in enumerate(spec.get("groups", [])):
        where = f"--cost-matrix {path}: groups[{n}]"
        names = entry.get("classes") if isinstance(entry, dict) else None
        if not isinstance(names, list) or len(names) < 2:
            raise UsageError(f"{where}: \"classes\" must list two or more class names")
        members = [_class({"class": name}, "class", index, where) for name in names]
        cost = _cost(entry, where)
        for i in members:
            costs[i, [j for j in members if j != i]] = cost
    if np.any(np.diag(costs)):
        raise UsageError(f"--cost-matrix {path}: a class paired with itself; a right answer costs nothing")
    return costs


def check_cost_file(path: str) -> str:
    """``path`` if it names a file (the setting's check; its entries are read against the run's classes)."""
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such file; write a cost file (see `./run.sh propose-costs --help`)")
    return path


def _class(entry: object, key: str, index: dict[str, int], where: str) -> int:
    name = entry.get(key) if isinstance(entry, dict) else None
    if name not in index:
        raise UsageError(f"{where}: {key} {name!r} is not a class of this run ({', '.join(index)})")
    return index[name]


def _cost(entry: dict, where: str) -> float:
    cost = entry.get("cost")
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 <= cost <= 100:
        raise UsageError(f"{where}: cost {cost!r} must be a number between 0 and 100")
    return float(cost)


def check_val_unseen(summary_json: Path) -> None:
    """A UsageError when a run's summary says its val report is of a model that trained on the val images (an output
    refit on them, whose predecessor's val figures were not kept): its val confusion matrix then counts mistakes on
    images it trained on. A missing or unreadable summary passes; one without ``val_unseen`` goes by ``refit``."""
    try:
        summary = json.loads(Path(summary_json).read_text(encoding="utf-8"))
        unseen = summary.get("val_unseen", not summary.get("refit"))
    except (OSError, ValueError, AttributeError):
        return
    if not unseen:
        raise UsageError(f"{summary_json}: this run's val report is of its output refit on the training and val "
                         "images, so its report/confusion_val.csv counts mistakes on images it trained on; propose "
                         "costs from a run with --no-refit")


def propose_costs(confusion_csv: Path, top: int = 10) -> dict:
    """The ``top`` most frequent mistakes of a run's val confusion matrix (``OUT/report/confusion_val.csv``) as a
    cost file to edit: each pair's cost its share of the true class's images, the largest scaled to 1."""
    import numpy as np

    try:
        with open(confusion_csv, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        names = rows[0][1:]
        cm = np.array([[int(v) for v in row[1:]] for row in rows[1:]], np.float64)
    except (OSError, ValueError, IndexError) as e:
        raise UsageError(f"{confusion_csv}: not a confusion matrix CSV ({e}); pass the OUT of a finished run "
                         "(its report/confusion_val.csv)") from None
    share = cm / np.maximum(1, cm.sum(axis=1, keepdims=True))
    np.fill_diagonal(share, 0)
    order = [ij for ij in zip(*np.unravel_index(np.argsort(-share, axis=None), share.shape)) if share[ij] > 0][:top]
    scale = share[order[0]] if order else 1.0
    return {"pairs": [{"true": names[i], "predicted": names[j], "cost": round(float(share[i, j] / scale), 3)}
                      for i, j in order]}
