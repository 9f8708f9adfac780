"""The audio ExampleGen's counts and statistics: what ``manifest.json`` and ``statistics.json`` hold.

:class:`IngestSummaryFn` gathers, in one combine, the small facts the
ExampleGen's one decoding step emits (per track its split, genre, segments
and per-band sums; per failure a dead letter; per part file written its
path); :func:`build_manifest` checks that ``inputs == tracks + dead_letters``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import apache_beam as beam
import numpy as np

from musicrec.components import beam_io
from musicrec.components.audio_decoding import DEAD
from musicrec.components.audio_sources import AudioSource
from musicrec.models import features

# The kinds of fact :class:`IngestSummaryFn` gathers besides dead letters (tagged ``DEAD``).
SUMMARY = "summary"
WRITTEN = "written"


class CountTracksFn(beam.CombineFn):
    """Counts tracks and segments per split, and segments per label per split.

    Input elements are ``(split, genre, n_segments)``; the output is
    ``{"tracks": {split: n}, "segments": {split: n},
    "segments_per_label": {split: {genre: n}}}``.
    """

    def create_accumulator(self) -> dict:
        return {"tracks": {}, "segments": {}, "segments_per_label": {}}

    def add_input(self, accumulator: dict, element: tuple[str, str, int]) -> dict:
        split, genre, n_segments = element
        accumulator["tracks"][split] = accumulator["tracks"].get(split, 0) + 1
        accumulator["segments"][split] = accumulator["segments"].get(split, 0) + n_segments
        per_label = accumulator["segments_per_label"].setdefault(split, {})
        per_label[genre] = per_label.get(genre, 0) + n_segments
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for key in ("tracks", "segments"):
                for split, count in accumulator[key].items():
                    merged[key][split] = merged[key].get(split, 0) + count
            for split, per_label in accumulator["segments_per_label"].items():
                target = merged["segments_per_label"].setdefault(split, {})
                for genre, count in per_label.items():
                    target[genre] = target.get(genre, 0) + count
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        return accumulator


def track_band_sums(track: tuple[str, AudioSource, np.ndarray]) -> tuple[str, tuple[int, np.ndarray, np.ndarray]]:
    """``(split, (frames, sum [n_mels], sum of squares [n_mels]))`` of one track's segments (float64)."""
    split, _source, segments = track
    values = segments.reshape(-1, segments.shape[-1]).astype(np.float64)
    return split, (values.shape[0], values.sum(axis=0), np.square(values).sum(axis=0))


def _add_band_sums(parts: Iterable[tuple[int, np.ndarray, np.ndarray]]):
    frames, total, squares = 0, 0.0, 0.0
    for part_frames, part_total, part_squares in parts:
        frames, total, squares = frames + part_frames, total + part_total, squares + part_squares
    return frames, total, squares


def split_statistics(manifest: Mapping[str, Any],
                     band_sums: Mapping[str, tuple[int, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """``statistics.json``: per split, its tracks, segments (per label) and the log-mel
    mean and standard deviation per mel band (``[n_mels]`` lists, over every frame
    of every segment written; empty lists for an empty split)."""
    statistics = {}
    for split in beam_io.SPLITS:
        frames, total, squares = band_sums.get(split, (0, None, None))
        mean = total / frames if frames else np.zeros(0)
        std = np.sqrt(np.maximum(squares / frames - np.square(mean), 0.0)) if frames else np.zeros(0)
        statistics[split] = {
            "tracks": manifest["tracks_per_split"][split],
            "segments": manifest["segments_per_split"][split],
            "segments_per_label": manifest["segments_per_label"][split],
            "frames": int(frames),
            "log_mel_mean": [round(float(v), 6) for v in mean],
            "log_mel_std": [round(float(v), 6) for v in std],
        }
    return statistics


def build_manifest(inputs: int, dead_letters: int, track_counts: Mapping[str, Any],
                   labels: Sequence[str], params: features.AudioFeatureParams,
                   split_fractions: Mapping[str, float], num_shards: int,
                   dead_letters_per_reason: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The ``manifest.json`` payload, with every split and label present (zeros included).

    ``inputs`` counts the files listed, ``tracks`` those that became examples;
    ``dead_letters_per_reason`` maps each exact reason to its count.

    Raises:
        RuntimeError: ``inputs != tracks + dead_letters`` (a bug: a file was lost).
    """
    tracks_per_split = {s: track_counts["tracks"].get(s, 0) for s in beam_io.SPLITS}
    segments_per_split = {s: track_counts["segments"].get(s, 0) for s in beam_io.SPLITS}
    segments_per_label = {
        s: {label: track_counts["segments_per_label"].get(s, {}).get(label, 0) for label in labels}
        for s in beam_io.SPLITS}
    tracks = sum(tracks_per_split.values())
    if inputs != tracks + dead_letters:
        raise RuntimeError(f"audio_example_gen lost files: inputs={inputs}, tracks={tracks}, "
                           f"dead_letters={dead_letters}")
    return {
        "inputs": inputs,
        "tracks": tracks,
        "dead_letters": dead_letters,
        "dead_letters_per_reason": dict(sorted((dead_letters_per_reason or {}).items())),
        "segments": sum(segments_per_split.values()),
        "tracks_per_split": tracks_per_split,
        "segments_per_split": segments_per_split,
        "segments_per_label": segments_per_label,
        "labels": list(labels),
        "segment_shape": [params.frames_per_segment, params.n_mels],
        "feature_params": params.to_dict(),
        "split_fractions": dict(split_fractions),
        "split_key": "the metadata CSV's split when given, else md5 of the artist when known, "
                     "else of the track id",
        "num_shards": num_shards,
    }


class IngestSummaryFn(beam.CombineFn):
    """Gathers the job's facts into one accumulator for the manifest.

    Input elements: :class:`TrackToExamples`'s facts. Output: ``{"tracks":
    CountTracksFn's counts, "band_sums": {split: (frames, sum, sum of
    squares)}, "dead_letters": [record, ...], "parts": [(split, shard, first
    path, Part), ...]}``. Dead letters are kept whole: they are what the job
    could not use, a small fraction of its input, and the file lists them all.
    """

    def __init__(self):
        super().__init__()
        self._tracks = CountTracksFn()

    def create_accumulator(self) -> dict:
        return {"tracks": self._tracks.create_accumulator(), "band_sums": {}, "dead_letters": [], "parts": []}

    def add_input(self, accumulator: dict, element: tuple[str, Any]) -> dict:
        kind, value = element
        if kind == SUMMARY:
            split, genre, n_segments, band_sums = value
            self._tracks.add_input(accumulator["tracks"], (split, genre, n_segments))
            previous = accumulator["band_sums"].get(split)
            accumulator["band_sums"][split] = band_sums if previous is None else _add_band_sums(
                [previous, band_sums])
        elif kind == DEAD:
            accumulator["dead_letters"].append(value)
        else:
            accumulator["parts"].append(value)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        accumulators = list(accumulators)
        merged = self.create_accumulator()
        merged["tracks"] = self._tracks.merge_accumulators(a["tracks"] for a in accumulators)
        for accumulator in accumulators:
            for split, sums in accumulator["band_sums"].items():
                previous = merged["band_sums"].get(split)
                merged["band_sums"][split] = sums if previous is None else _add_band_sums([previous, sums])
            merged["dead_letters"].extend(accumulator["dead_letters"])
            merged["parts"].extend(accumulator["parts"])
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        return accumulator


__all__ = ["CountTracksFn", "IngestSummaryFn", "track_band_sums", "split_statistics", "build_manifest", "SUMMARY",
           "WRITTEN"]
