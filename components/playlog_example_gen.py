"""playlog_example_gen: play logs → listening sessions (``Sessions`` artifact).

An Apache Beam job::

    files ─► Reshuffle ─► read (one file per element) ─┬─► dead letters ─► dead_letters.jsonl
                                                      └─► plays ─► group by user ─► sessions
    sessions ─► temporal split per user ─► Split-<split>/data-*.tfrecord.gz (SequenceExample)
    train sessions ─► track counts ─► vocab.txt
    every count (combiners) ─► manifest.json

Output layout and record format: docs/architecture.md, "Sessions". Sessions
break where two consecutive plays of a user are more than
``session_gap_seconds`` apart; sessions with fewer than ``min_session_length``
plays are dropped and counted. Each user's time span runs from the first to
the last of that user's valid plays; a session whose start lies in the last
``test_fraction`` of the span goes to ``test``, in the ``eval_fraction``
before that to ``eval``, otherwise to ``train``. The manifest's counts
reconcile: ``rows_in == plays_written + plays_filtered + dead_letters``.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import tensorflow as tf

from musicrec.components.base import Artifact, ComponentSpec
from musicrec.components.beam_io import (SPLITS, WriteDeadLetters, WriteSplits, pipeline_options,
                                         read_text, write_text_atomic)
from musicrec.components.playlog_readers import (AUTO, FORMATS, DeadLetter, Play,
                                                 list_playlog_files, read_playlog)

VOCAB_FILENAME = "vocab.txt"
MANIFEST_FILENAME = "manifest.json"
DEAD_LETTERS_FILENAME = "dead_letters.jsonl"
_FILTERED = "filtered"
_USERS = "users"


@dataclasses.dataclass(frozen=True)
class PlaylogParams:
    """What shapes the sessions; the defaults are the documented pipeline defaults.

    Attributes:
        format: ``"auto"`` (by file name) or one of ``playlog_readers.FORMATS``.
        session_gap_seconds: a longer silence between two plays starts a new session.
        min_session_length: sessions with fewer plays are dropped (and counted).
        eval_fraction: share of each user's time span, before the test share, for eval.
        test_fraction: share at the end of each user's time span for test.
        vocab_min_count: train plays a track needs to enter ``vocab.txt``.
        num_shards: TFRecord shards per split (0 lets the runner choose).
    """

    format: str = AUTO
    session_gap_seconds: int = 1800
    min_session_length: int = 2
    eval_fraction: float = 0.1
    test_fraction: float = 0.1
    vocab_min_count: int = 1
    num_shards: int = 1

    def __post_init__(self):
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
    """

    user_id: str
    session_id: str
    start_time: int
    track_keys: tuple[str, ...]
    timestamps: tuple[int, ...]
    split: str


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

    Yields each kept session; ``TaggedOutput("filtered", n_plays)`` per session
    shorter than ``min_session_length``; ``TaggedOutput("users", user_id)`` once.
    """
    sessions = split_into_sessions(plays, params.session_gap_seconds)
    yield beam.pvalue.TaggedOutput(_USERS, user_id)
    if not sessions:
        return
    first_time, last_time = sessions[0][0].timestamp, sessions[-1][-1].timestamp
    for session in sessions:
        if len(session) < params.min_session_length:
            yield beam.pvalue.TaggedOutput(_FILTERED, len(session))
            continue
        start_time = session[0].timestamp
        yield Session(user_id=user_id, session_id=f"{user_id}-{start_time}", start_time=start_time,
                      track_keys=tuple(play.track_key for play in session),
                      timestamps=tuple(play.timestamp for play in session),
                      split=assign_split(start_time, first_time, last_time,
                                         params.eval_fraction, params.test_fraction))


def session_to_sequence_example(session: Session) -> tf.train.SequenceExample:
    """The ``Sessions`` record: context ``user_id``, ``session_id``, ``start_time``;
    feature lists ``track_key`` and ``timestamp`` (one entry per play)."""
    def bytes_feature(text: str) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")]))

    def int_feature(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.SequenceExample(
        context=tf.train.Features(feature={
            "user_id": bytes_feature(session.user_id),
            "session_id": bytes_feature(session.session_id),
            "start_time": int_feature(session.start_time),
        }),
        feature_lists=tf.train.FeatureLists(feature_list={
            "track_key": tf.train.FeatureList(feature=[bytes_feature(k) for k in session.track_keys]),
            "timestamp": tf.train.FeatureList(feature=[int_feature(t) for t in session.timestamps]),
        }))


def rank_vocabulary(key_counts: Iterable[tuple[str, int]], min_count: int) -> list[str]:
    """Track keys with at least ``min_count`` plays, most frequent first, ties by key."""
    kept = [(key, count) for key, count in key_counts if count >= min_count]
    return [key for key, _ in sorted(kept, key=lambda item: (-item[1], item[0]))]


class ReadPlaylogs(beam.PTransform):
    """``(path, format)`` pairs → every row as a :class:`Play` or :class:`DeadLetter`.

    The Reshuffle spreads files over workers, one file per element.
    """

    def __init__(self, files: Sequence[tuple[str, str]]):
        super().__init__()
        self._files = list(files)

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self._files)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadRows" >> beam.FlatMapTuple(read_playlog))


class Sessionize(beam.PTransform):
    """Plays → kept sessions (main output) with ``filtered`` (plays per dropped
    session) and ``users`` (one id per user) as extra outputs."""

    def __init__(self, params: PlaylogParams):
        super().__init__()
        self._params = params

    def expand(self, plays):
        params = self._params
        return (plays
                | "KeyByUser" >> beam.Map(lambda play: (play.user_id, play))
                | "GroupByUser" >> beam.GroupByKey()
                | "SplitSessions" >> beam.FlatMap(
                    lambda user_plays: sessionize_user(*user_plays, params))
                .with_outputs(_FILTERED, _USERS, main="sessions"))


class BuildVocabulary(beam.PTransform):
    """Train sessions → a single element: the ranked vocabulary (``list[str]``)."""

    def __init__(self, min_count: int):
        super().__init__()
        self._min_count = min_count

    def expand(self, sessions):
        return (sessions
                | "TrainOnly" >> beam.Filter(lambda session: session.split == "train")
                | "TrackKeys" >> beam.FlatMap(lambda session: session.track_keys)
                | "CountKeys" >> beam.combiners.Count.PerElement()
                | "Gather" >> beam.combiners.ToList()
                | "Rank" >> beam.Map(rank_vocabulary, self._min_count))


def _write_vocabulary(vocabulary: list[str], path: str) -> int:
    write_text_atomic(path, "".join(f"{key}\n" for key in vocabulary))
    return len(vocabulary)


def _write_manifest(_, path: str, static: dict, counts: dict[str, Any]) -> None:
    """Assembles the manifest from the pipeline's counts, checks that they reconcile, writes it."""
    sessions_per_split, plays_per_split = counts.pop("sessions_per_split"), counts.pop("plays_per_split")
    splits = {split: {"sessions": sessions_per_split.get(split, 0), "plays": plays_per_split.get(split, 0)}
              for split in SPLITS}
    plays_written = sum(split["plays"] for split in splits.values())
    manifest = {**static, **counts, "splits": splits, "plays_written": plays_written,
                "sessions": sum(split["sessions"] for split in splits.values())}
    if manifest["plays"] != plays_written + manifest["plays_filtered"] or \
            manifest["rows_in"] != manifest["plays"] + manifest["dead_letters"]:
        raise RuntimeError(f"play counts do not reconcile: {manifest}")
    write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _count(pcoll, label: str):
    return pcoll | label >> beam.combiners.Count.Globally()


def build_pipeline(pipeline: beam.Pipeline, paths: Sequence[str], output_uri: str,
                   params: PlaylogParams = PlaylogParams()) -> dict[str, beam.PCollection]:
    """Adds the whole job to ``pipeline`` and returns its main PCollections.

    Args:
        pipeline: a Beam pipeline (``TestPipeline`` in tests).
        paths: play-log files, folders or globs (see ``list_playlog_files``).
        output_uri: the ``Sessions`` artifact folder (local or ``gs://``).
        params: session, split and vocabulary settings.

    Returns:
        ``{"records", "plays", "dead_letters", "sessions", "vocabulary"}``:
        every row read, the valid plays, the rejected rows, the kept
        :class:`Session` s, and the single ranked vocabulary list.

    Raises:
        FileNotFoundError, ValueError: from listing ``paths`` (nothing to read,
        unrecognised file named explicitly).
    """
    files, skipped = list_playlog_files(paths, params.format)
    records = pipeline | "Read" >> ReadPlaylogs(files)
    plays, dead_letters = records | "SplitValid" >> beam.Partition(
        lambda record, _: 0 if isinstance(record, Play) else 1, 2)
    sessionized = plays | "Sessionize" >> Sessionize(params)
    sessions = sessionized.sessions

    _ = (sessions
         | "Serialize" >> beam.Map(lambda session: (
             session.split, session_to_sequence_example(session).SerializeToString()))
         | "WriteSessions" >> WriteSplits(output_uri, params.num_shards))
    _ = (dead_letters
         | "DeadLetterDicts" >> beam.Map(DeadLetter.to_dict)
         | "WriteDeadLetters" >> WriteDeadLetters(f"{output_uri}/{DEAD_LETTERS_FILENAME}"))
    vocabulary = sessions | "Vocabulary" >> BuildVocabulary(params.vocab_min_count)
    vocab_size = vocabulary | "WriteVocabulary" >> beam.Map(
        _write_vocabulary, f"{output_uri}/{VOCAB_FILENAME}")

    counts = {
        "rows_in": _count(records, "CountRows"),
        "plays": _count(plays, "CountPlays"),
        "dead_letters": _count(dead_letters, "CountDeadLetters"),
        "sessions_filtered": _count(sessionized[_FILTERED], "CountFilteredSessions"),
        "plays_filtered": sessionized[_FILTERED] | "SumFilteredPlays" >> beam.CombineGlobally(sum),
        "users": _count(sessionized[_USERS], "CountUsers"),
        "vocab_size": vocab_size,
    }
    per_split = {
        "sessions_per_split": (sessions
                               | "SessionSplit" >> beam.Map(lambda session: session.split)
                               | "CountPerSplit" >> beam.combiners.Count.PerElement()),
        "plays_per_split": (sessions
                            | "SessionPlays" >> beam.Map(lambda s: (s.split, len(s.track_keys)))
                            | "SumPerSplit" >> beam.CombinePerKey(sum)),
    }
    static = {"params": dataclasses.asdict(params), "inputs": list(paths),
              "files": [{"path": path, "format": fmt} for path, fmt in files],
              "skipped_files": skipped}
    side_inputs = {**{name: beam.pvalue.AsSingleton(pcoll) for name, pcoll in counts.items()},
                   **{name: beam.pvalue.AsDict(pcoll) for name, pcoll in per_split.items()}}
    _ = (pipeline
         | "ManifestTrigger" >> beam.Create([None])
         | "WriteManifest" >> beam.Map(
             lambda trigger, **side: _write_manifest(trigger, f"{output_uri}/{MANIFEST_FILENAME}",
                                                     static, dict(side)), **side_inputs))
    return {"records": records, "plays": plays, "dead_letters": dead_letters,
            "sessions": sessions, "vocabulary": vocabulary}


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact],
        params: Mapping[str, Any]) -> None:
    """Executor: runs the Beam job into ``outputs["sessions"].uri``.

    ``params``: ``playlog_paths`` (required), ``beam_args`` (pass-through Beam
    flags) and the fields of :class:`PlaylogParams`. The manifest's counts are
    copied into the artifact's ``properties``.
    """
    del inputs  # the stage reads raw files named in params
    paths = params.get("playlog_paths")
    if not paths:
        raise ValueError("playlog_example_gen: params['playlog_paths'] is required")
    if isinstance(paths, str):
        paths = [paths]
    settings = PlaylogParams.from_mapping(params)
    artifact = outputs["sessions"]
    with beam.Pipeline(options=pipeline_options(params.get("beam_args"))) as pipeline:
        build_pipeline(pipeline, paths, artifact.uri, settings)
    manifest = json.loads(read_text(artifact.path(MANIFEST_FILENAME)))
    artifact.properties.update({key: manifest[key] for key in (
        "rows_in", "plays", "dead_letters", "plays_filtered", "sessions", "users", "vocab_size")})
    artifact.properties["splits"] = manifest["splits"]


SPEC = ComponentSpec(name="playlog_example_gen", inputs={}, outputs={"sessions": "Sessions"},
                     executor=run)
