"""Audio files to log-mel segments in Beam, and the dead letters of the files that give none.

Shared by the audio ExampleGen and the bulk inferrer's ``tag`` job, so both
reject the same files with the same exact reasons (:data:`DEAD_LETTER_REASONS`,
docs/ingestion.md): empty, unreadable, not audio, corrupt, shorter than one
segment, silent (:data:`musicrec.models.audio_files.DECODE_REASONS`), or a
repeated track id.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam

from musicrec.components import beam_io
from musicrec.components.audio_sources import AudioSource
from musicrec.models import audio_files, features, genre_baseline

# the tag of the dead-letter output of every step here
DEAD = "dead"
REASON_DUPLICATE = "duplicate track_id"
REASON_UNEXPECTED = "unexpected error"
# Every reason a dead letter can carry; docs/ingestion.md explains each.
DEAD_LETTER_REASONS = audio_files.DECODE_REASONS + (REASON_DUPLICATE, REASON_UNEXPECTED)


def _dead_letter(path: str, reason: str, detail: str) -> dict[str, str]:
    """A ``dead_letters.jsonl`` record: ``reason`` is exact (one of
    :data:`DEAD_LETTER_REASONS`), ``detail`` says what happened."""
    return {"path": path, "reason": reason, "detail": detail}


def keep_first_per_track_id(keyed: tuple[str, Iterable[AudioSource]]) -> Iterator[Any]:
    """Keeps the first source (by path) of a track id; later ones are dead letters."""
    track_id, group = keyed
    first, *others = sorted(group, key=lambda source: source.path)
    yield first
    for other in others:
        yield beam.pvalue.TaggedOutput(DEAD, _dead_letter(
            other.path, REASON_DUPLICATE, f"track_id {track_id!r} is already used by {first.path}"))


class DecodeTrack(beam.DoFn):
    """Decodes one file to ``(source, segments [n_segments, frames, n_mels])``.

    With ``baseline_vectors``, to ``(source, segments, vector float32 [56])``:
    the classical genre baseline's clip vector from the same file
    (:func:`musicrec.models.genre_baseline.track_vector`, from the same decode
    when the rates agree, else its own at 22 050 Hz; the worker then imports
    librosa, seconds once per worker process).

    Failures go to the ``dead`` output as ``{"path", "reason", "detail"}``;
    one track's samples and segments are the most this step holds in memory.
    A log line reports the counts every ``progress_seconds`` per worker.
    """

    def __init__(self, params: features.AudioFeatureParams,
                 progress_seconds: float = beam_io.DEFAULT_PROGRESS_SECONDS,
                 baseline_vectors: bool = False):
        super().__init__()
        self._params = params
        self._baseline_vectors = baseline_vectors
        # Built here, on the machine that builds the pipeline: a worker handed the
        # matrix never imports librosa (seconds of imports per worker process).
        self._filterbank = features.mel_filterbank(params)
        self._progress_seconds = progress_seconds
        self._decoded = beam.metrics.Metrics.counter("audio_example_gen", "tracks_decoded")
        self._rejected = beam.metrics.Metrics.counter("audio_example_gen", "dead_letters")

    def setup(self):
        self._progress = beam_io.ProgressLog("audio_example_gen decode", self._progress_seconds)

    def process(self, source: AudioSource):
        try:
            waveform = audio_files.usable_waveform(source.path, self._params)
            segments = features.segment(features.log_mel(waveform, self._params, self._filterbank),
                                        self._params)
            decoded = ((source, segments, genre_baseline.track_vector(
                source.path, waveform, self._params.sample_rate))
                if self._baseline_vectors else (source, segments))
        except audio_files.AudioDecodeError as exc:
            self._rejected.inc()
            self._progress.add("dead_letters")
            yield beam.pvalue.TaggedOutput(DEAD, _dead_letter(source.path, exc.reason, exc.detail))
            return
        except Exception as exc:  # any failure of one file must not stop the job
            self._rejected.inc()
            self._progress.add("dead_letters")
            yield beam.pvalue.TaggedOutput(DEAD, _dead_letter(
                source.path, REASON_UNEXPECTED, f"{type(exc).__name__}: {exc}"))
            return
        self._decoded.inc()
        self._progress.add("tracks", segments=int(segments.shape[0]))
        yield decoded

    def teardown(self):
        self._progress.flush()


def drop_duplicate_track_ids(sources: Sequence[AudioSource]) -> tuple[list[AudioSource], list[dict[str, str]]]:
    """``(kept, dead_letters)``: the first source (by path) of each track id, and one
    ``REASON_DUPLICATE`` dead letter for every other one."""
    by_track_id: dict[str, list[AudioSource]] = {}
    for source in sources:
        by_track_id.setdefault(source.track_id, []).append(source)
    kept, dead = [], []
    for keyed in by_track_id.items():
        for output in keep_first_per_track_id(keyed):
            if isinstance(output, beam.pvalue.TaggedOutput):
                dead.append(output.value)
            else:
                kept.append(output)
    kept.sort(key=lambda source: source.path)
    return kept, dead


__all__ = ["DecodeTrack", "keep_first_per_track_id", "drop_duplicate_track_ids", "DEAD", "DEAD_LETTER_REASONS",
           "REASON_DUPLICATE", "REASON_UNEXPECTED"]
