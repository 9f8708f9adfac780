"""The bulk inferrer's ``tag`` job: every audio file of a catalogue → its genres and embedding.

Reading and decoding reuse ingestion: the audio ExampleGen's duplicate-id
check and :class:`~musicrec.components.audio_decoding.DecodeTrack` (with
its dead-letter reasons). Track-level genre probabilities are the genre
model's answer for the track's segments together (its ``serving_default``
answers per track), as the evaluator reads them; the features are those
stored with the model. Outputs and manifest: :mod:`musicrec.components.inference_jobs`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import apache_beam as beam
import numpy as np

from musicrec.components import audio_decoding, beam_io, inference_handler
from musicrec.components.audio_sources import AudioSource
from musicrec.components.bulk_inference_settings import (DEFAULT_NUM_SHARDS, DEFAULT_TOP_GENRES, JOB_BATCHING,
                                                         Batching)
# Records are encoded by the ExampleGens' wire encoder: no TensorFlow in the writing steps, and
# a third of the time of building tf.train.Example messages in Python.
from musicrec.components.example_wire import byte_strings, encode_example, floats, int64s
from musicrec.components.inference_jobs import (DEAD, REASON_INFERENCE, RunSignature, tally, write_manifest,
                                                write_outputs)
from musicrec.models import features

TAGS = "tags"
TAG_COLUMNS = ("track_id", "path", "label", "genre", "probability", "top_genres", "n_segments")


def tag_track(key: tuple[str, str, str, int], prediction: Mapping[str, np.ndarray],
              top_genres: int = DEFAULT_TOP_GENRES) -> dict[str, Any]:
    """One track's answer → its tag record.

    Args:
        key: ``(track_id, path, label, n_segments)``; ``label`` is the genre
            the input listed, ``""`` when unknown.
        prediction: the genre signature's outputs for the track:
            ``probabilities`` and ``classes`` ``[n_genres]``, ``embedding``
            ``[d]``.
        top_genres: genres kept.

    Returns:
        ``track_id``, ``path``, ``label``, ``n_segments``, ``classes``
        ``[n_genres]``, ``probabilities`` ``[n_genres]`` (the model's
        track-level answer, as the evaluator scores it), ``genre`` (argmax,
        ties to the first class, as ``musicrec classify``), ``top_genres`` and
        ``top_probabilities`` ``[top_genres]`` best first, ``embedding`` ``[d]``.
    """
    track_id, path, label, n_segments = key
    probabilities = np.asarray(prediction["probabilities"], dtype=np.float32)
    classes = [str(name) for name in prediction["classes"]]
    order = np.argsort(-probabilities, kind="stable")[:top_genres]
    return {
        "track_id": track_id, "path": path, "label": label, "n_segments": int(n_segments),
        "classes": classes, "probabilities": probabilities,
        "genre": classes[order[0]], "top_genres": [classes[i] for i in order],
        "top_probabilities": probabilities[order],
        "embedding": np.asarray(prediction["embedding"], dtype=np.float32),
    }


def tag_example(record: Mapping[str, Any]) -> bytes:
    """A tag record as a serialized ``tf.train.Example`` (fields in docs/batch.md)."""
    return encode_example({
        "track_id": byte_strings([record["track_id"]]), "path": byte_strings([record["path"]]),
        "label": byte_strings([record["label"]]), "genre": byte_strings([record["genre"]]),
        "top_genres": byte_strings(record["top_genres"]),
        "top_probabilities": floats(record["top_probabilities"]),
        "classes": byte_strings(record["classes"]),
        "probabilities": floats(record["probabilities"]),
        "embedding": floats(record["embedding"]),
        "n_segments": int64s([record["n_segments"]]),
    })


def tag_csv_rows(record: Mapping[str, Any]) -> list[list[Any]]:
    """The ``tags.csv`` row of a tag record (:data:`TAG_COLUMNS`)."""
    top = ";".join(f"{g}:{p:.6f}" for g, p in zip(record["top_genres"], record["top_probabilities"]))
    return [[record["track_id"], record["path"], record["label"], record["genre"],
             f"{float(record['top_probabilities'][0]):.6f}", top, record["n_segments"]]]


def build_tagging(pipeline: beam.Pipeline, sources: Sequence[AudioSource], output_uri: str,
                  saved_model_dir: str, params: features.AudioFeatureParams | None = None,
                  top_genres: int = DEFAULT_TOP_GENRES, num_shards: int = DEFAULT_NUM_SHARDS,
                  batching: Batching = JOB_BATCHING["tag"], model_info: Mapping[str, Any] | None = None,
                  progress_seconds: float = beam_io.DEFAULT_PROGRESS_SECONDS
                  ) -> dict[str, Any]:
    """Adds catalogue tagging to ``pipeline``: every audio file → its genres and embedding.

    Files are decoded with the ingestion code (same dead-letter reasons) and
    cut into segments with the feature parameters stored with the model
    (``assets.extra``, ``models.genre.signatures.read_model_features``);
    several tracks go into each call of the genre model's ``serving_default``
    signature, one row per track, and each track's answer comes back as its
    own row.

    Args:
        pipeline: a Beam pipeline.
        sources: the files (``audio_sources.list_sources`` or
            ``bulk_inferrer.list_catalogue``); a repeated track id is a dead letter.
        output_uri: folder; gets ``tags/``, ``tags.csv``, ``dead_letters.jsonl``, ``manifest.json``.
        saved_model_dir: the genre SavedModel.
        params: log-mel parameters overriding those stored with the model (for
            tests of failing models; a model reads only its own).
        top_genres: genres per track in ``top_genres`` (at most the model's classes).
        num_shards: TFRecord shards (0 lets the runner choose).
        batching: segments per signature call.
        model_info: recorded in the manifest (model name, version, path).

    Returns:
        ``{"tags": records (dicts, see :func:`tag_track`), "dead_letters": dicts, "manifest": one dict}``.
    """
    if top_genres < 1:
        raise ValueError(f"top_genres must be >= 1, got {top_genres}")
    if params is None:
        from musicrec.models.genre.signatures import read_model_features

        params = read_model_features(saved_model_dir)[1]
    # Duplicate ids are found here, in the driver that holds the list anyway; only paths go to the
    # workers (Create spreads them), and one fused stage per worker decodes, runs the model and
    # writes the records: only counts and part-file paths come back (docs/batch.md).
    kept, duplicates = audio_decoding.drop_duplicate_track_ids(list(sources))
    decoded = (pipeline
               | "ListSources" >> beam.Create(kept)
               | "Decode" >> beam.ParDo(audio_decoding.DecodeTrack(params, progress_seconds))
               .with_outputs(DEAD, main="tracks"))
    # One element per track, weighted by its segments: a signature call takes several tracks
    # (up to batching.max_batch_size segments), one row each.
    inferred = (decoded.tracks
                | "KeyByTrack" >> beam.Map(
                    lambda track: ((track[0].track_id, track[0].path, track[0].genre,
                                    int(track[1].shape[0])), track[1]))
                | "Genre" >> RunSignature(saved_model_dir, inference_handler.SignatureInference(
                    "serving_default", inference_handler.collate_tracks,
                    ["probabilities", "classes", "embedding"]), batching, "tag", progress_seconds,
                    element_size_fn=inference_handler.keyed_segment_count))
    tags = inferred["predictions"] | "TagTracks" >> beam.MapTuple(tag_track, top_genres)
    written = write_outputs(tags, output_uri, TAGS, "track_id", tag_example, tag_csv_rows, TAG_COLUMNS,
                             num_shards)
    failed = inferred["failed"] | "FailedTracks" >> beam.MapTuple(
        lambda key, detail: {"path": key[1], "reason": REASON_INFERENCE, "detail": detail})

    listed_dead = pipeline | "DuplicateIds" >> beam.Create(duplicates, reshuffle=False)
    dead_letters = (listed_dead, decoded[DEAD], failed) | "AllDeadLetters" >> beam.Flatten()
    static = {"job": "tag", "model": dict(model_info or {"path": saved_model_dir}),
              "feature_params": params.to_dict(), "top_genres": top_genres, "num_shards": num_shards,
              "inputs": len(sources),
              "outputs": {"records": f"{TAGS}/data-*.tfrecord.gz", "summary": f"{TAGS}.csv"}}
    manifest = write_manifest(pipeline, output_uri, static, [
        ("inputs", ("tracks", "dead_letters")), (f"{TAGS}_written", ("tracks",))], dead_letters, [
        tally(tags, "tracks"), tally(tags, "segments", lambda record: record["n_segments"]), written])
    return {"tags": tags, "dead_letters": dead_letters, "manifest": manifest}


__all__ = ["build_tagging", "tag_track", "tag_example", "tag_csv_rows", "TAGS", "TAG_COLUMNS"]
