"""Every listener's sequential rules, as a table the next-track model reads in its graph.

The global rules say which tracks tend to follow a track across all
listeners (``rules[a, b] = Σ 1 / gap`` over plays of ``b`` up to ``lags`` plays
after ``a`` in a session, as the sequential-rules baseline counts them).
:class:`~candidates.CandidateScorer` keeps, per track, its ``top`` strongest
followers and their weights, and reads the rows of the session's last plays:
tracks the listener never played become candidates, and the scorer learns how
far to trust the crowd against the listener's own habits.

Training must not see its own answers: if the table counted the training
sessions, every training target would have followed its anchor at least once
and the scorer would learn to trust the table far more than it deserves on
the future. :func:`split_for_rules` therefore keeps each listener's earliest
sessions for the table and trains on the later ones, which is the situation
at serving time (the table counts only the past). The exported model's table
counts every session it was trained on.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from musicrec.models.next_track.sessions import SessionRecord
from musicrec.models.session_baselines import successor_rules


def split_for_rules(records: Sequence[SessionRecord], rules_share: float
                    ) -> tuple[list[SessionRecord], list[SessionRecord]]:
    """``(rules_sessions, example_sessions)``: per listener, the earliest ``rules_share`` of
    their sessions (by start time) and the rest.

    A listener's latest session always gives examples, so that a log of
    listeners with one or two sessions each still trains the model.
    """
    by_user: dict[str, list[SessionRecord]] = {}
    for record in records:
        by_user.setdefault(record.user_id, []).append(record)
    rules, examples = [], []
    for user in sorted(by_user):
        sessions = sorted(by_user[user], key=lambda record: (record.start_time, record.session_id))
        cut = min(int(round(rules_share * len(sessions))), len(sessions) - 1)
        rules.extend(sessions[:cut])
        examples.extend(sessions[cut:])
    return rules, examples


def successor_table(records: Sequence[SessionRecord], id_of: Mapping[str, int], n_ids: int,
                    lags: int, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Each id's ``top`` strongest followers in ``records``.

    Args:
        records: the sessions to count.
        id_of: track key → model id (keys not in it are skipped).
        n_ids: rows of the table (every model id, reserved ones included).
        lags: a play counts for the ``lags`` plays after it (weight ``1 / gap``).
        top: followers kept per id.

    Returns:
        ``ids [n_ids, top]`` (int32; 0 where a row has fewer followers) and
        ``weights [n_ids, top]`` (float32, ``Σ 1 / gap``, strongest first; 0 unused).
    """
    sequences = [np.array([id_of.get(key, -1) for key in record.track_keys], dtype=np.int64)
                 for record in records]
    rules = successor_rules(sequences, n_ids, lags).tocsr()
    rules.sum_duplicates()
    ids = np.zeros((n_ids, top), dtype=np.int32)
    weights = np.zeros((n_ids, top), dtype=np.float32)
    for row in np.flatnonzero(np.diff(rules.indptr)):
        start, end = rules.indptr[row], rules.indptr[row + 1]
        followers, strength = rules.indices[start:end], rules.data[start:end]
        # Strongest first; among equals, the lower id (more frequent in the vocabulary).
        order = np.lexsort((followers, -strength))[:top]
        ids[row, :len(order)] = followers[order]
        weights[row, :len(order)] = strength[order]
    return ids, weights
