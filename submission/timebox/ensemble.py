"""Ensembles of validation candidates (checkpoint x test-time-augmentation view), guarded by held-out folds.

A *candidate* is one checkpoint seen through one view; ``probs`` holds their validation
probabilities, shape (M, N, C). ``choose`` cross-validates its rules (best single member, plain
average, the average of each model's average when the candidates come from several models, greedy
ensemble selection, and greedy selection with confidence-weighted votes) on folds of val and keeps
an ensemble only if it beats the best single member on held-out images.

Usage::

    choice = choose(val_probs, val_labels)          # val_probs (M, N, C), val_labels (N,)
    choice = choose(val_probs, val_labels, models)  # models (M,): which model (backbone) each candidate is
    print(choice.reason)
    test_out = choice.predict(test_probs)           # test_probs (M, N_test, C) -> (N_test, C)
    for g in drop_order(choice.weights, groups):    # shed the least useful views first
        ...
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import accuracy, log_loss

RULES = ("single", "average", "models", "greedy", "greedy-confidence")
_CLIP = 1e-7  # log-loss clips probabilities here
_IMPROVE_TOL = 1e-12  # a greedy addition must lower log-loss by more than float rounding


def _as_probs(probs: np.ndarray) -> np.ndarray:
    """(M, N, C) float64 copy-or-view of the candidates' probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"probs must have shape (M, N, C), got {p.shape}")
    return p


def _check_labels(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels).astype(np.int64)
    if y.shape != (p.shape[1],):
        raise ValueError(f"labels must have shape ({p.shape[1]},), got {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[2]):
        raise ValueError(f"labels must be class ids in [0, {p.shape[2]})")
    return y


def vote(probs: np.ndarray, weights: np.ndarray, confidence: bool = False) -> np.ndarray:
    """Weighted soft vote of M candidates: (M, N, C) -> (N, C) float64 rows summing to 1.

    out[i] is proportional to sum_m w_m * p_{m,i}; with ``confidence`` each term is also scaled
    by conf_{m,i} = max_c p_{m,i,c}. Weights are non-negative and need not sum to 1.
    Any float input dtype (float16 included) is computed in float64.
    """
    p = _as_probs(probs)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (p.shape[0],):
        raise ValueError(f"weights must have shape ({p.shape[0]},), got {w.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    keep = w > 0
    p, w = p[keep], w[keep]
    scale = w[:, None] * p.max(2) if confidence else np.broadcast_to(w[:, None], p.shape[:2])
    out = np.einsum("mn,mnc->nc", scale, p)
    return out / out.sum(1, keepdims=True)


def greedy_weights(
    probs: np.ndarray, labels: np.ndarray, confidence: bool = False, rounds: int = 25
) -> np.ndarray:
    """Caruana et al. (2004) ensemble selection with replacement, scored by val log-loss of ``vote``.

    Starts from the candidate with the lowest log-loss, then adds up to ``rounds`` members, each
    time the one whose addition lowers the bag's log-loss most (ties: lowest index), stopping
    early when none lowers it. Returns counts / counts.sum(), shape (M,).
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    p = _as_probs(probs)
    y = _check_labels(p, labels)
    m = p.shape[0]
    scaled = p * p.max(2, keepdims=True) if confidence else p
    # vote(bag) at the true class is (counts @ true) / (counts @ total): only these are needed.
    true = scaled[:, np.arange(len(y)), y]  # (M, N)
    total = scaled.sum(2)  # (M, N)

    def losses(t: np.ndarray, r: np.ndarray) -> np.ndarray:
        return -np.log(np.clip(t / r, _CLIP, 1.0)).mean(-1)

    singles = losses(true, total)
    counts = np.zeros(m, dtype=np.int64)
    first = int(np.argmin(singles))
    counts[first] = 1
    best = float(singles[first])
    t, r = true[first].copy(), total[first].copy()
    for _ in range(rounds):
        trial = losses(t + true, r + total)  # (M,): the bag plus each candidate
        k = int(np.argmin(trial))
        if not trial[k] < best - _IMPROVE_TOL:
            break
        counts[k] += 1
        best = float(trial[k])
        t += true[k]
        r += total[k]
    return counts / counts.sum()


@dataclass
class Choice:
    """The ensemble rule picked by ``choose`` and its weights refit on all of val.

    ``heldout`` maps each rule to its held-out accuracy pooled over the folds (empty when M == 1, where
    ``single_heldout`` is NaN because nothing was cross-validated).
    """

    rule: str
    weights: np.ndarray
    confidence: bool
    heldout: dict[str, float]
    single_heldout: float
    reason: str

    def predict(self, probs: np.ndarray) -> np.ndarray:
        """Vote of candidates (M, N, C) with this choice's weights -> (N, C) float64."""
        return vote(probs, self.weights, self.confidence)


def _best_single(p: np.ndarray, y: np.ndarray) -> int:
    """Index of the most accurate candidate (ties: lower log-loss, then lower index)."""
    acc = np.array([accuracy(pm, y) for pm in p])
    loss = np.array([log_loss(pm, y) for pm in p])
    return int(np.lexsort((np.arange(len(p)), loss, -acc))[0])


def model_weights(models: np.ndarray) -> np.ndarray:
    """Weights (M,) of the "models" rule: every model (a backbone, say) gets an equal share, split equally
    among its candidates (checkpoints x views). Averaging a fine-tune's checkpoints with one head on another
    backbone gives that head the weight of one checkpoint; this gives it half the vote, and the second
    backbone's different errors are what an ensemble gains from (bench/RESULTS.md)."""
    ids, inverse, counts = np.unique(np.asarray(models), return_inverse=True, return_counts=True)
    return 1.0 / (len(ids) * counts[inverse])


def _fit(rule: str, p: np.ndarray, y: np.ndarray, models: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Weights (M,) summing to 1 and the confidence flag of ``rule`` fitted on (p, y); ``models`` (M,) names
    each candidate's model, for the "models" rule."""
    m = p.shape[0]
    if rule == "single":
        return np.eye(m)[_best_single(p, y)], False
    if rule == "average":
        return np.full(m, 1.0 / m), False
    if rule == "models":
        return model_weights(np.zeros(m, np.int64) if models is None else models), False
    if rule == "greedy":
        return greedy_weights(p, y, confidence=False), False
    if rule == "greedy-confidence":
        return greedy_weights(p, y, confidence=True), True
    raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")


def _stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id (N,) per image: each class shuffled, then all dealt round-robin class after class.

    Fold sizes differ by at most 1 (so every fold is non-empty when N >= folds) and so do
    each class's counts across folds, even for classes with fewer images than folds.
    """
    y = np.asarray(labels)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if len(y) < folds:
        raise ValueError(f"cannot split {len(y)} validation images into {folds} folds")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    fold_of = np.empty(len(y), dtype=np.int64)
    fold_of[order] = np.arange(len(y)) % folds
    return fold_of


def choose(probs: np.ndarray, labels: np.ndarray, models: np.ndarray | None = None, folds: int = 2,
           seed: int = 0) -> Choice:
    """Pick the rule with the best held-out accuracy over stratified folds of val, refit on all of val.

    Held-out accuracy is pooled over the folds (images right / val images), so an ensemble rule wins
    only if it gets at least one more held-out image right than the best single member, and its
    refit on all of val keeps more than one candidate (greedy selection can end with one); among
    winners the highest accuracy is taken, ties going to the earlier (simpler) rule in the order
    average, models, greedy, greedy-confidence. Otherwise the rule is "single". ``models`` (M,), any
    labels, says which model each candidate comes from; the "models" rule runs only when there are
    several.
    """
    p = _as_probs(probs)
    y = _check_labels(p, labels)
    if models is not None and np.shape(models) != (p.shape[0],):
        raise ValueError(f"models must have shape ({p.shape[0]},), got {np.shape(models)}")
    rules = [r for r in RULES if r != "models" or (models is not None and len(np.unique(models)) > 1)]
    if p.shape[0] == 1:
        return Choice("single", np.ones(1), False, {}, float("nan"),
                      "there is one candidate: it is the output")
    fold_of = _stratified_folds(y, folds, seed)
    right = dict.fromkeys(rules, 0)  # held-out images each rule gets right, over all folds
    for k in range(folds):
        fit, held = fold_of != k, fold_of == k
        for rule in rules:
            w, conf = _fit(rule, p[:, fit], y[fit], models)
            right[rule] += int(np.sum(vote(p[:, held], w, conf).argmax(1) == y[held]))
    heldout = {rule: n / len(y) for rule, n in right.items()}
    single = heldout["single"]
    winners = sorted((r for r in rules[1:] if heldout[r] > single), key=lambda r: -heldout[r])  # stable: ties
    collapsed = []  # winners whose refit on all of val keeps one candidate: not an ensemble
    for rule in winners:
        weights, conf = _fit(rule, p, y, models)
        if np.count_nonzero(weights) > 1:
            reason = (f"{rule} beat the best single member on held-out val: {heldout[rule]:.4f} vs {single:.4f}"
                      + (f" ({', '.join(collapsed)} refit on all of val kept one candidate)" if collapsed else ""))
            return Choice(rule, weights, conf, heldout, single, reason)
        collapsed.append(rule)
    weights, conf = _fit("single", p, y)
    reason = (f"no ensemble rule beat the best single member on held-out val ({single:.4f}): "
              "the output stays a single model")
    if collapsed:
        reason = (f"{', '.join(collapsed)} beat the best single member on held-out val but kept one candidate "
                  "when refit on all of val: the output stays a single model")
    return Choice("single", weights, conf, heldout, single, reason)


def drop_order(weights: np.ndarray, groups: list[list[int]]) -> list[int]:
    """Group indices, least useful first; usefulness = sum of the group's candidate weights.

    Ties (compared after rounding to 12 decimals, to absorb float sums) drop the higher
    index first, so earlier groups, e.g. the original view, are kept longest.
    """
    w = np.asarray(weights, dtype=np.float64)
    use = [round(float(w[list(g)].sum()), 12) for g in groups]
    return sorted(range(len(groups)), key=lambda g: (use[g], -g))
