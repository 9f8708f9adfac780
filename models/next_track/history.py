"""Each listener's earlier plays, from the sessions of the training split.

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
from typing import Iterable

import numpy as np

from musicrec.models.next_track.sessions import SessionRecord


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
