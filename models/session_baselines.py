"""Strong simple next-track baselines that score the whole catalogue.

Each baseline is fit on sessions and then answers cases session by session:
:meth:`Baseline.start_session` hands it the listener and the listener's
earlier plays (the same history the model gets at serving time), and
:meth:`Baseline.evidence` scores one prefix of that session. A score is the
baseline's shared dense ``prior`` (``[n_tracks]``) plus a few sparse
evidence entries, so :func:`musicrec.models.ranking_metrics.rank_with_evidence`
ranks the target with the pessimistic tie rule without catalogue-sized work
per case. Catalogue indices are positions in the vocabulary (``vocab.txt``,
most played first); -1 marks a play outside it.

Every baseline except global popularity has ``1e-6 * popularity / (max + 1)``
as its prior, far below any step of its own evidence, so that among tracks
with equal evidence the more popular ranks first: a rule blind to the
target that makes the baselines stronger, not weaker.

Baselines (Ludewig et al., "Empirical analysis of session-based
recommendation algorithms", 2021, and one personal blend):

- ``popularity``: play counts in the fitted sessions.
- ``user_popularity``: the listener's own play counts in their history.
- ``markov``: first-order transition counts ``last play → next play``.
- ``sequential_rules``: ``a → b`` weighted ``1 / gap`` for ``b`` up to
  ``window`` plays after ``a`` in a fitted session, scored from the last play.
- ``personal_rules``: sequential rules over the listener's own play stream
  (history, then the session so far) from the session's last few plays,
  blended with the global sequential rules and the listener's play counts:
  what a model that gets the listener's history could do with fixed rules.
- ``sknn``: session-kNN, cosine similarity of the prefix's track set with
  every fitted session's track set, ``k`` nearest neighbours vote their
  tracks with their similarity.
- ``vsknn``: V-SKNN, as ``sknn`` but the prefix's tracks weigh linearly more
  the more recent they are.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import sparse

from musicrec.models.next_track.sessions import SessionRecord
from musicrec.models.ranking_metrics import DensePrior

NO_EVIDENCE = (np.zeros(0, np.int64), np.zeros(0, np.float64))


def _tiebreak(counts: np.ndarray) -> np.ndarray:
    # Far below any evidence step (1 play; a kNN vote of at least ~1e-3), so it only orders ties.
    return 1e-6 * counts / (float(counts.max()) + 1.0) if len(counts) else counts


def _known(ids: Sequence[int]) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    return ids[ids >= 0]


def _summed(tracks: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Evidence with each track once (its values added up)."""
    if not len(tracks):
        return NO_EVIDENCE
    unique, position = np.unique(tracks, return_inverse=True)
    return unique, np.bincount(position, weights=values, minlength=len(unique))


def _merged(base: tuple[np.ndarray, np.ndarray], extra: tuple[np.ndarray, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray]:
    """``base`` evidence (sorted distinct tracks) plus ``extra`` (distinct tracks), without re-sorting ``base``."""
    (tracks, values), (more, added) = base, extra
    position = np.minimum(np.searchsorted(tracks, more), max(len(tracks) - 1, 0))
    present = (tracks[position] == more) if len(tracks) else np.zeros(len(more), bool)
    values = values.copy()
    np.add.at(values, position[present], added[present])
    return np.concatenate([tracks, more[~present]]), np.concatenate([values, added[~present]])


def _sequence_ids(sessions: Sequence[SessionRecord], index: Mapping[str, int]) -> list[np.ndarray]:
    return [np.array([index.get(key, -1) for key in session.track_keys], dtype=np.int64)
            for session in sessions]


def successor_rules(sequences: Sequence[np.ndarray], n_tracks: int, window: int) -> sparse.csr_matrix:
    """``[n_tracks, n_tracks]`` CSR: ``rules[a, b] = Σ 1 / gap`` over ``b`` up to ``window`` plays after ``a``."""
    rows, cols, weights = [], [], []
    for ids in sequences:
        for gap in range(1, window + 1):
            if gap >= len(ids):
                break
            source, follower = ids[:-gap], ids[gap:]
            known = (source >= 0) & (follower >= 0)
            rows.append(source[known])
            cols.append(follower[known])
            weights.append(np.full(int(known.sum()), 1.0 / gap))
    if not rows:
        return sparse.csr_matrix((n_tracks, n_tracks))
    return sparse.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(n_tracks, n_tracks))


def _row(matrix: sparse.csr_matrix, row: int) -> tuple[np.ndarray, np.ndarray]:
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    return matrix.indices[start:end].astype(np.int64), matrix.data[start:end]


class Baseline:
    """Interface: ``fit`` once; then per session ``start_session``, per prefix ``evidence``."""

    name = "baseline"

    def fit(self, sessions: Sequence[SessionRecord], index: Mapping[str, int]) -> "Baseline":
        """Learns from ``sessions``; ``index`` maps a track key to its catalogue index."""
        self.n_tracks = len(index)
        self.popularity = np.zeros(self.n_tracks)
        for ids in _sequence_ids(sessions, index):
            np.add.at(self.popularity, _known(ids), 1)
        self.prior = DensePrior(self._prior())
        self._fit(sessions, index)
        self.start_session("", [])
        return self

    def _prior(self) -> np.ndarray:
        return _tiebreak(self.popularity)

    def _fit(self, sessions: Sequence[SessionRecord], index: Mapping[str, int]) -> None:
        pass

    def start_session(self, user_id: str, history: Sequence[int]) -> None:
        """The listener of the next prefixes and their earlier plays (catalogue indices, oldest first)."""
        self.user_id = user_id
        self.history = np.asarray(history, dtype=np.int64)

    def evidence(self, prefix: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Sparse additions to the prior for a prefix: int64 ``[m]`` distinct tracks, float ``[m]`` values."""
        return NO_EVIDENCE

    def scores(self, prefix: Sequence[int], user_id: str = "", history: Sequence[int] = ()) -> np.ndarray:
        """Dense ``[n_tracks]`` scores of one prefix (tests and small catalogues)."""
        self.start_session(user_id, history)
        tracks, values = self.evidence(prefix)
        dense = self.prior.prior.copy()
        dense[tracks] += values
        return dense


class GlobalPopularity(Baseline):
    name = "popularity"

    def _prior(self):
        return self.popularity


class UserPopularity(Baseline):
    name = "user_popularity"

    def start_session(self, user_id, history):
        super().start_session(user_id, history)
        self._counts = _summed(_known(history), np.ones(len(_known(history))))

    def evidence(self, prefix):
        return self._counts


class _RuleBaseline(Baseline):
    """Scores from a sparse ``[n_tracks, n_tracks]`` rule matrix, read at the last known play."""

    window = 1

    def _fit(self, sessions, index):
        self._rules = successor_rules(_sequence_ids(sessions, index), self.n_tracks, self.window)

    def evidence(self, prefix):
        known = _known(prefix)
        return _row(self._rules, int(known[-1])) if len(known) else NO_EVIDENCE


class Markov(_RuleBaseline):
    name = "markov"
    window = 1


class SequentialRules(_RuleBaseline):
    name = "sequential_rules"

    def __init__(self, window: int = 10):
        self.window = window


class PersonalRules(SequentialRules):
    """Sequential rules over the listener's own plays, blended with the global rules and play counts.

    For anchor ``a`` (0 = the session's last play, up to ``anchors - 1``),
    every earlier occurrence of that track in the listener's stream (their
    last ``recent_plays`` plays, then the session before the anchor) gives
    the plays up to ``window`` later ``1 / ((1 + a) · gap)``; the global
    sequential rules of the last play add ``global_weight`` times their
    score, and each earlier play of a track adds ``repeat_weight``.

    The defaults were chosen on the tuning listeners of
    ``benchmarks/listener_split.py`` (a small grid over the recent plays, the
    weights, anchors and window): tastes drift, so the last 5 000 plays beat
    the whole history, and counting repeats only blurred the rules.
    """

    name = "personal_rules"

    def __init__(self, window: int = 10, anchors: int = 3, global_weight: float = 0.5,
                 repeat_weight: float = 0.0, recent_plays: int = 5000):
        super().__init__(window)
        self.anchors = anchors
        self.global_weight = global_weight
        self.repeat_weight = repeat_weight
        self.recent_plays = recent_plays

    def start_session(self, user_id, history):
        super().start_session(user_id, list(history)[-self.recent_plays:] if self.recent_plays else [])
        self._order = np.argsort(self.history, kind="stable")
        self._sorted = self.history[self._order]
        known = _known(self.history)
        self._repeats = _summed(known, np.full(len(known), self.repeat_weight))

    def _occurrences(self, track: int) -> np.ndarray:
        left, right = np.searchsorted(self._sorted, [track, track + 1])
        return self._order[left:right]

    def evidence(self, prefix):
        prefix = np.asarray(prefix, dtype=np.int64)
        stream = np.concatenate([self.history, prefix])
        gaps = np.arange(1, self.window + 1)
        tracks, values = [], []
        for anchor in range(min(self.anchors, len(prefix))):
            end = len(prefix) - 1 - anchor  # the anchor's position in the prefix
            track = int(prefix[end])
            if track < 0:
                continue
            earlier = np.concatenate([self._occurrences(track),
                                      len(self.history) + np.flatnonzero(prefix[:end] == track)])
            followers = (earlier[:, None] + gaps[None, :]).ravel()
            weights = np.broadcast_to(1.0 / ((1 + anchor) * gaps), (len(earlier), self.window)).ravel()
            inside = followers < len(stream)
            followed = stream[followers[inside]]
            tracks.append(followed[followed >= 0])
            values.append(weights[inside][followed >= 0])
        known = _known(prefix)
        if len(known) and self.global_weight:
            rule_tracks, rule_values = _row(self._rules, int(known[-1]))
            tracks.append(rule_tracks)
            values.append(self.global_weight * rule_values)
        if not tracks:
            return self._repeats
        return _merged(self._repeats, _summed(np.concatenate(tracks), np.concatenate(values)))


class SessionKNN(Baseline):
    """Session-kNN on track sets; ``decay=True`` gives V-SKNN's linearly decaying prefix weights."""

    def __init__(self, k: int = 100, decay: bool = False):
        self.k = k
        self.decay = decay
        self.name = "vsknn" if decay else "sknn"

    def _fit(self, sessions, index):
        rows, cols = [], []
        for row, ids in enumerate(_sequence_ids(sessions, index)):
            distinct = np.unique(_known(ids))
            rows.append(np.full(len(distinct), row))
            cols.append(distinct)
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        self._sessions = sparse.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(sessions), self.n_tracks))
        self._sessions_t = self._sessions.T.tocsr()
        self._lengths = np.maximum(np.asarray(self._sessions.sum(axis=1)).ravel(), 1.0)

    def evidence(self, prefix):
        known = _known(prefix)
        if not len(known):
            return NO_EVIDENCE
        weights: dict[int, float] = {}
        for position, track in enumerate(known):
            # V-SKNN: the i-th of n plays weighs i / n (the latest 1); SKNN: every distinct track 1.
            weights[int(track)] = (position + 1) / len(known) if self.decay else 1.0
        tracks = np.fromiter(weights, dtype=np.int64)
        query = np.fromiter(weights.values(), dtype=np.float64)
        overlap = self._sessions_t[tracks].T @ query  # [n_sessions]
        similarity = overlap / np.sqrt(self._lengths * len(tracks))
        candidates = np.flatnonzero(similarity > 0)
        if len(candidates) > self.k:
            candidates = candidates[np.argpartition(-similarity[candidates], self.k - 1)[:self.k]]
        neighbours = self._sessions[candidates]
        votes = np.repeat(similarity[candidates], np.diff(neighbours.indptr))
        return _summed(neighbours.indices.astype(np.int64), votes)


def default_baselines() -> list[Baseline]:
    """The harness's baselines, in report order."""
    return [GlobalPopularity(), UserPopularity(), Markov(), SequentialRules(), PersonalRules(),
            SessionKNN(k=100), SessionKNN(k=100, decay=True)]
