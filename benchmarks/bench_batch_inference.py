"""Batch inference (``bulk_inferrer``, Beam RunInference) against in-process signature calls.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_batch_inference.py --data ../shared/data/gtzan_dev
    .venv/bin/python benchmarks/bench_batch_inference.py                 # synthetic clips
    .venv/bin/python benchmarks/bench_batch_inference.py --workdir work  # the models a workdir serves
    .venv/bin/python benchmarks/bench_batch_inference.py --users 2000 --workers 1 --limit 10

Two measurements, each against a reference measured in the same process on
the same inputs, by one helper (:func:`compare`): ``--repeats`` timings of
each side, alternating which goes first (the machine is shared), medians
reported with every sample, and the runner's fixed cost (the same job on a
one-element input) so that the ratio can also be given without it:

- **tagging**: audio seconds per wall-clock second of the ``tag`` job over a
  folder of clips, on 1 worker (Beam's in-process FnApiRunner) and on
  ``--direct_num_workers=N --direct_running_mode=M`` (``--running-mode``:
  ``multi_processing``, the default, or ``multi_threading``), against a
  plain loop doing the same work in-process: ``audio_files.track_segments`` per
  file, the genre model's ``serving_default`` signature on its segments,
  the mean per track;
- **recommendations**: users per second of the ``recommend`` job over a
  generated play log (``--users``, default 10 000, over ``--playlog-files``
  CSVs), against the same work in-process: the project's play-log reader,
  the job's own request rule (the ExampleGen's sessions; the latest one's
  prefix; the earlier plays as history), the signature the job picks
  (``recommend``, as every pushed model has it) on batches of 256 users (the
  job's batch size too) and the same history exclusion. The stand-in
  next-track model is exported by the trainer's own code
  (``next_track.serving.export_saved_model``), so its signatures are a
  pushed model's, over a catalogue of ``--tracks`` tracks (100 000 by
  default, as ``bench_next_track_latency.py``; the model's cost per user
  grows with it, Beam's does not: with 2 000 tracks Beam's per-user cost
  is most of the job).

``--tf-threads N`` gives TensorFlow N intra-op threads (and numpy's BLAS and
OpenMP pools N threads) in the reference and in every Beam worker alike, and N inter-op threads (N × workers with
``multi_threading``, whose workers share this process's pools, so that two
signature calls can run at once); the default is TensorFlow's own (one per
core). Each job timing also records the CPU seconds of this process (the
runner, and with ``multi_threading`` the workers) and of the worker
processes, and each worker count > 1 its rate against 1 worker's.

Then the **agreement check**: every clip's ``genre`` in the tagging summary
(opened with pandas) must equal ``musicrec classify``'s top genre for the same
file (``classify_command.classify_file`` through a local gRPC server on a free
port). The models are the latest pushed versions of ``--workdir``, or else
untrained stand-ins with the real architectures (the genre model as
``bench_serving_load`` builds it, the next-track model as the trainer exports
it): speed does not depend on training, and the agreement check compares two
paths through the same model.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# The CLI's own choices and thread variables (a light module: nothing heavy at import).
from musicrec.batch_command import NUMERIC_THREAD_VARIABLES, RUNNING_MODES  # noqa: E402
from musicrec.serving import wire  # noqa: E402


def _pin_tf_threads(argv: Sequence[str]) -> tuple[int, int]:
    """``--tf-threads N`` (N > 0): TensorFlow's intra-op pool gets N threads, in this process (the
    reference and the in-process runner) and in every Beam worker process, which inherits the
    environment. The inter-op pool gets N too, except with ``multi_threading`` workers, which share
    this process's pools: N × the most workers, so that each worker's signature call can run while
    another's does. It must be set before TensorFlow starts, hence before the imports.

    Returns:
        ``(intra-op, inter-op)`` threads; 0 for TensorFlow's own (one per core).
    """
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--tf-threads", type=int, default=0)
    early.add_argument("--workers", default="1,2")
    early.add_argument("--running-mode", choices=RUNNING_MODES, default="multi_processing")
    known = early.parse_known_args(argv)[0]
    if known.tf_threads <= 0:
        return 0, 0
    most_workers = max(int(count) for count in known.workers.split(","))
    inter = known.tf_threads * (most_workers if known.running_mode == "multi_threading" else 1)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(known.tf_threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(inter)
    # numpy's BLAS (the mel filterbank product) and OpenMP (soxr) pools are per process too
    for name in NUMERIC_THREAD_VARIABLES:
        os.environ[name] = str(known.tf_threads)
    return known.tf_threads, inter


TF_THREADS, TF_INTEROP_THREADS = _pin_tf_threads(sys.argv[1:])

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench_audio_ingest import audio_seconds, synthesise_clips  # noqa: E402  (run as a script)
from bench_playlog_ingest import generate_log  # noqa: E402
from bench_serving_load import build_stand_ins  # noqa: E402
from common import short_machine, timed, write_result  # noqa: E402
from musicrec.components import bulk_inferrer, inference_jobs, recommendation_job  # noqa: E402
from musicrec.components.base import Artifact  # noqa: E402
from musicrec.models import audio_files  # noqa: E402

NAME = "batch_inference"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", f"{NAME}.json")
GAP_SECONDS = 1800
MAX_PREFIX = 20
TOP_N = 10
# users per signature call, in the reference and (min = max batch size) in the job
REFERENCE_RECOMMEND_BATCH = 256
RUNNING_MODE = "multi_processing"  # --running-mode, for worker counts above 1


def worker_args(workers: int, running_mode: str = "multi_processing") -> list[str]:
    """Beam flags for ``workers`` workers (none: Beam's in-process default, one worker);
    the same flags ``musicrec batch --workers N --running-mode M`` passes."""
    from musicrec.batch_command import worker_beam_args

    return worker_beam_args(workers, running_mode)


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished children (worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def add_scaling(beam_figures: dict[str, dict[str, Any]], rate_unit: str) -> None:
    """Adds to each worker count's figures how it compares with 1 worker: ``rate_vs_1_worker``
    (its rate over 1 worker's) and ``ratio_vs_1_worker`` (its ratio against its own reference over
    1 worker's against its own, which cancels the load changing between the two rounds)."""
    one = beam_figures.get("1")
    if not one:
        return
    for count, figures in beam_figures.items():
        if count != "1":
            figures["rate_vs_1_worker"] = round(figures[f"{rate_unit}_per_second"]
                                                / one[f"{rate_unit}_per_second"], 3)
            figures["ratio_vs_1_worker"] = round(figures["ratio"] / one["ratio"], 3)
            print(f"{count} workers ({RUNNING_MODE}) vs 1: {figures['rate_vs_1_worker']:.2f}x the "
                  f"{rate_unit}/s, {figures['ratio_vs_1_worker']:.2f}x against each one's reference",
                  flush=True)


def run_job(out_dir: str, params: dict[str, Any]) -> dict[str, Any]:
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    result = Artifact("InferenceResult", out_dir)
    bulk_inferrer.run({}, {"inference_result": result}, params)
    return json.load(open(os.path.join(out_dir, inference_jobs.MANIFEST_FILE)))


# ------------------------------------------------------------------------- tagging


def reference_tagging(paths: Sequence[str], saved_model: str) -> dict[str, str]:
    """The in-process loop: load the model, segments per file (the model's stored features), the
    signature on each track; returns ``{path: genre}``."""
    from musicrec.models.genre.signatures import read_model_features

    params = read_model_features(saved_model)[1]
    signature = tf.saved_model.load(saved_model).signatures["serving_default"]
    genres = {}
    for path in paths:
        try:
            segments = audio_files.track_segments(path, params)
        except audio_files.AudioDecodeError:
            continue
        answer = signature(log_mel=tf.constant(segments[None]))
        _embedding = answer["embedding"].numpy()[0]
        classes = answer["classes"].numpy()[0]
        genres[path] = classes[int(np.argmax(answer["probabilities"].numpy()[0]))].decode()
    return genres


def classify_agreement(summary: pd.DataFrame, serving_base: str) -> dict[str, Any]:
    """Compares the summary's ``genre`` with ``musicrec classify`` through a local gRPC server."""
    from musicrec.classify_command import classify_file
    from musicrec.serving.client import PredictionClient
    from musicrec.serving.server import LocalModelServer

    server = LocalModelServer({"genre": os.path.join(serving_base, "genre")}, port=0, poll_wait_seconds=0)
    server.start()
    disagreements = []
    try:
        with PredictionClient(server.address, timeout_seconds=60) as client:
            for row in summary.itertuples():
                online = classify_file(client, "genre", row.path, top=1)[0]["genre"]
                if online != row.genre:
                    disagreements.append({"path": row.path, "batch": row.genre, "classify": online})
    finally:
        server.stop(grace_seconds=1)
    return {"clips": len(summary), "agree": len(summary) - len(disagreements),
            "disagreements": disagreements}


def compare(label: str, rate_unit: str, work: float, reference, job, fixed_job, repeats: int
            ) -> tuple[dict[str, Any], Any, Any]:
    """Times ``reference()`` and ``job()`` ``repeats`` times each, alternating which goes first,
    and ``fixed_job()`` (the same job on a one-element input: the runner's fixed cost) once.

    The machine is shared, so each side's figure is its **median** over the
    repeats (every sample is kept); ``work`` (audio seconds or users) over
    the median seconds is the rate. ``ratio`` = reference / job time (≥ 1:
    the job is faster); ``ratio_without_fixed`` takes the fixed cost off the job.

    Returns:
        ``(figures, last reference answer, last job manifest)``.
    """
    with timed() as fixed_time:
        fixed_job()
    reference_seconds, job_seconds, job_cpu = [], [], []
    reference_answer = manifest = None
    for repeat in range(repeats):
        order = (("reference", "job") if repeat % 2 == 0 else ("job", "reference"))
        for side in order:
            cpu_before = _cpu_seconds()
            with timed() as elapsed:
                if side == "reference":
                    reference_answer = reference()
                else:
                    manifest = job()
            (reference_seconds if side == "reference" else job_seconds).append(elapsed.seconds)
            if side == "job":  # where the job's CPU time went: this (runner) process, worker processes
                job_cpu.append([round(after - before, 1) for after, before in zip(_cpu_seconds(), cpu_before)])
    job_median, reference_median = float(np.median(job_seconds)), float(np.median(reference_seconds))
    figures = {
        "seconds": round(job_median, 2), f"{rate_unit}_per_second": round(work / job_median, 1),
        "reference_seconds": round(reference_median, 2),
        f"reference_{rate_unit}_per_second": round(work / reference_median, 1),
        "ratio": round(reference_median / job_median, 3),
        "fixed_seconds": round(fixed_time.seconds, 2),
        "ratio_without_fixed": round(reference_median / max(job_median - fixed_time.seconds, 1e-3), 3),
        "job_cpu_seconds_runner_workers": job_cpu,
        "samples": {"job": [round(t, 2) for t in job_seconds],
                    "reference": [round(t, 2) for t in reference_seconds]},
        "load_average_1_5_15": [round(value, 2) for value in os.getloadavg()],
    }
    print(f"{label}: {figures[f'{rate_unit}_per_second']:.0f} {rate_unit}/s vs in-process "
          f"{figures[f'reference_{rate_unit}_per_second']:.0f} {rate_unit}/s (ratio {figures['ratio']:.2f}, "
          f"{figures['ratio_without_fixed']:.2f} without the fixed {fixed_time.seconds:.1f} s; "
          f"load {figures['load_average_1_5_15'][0]})", flush=True)
    return figures, reference_answer, manifest


def bench_tagging(data_dir: str, genre_model: str, serving_base: str, workers: Sequence[int],
                  work_dir: str, limit: int | None, check: bool, repeat: int = 1, repeats: int = 3
                  ) -> dict[str, Any]:
    """``repeat`` lists every file that many times (distinct track ids), for a catalogue
    large enough that the runner's fixed cost is amortised; the agreement check uses one pass."""
    sources = bulk_inferrer.list_catalogue(data_dir)[:limit]
    paths = [source.path for source in sources] * repeat
    catalogue = os.path.join(work_dir, "catalogue.csv")
    pd.DataFrame({"path": paths, "genre": [s.genre or "unknown" for s in sources] * repeat,
                  "track_id": [f"{s.track_id}-{copy}" for copy in range(repeat) for s in sources]}
                 ).to_csv(catalogue, index=False)
    one_file = os.path.join(work_dir, "one-file.csv")
    pd.DataFrame({"path": paths[:1], "genre": ["unknown"]}).to_csv(one_file, index=False)
    seconds = audio_seconds(paths)
    for path in paths:  # page cache
        open(path, "rb").read()
    reference_tagging(paths[:1], genre_model)  # first-call costs (librosa, tracing)
    run_job(os.path.join(work_dir, "tags-warmup"), {  # Beam's first-use imports, not part of a job
        "job": "tag", "saved_model": genre_model, "metadata_csv": one_file, "progress_seconds": 60.0})

    figures: dict[str, Any] = {"files": len(sources), "repeat": repeat, "tracks": len(paths),
                               "audio_seconds": round(seconds, 1), "beam": {}}
    summary = None
    out = os.path.join(work_dir, "tags")
    for count in workers:
        def job_params(catalogue_csv: str) -> dict[str, Any]:
            return {"job": "tag", "saved_model": genre_model, "metadata_csv": catalogue_csv,
                    "beam_args": worker_args(count, RUNNING_MODE), "progress_seconds": 60.0}

        result, reference, manifest = compare(
            f"tagging, {count} worker(s)", "audio_seconds", seconds,
            reference=lambda: reference_tagging(paths, genre_model),
            job=lambda: run_job(out, job_params(catalogue)),
            fixed_job=lambda: run_job(os.path.join(work_dir, "tags-fixed"), job_params(one_file)),
            repeats=repeats)
        if manifest["dead_letters"]:  # a rate over skipped files would mean nothing
            raise SystemExit(f"the tagging job wrote {manifest['dead_letters']} dead letters "
                             f"({manifest['dead_letters_per_reason']}); see {out}")
        summary = pd.read_csv(os.path.join(out, "tags.csv"))
        result.update(tracks=manifest["tracks"], dead_letters=manifest["dead_letters"],
                      segments=manifest["segments"],
                      agree_with_reference=int(sum(reference.get(row.path) == row.genre
                                                   for row in summary.itertuples())))
        figures["beam"][str(count)] = result
        summary = summary.drop_duplicates("path")
    add_scaling(figures["beam"], "audio_seconds")
    if check and summary is not None:
        figures["classify_agreement"] = classify_agreement(summary, serving_base)
        agreement = figures["classify_agreement"]
        print(f"genre column vs musicrec classify: {agreement['agree']}/{agreement['clips']} agree", flush=True)
    return figures


# ------------------------------------------------------------------------- recommendations


def export_next_track_stand_in(export_dir: str, tracks: int) -> None:
    """An untrained next-track model over ``tracks`` tracks, exported to ``export_dir`` by the
    trainer's own code (``serving_default``, ``recommend``, ``track_embeddings``)."""
    from musicrec.models.next_track.hparams import NextTrackHParams
    from musicrec.models.next_track.model import build_model
    from musicrec.models.next_track.serving import export_saved_model

    hparams = NextTrackHParams()
    vocabulary = [f"track{i}" for i in range(tracks)]
    export_saved_model(build_model(len(vocabulary), hparams), vocabulary, hparams, export_dir)


def reference_recommendations(paths: Sequence[str], saved_model: str,
                              batch_size: int = REFERENCE_RECOMMEND_BATCH) -> int:
    """In-process, the same work as the job: load the model; read the logs with the project's
    readers; each user's request built by the job's own rule (``recommendation_job.user_request``: the
    ExampleGen's sessions, the latest one's prefix, the earlier plays as history); batched calls of
    the signature the job picks (``recommend`` when the model has it) through the job's own
    collate-call-split (``SignatureInference``); the same exclusion. Nothing is written."""
    from musicrec.components.inference_handler import (
        SignatureInference, collate_recommend, collate_track_keys, signature_names)
    from musicrec.components.playlog_sessions import keyed_by_user
    from musicrec.components.playlog_readers import list_playlog_files, read_playlog
    from musicrec.components.playlog_rows import Play

    personalised = recommendation_job.RECOMMEND_SIGNATURE in signature_names(saved_model)
    inference = SignatureInference(recommendation_job.RECOMMEND_SIGNATURE if personalised else "serving_default",
                                   collate_recommend if personalised else collate_track_keys,
                                   ["track_keys", "scores"])
    model = tf.saved_model.load(saved_model)
    fields_by_user: dict[str, list] = {}
    for path, fmt in list_playlog_files(paths)[0]:
        for record in read_playlog(path, fmt):
            if isinstance(record, Play):
                user_id, fields = keyed_by_user(record)
                fields_by_user.setdefault(user_id, []).append(fields)
    requests = [recommendation_job.user_request((user_id, [fields]), GAP_SECONDS, MAX_PREFIX, "history", TOP_N,
                                            personalised=personalised)
                for user_id, fields in fields_by_user.items()]
    recommended = 0
    for start in range(0, len(requests), batch_size):
        batch = requests[start:start + batch_size]
        answers = inference(model, [request for _key, request in batch], None)
        for (key, _request), answer in zip(batch, answers):
            kept, _ = recommendation_job.filter_recommendations(
                answer.inference["track_keys"], answer.inference["scores"], set(key[3]), TOP_N)
            recommended += bool(kept)
    return recommended


def bench_recommendations(next_track_model: str, users: int, plays_per_user: int, tracks: int,
                          workers: Sequence[int], work_dir: str, files: int = 4, repeats: int = 3
                          ) -> dict[str, Any]:
    """Users per second of the ``recommend`` job over a generated play log of ``files`` CSVs
    (several, so that workers can share them), against :func:`reference_recommendations`."""
    paths = generate_log(os.path.join(work_dir, "plays"), users * plays_per_user, users, files, tracks)
    reference_recommendations(paths[:1], next_track_model, 8)  # warm-up: page cache, first-call costs
    figures: dict[str, Any] = {"users": users, "plays": users * plays_per_user, "files": files,
                               "batch_size": REFERENCE_RECOMMEND_BATCH, "beam": {}}
    tiny = generate_log(os.path.join(work_dir, "tiny-plays"), 20, 2, 1, tracks)
    run_job(os.path.join(work_dir, "recs-warmup"), {
        "job": "recommend", "saved_model": next_track_model, "playlog_paths": tiny, "progress_seconds": 60.0})
    for count in workers:
        def job_params(playlogs: Sequence[str]) -> dict[str, Any]:
            return {"job": "recommend", "saved_model": next_track_model, "playlog_paths": list(playlogs),
                    "top_n": TOP_N, "max_prefix_length": MAX_PREFIX, "session_gap_seconds": GAP_SECONDS,
                    "min_batch_size": REFERENCE_RECOMMEND_BATCH, "max_batch_size": REFERENCE_RECOMMEND_BATCH,
                    "beam_args": worker_args(count, RUNNING_MODE), "progress_seconds": 60.0}

        result, reference, manifest = compare(
            f"recommendations, {count} worker(s)", "users", users,
            reference=lambda: reference_recommendations(paths, next_track_model),
            job=lambda: run_job(os.path.join(work_dir, "recs"), job_params(paths)),
            fixed_job=lambda: run_job(os.path.join(work_dir, "recs-fixed"), job_params(tiny)),
            repeats=repeats)
        result.update(users_recommended=manifest["users_recommended"], reference_users=reference,
                      dead_letters=manifest["dead_letters"])
        figures["beam"][str(count)] = result
    add_scaling(figures["beam"], "users")
    return figures


# ------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="audio folder (default: synthetic clips in a temp dir)")
    parser.add_argument("--limit", type=int, help="only the first N files")
    parser.add_argument("--repeat", type=int, default=1,
                        help="tag every file this many times (a larger catalogue; default 1)")
    parser.add_argument("--workdir", help="use the models this pipeline workdir serves")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--plays-per-user", type=int, default=10)
    parser.add_argument("--tracks", type=int, default=100_000,
                        help="catalogue size of the stand-in next-track model and the generated play log "
                             "(as bench_next_track_latency.py)")
    parser.add_argument("--playlog-files", type=int, default=4, help="CSV files the plays are spread over")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timings of each side, alternating; the median is reported (default 3)")
    parser.add_argument("--tf-threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads for the reference and every Beam "
                             "worker (0: TensorFlow's default, one per core)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--running-mode", choices=RUNNING_MODES, default="multi_processing",
                        help="Beam's direct_running_mode for more than 1 worker: threads of this "
                             "process or worker processes (default %(default)s)")
    parser.add_argument("--skip", choices=["tagging", "recommendations"], action="append", default=[])
    parser.add_argument("--no-classify-check", action="store_true")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workers = [int(w) for w in args.workers.split(",")]
    global RUNNING_MODE
    RUNNING_MODE = args.running_mode

    work_dir = tempfile.mkdtemp(prefix="bench-batch-")
    try:
        serving_base = wire.serving_base(args.workdir or work_dir)
        if not args.workdir:
            build_stand_ins(serving_base, models=("genre",))
            export_next_track_stand_in(os.path.join(serving_base, "next_track", "1"), args.tracks)
        genre_model = bulk_inferrer.latest_version_dir(os.path.join(serving_base, "genre"))
        next_track_model = bulk_inferrer.latest_version_dir(os.path.join(serving_base, "next_track"))
        # Absolute: the catalogue CSV the jobs read lives in the work folder, and its relative
        # paths are read from there.
        data_dir = (os.path.abspath(args.data) if args.data else
                    synthesise_clips(os.path.join(work_dir, "clips"), genres=2, clips_per_genre=6, seconds=30.0))
        payload: dict[str, Any] = {"data": data_dir if args.data else "synthetic",
                                   "models": {"genre": genre_model, "next_track": next_track_model,
                                              "stand_ins": not args.workdir},
                                   "tf_threads": TF_THREADS or "default",
                                   "tf_interop_threads": TF_INTEROP_THREADS or "default",
                                   "running_mode": args.running_mode, "repeats": args.repeats,
                                   "cores": os.cpu_count()}
        if "tagging" not in args.skip:
            payload["tagging"] = bench_tagging(data_dir, genre_model, serving_base, workers, work_dir,
                                               args.limit, not args.no_classify_check, args.repeat,
                                               args.repeats)
        if "recommendations" not in args.skip:
            payload["recommendations"] = bench_recommendations(next_track_model, args.users, args.plays_per_user,
                                                               args.tracks, workers, work_dir, args.playlog_files,
                                                               args.repeats)
        result = write_result(args.out, NAME, payload)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    tagging = payload.get("tagging", {}).get("beam", {}).get("1", {})
    recs = payload.get("recommendations", {}).get("beam", {}).get("1", {})
    print(f"{NAME}: tagging 1 worker ratio {tagging.get('ratio')}, recommendations 1 worker ratio "
          f"{recs.get('ratio')} on {short_machine(result['machine'])} -> {args.out}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
