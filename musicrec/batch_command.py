"""``musicrec batch``: catalogue tagging, precomputed recommendations and embedding export on Beam.

    musicrec batch tag --workdir W --audio DIR --out OUT          # or --metadata CSV
    musicrec batch recommend --workdir W --playlogs PATH... --out OUT
    musicrec batch embeddings --workdir W --out OUT [--keys FILE]

Each runs the ``bulk_inferrer`` component's executor
(:mod:`musicrec.components.bulk_inferrer`) on the model the workdir serves
(``<workdir>/serving/<model>/<latest version>``) or on ``--saved-model PATH``.
The output folder is written under a temporary name and renamed when the job
succeeds; ``--beam-arg`` passes flags to Apache Beam as ``musicrec run`` does.
With ``--workdir`` the run is recorded in the workdir's ML Metadata as a
``bulk_inferrer`` execution, as the pipeline records its components: inputs
the pushed model's ``PushedModel`` artifact and the data read
(``ExternalData``), output the ``InferenceResult`` at ``--out``.
Formats: docs/batch.md.
"""
from __future__ import annotations

import argparse

JOB_HELP = {
    "tag": "genres and audio embedding of every file in a catalogue (genre model)",
    "recommend": "top-N next tracks for every user of a play log (next_track model)",
    "embeddings": "the next_track model's track-embedding table as .npy + keys (next_track model)",
}


# Measured on the 2-core machine (docs/batch.md, "Throughput and workers"): a worker *process*
# pays ~8 s of CPU to start (import TensorFlow, load the model), so a second one pays off only
# on jobs of a minute or more of model work and with a free core; worker *threads* share one
# GIL and did not scale (and Beam 2.77's multi-threaded runner once corrupted a grouped buffer).
DEFAULT_WORKERS = 1
RUNNING_MODES = ("multi_processing", "multi_threading")
DEFAULT_RUNNING_MODE = "multi_processing"


NUMERIC_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_beam_args(workers: int, running_mode: str) -> list[str]:
    """Beam flags for ``workers`` workers of the local runner (none for one: in-process, in this thread)."""
    if workers <= 1:
        return []
    return [f"--direct_num_workers={workers}", f"--direct_running_mode={running_mode}"]


def tf_threads_for(workers: int, running_mode: str, cores: int) -> int:
    """TensorFlow threads per process when not given: 0 (TensorFlow's own, one per core) but for
    worker processes, which get ``cores // workers`` each (at least 1) instead of all competing
    for every core."""
    if workers > 1 and running_mode == "multi_processing":
        return max(1, cores // workers)
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--workdir", help="pipeline workdir: use the model it serves (latest pushed version)")
    model.add_argument("--saved-model", help="an explicit SavedModel folder instead")
    parser.add_argument("--out", required=True, help="output folder (must not exist yet)")
    parser.add_argument("--num-shards", type=int, default=1, help="TFRecord shards (0: the runner picks)")
    parser.add_argument("--min-batch-size", type=int, help="elements per model call, at least")
    parser.add_argument("--max-batch-size", type=int, help="elements per model call, at most")
    parser.add_argument("--progress-seconds", type=float, default=30.0,
                        help="each worker logs its counts at most this often (default %(default)s)")
    parser.add_argument("--beam-arg", action="append", default=[], dest="beam_args",
                        help="pass-through Beam flag, repeatable (e.g. --beam-arg=--direct_num_workers=2)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="Beam workers of the local runner (default %(default)s; measured in "
                             "docs/batch.md, 'Throughput and workers'); ignored with --beam-arg=--runner=...")
    parser.add_argument("--running-mode", choices=RUNNING_MODES, default=DEFAULT_RUNNING_MODE,
                        help="with --workers > 1: worker processes, or threads of this process "
                             "(default %(default)s)")
    parser.add_argument("--tf-threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads (and BLAS/OpenMP threads) in every "
                             "Beam worker process and this one (default: one per core, except with "
                             "worker processes: cores / workers each, so that they do not compete)")
    parser.add_argument("--config", help="the pipeline config: its ML Metadata store (with --workdir); "
                                         "tag reads the audio features stored with the model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # a light module (no Beam, no TF)
    from musicrec.components.bulk_inference_settings import DEFAULT_MAX_HISTORY_LENGTH, EXCLUDE_MODES

    jobs = parser.add_subparsers(dest="job", required=True)
    tag = jobs.add_parser("tag", help=JOB_HELP["tag"])
    source = tag.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", help="a folder: <dir>/<genre>/<file> or audio files directly in it")
    source.add_argument("--metadata", help="CSV with path,genre[,artist][,track_id]")
    tag.add_argument("--top-genres", type=int, default=3, help="genres kept per track (default %(default)s)")
    _add_common(tag)

    recommend = jobs.add_parser("recommend", help=JOB_HELP["recommend"])
    recommend.add_argument("--playlogs", nargs="+", required=True, help="play-log files or folders")
    recommend.add_argument("--top-n", type=int, default=10, help="tracks per user (default %(default)s)")
    recommend.add_argument("--exclude", choices=EXCLUDE_MODES, default="history",
                           help="tracks never recommended to a user: all they played in the input, "
                                "their latest session's, or none (default %(default)s)")
    recommend.add_argument("--max-prefix-length", type=int, default=20,
                           help="most recent plays of the latest session given to the model")
    recommend.add_argument("--max-history-length", type=int, default=DEFAULT_MAX_HISTORY_LENGTH,
                           help="earlier plays (the most recent) given to a model with the 'recommend' "
                                "signature (default %(default)s)")
    recommend.add_argument("--signature", choices=["recommend", "serving_default"],
                           help="next_track signature (default: recommend when the model has it)")
    recommend.add_argument("--session-gap-seconds", type=int, default=1800,
                           help="a longer pause starts a new session (default %(default)s)")
    recommend.add_argument("--format", default="auto", help="play-log format (default: by file name)")
    _add_common(recommend)

    embeddings = jobs.add_parser("embeddings", help=JOB_HELP["embeddings"])
    embeddings.add_argument("--keys", help="track keys to embed, one per line (default: the model's "
                                           "vocabulary, cold-start tracks included)")
    _add_common(embeddings)


def _saved_model(args: argparse.Namespace, model_name: str) -> str:
    from musicrec.commands import UserError
    from musicrec.components.bulk_inferrer import pushed_model_dir

    if args.saved_model:
        import os

        if not os.path.isfile(os.path.join(args.saved_model, "saved_model.pb")):
            raise UserError(f"{args.saved_model} holds no saved_model.pb")
        return args.saved_model
    try:
        return pushed_model_dir(args.workdir, model_name)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc


def job_params(args: argparse.Namespace) -> dict:
    """The ``bulk_inferrer`` params for the parsed command line."""
    from musicrec.components.bulk_inferrer import MODEL_FOR_JOB

    beam_args = list(args.beam_args)
    if not any(arg.startswith(("--runner", "--direct_num_workers", "--direct_running_mode"))
               for arg in beam_args):
        beam_args += worker_beam_args(args.workers, args.running_mode)
    params = {"job": args.job, "saved_model": _saved_model(args, MODEL_FOR_JOB[args.job]),
              "num_shards": args.num_shards, "progress_seconds": args.progress_seconds,
              "beam_args": beam_args}
    for name in ("min_batch_size", "max_batch_size"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    if args.job == "tag":
        # The audio features are the model's own (stored with it), never --config's.
        params.update(audio_dir=args.audio, metadata_csv=args.metadata, top_genres=args.top_genres)
    elif args.job == "recommend":
        params.update(playlog_paths=list(args.playlogs), top_n=args.top_n, exclude=args.exclude,
                      max_prefix_length=args.max_prefix_length, max_history_length=args.max_history_length,
                      signature=args.signature, session_gap_seconds=args.session_gap_seconds,
                      playlog_format=args.format)
    elif args.keys:
        params["track_keys"] = args.keys
    return params


BATCH_NODE_PREFIX = "batch_"


class MetadataRecord:
    """Records one ``musicrec batch`` run in a workdir's ML Metadata, as the pipeline runner
    records a component: a ``bulk_inferrer`` execution (node id ``batch_<job>``, run id
    ``batch-<time>``, in the ``musicrec`` pipeline context and its own run context) with INPUT
    events for the model and the data and, when it completes, an OUTPUT event for the result.

    The model input is the ``PushedModel`` artifact that published the version when the store
    has one (lineage then reaches the trainer and the examples), else a ``SavedModel``
    artifact at its path.
    """

    def __init__(self, workdir: str, config: dict, params: dict):
        import os

        from musicrec.components import bulk_inferrer
        from musicrec.components.base import Artifact
        from musicrec.pipeline import metadata as mlmd_store
        from musicrec.pipeline.fingerprints import fingerprint
        from musicrec.pipeline.pipeline import PIPELINE_NAME
        from musicrec.pipeline.runner import new_run_id

        self.root = os.path.join(os.path.abspath(workdir), "runs")
        self.store = mlmd_store.MetadataStore(mlmd_store.connection_config(config["metadata"], self.root))
        self.run_id = f"batch-{new_run_id()}"
        self.contexts = self.store.run_contexts(PIPELINE_NAME, self.root, self.run_id)
        job = params["job"]
        info = bulk_inferrer.model_info(params["saved_model"])
        model = (self.store.pushed_model(info["name"], info["version"]) if "version" in info else None) \
            or Artifact("SavedModel", info["path"], dict(info))
        inputs = {f"{bulk_inferrer.MODEL_FOR_JOB[job]}_model": model}
        data = bulk_inferrer.data_artifact(params)
        if data is not None:
            inputs["data"] = data
        code = [bulk_inferrer.__name__, *bulk_inferrer.LAZY_CODE]
        key = fingerprint(bulk_inferrer.SPEC.name, params, inputs, bulk_inferrer.job_data_paths(params), code)
        self.execution_id = self.store.start_execution(
            bulk_inferrer.SPEC.name, f"{BATCH_NODE_PREFIX}{job}", self.run_id, self.root, key, params,
            inputs, self.contexts)

    def complete(self, result) -> None:
        from musicrec.pipeline.metadata import State

        self.store.finish_execution(self.execution_id, State.COMPLETE, {"inference_result": result},
                                    self.contexts)

    def failed(self, error: BaseException) -> None:
        from musicrec.pipeline.metadata import State

        self.store.finish_execution(self.execution_id, State.FAILED,
                                    error=f"{type(error).__name__}: {error}")


def run(args: argparse.Namespace) -> int:
    import os
    import shutil

    from musicrec.commands import UserError
    from musicrec.components import bulk_inferrer
    from musicrec.components.base import Artifact
    from musicrec.pipeline.config import load_config

    out = os.path.abspath(args.out)
    if os.path.exists(out):
        raise UserError(f"{args.out} already exists; give a new --out folder")
    for path in [getattr(args, "audio", None), getattr(args, "metadata", None), getattr(args, "keys", None),
                 *(getattr(args, "playlogs", None) or [])]:
        if path and "://" not in path and not os.path.exists(path):
            raise UserError(f"{path} does not exist")
    if args.tf_threads < 0:
        raise UserError("--tf-threads must be >= 0")
    if args.workers < 1:
        raise UserError("--workers must be >= 1")
    if not args.tf_threads:
        args.tf_threads = tf_threads_for(args.workers, args.running_mode, os.cpu_count() or 1)
    if args.tf_threads:
        # Read by TensorFlow when it creates its thread pools (the first op), here and in the
        # Beam worker processes, which inherit the environment (as do their BLAS and OpenMP pools,
        # which numpy and the resampler size when they load).
        for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", *NUMERIC_THREAD_VARIABLES):
            os.environ[name] = str(args.tf_threads)
    params = job_params(args)
    record = MetadataRecord(args.workdir, load_config(args.config), params) if args.workdir else None
    staging = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    result = Artifact("InferenceResult", staging)
    try:
        bulk_inferrer.run({}, {"inference_result": result}, params)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if record:
            record.failed(exc)
        if isinstance(exc, (ValueError, FileNotFoundError)):
            raise UserError(str(exc)) from exc
        raise
    os.replace(staging, out)
    result.uri = out
    if record:
        record.complete(result)
    counts = {key: result.properties[key] for key in ("inputs", "tracks", "users", "users_recommended",
                                                       "dead_letters") if key in result.properties}
    print(f"batch {args.job}: {' '.join(f'{k}={v}' for k, v in counts.items())} -> {args.out}")
    return 0
