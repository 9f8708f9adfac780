"""Listening sessions: one user's plays cut at long pauses, filtered, and given a split.

The rule is shared by the play-log ExampleGen and the batch ``recommend``
job (:func:`split_into_sessions`), so a session means the same in training
and in precomputed recommendations. :class:`Sessionize` is the Beam step;
the functions are pure.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

import apache_beam as beam

from musicrec.components.playlog_params import PlaylogParams
from musicrec.components.playlog_rows import Play

# Extra outputs of :func:`sessionize_user` (and :class:`Sessionize`) besides the kept sessions.
FILTERED = "filtered"
USERS = "users"
COLLAPSED = "collapsed"


@dataclasses.dataclass(frozen=True)
class Session:
    """One listening session, plays in time order.

    Attributes:
        user_id: the listener.
        session_id: ``"<user_id>-<start_time>"``, stable across runs.
        start_time: Unix seconds of the first play.
        track_keys: ``[plays]`` track keys.
        timestamps: ``[plays]`` Unix seconds, non-decreasing.
        split: ``"train"``, ``"eval"`` or ``"test"``.
        skipped: ``[plays]`` 1 skip, 0 not, -1 unknown (``ms_played`` missing).
    """

    user_id: str
    session_id: str
    start_time: int
    track_keys: tuple[str, ...]
    timestamps: tuple[int, ...]
    split: str
    skipped: tuple[int, ...] = ()


def play_order(play: Play) -> tuple[int, str, int]:
    """Sort key: time, then file and line so equal timestamps keep a stable order."""
    return play.timestamp, play.source, play.line


def split_into_sessions(plays: Iterable[Play], gap_seconds: int) -> list[list[Play]]:
    """One user's plays (any order) → sessions in time order.

    A session ends where the next play starts more than ``gap_seconds`` after
    the previous one (a gap of exactly ``gap_seconds`` stays in the session).
    """
    sessions: list[list[Play]] = []
    for play in sorted(plays, key=play_order):
        if sessions and play.timestamp - sessions[-1][-1].timestamp <= gap_seconds:
            sessions[-1].append(play)
        else:
            sessions.append([play])
    return sessions


def collapse_repeats(session: list[Play]) -> list[Play]:
    """Keeps the first of each run of consecutive plays of the same track."""
    kept = session[:1]
    for play in session[1:]:
        if play.track_key != kept[-1].track_key:
            kept.append(play)
    return kept


def skip_flag(play: Play, threshold_ms: int) -> int:
    """1 when the play is a skip (``ms_played < threshold_ms``), 0 when not, -1 when unknown."""
    if play.ms_played is None:
        return -1
    return int(play.ms_played < threshold_ms)


def assign_split(start_time: int, first_time: int, last_time: int,
                 eval_fraction: float, test_fraction: float) -> str:
    """Split of a session starting at ``start_time`` in a user's span ``[first_time, last_time]``.

    ``test`` when it starts after ``last_time - test_fraction * span``,
    ``eval`` when after ``last_time - (test_fraction + eval_fraction) * span``,
    else ``train``. A user whose plays all share one second is all ``train``.
    """
    span = last_time - first_time
    if start_time > last_time - test_fraction * span:
        return "test"
    if start_time > last_time - (test_fraction + eval_fraction) * span:
        return "eval"
    return "train"


def sessionize_user(user_id: str, plays: Iterable[Play], params: PlaylogParams
                    ) -> Iterator[Session | beam.pvalue.TaggedOutput]:
    """All of one user's plays → kept :class:`Session` s, tagged outputs for the rest.

    Yields each kept session; ``TaggedOutput("collapsed", n_plays)`` per
    session that lost repeats (``collapse_repeats``);
    ``TaggedOutput("filtered", n_plays)`` per session shorter than
    ``min_session_length`` after collapsing; ``TaggedOutput("users", user_id)``
    once. The split is per user here; ``split_mode="global"`` reassigns it later.
    """
    sessions = split_into_sessions(plays, params.session_gap_seconds)
    yield beam.pvalue.TaggedOutput(USERS, user_id)
    if not sessions:
        return
    first_time, last_time = sessions[0][0].timestamp, sessions[-1][-1].timestamp
    for session in sessions:
        if params.collapse_repeats:
            collapsed = collapse_repeats(session)
            if len(collapsed) < len(session):
                yield beam.pvalue.TaggedOutput(COLLAPSED, len(session) - len(collapsed))
            session = collapsed
        if len(session) < params.min_session_length:
            yield beam.pvalue.TaggedOutput(FILTERED, len(session))
            continue
        start_time = session[0].timestamp
        yield Session(user_id=user_id, session_id=f"{user_id}-{start_time}", start_time=start_time,
                      track_keys=tuple(play.track_key for play in session),
                      timestamps=tuple(play.timestamp for play in session),
                      split=assign_split(start_time, first_time, last_time,
                                         params.eval_fraction, params.test_fraction),
                      skipped=(tuple(skip_flag(play, params.skip_threshold_ms) for play in session)
                               if params.write_skip_flags else ()))


def keyed_by_user(play: Play) -> tuple[str, tuple]:
    """``(user_id, fields)``: a tuple of primitives crosses the shuffle with Beam's fast
    coder instead of being pickled (a third of the per-play cost at 1 M plays)."""
    return play.user_id, (play.timestamp, play.track_key, play.ms_played, play.source, play.line)


def plays_of_user(user_id: str, fields: Iterable[tuple]) -> Iterator[Play]:
    """Inverse of :func:`keyed_by_user` (the artist, unused downstream, is not carried)."""
    for timestamp, track_key, ms_played, source, line in fields:
        yield Play(user_id, timestamp, track_key, "", ms_played, source, line)


class Sessionize(beam.PTransform):
    """Plays → kept sessions (main output) with ``filtered`` (plays per dropped
    session), ``collapsed`` (repeats removed per session) and ``users`` (one id
    per user) as extra outputs."""

    def __init__(self, params: PlaylogParams):
        super().__init__()
        self._params = params

    def expand(self, plays):
        params = self._params
        return (plays
                | "KeyByUser" >> beam.Map(keyed_by_user)
                | "GroupByUser" >> beam.GroupByKey()
                | "SplitSessions" >> beam.FlatMap(
                    lambda user_plays: sessionize_user(user_plays[0],
                                                       plays_of_user(*user_plays), params))
                .with_outputs(FILTERED, USERS, COLLAPSED, main="sessions"))


class TimeSpanFn(beam.CombineFn):
    """Plays → ``(first, last)`` Unix seconds over all of them (``None`` when there are none)."""

    def create_accumulator(self):
        return None

    def add_input(self, span, play: Play):
        if span is None:
            return play.timestamp, play.timestamp
        return min(span[0], play.timestamp), max(span[1], play.timestamp)

    def merge_accumulators(self, spans):
        spans = [span for span in spans if span is not None]
        if not spans:
            return None
        return min(span[0] for span in spans), max(span[1] for span in spans)

    def extract_output(self, span):
        return span


def reassign_global_split(session: Session, span: tuple[int, int] | None,
                          params: PlaylogParams) -> Session:
    """The session's split from the whole log's time span (``split_mode="global"``)."""
    first_time, last_time = span
    return dataclasses.replace(session, split=assign_split(
        session.start_time, first_time, last_time, params.eval_fraction, params.test_fraction))


__all__ = ["Session", "Sessionize", "TimeSpanFn", "play_order", "split_into_sessions", "collapse_repeats",
           "skip_flag", "assign_split", "sessionize_user", "keyed_by_user", "plays_of_user",
           "reassign_global_split", "FILTERED", "USERS", "COLLAPSED"]
