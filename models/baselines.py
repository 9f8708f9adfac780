"""Non-neural next-track recommenders to compare the LSTM against.

Every baseline shares one interface:

- ``fit(sessions)``: learns from training sessions, each a list of track keys
  in play order;
- ``recommend(prefix, k) -> list[str]``: at most ``k`` track keys, best first,
  for a session prefix (track keys in play order, no padding).

:class:`PopularityBaseline` serves callers that want ranked keys. The
evaluation harness's baselines (popularity, the listener's popularity,
Markov, sequential rules, session-kNN, V-SKNN) score the whole catalogue
and live in :mod:`musicrec.models.session_baselines`.
"""
from __future__ import annotations

import collections
from typing import Iterable, Protocol, Sequence


class NextTrackBaseline(Protocol):
    """What the evaluator needs of a baseline."""

    def fit(self, sessions: Iterable[Sequence[str]]) -> "NextTrackBaseline": ...

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]: ...


class PopularityBaseline:
    """Recommends the most played training tracks, whatever the prefix.

    Ranking is by play count, descending; equal counts are ordered by track key
    (ascending), a rule that knows nothing of the target, so a tie never lifts
    the track being predicted.
    """

    def __init__(self) -> None:
        self._ranking: list[str] = []

    def fit(self, sessions: Iterable[Sequence[str]]) -> "PopularityBaseline":
        counts = collections.Counter(key for session in sessions for key in session)
        self._ranking = sorted(counts, key=lambda key: (-counts[key], key))
        return self

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]:
        if not self._ranking:
            raise RuntimeError("PopularityBaseline.recommend called before fit")
        return self._ranking[:k]
