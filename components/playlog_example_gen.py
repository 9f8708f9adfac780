"""playlog_example_gen: play logs → listening sessions (``Sessions`` artifact).

An Apache Beam job::

    files ─► Reshuffle ─► read (one file per element) ─┬─► dead letters ─► dead_letters.jsonl
                                                      └─► plays ─► [skip filter] ─► [item support]
    plays ─► group by user ─► sessions ─► [collapse repeats] ─► min length ─► split (per user | global)
    sessions ─► Split-<split>/data-*.tfrecord.gz (SequenceExample)
    sessions ─► track counts ─► vocab.txt
    every count (combiners) ─► manifest.json

Output layout and record format: docs/architecture.md, "Sessions"; formats,
filters and dead-letter reasons: docs/ingestion.md. Filters apply in the
order of the session-based literature: plays (skips), then items (minimum
support), then sessions (gap ``session_gap_seconds``, optional collapse of
immediate repeats, ``min_session_length``). ``split_mode="per_user"``: a
session whose start lies in the last ``test_fraction`` of its user's time
span goes to ``test``, in the ``eval_fraction`` before that to ``eval``,
otherwise to ``train``; ``"global"`` does the same on the whole log's span.
The manifest's counts reconcile: ``rows_in == plays + dead_letters`` and
``plays == plays_written + plays_skipped + plays_rare_items +
plays_collapsed + plays_filtered``.

Reading: :mod:`~musicrec.components.playlog_readers`; sessions and splits:
:mod:`~musicrec.components.playlog_sessions`; settings:
:mod:`~musicrec.components.playlog_params`.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Mapping, Sequence

import apache_beam as beam
import tensorflow as tf

from musicrec.components.base import Artifact, ComponentSpec
from musicrec.components.beam_io import (DEFAULT_PROGRESS_SECONDS, SPLITS, LogProgress, WriteDeadLetters,
                                         WriteSplits, pipeline_options, read_text, write_text_atomic)
from musicrec.components.playlog_params import PlaylogParams
from musicrec.components.playlog_readers import list_playlog_files, read_playlog
from musicrec.components.playlog_rows import DeadLetter, Play
from musicrec.components.playlog_sessions import (COLLAPSED, FILTERED, USERS, Session, Sessionize, TimeSpanFn,
                                                  reassign_global_split)

VOCAB_FILENAME = "vocab.txt"
MANIFEST_FILENAME = "manifest.json"
DEAD_LETTERS_FILENAME = "dead_letters.jsonl"
_RARE = "rare"
# Where valid plays go when they are not written, in the order they are dropped.
DROPPED_PLAY_COUNTS = ("plays_skipped", "plays_rare_items", "plays_collapsed", "plays_filtered")


def session_to_sequence_example(session: Session) -> tf.train.SequenceExample:
    """The ``Sessions`` record: context ``user_id``, ``session_id``, ``start_time``;
    feature lists ``track_key``, ``timestamp`` and, when the session carries
    them, ``skipped`` (one entry per play)."""
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
            **({"skipped": tf.train.FeatureList(feature=[int_feature(f) for f in session.skipped])}
               if session.skipped else {}),
        }))


def rank_vocabulary(key_counts: Iterable[tuple[str, int]], min_count: int) -> list[str]:
    """Track keys with at least ``min_count`` plays, most frequent first, ties by key."""
    kept = [(key, count) for key, count in key_counts if count >= min_count]
    return [key for key, _ in sorted(kept, key=lambda item: (-item[1], item[0]))]


class ReadPlaylogs(beam.PTransform):
    """``(path, format)`` pairs → every row as a :class:`Play` or :class:`DeadLetter`.

    The Reshuffle spreads files over workers, one file per element; a worker
    streams a text file line by line and logs its row count now and then.
    """

    def __init__(self, files: Sequence[tuple[str, str]], progress_seconds: float = DEFAULT_PROGRESS_SECONDS):
        super().__init__()
        self._files = list(files)
        self._progress_seconds = progress_seconds

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self._files)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadRows" >> beam.FlatMapTuple(read_playlog)
                | "Progress" >> beam.ParDo(LogProgress("playlog_example_gen read", "rows",
                                                       self._progress_seconds)))


def _keep_supported_items(keyed: tuple[str, Iterable[Play]], min_support: int):
    """One track's plays: all of them when there are ``min_support`` or more, else a tagged count."""
    _key, plays = keyed
    plays = list(plays)
    if len(plays) >= min_support:
        yield from plays
    else:
        yield beam.pvalue.TaggedOutput(_RARE, len(plays))


class DropRareItems(beam.PTransform):
    """Plays → plays of tracks with at least ``min_support`` plays; ``rare`` output:
    the play count of each dropped track. One track's plays are grouped at a time."""

    def __init__(self, min_support: int):
        super().__init__()
        self._min_support = min_support

    def expand(self, plays):
        return (plays
                | "KeyByTrack" >> beam.Map(lambda play: (play.track_key, play))
                | "GroupByTrack" >> beam.GroupByKey()
                | "KeepSupported" >> beam.FlatMap(_keep_supported_items, self._min_support)
                .with_outputs(_RARE, main="plays"))


def reason_template(reason: str) -> str:
    """A dead letter's reason without its values, so the manifest can count reasons by kind.

    Quoted values become ``'…'``, what follows the first ``": "`` (a parser's
    own message) is cut, numbers become ``N``: ``"bad timestamp 'x': ..."`` →
    ``"bad timestamp '…'"``.
    """
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason).split(": ", 1)[0]
    return re.sub(r"\d+", "N", reason)


class BuildVocabulary(beam.PTransform):
    """Sessions of every split → a single element: the ranked vocabulary (``list[str]``).

    Every split counts: the pushed model must know the tracks first played in
    the eval and test periods, which are the most recent ones (the evaluator
    still only scores targets that were played in training).
    """

    def __init__(self, min_count: int):
        super().__init__()
        self._min_count = min_count

    def expand(self, sessions):
        return (sessions
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
    manifest["dead_letters_per_reason"] = dict(sorted(manifest["dead_letters_per_reason"].items()))
    dropped = sum(manifest[name] for name in DROPPED_PLAY_COUNTS)
    if manifest["plays"] != plays_written + dropped or \
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
    records = pipeline | "Read" >> ReadPlaylogs(files, params.progress_seconds)
    plays, dead_letters = records | "SplitValid" >> beam.Partition(
        lambda record, _: 0 if isinstance(record, Play) else 1, 2)
    valid_plays = plays

    def nothing(label: str):
        return pipeline | label >> beam.Create([0])

    # Filters in order: skips (per play), rare items (per track), then sessions.
    if params.skip_filter:
        threshold = params.skip_threshold_ms
        plays, skipped_plays = plays | "SkipFilter" >> beam.Partition(
            lambda play, _: int(play.ms_played is not None and play.ms_played < threshold), 2)
        plays_skipped = _count(skipped_plays, "CountSkippedPlays")
    else:
        plays_skipped = nothing("NoSkipFilter")
    if params.min_item_support > 1:
        supported = plays | "ItemSupport" >> DropRareItems(params.min_item_support)
        plays = supported.plays
        plays_rare = supported[_RARE] | "SumRarePlays" >> beam.CombineGlobally(sum)
        items_rare = _count(supported[_RARE], "CountRareItems")
    else:
        plays_rare, items_rare = nothing("NoItemSupport"), nothing("NoRareItems")
    sessionized = plays | "Sessionize" >> Sessionize(params)
    sessions = sessionized.sessions
    if params.split_mode == "global":
        span = plays | "TimeSpan" >> beam.CombineGlobally(TimeSpanFn())
        sessions = sessions | "GlobalSplit" >> beam.Map(
            reassign_global_split, beam.pvalue.AsSingleton(span), params)

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
        "plays": _count(valid_plays, "CountPlays"),
        "dead_letters": _count(dead_letters, "CountDeadLetters"),
        "plays_skipped": plays_skipped,
        "plays_rare_items": plays_rare,
        "rare_items": items_rare,
        "plays_collapsed": sessionized[COLLAPSED] | "SumCollapsedPlays" >> beam.CombineGlobally(sum),
        "sessions_filtered": _count(sessionized[FILTERED], "CountFilteredSessions"),
        "plays_filtered": sessionized[FILTERED] | "SumFilteredPlays" >> beam.CombineGlobally(sum),
        "users": _count(sessionized[USERS], "CountUsers"),
        "vocab_size": vocab_size,
    }
    per_split = {
        "sessions_per_split": (sessions
                               | "SessionSplit" >> beam.Map(lambda session: session.split)
                               | "CountPerSplit" >> beam.combiners.Count.PerElement()),
        "plays_per_split": (sessions
                            | "SessionPlays" >> beam.Map(lambda s: (s.split, len(s.track_keys)))
                            | "SumPerSplit" >> beam.CombinePerKey(sum)),
        "dead_letters_per_reason": (dead_letters
                                    | "ReasonKind" >> beam.Map(lambda dead: reason_template(dead.reason))
                                    | "CountPerReason" >> beam.combiners.Count.PerElement()),
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
        "rows_in", "plays", "dead_letters", *DROPPED_PLAY_COUNTS, "sessions", "users", "vocab_size")})
    artifact.properties["splits"] = manifest["splits"]


SPEC = ComponentSpec(name="playlog_example_gen", inputs={}, outputs={"sessions": "Sessions"},
                     executor=run)
