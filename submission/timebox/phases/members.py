"""The ensemble's candidates: each kept checkpoint (and the last epoch) on each view, and the second backbone's
head; their probabilities on val and test, the vote chosen over them, and pruning it to a latency budget."""

from __future__ import annotations

import time

import keras
import numpy as np

from ..ensemble import Choice, choose, drop_order
from ..metrics import accuracy
from ..models.ensemble_model import VIEWS, compose_ensemble, member_copy, view_model
from .context import Context
from .extract import Extraction, features
from .latency import measure_latency
from .scoring import Scorer
from .second import SecondMember

Key = tuple[str, int]  # a candidate: (source, view index into VIEWS)


def candidate_name(key: Key) -> str:
    """A candidate as the report names it, e.g. "finetune epoch 4 (mirrored)"."""
    return f"{key[0]} ({VIEWS[key[1]].name})"


class Members:
    """The candidates' models (a copy of the scored model per checkpoint) and their probabilities."""

    def __init__(self, ctx: Context, ext: Extraction, scorer: Scorer, second: SecondMember | None):
        self.ctx, self.ext, self.scorer, self.second = ctx, ext, scorer, second
        self.models: dict[str, keras.Model] = {}

    def is_second(self, source: str) -> bool:
        return self.second is not None and source == self.second.source

    def bottom_of(self, source: str) -> keras.Model | None:
        """What candidate ``source`` reads: the second backbone for its head, None (the main bottom) otherwise."""
        return self.second.bottom if self.is_second(source) else None

    def from_second(self, keys: list[Key]) -> np.ndarray:
        """Which model each candidate comes from, for the vote's "models" rule: True for the second backbone's head."""
        return np.array([self.is_second(source) for source, _ in keys])

    def load(self, sources: list[str]) -> None:
        """A copy of the scored model with each candidate's weights."""
        for j, source in enumerate(sources):
            candidate = self.scorer.candidates[source]
            if candidate.path is None:  # the last epoch, not among the top checkpoints: its weights when scored
                self.models[source] = member_copy(self.scorer.scored, f"member_{j}")
                self.models[source].set_weights(candidate.weights)
            else:
                self.models[source] = member_copy(self.scorer.scored, f"member_{j}", str(candidate.path))

    def choose(self, zoom_views: list[int], plan: dict[str, float]) -> tuple[list[Key], np.ndarray, Choice, list[int]]:
        """The candidates, their val probabilities, the vote chosen over them, and the zoomed views it uses; chosen
        again without the zoomed candidates when their test images no longer fit."""
        ctx, acts, planner = self.ctx, self.ext.acts, self.ctx.planner
        sources = list(self.scorer.candidates)
        self.load(sources)
        zoomed_val = self.zoomed("val", zoom_views, keep_s=plan["test"] + plan["latency"])
        keys = [(source, v) for v in [*range(len(acts.val)), *zoomed_val] for source in sources]
        val = [zoomed_val[v][s] if v in zoomed_val else self.scorer.candidates[s].val[v] for s, v in keys]
        if self.second is not None:  # a head on the second backbone's features, original view
            keys.append((self.second.source, 0))
            val.append(self.second.val)
            self.models[self.second.source] = self.second.member
        val = np.stack(val)
        choice = choose(val, acts.y_val, self.from_second(keys), seed=ctx.cfg.seed)
        used = [] if choice.rule == "single" else sorted({keys[i][1] for i in np.flatnonzero(choice.weights)
                                                          if keys[i][1] in zoomed_val})
        if used and planner.expired(plan["test"] + plan["round"] + len(used) * planner.zoom_view_s("test")):
            ctx.session.note(f"the vote ({choice.rule}) used zoomed views whose test images no longer fit: chosen "
                             "again without the zoomed candidates")
            cached = [i for i, (_, v) in enumerate(keys) if v not in zoomed_val]
            keys, val, used = [keys[i] for i in cached], val[cached], []
            choice = choose(val, acts.y_val, self.from_second(keys), seed=ctx.cfg.seed)
        return keys, val, choice, used

    def zoomed(self, part: str, views: list[int], keep_s: float = 0.0) -> dict[int, dict[str, np.ndarray]]:
        """Probabilities of every member on the zoomed ``views`` of the val or test images (``part``), by view and
        source. A view starts only if its cost (the plan's, then the last view's as measured) leaves ``keep_s``
        before the end reserve; one the deadline cuts all the same is left out."""
        ctx, planner = self.ctx, self.ctx.planner
        cache, idx = getattr(self.ext.sources, part) if views else (None, None)
        probs: dict[int, dict[str, np.ndarray]] = {}
        stop = lambda: planner.expired(keep_s)  # noqa: E731
        view_s = planner.zoom_view_s(part)
        members = {s: m for s, m in self.models.items() if not self.is_second(s)}
        for v in views:
            t = time.time()
            if not planner.starts(view_s, keep_s):
                ctx.session.note(f"{VIEWS[v].name} view of the {part} images skipped: its cost, {view_s:.0f}s, "
                                 "does not fit")
                break
            acts = features(ctx, view_model(self.ext.extractor.bottom, VIEWS[v]), cache, idx, stop, VIEWS[v].name,
                            dtype=np.float16)
            by_source = {}
            for source, member in members.items():
                if acts.done < len(idx) or stop():
                    break
                by_source[source] = ctx.predict(member, [acts.values])
            if len(by_source) < len(members):
                ctx.session.note(f"{VIEWS[v].name} view of the {part} images cut by the deadline: not a candidate")
                break
            probs[v], view_s = by_source, time.time() - t
        return probs

    def test_probs(self, keys: list[Key], zoomed: list[int], keep_s: float) -> dict[Key, np.ndarray] | None:
        """Test probabilities of every candidate on a cached view, and on the ``zoomed`` views (None if they would
        leave less than ``keep_s`` before the end reserve); the second backbone's head's are those it predicted
        when fitted."""
        ctx, acts = self.ctx, self.ext.acts
        test: dict[Key, np.ndarray] = {}
        n_test, empty = acts.n_test, np.zeros((0, ctx.num_classes), np.float32)
        for source, v in keys:
            if self.is_second(source):
                test[(source, v)] = self.second.test
            elif v < len(acts.test):
                if n_test and ctx.planner.expired(keep_s):
                    return None
                test[(source, v)] = ctx.predict(self.models[source], [acts.test[v][:n_test]]) if n_test else empty
        if zoomed and n_test:
            probs = self.zoomed("test", zoomed, keep_s)
            if len(probs) < len(zoomed):
                return None
            test.update({(source, v): p for v, by_source in probs.items() for source, p in by_source.items()})
        elif zoomed:
            test.update({(s, v): empty for s in self.models if not self.is_second(s) for v in zoomed})
        return test

    def compose(self, keys: list[Key], used: list[int], weights: np.ndarray, confidence: bool) -> keras.Model:
        return compose_ensemble(self.ext.extractor.bottom, [self.models[keys[i][0]] for i in used],
                                [VIEWS[keys[i][1]] for i in used], weights, confidence,
                                [self.bottom_of(keys[i][0]) for i in used])

    def latency(self, model: keras.Model, keys: list[Key], used: list[int]) -> float:
        views = len({(self.is_second(keys[i][0]), keys[i][1]) for i in used})  # each backbone traces its own views
        return measure_latency(model, self.ext.size, views, self.ctx.cfg.latency_images, self.ctx.planner.measured)

    def within_latency(self, keys: list[Key], used: list[int], weights: np.ndarray, confidence: bool
                       ) -> tuple[list[int], np.ndarray, keras.Model, float]:
        """The ensemble model of candidates ``used`` and its p95 latency; with ``latency_ms``, whole members or
        views are dropped, least weight first, until it is under the budget (or one candidate is left); when the
        deadline leaves one more round only, straight to the heaviest candidate alone."""
        planner, budget = self.ctx.planner, self.ctx.cfg.latency_ms
        start = time.time()
        model = self.compose(keys, used, weights, confidence)
        latency = self.latency(model, keys, used)
        step_s = time.time() - start  # one more round must fit before the end reserve, with the ensemble's export
        while budget is not None and latency > budget and len(used) > 1 and not planner.expired(step_s):
            if planner.expired(2 * step_s):  # no time for round after round: straight to the heaviest candidate
                drop = set(range(len(used))) - {int(np.argmax(weights))}
            else:
                groups = [[j for j, i in enumerate(used) if keys[i][part] == value]
                          for part in (0, 1) for value in dict.fromkeys(keys[i][part] for i in used)]
                drop = set(groups[drop_order(weights, groups)[0]])
            if len(drop) == len(used):
                break
            self.ctx.log(f"ensemble: p95 latency {latency:.0f}ms over {budget:.0f}ms: dropping "
                         + ", ".join(candidate_name(keys[used[j]]) for j in sorted(drop)))
            keep = [j for j in range(len(used)) if j not in drop]
            used, weights = [used[j] for j in keep], weights[keep] / weights[keep].sum()
            model = self.compose(keys, used, weights, confidence)
            latency = self.latency(model, keys, used)
        return used, weights, model, latency

    def report(self, keys: list[Key], used: list[int], weights: np.ndarray, val: np.ndarray) -> list[dict]:
        """Per member of the output: source, view, weight, val accuracy and its p95 latency alone (its view, the
        bottom and its top), measured once per view (and for the second backbone's head) in time left over before
        the end reserve (else None)."""
        ctx, planner = self.ctx, self.ctx.planner
        report, latency = [], {}
        for i, w in zip(used, weights):
            source, v = keys[i]
            kind = (self.is_second(source), v)
            if kind not in latency:
                late = ctx.budget.expired(planner.reserve_s() - ctx.cfg.export_factor * planner.measured.export_s
                                          + planner.member_latency_s())
                latency[kind] = None if late else measure_latency(
                    compose_ensemble(self.ext.extractor.bottom, [self.models[source]], [VIEWS[v]], [1.0], False,
                                     [self.bottom_of(source)]), self.ext.size, 1, ctx.cfg.member_latency_images,
                    planner.measured)
            report.append({"source": source, "view": VIEWS[v].name, "weight": float(w),
                           "val_accuracy": accuracy(val[i], self.ext.acts.y_val), "p95_latency_ms": latency[kind]})
        return report

