"""Listening sessions with their listener, and each listener's earlier plays.

Personalisation feeds the model the listener's most recent plays *before* the
current session. Those plays come only from the sessions given to
:class:`ListeningHistory` (the training split), and only plays with a
timestamp strictly before the session's start count, so no play of the test
period (or of the session itself) can leak into a model's input or its
training pairs.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
from typing import Iterable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """One ``Sessions`` record (docs/architecture.md).

    Attributes:
        user_id: the listener.
        session_id: stable id of the session.
        start_time: Unix seconds of the first play.
        track_keys: ``[plays]`` track keys in play order.
        timestamps: ``[plays]`` Unix seconds.
    """

    user_id: str
    session_id: str
    start_time: int
    track_keys: tuple[str, ...]
    timestamps: tuple[int, ...]


def read_session_records(files: Sequence[str]) -> list[SessionRecord]:
    """Every session of GZIP TFRecord ``files`` (``Sessions`` contract), in file order."""
    from musicrec.models.next_track.data import session_dataset

    records = []
    for session in session_dataset(files):
        records.append(SessionRecord(
            user_id=session["user_id"].numpy().decode("utf-8"),
            session_id=session["session_id"].numpy().decode("utf-8"),
            start_time=int(session["start_time"].numpy()),
            track_keys=tuple(key.decode("utf-8") for key in session["track_key"].numpy()),
            timestamps=tuple(int(t) for t in session["timestamp"].numpy())))
    return records


class ListeningHistory:
    """Each listener's plays from a set of sessions (the training split), in time order.

    Args:
        sessions: the sessions whose plays may serve as history.
    """

    def __init__(self, sessions: Iterable[SessionRecord]):
        plays: dict[str, list[tuple[int, int, str]]] = collections.defaultdict(list)
        for session in sessions:
            for position, (key, time) in enumerate(zip(session.track_keys, session.timestamps)):
                # (time, position) keeps a session's own order among plays of the same second.
                plays[session.user_id].append((time, position, key))
        self._times: dict[str, np.ndarray] = {}
        self._keys: dict[str, list[str]] = {}
        for user, user_plays in plays.items():
            user_plays.sort()
            self._times[user] = np.array([time for time, _, _ in user_plays], dtype=np.int64)
            self._keys[user] = [key for _, _, key in user_plays]

    def users(self) -> list[str]:
        """The listeners, sorted."""
        return sorted(self._keys)

    def plays_of(self, user_id: str) -> list[str]:
        """Every play of the listener, in time order."""
        return self._keys.get(user_id, [])

    def count_before(self, user_id: str, start_time: int) -> int:
        """How many of the listener's plays are strictly before ``start_time``."""
        if user_id not in self._times:
            return 0
        return int(bisect.bisect_left(self._times[user_id], start_time))

    def before(self, user_id: str, start_time: int, max_plays: int) -> list[str]:
        """The listener's last ``max_plays`` plays strictly before ``start_time``, oldest first."""
        if max_plays <= 0:
            return []
        end = self.count_before(user_id, start_time)
        return self.plays_of(user_id)[max(0, end - max_plays):end]
