"""The bulk inferrer's ``embeddings`` job: track keys → ``embeddings.npy`` + ``embedding_keys.txt``.

The next-track model's track-embedding table, for an ANN index; dead letters
and manifest as every job writes them (:mod:`musicrec.components.inference_jobs`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import apache_beam as beam
import numpy as np

from musicrec.atomic import write_atomic
from musicrec.components import beam_io, inference_handler
from musicrec.components.bulk_inference_settings import JOB_BATCHING, Batching
from musicrec.components.inference_jobs import REASON_INFERENCE, RunSignature, tally, write_manifest

EMBEDDINGS_NPY = "embeddings.npy"
EMBEDDING_KEYS = "embedding_keys.txt"


def _write_embedding_table(rows: list[tuple[int, str, np.ndarray]], output_uri: str) -> int:
    """Writes ``embeddings.npy`` (float32 ``[n, d]``, rows in key order) and ``embedding_keys.txt``."""
    rows = sorted(rows, key=lambda row: row[0])
    if not rows:
        raise RuntimeError("no track embedding was exported")
    matrix = np.stack([np.asarray(vector, dtype=np.float32) for _, _, vector in rows])
    # np.save keeps a name ending in .npy as it is; the table is written where the job runs
    write_atomic(f"{output_uri}/{EMBEDDINGS_NPY}",
                 lambda tmp_path: np.save(tmp_path, matrix, allow_pickle=False), suffix=".npy")
    beam_io.write_text_atomic(f"{output_uri}/{EMBEDDING_KEYS}", "".join(f"{key}\n" for _, key, _ in rows))
    return len(rows)


def build_embedding_export(pipeline: beam.Pipeline, track_keys: Sequence[str], output_uri: str,
                           saved_model_dir: str, batching: Batching = JOB_BATCHING["embeddings"],
                           model_info: Mapping[str, Any] | None = None,
                           progress_seconds: float = beam_io.DEFAULT_PROGRESS_SECONDS) -> dict[str, Any]:
    """Adds the track-embedding export to ``pipeline``: keys → ``embeddings.npy`` + ``embedding_keys.txt``.

    Calls the next-track model's ``track_embeddings`` signature (``track_keys``
    string ``[n]`` → ``embedding`` float32 ``[n, d]``). Row ``i`` of the matrix is
    line ``i`` of the keys file, in the order of ``track_keys`` (a key that
    fails is left out and becomes a dead letter). The pair loads straight into
    an ANN index (``numpy.load`` then e.g. ``faiss.IndexFlatIP.add``).
    """
    if not track_keys:
        raise ValueError("no track keys to embed")
    if len(set(track_keys)) != len(track_keys):
        raise ValueError("track keys repeat")
    keyed = pipeline | "ListKeys" >> beam.Create(
        [(index, key) for index, key in enumerate(track_keys)])
    inferred = (keyed
                | "KeyByIndex" >> beam.MapTuple(lambda index, key: ((index, key), key))
                | "Embed" >> RunSignature(saved_model_dir, inference_handler.SignatureInference(
                    "track_embeddings", inference_handler.collate_key_list, ["embedding"]),
                    batching, "embeddings", progress_seconds))
    rows = inferred["predictions"] | "Rows" >> beam.MapTuple(
        lambda key, prediction: (key[0], key[1], prediction["embedding"]))
    written = (rows
               | "Collect" >> beam.combiners.ToList()
               | "WriteTable" >> beam.Map(_write_embedding_table, output_uri))
    dead_letters = inferred["failed"] | "DeadKeys" >> beam.MapTuple(
        lambda key, detail: {"track_key": key[1], "reason": REASON_INFERENCE, "detail": detail})
    static = {"job": "embeddings", "model": dict(model_info or {"path": saved_model_dir}),
              "outputs": {"matrix": EMBEDDINGS_NPY, "keys": EMBEDDING_KEYS}}
    manifest = write_manifest(pipeline, output_uri, static, [("inputs", ("tracks", "dead_letters"))],
                               dead_letters, [tally(keyed, "inputs"), tally(rows, "tracks"),
                                              written | "TallyWritten" >> beam.Map(lambda n: ("written", n))])
    return {"rows": rows, "dead_letters": dead_letters, "manifest": manifest}


__all__ = ["build_embedding_export", "EMBEDDINGS_NPY", "EMBEDDING_KEYS"]
