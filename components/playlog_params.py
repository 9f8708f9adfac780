"""The play-log ExampleGen's settings (:class:`PlaylogParams`), also read by the batch ``recommend`` job."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from musicrec.components.beam_io import DEFAULT_PROGRESS_SECONDS
from musicrec.components.playlog_readers import AUTO, FORMATS

SPLIT_MODES = ("per_user", "global")


@dataclasses.dataclass(frozen=True)
class PlaylogParams:
    """What shapes the sessions; the defaults are the documented pipeline defaults.

    Attributes:
        format: ``"auto"`` (by file name) or one of ``playlog_readers.FORMATS``.
        session_gap_seconds: a longer silence between two plays starts a new session.
        min_session_length: sessions with fewer plays are dropped (and counted).
        eval_fraction: share of each user's time span, before the test share, for eval.
        test_fraction: share at the end of each user's time span for test.
        vocab_min_count: plays (in any split) a track needs to enter ``vocab.txt``;
            rarer tracks map to the model's one OOV bucket (id 1).
        num_shards: TFRecord shards per split (0 lets the runner choose).
        skip_filter: drop plays shorter than ``skip_threshold_ms`` (skips)
            before anything else; plays without ``ms_played`` are kept.
        skip_threshold_ms: what counts as a skip, in milliseconds (30 s, the
            threshold at which Spotify and the charts count a stream).
        collapse_repeats: merge immediate repeats of a track inside a session
            into its first play.
        min_item_support: plays a track needs (after the skip filter) to be kept
            at all; rarer tracks' plays are dropped before sessions are built
            and filtered, the order of the session-based literature (items,
            then sessions). 1 keeps every track.
        split_mode: ``"per_user"``: the last fractions of each user's time
            span; ``"global"``: the last fractions of the whole log's time span
            (one cut for everybody, no look-ahead across users).
        write_skip_flags: add a ``skipped`` feature list (int64 per play: 1
            when ``ms_played < skip_threshold_ms``, 0 when not, -1 unknown).
        progress_seconds: a worker logs its counts at most this often.
    """

    format: str = AUTO
    session_gap_seconds: int = 1800
    min_session_length: int = 2
    eval_fraction: float = 0.1
    test_fraction: float = 0.1
    vocab_min_count: int = 1
    num_shards: int = 1
    skip_filter: bool = False
    skip_threshold_ms: int = 30_000
    collapse_repeats: bool = False
    min_item_support: int = 1
    split_mode: str = "per_user"
    write_skip_flags: bool = False
    progress_seconds: float = DEFAULT_PROGRESS_SECONDS

    def __post_init__(self):
        if self.split_mode not in SPLIT_MODES:
            raise ValueError(f"split_mode must be one of {SPLIT_MODES}, got {self.split_mode!r}")
        if self.skip_threshold_ms < 0:
            raise ValueError(f"skip_threshold_ms must be >= 0, got {self.skip_threshold_ms}")
        if self.min_item_support < 1:
            raise ValueError(f"min_item_support must be >= 1, got {self.min_item_support}")
        if self.format != AUTO and self.format not in FORMATS:
            raise ValueError(f"format must be {AUTO!r} or one of {FORMATS}, got {self.format!r}")
        if self.session_gap_seconds < 0:
            raise ValueError(f"session_gap_seconds must be >= 0, got {self.session_gap_seconds}")
        if self.min_session_length < 1:
            raise ValueError(f"min_session_length must be >= 1, got {self.min_session_length}")
        if min(self.eval_fraction, self.test_fraction) < 0 or self.eval_fraction + self.test_fraction >= 1:
            raise ValueError("eval_fraction and test_fraction must be >= 0 with a sum below 1, got "
                             f"{self.eval_fraction} and {self.test_fraction}")
        if self.vocab_min_count < 1:
            raise ValueError(f"vocab_min_count must be >= 1, got {self.vocab_min_count}")
        if self.num_shards < 0:
            raise ValueError(f"num_shards must be >= 0, got {self.num_shards}")

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> "PlaylogParams":
        """The fields of ``params`` that name one of ours; other keys are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in params.items() if key in names})


__all__ = ["PlaylogParams", "SPLIT_MODES"]
