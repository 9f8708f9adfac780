"""``bulk_inferrer``: batch inference over pushed models with Beam RunInference (TFX's BulkInferrer).

One executor, three jobs (``params["job"]``), each a Beam pipeline built by
:mod:`~musicrec.components.tagging_job`, :mod:`~musicrec.components.recommendation_job` and
:mod:`~musicrec.components.embedding_job` (what they share: :mod:`~musicrec.components.inference_jobs`;
their settings and defaults: :mod:`~musicrec.components.bulk_inference_settings`):

- ``tag``: every audio file of a catalogue (a folder, folder-per-genre or
  flat, or a metadata CSV) → its top genres with probabilities and its audio
  embedding, through the ``genre`` model;
- ``recommend``: every user of a play-log input → top-N next tracks after
  their most recent session, their history excluded, through ``next_track``;
- ``embeddings``: the ``next_track`` model's track-embedding table (cold-start
  tracks included when the model has them) as ``embeddings.npy`` plus
  ``embedding_keys.txt``, for an ANN index.

Inputs (all optional; explicit SavedModel paths in params win):
``genre_model`` and ``next_track_model`` (``PushedModel``: the pusher's
output, whose ``path`` property is the pushed version folder), and ``data``
(``ExternalData``, :func:`data_artifact`): the catalogue or play logs the job
reads, recorded so that ML Metadata links each prediction artifact to the
model and the data it came from (the job itself reads the paths in params).
Output: ``inference_result`` (``InferenceResult``), laid out as in docs/batch.md.
Bad inputs become dead letters with reasons; ``manifest.json`` checks that
``inputs == outputs + dead_letters``.
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
from typing import Any, Mapping

from musicrec.components.base import Artifact, ComponentSpec, given_params
from musicrec.components.bulk_inference_settings import JOB_BATCHING, Batching

log = logging.getLogger(__name__)

JOBS = ("tag", "recommend", "embeddings")
MODEL_FOR_JOB = {"tag": "genre", "recommend": "next_track", "embeddings": "next_track"}
EMBEDDING_SIGNATURE = "track_embeddings"
KNOWN_PARAMS = {"job", "saved_model", "audio_dir", "metadata_csv", "playlog_paths", "track_keys",
                "feature_params", "top_genres", "top_n", "exclude", "max_prefix_length",
                "session_gap_seconds", "playlog_format", "max_history_length", "signature", "num_shards",
                "min_batch_size",
                "max_batch_size", "progress_seconds", "beam_args", "model_info"}


# --------------------------------------------------------------------------- models


def latest_version_dir(model_base: str) -> str:
    """``<model_base>/<highest integer version>``, as TF Serving's ``latest`` policy picks it.

    Raises:
        FileNotFoundError: no version folder (nothing pushed yet).
    """
    from musicrec.serving.wire import list_versions

    versions = list_versions(model_base)
    if not versions:
        raise FileNotFoundError(f"no pushed version under {model_base} (run the pipeline first)")
    return os.path.join(model_base, str(versions[-1]))


def pushed_model_dir(workdir: str, model_name: str) -> str:
    """The serving version of ``model_name`` in a pipeline workdir: ``<workdir>/serving/<model>/<latest>``."""
    return latest_version_dir(os.path.join(workdir, "serving", model_name))


def resolve_saved_model(job: str, inputs: Mapping[str, Artifact], params: Mapping[str, Any]) -> str:
    """The SavedModel a job runs: ``params["saved_model"]``, else the pushed model input's ``path``,
    else (the pusher did not push this run) the latest version under its ``model_base_path``."""
    if params.get("saved_model"):
        return str(params["saved_model"])
    name = f"{MODEL_FOR_JOB[job]}_model"
    if name not in inputs:
        raise ValueError(f"bulk_inferrer: job {job!r} needs input {name!r} or params['saved_model']")
    record = dict(inputs[name].properties)
    if os.path.isfile(inputs[name].path("push.json")):
        with open(inputs[name].path("push.json"), encoding="utf-8") as handle:
            record.update(json.load(handle))
    if record.get("path"):
        return record["path"]
    # Not blessed this run: the version serving now is the one to use.
    if record.get("model_base_path"):
        return latest_version_dir(record["model_base_path"])
    raise ValueError(f"bulk_inferrer: {name} at {inputs[name].uri} names no pushed model")


def model_info(saved_model_dir: str) -> dict[str, Any]:
    """What the manifest says about the model: its path, and name and version when it is a pushed one."""
    path = os.path.abspath(saved_model_dir)
    info: dict[str, Any] = {"path": path}
    version = os.path.basename(path)
    if version.isdigit():
        info.update(name=os.path.basename(os.path.dirname(path)), version=int(version))
    return info


def require_signature(saved_model_dir: str, signature_name: str, why: str) -> None:
    """Raises a clear ``ValueError`` when the SavedModel lacks ``signature_name``."""
    from musicrec.components.inference_handler import signature_names

    names = signature_names(saved_model_dir)
    if signature_name not in names:
        raise ValueError(f"{saved_model_dir} has no {signature_name!r} signature ({why}); its signatures "
                         f"are {names}. Retrain and push the model with a version that exports it.")


def model_track_keys(saved_model_dir: str, workdir: str | None = None) -> list[str]:
    """The track vocabulary of a pushed next-track model (cold-start tracks included).

    A SavedModel does not list its lookup table's keys, so they come from the
    model the pusher published: the pipeline's ``run.json`` records, for each
    pusher execution, the ``model`` folder it pushed and the version it made;
    that folder's ``checkpoint/tokens.txt`` is the model's vocabulary in id
    order (the trainer, and the cold-start stage when it appends tracks, write it).

    Args:
        saved_model_dir: ``<workdir>/serving/next_track/<version>``.
        workdir: the pipeline workdir (default: two folders above the model base).

    Raises:
        FileNotFoundError: no run pushed that version (give the keys explicitly instead).
    """
    import glob

    from musicrec.models.warm_start import CHECKPOINT_DIR, TOKENS_FILE

    target = os.path.realpath(saved_model_dir)
    workdir = workdir or os.path.dirname(os.path.dirname(os.path.dirname(target)))
    for record_path in sorted(glob.glob(os.path.join(workdir, "runs", "*", "run.json")), reverse=True):
        with open(record_path, encoding="utf-8") as handle:
            record = json.load(handle)
        for entry in record.get("components", {}).values():
            pushed = entry.get("outputs", {}).get("pushed_model", {}).get("properties", {})
            if entry.get("component") == "pusher" and pushed.get("path") and \
                    os.path.realpath(pushed["path"]) == target:
                tokens = os.path.join(entry["inputs"]["model"], CHECKPOINT_DIR, TOKENS_FILE)
                with open(tokens, encoding="utf-8") as handle:
                    return [line.rstrip("\n") for line in handle if line.strip()]
    raise FileNotFoundError(f"no pipeline run under {workdir}/runs pushed {saved_model_dir}; "
                            "pass the track keys explicitly (a file with one key per line)")


def read_keys_file(path: str) -> list[str]:
    """Track keys, one per line (blank lines ignored)."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as handle:
        return [line.strip() for line in handle if line.strip()]


# --------------------------------------------------------------------------- lineage

DATA_TYPE = "ExternalData"


def job_data_paths(params: Mapping[str, Any]) -> list[str]:
    """What a job reads besides the model: the catalogue, the play logs or the keys file."""
    paths = [params.get("audio_dir"), params.get("metadata_csv"),
             params.get("track_keys") if isinstance(params.get("track_keys"), str) else None]
    logs = params.get("playlog_paths") or []
    paths += [logs] if isinstance(logs, str) else list(logs)
    return [path if "://" in path else os.path.abspath(path) for path in paths if path]


def data_artifact(params: Mapping[str, Any]) -> Artifact | None:
    """The ``data`` input for ML Metadata: ``ExternalData`` at the job's first input path, every
    path in property ``paths``; ``None`` when the job reads nothing but the model (``embeddings``
    of the model's own vocabulary)."""
    paths = job_data_paths(params)
    if not paths:
        return None
    return Artifact(DATA_TYPE, paths[0], {"paths": paths, "job": str(params.get("job"))})


# --------------------------------------------------------------------------- catalogue listing


def list_catalogue(audio_dir: str | None = None, metadata_csv: str | None = None):
    """The audio files to tag, as ``audio_sources.AudioSource`` s sorted by path.

    A folder is read as ingestion reads it (``<dir>/<genre>/<file>``, the
    genre kept as the known ``label``); a folder without genre sub-folders is
    a flat catalogue: every non-hidden file directly in it, label ``""``. A
    metadata CSV is read by ingestion's reader (``path,genre[,artist][,track_id]``).
    """
    import tensorflow as tf

    from musicrec.components.audio_sources import AudioSource, list_sources

    if audio_dir is not None and metadata_csv is None and tf.io.gfile.isdir(audio_dir):
        names = [name.rstrip("/") for name in tf.io.gfile.listdir(audio_dir)]
        if not any(tf.io.gfile.isdir(posixpath.join(audio_dir, n)) and not n.startswith(".") for n in names):
            paths = sorted(posixpath.join(audio_dir, n) for n in names if not n.startswith("."))
            return [AudioSource(path=p, genre="", track_id=posixpath.splitext(posixpath.basename(p))[0])
                    for p in paths]
    sources, _labels = list_sources(audio_dir=audio_dir, metadata_csv=metadata_csv)
    return sources


# --------------------------------------------------------------------------- executor


def _batching(params: Mapping[str, Any], job: str) -> Batching:
    """The job's :data:`JOB_BATCHING`, with ``min_batch_size`` and ``max_batch_size`` from params when given."""
    default = JOB_BATCHING[job]
    return Batching(int(params.get("min_batch_size") or default.min_batch_size),
                    int(params.get("max_batch_size") or default.max_batch_size))


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact], params: Mapping[str, Any]) -> None:
    """Executor: runs one job into ``outputs["inference_result"].uri``; copies the manifest's counts.

    Params:
        job: ``"tag"``, ``"recommend"`` or ``"embeddings"``.
        saved_model: SavedModel folder (overrides the pushed model input).
        audio_dir | metadata_csv: the catalogue (``tag``).
        playlog_paths: play-log files or folders (``recommend``).
        track_keys: keys to embed, a list or a file with one per line
            (``embeddings``; default: the model's vocabulary, see :func:`model_track_keys`).
        feature_params: dict for ``AudioFeatureParams.from_dict`` (``tag``): overrides
            the parameters stored with the model, which it reads by default.
        top_genres, top_n, exclude, max_prefix_length, max_history_length: job settings
            (defaults in :mod:`~musicrec.components.bulk_inference_settings`).
        session_gap_seconds, playlog_format: how ``recommend`` reads the play logs
            (defaults: those of ``playlog_params.PlaylogParams``).
        signature (``recommend`` when the model has it, else ``serving_default``).
        num_shards: TFRecord shards (0 lets the runner choose).
        min_batch_size, max_batch_size: elements per signature call (default: the job's ``JOB_BATCHING``).
        progress_seconds: a worker logs its counts at most this often.
        beam_args: pass-through Beam flags (``beam_io.pipeline_options``).
    """
    import apache_beam as beam

    from musicrec.components import beam_io, embedding_job, inference_jobs, recommendation_job, tagging_job
    from musicrec.components.playlog_params import PlaylogParams
    from musicrec.models.features import AudioFeatureParams

    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise ValueError(f"bulk_inferrer: unknown params {unknown}")
    job = params.get("job")
    if job not in JOBS:
        raise ValueError(f"bulk_inferrer: params['job'] must be one of {JOBS}, got {job!r}")
    saved_model = resolve_saved_model(job, inputs, params)
    info = dict(params.get("model_info") or model_info(saved_model))
    result = outputs["inference_result"]
    # What params leave out keeps the job's declared default (bulk_inference_settings, beam_io).
    common = {"model_info": info, "batching": _batching(params, job),
              **given_params(params, progress_seconds=float)}

    if job == "tag":
        sources = list_catalogue(params.get("audio_dir"), params.get("metadata_csv"))
        if not sources:
            raise ValueError("bulk_inferrer: no audio files listed")
        build = lambda pipeline: tagging_job.build_tagging(  # noqa: E731
            pipeline, sources, result.uri, saved_model,
            (AudioFeatureParams.from_dict(params["feature_params"])
             if params.get("feature_params") else None),
            **common, **given_params(params, top_genres=int, num_shards=int))
    elif job == "recommend":
        paths = params.get("playlog_paths")
        if not paths:
            raise ValueError("bulk_inferrer: job 'recommend' needs params['playlog_paths']")
        read_as = given_params(params, session_gap_seconds=int)
        if "playlog_format" in params:
            read_as["format"] = params["playlog_format"]
        playlog_params = PlaylogParams(**read_as)  # what params leave out keeps the ExampleGen's default
        build = lambda pipeline: recommendation_job.build_recommendations(  # noqa: E731
            pipeline, [paths] if isinstance(paths, str) else list(paths), result.uri, saved_model,
            playlog_params=playlog_params, signature=params.get("signature"), **common,
            **given_params(params, "exclude", top_n=int, max_prefix_length=int, max_history_length=int,
                           num_shards=int))
    else:
        require_signature(saved_model, EMBEDDING_SIGNATURE,
                          "track_keys [n] -> embedding [n, d], docs/architecture.md")
        keys = params.get("track_keys")
        keys = read_keys_file(keys) if isinstance(keys, str) else list(keys or model_track_keys(saved_model))
        build = lambda pipeline: embedding_job.build_embedding_export(  # noqa: E731
            pipeline, keys, result.uri, saved_model, **common)

    log.info("bulk_inferrer %s with %s", job, saved_model)
    with beam.Pipeline(options=beam_io.pipeline_options(params.get("beam_args"))) as pipeline:
        build(pipeline)
    manifest = json.loads(beam_io.read_text(result.path(inference_jobs.MANIFEST_FILE)))
    result.properties.update({key: value for key, value in manifest.items()
                              if isinstance(value, (int, float, str)) and not isinstance(value, bool)})
    result.properties["model"] = info


SPEC = ComponentSpec(
    name="bulk_inferrer",
    inputs={"genre_model": "PushedModel", "next_track_model": "PushedModel", "data": DATA_TYPE},
    outputs={"inference_result": "InferenceResult"},
    executor=run,
    optional_inputs=frozenset({"genre_model", "next_track_model", "data"}),
)

__all__ = ["SPEC", "run", "JOBS", "MODEL_FOR_JOB", "DATA_TYPE", "data_artifact",
           "job_data_paths", "list_catalogue", "latest_version_dir", "pushed_model_dir",
           "resolve_saved_model", "model_info", "model_track_keys", "read_keys_file",
           "require_signature"]
