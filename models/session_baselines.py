"""Strong simple next-track baselines that score the whole catalogue.

Each baseline is fit on training sessions and answers a case with one score
per catalogue track (``np.ndarray`` float64 ``[n_tracks]``, higher is better),
so that :mod:`musicrec.models.ranking_metrics` ranks the target with its
pessimistic tie rule. Catalogue indices are positions in the training
vocabulary (``vocab.txt``, most played first).

Every baseline except global popularity adds ``1e-6 * popularity / (max + 1)``,
far below any step of its own evidence, so that among tracks with equal
evidence the more popular ranks first: a rule blind to the target that makes
the baselines stronger, not weaker.

Baselines (Ludewig et al., "Empirical analysis of session-based
recommendation algorithms", 2021):

- ``popularity``: training play counts.
- ``user_popularity``: the listener's own training play counts.
- ``markov``: first-order transition counts ``last play → next play``.
- ``sequential_rules``: ``a → b`` weighted ``1 / gap`` for ``b`` up to
  ``window`` plays after ``a`` in a training session, scored from the last play.
- ``sknn``: session-kNN, cosine similarity of the prefix's track set with
  every training session's track set, ``k`` nearest neighbours vote their
  tracks with their similarity.
- ``vsknn``: V-SKNN, as ``sknn`` but the prefix's tracks weigh linearly more
  the more recent they are.
"""
from __future__ import annotations

import collections
from typing import Mapping, Sequence

import numpy as np
from scipy import sparse

from musicrec.models.next_track.history import SessionRecord


def _tiebreak(counts: np.ndarray) -> np.ndarray:
    # Far below any evidence step (1 play; a kNN vote of at least ~1e-3), so it only orders ties.
    return 1e-6 * counts / (float(counts.max()) + 1.0) if len(counts) else counts


class Baseline:
    """Interface: ``fit`` once, then ``scores`` per case."""

    name = "baseline"

    def fit(self, sessions: Sequence[SessionRecord], index: Mapping[str, int]) -> "Baseline":
        """Learns from training ``sessions``; ``index`` maps a track key to its catalogue index."""
        self.n_tracks = len(index)
        self.popularity = np.zeros(self.n_tracks)
        for session in sessions:
            for key in session.track_keys:
                if key in index:
                    self.popularity[index[key]] += 1
        self._tiebreak = _tiebreak(self.popularity)
        self._fit(sessions, index)
        return self

    def _fit(self, sessions: Sequence[SessionRecord], index: Mapping[str, int]) -> None:
        pass

    def scores(self, prefix: Sequence[int], user_id: str) -> np.ndarray:
        """``[n_tracks]`` scores for a prefix (catalogue indices, -1 for unknown tracks, play order)."""
        raise NotImplementedError


class GlobalPopularity(Baseline):
    name = "popularity"

    def scores(self, prefix, user_id):
        return self.popularity


class UserPopularity(Baseline):
    name = "user_popularity"

    def _fit(self, sessions, index):
        self._by_user: dict[str, np.ndarray] = collections.defaultdict(lambda: np.zeros(self.n_tracks))
        for session in sessions:
            counts = self._by_user[session.user_id]
            for key in session.track_keys:
                if key in index:
                    counts[index[key]] += 1

    def scores(self, prefix, user_id):
        counts = self._by_user.get(user_id)
        return self._tiebreak if counts is None else counts + self._tiebreak


def _known(ids: Sequence[int]) -> list[int]:
    return [i for i in ids if i >= 0]


class _RuleBaseline(Baseline):
    """Scores from a sparse ``[n_tracks, n_tracks]`` rule matrix, read at the last known play."""

    window = 1

    def _fit(self, sessions, index):
        rows, cols, weights = [], [], []
        for session in sessions:
            ids = [index.get(key, -1) for key in session.track_keys]
            for i, source in enumerate(ids):
                if source < 0:
                    continue
                for gap in range(1, self.window + 1):
                    if i + gap >= len(ids):
                        break
                    if ids[i + gap] >= 0:
                        rows.append(source)
                        cols.append(ids[i + gap])
                        weights.append(1.0 / gap)
        self._rules = sparse.csr_matrix((weights, (rows, cols)), shape=(self.n_tracks, self.n_tracks))

    def scores(self, prefix, user_id):
        known = _known(prefix)
        if not known:
            return self._tiebreak
        return self._rules[known[-1]].toarray()[0] + self._tiebreak


class Markov(_RuleBaseline):
    name = "markov"
    window = 1


class SequentialRules(_RuleBaseline):
    name = "sequential_rules"

    def __init__(self, window: int = 10):
        self.window = window


class SessionKNN(Baseline):
    """Session-kNN on track sets; ``decay=True`` gives V-SKNN's linearly decaying prefix weights."""

    def __init__(self, k: int = 100, decay: bool = False):
        self.k = k
        self.decay = decay
        self.name = "vsknn" if decay else "sknn"

    def _fit(self, sessions, index):
        rows, cols = [], []
        for row, session in enumerate(sessions):
            ids = sorted({index[key] for key in session.track_keys if key in index})
            rows.extend([row] * len(ids))
            cols.extend(ids)
        self._sessions = sparse.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(sessions), self.n_tracks))
        self._sessions_t = self._sessions.T.tocsr()
        self._lengths = np.maximum(np.asarray(self._sessions.sum(axis=1)).ravel(), 1.0)

    def scores(self, prefix, user_id):
        known = _known(prefix)
        if not known:
            return self._tiebreak
        weights: dict[int, float] = {}
        for position, track in enumerate(known):
            # V-SKNN: the i-th of n plays weighs i / n (the latest 1); SKNN: every distinct track 1.
            weights[track] = (position + 1) / len(known) if self.decay else 1.0
        tracks = np.fromiter(weights, dtype=np.int64)
        query = np.fromiter(weights.values(), dtype=np.float64)
        overlap = self._sessions_t[tracks].T @ query  # [n_sessions]
        similarity = overlap / np.sqrt(self._lengths * len(tracks))
        candidates = np.flatnonzero(similarity > 0)
        if len(candidates) > self.k:
            candidates = candidates[np.argpartition(-similarity[candidates], self.k - 1)[:self.k]]
        votes = self._sessions[candidates].T @ similarity[candidates]
        return np.asarray(votes).ravel() + self._tiebreak


def default_baselines() -> list[Baseline]:
    """The harness's baselines, in report order."""
    return [GlobalPopularity(), UserPopularity(), Markov(), SequentialRules(),
            SessionKNN(k=100), SessionKNN(k=100, decay=True)]
