"""The served next-track model against strong simple baselines on real Spotify listeners' future plays.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_next_track_spotify.py ../shared/data --group check
    .venv/bin/python benchmarks/bench_next_track_spotify.py ../shared/data --group tuning \\
        --hparams '{"epochs": 2}' --work-dir /tmp/nt-tuning     # a tuning experiment

Protocol (what a user of the pipeline gets, on listeners the design never saw):

1. Listeners: ``--group check`` or ``tuning`` from ``spotify_history`` and
   ``spotify_history_large`` (the split of ``listener_split.py``, fixed before
   any run), or ``original``: the 6 listeners of ``spotify_history``.
2. Each listener's plays (read by the project's readers) are cut into
   sessions (the config's inactivity gap); a session that starts in the last
   ``--future-fraction`` (20 %) of that listener's time span is *future*.
   Every other play is the pipeline's input.
3. ``musicrec run --playlogs`` on that input, with the default config (or
   ``--config``/``--hparams`` for tuning experiments): ingestion, training,
   evaluation, blessing, push. The pushed version is the model under test.
4. Cases: every position ``i >= 1`` of every future session with >= 2 plays;
   prefix ``plays[:i]``, target ``plays[i]``; targets never played in the
   pipeline's sessions are skipped and counted.
5. The pushed model's ``recommend`` signature (the graph a server runs) gets
   the prefix and the listener's plays strictly before the session (history:
   every earlier play, as a serving client would send it). The baselines fit
   on the pipeline's sessions (every split: the data the pushed model saw)
   and get the same prefix and history.
6. Full-catalogue ranking (the pushed vocabulary), pessimistic ties;
   HR/MRR/NDCG@20, coverage, popularity bias; per listener, HR@20 and MRR@20
   of the model against the best baseline (per metric, over the group).

The ratio is model ÷ best baseline per metric, both on the same cases in the
same process. Writes ``benchmarks/results/next_track_spotify_<group>.json``.
Also reported: wall time and peak RSS of the pipeline run, plays per second.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import resource
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import short_machine, timed, write_result  # noqa: E402  (run as a script)
from listener_split import CHECK_LISTENERS, TUNING_LISTENERS, check_assignment  # noqa: E402

NAME = "next_track_spotify"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("spotify_history", "spotify_history_large")
METRICS = ("hr@20", "mrr@20", "ndcg@20")
WIN_METRICS = ("hr@20", "mrr@20")

log = logging.getLogger(NAME)


def listener_folders(data_root: str, group: str) -> list[str]:
    """Paths of the group's listener folders under ``data_root``."""
    folders = {}
    for dataset in DATASETS:
        root = os.path.join(data_root, dataset)
        if os.path.isdir(root):
            for name in sorted(os.listdir(root)):
                if name.startswith("listener_") and os.path.isdir(os.path.join(root, name)):
                    folders[name] = (dataset, os.path.join(root, name))
    check_assignment(folders)
    wanted = {"check": CHECK_LISTENERS, "tuning": TUNING_LISTENERS}.get(group)
    chosen = [path for name, (dataset, path) in sorted(folders.items())
              if (dataset == "spotify_history" if group == "original" else name in wanted)]
    if not chosen:
        raise SystemExit(f"no listener folders of group {group!r} under {data_root}")
    return chosen


def read_plays(folders: list[str]):
    """Every play of the folders, by listener, with the dead-letter count (the project's readers)."""
    from musicrec.components.playlog_readers import list_playlog_files, read_playlog
    from musicrec.components.playlog_rows import Play

    by_user: dict[str, list] = {}
    dead_letters = 0
    files, _ = list_playlog_files(folders)
    for path, fmt in files:
        for record in read_playlog(path, fmt):
            if isinstance(record, Play):
                by_user.setdefault(record.user_id, []).append(record)
            else:
                dead_letters += 1
    return by_user, dead_letters


def cut_future(by_user: dict, gap_seconds: int, future_fraction: float):
    """Per listener: sessions in time order, split at the cut.

    Returns ``(past_plays, future_sessions, every_session)``: the plays of
    sessions that start before the cut (the pipeline's input), the future
    sessions, and every session of every length (the listeners' histories),
    the last two as ``SessionRecord`` s.
    """
    from musicrec.components.playlog_sessions import split_into_sessions
    from musicrec.models.next_track.sessions import SessionRecord

    past, future, everything = [], [], []
    for user, plays in sorted(by_user.items()):
        sessions = split_into_sessions(plays, gap_seconds)
        first, last = sessions[0][0].timestamp, sessions[-1][-1].timestamp
        cut = last - future_fraction * (last - first)
        for session in sessions:
            record = SessionRecord(user, f"{user}-{session[0].timestamp}", session[0].timestamp,
                                   tuple(play.track_key for play in session),
                                   tuple(play.timestamp for play in session))
            everything.append(record)
            (future.append(record) if session[0].timestamp > cut else past.extend(session))
    return past, future, everything


def write_input(plays, path: str) -> None:
    """The pipeline's input as a generic play-log CSV (keys as track ids, so every key survives)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "timestamp", "track_id", "ms_played"])
        for play in plays:
            writer.writerow([play.user_id, play.timestamp, play.track_key,
                             "" if play.ms_played is None else play.ms_played])


def run_pipeline(config: dict, workdir: str, input_csv: str):
    from musicrec.pipeline.pipeline import create_pipeline
    from musicrec.pipeline.runner import LocalRunner

    return LocalRunner().run(create_pipeline(config, workdir, playlog_paths=[input_csv]))


def served_model(result) -> tuple[str | None, str, dict]:
    """``(pushed version dir or None, the model dir scored, the pusher's record)``.

    When the run pushed nothing (not blessed), the trainer's candidate is
    scored and the result says so.
    """
    pushed = next((artifact for artifact in result.artifacts.values()
                   if artifact.type_name == "PushedModel"), None)
    record = dict(pushed.properties) if pushed else {}
    if record.get("pushed"):
        return record["path"], record["path"], record
    return None, first_fit_model_dir(result), record


def first_fit_model_dir(result) -> str:
    """The trainer's model (before any final fit), as a serving SavedModel dir."""
    return os.path.join(result.artifact("trainer_next_track", "model").uri, "serving")


def sessions_artifact(result):
    return next(artifact for artifact in result.artifacts.values() if artifact.type_name == "Sessions")


def listener_wins(report: dict, best: dict) -> dict:
    """Per listener and metric: the model against the group's best baseline on that listener's cases."""
    wins = {metric: 0 for metric in WIN_METRICS}
    rows = {}
    for user, by_name in sorted(report["per_user"].items()):
        row = {"cases": by_name["model"]["cases"]}
        for metric in WIN_METRICS:
            model, baseline = by_name["model"][metric], by_name[best[metric]][metric]
            row[metric] = {"model": model, best[metric]: baseline}
            wins[metric] += model > baseline
        rows[user] = row
    return {"listeners": len(rows), "wins": wins, "per_listener": rows}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", help="folder holding spotify_history and spotify_history_large")
    parser.add_argument("--group", choices=("tuning", "check", "original"), required=True)
    parser.add_argument("--config", help="pipeline config YAML (default: the defaults)")
    parser.add_argument("--hparams", default="{}", help="JSON overrides of next_track_model.hparams")
    parser.add_argument("--future-fraction", type=float, default=0.2)
    parser.add_argument("--work-dir", help="keeps the input and the pipeline's workdir (default: a temp dir)")
    parser.add_argument("--out", help="result JSON (default: benchmarks/results/next_track_spotify_<group>.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)

    from musicrec.models.next_track.data import read_vocabulary
    from musicrec.models.next_track.evaluate import (SavedModelRecommender, _trained_history_length,
                                                     evaluate_sessions)
    from musicrec.components.model_kinds import split_files
    from musicrec.models.next_track.history import ListeningHistory
    from musicrec.models.next_track.sessions import read_session_records
    from musicrec.pipeline.config import load_config, make_config

    config = load_config(args.config)
    hparams = json.loads(args.hparams)
    if hparams:
        config = make_config({**config, "next_track_model": {
            **config["next_track_model"], "hparams": {**config["next_track_model"]["hparams"], **hparams}}})
    work_dir = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="bench-next-track-"))
    folders = listener_folders(args.data_root, args.group)
    with timed() as read_time:
        by_user, dead_letters = read_plays(folders)
        past, future, everything = cut_future(by_user, config["playlogs"]["session_gap_seconds"],
                                              args.future_fraction)
        input_csv = os.path.join(work_dir, "input", "plays.csv")
        write_input(past, input_csv)
    log.info("%d listeners: %d plays before the cut, %d future sessions", len(by_user), len(past), len(future))

    rss_before = peak_rss_gib()
    with timed() as pipeline_time:
        result = run_pipeline(config, os.path.join(work_dir, "pipeline"), input_csv)
    from musicrec.pipeline.runner import read_run_record

    stages = {node: entry.get("seconds") for node, entry in
              read_run_record(result.run_dir)["components"].items()}
    pushed, model_dir, push_record = served_model(result)
    sessions = sessions_artifact(result)
    fit_sessions = read_session_records(
        [path for split in ("train", "eval", "test") for path in split_files(sessions, split)])
    with timed() as eval_time:
        report = evaluate_sessions(
            SavedModelRecommender(model_dir, 20), future, fit_sessions, ListeningHistory(everything),
            read_vocabulary(sessions.uri), history_plays=_trained_history_length(model_dir), per_user=True)

    first_fit = None
    if pushed and "final_fit_next_track" in result.states:
        # The same cases for the model before its final fit (the final_fit default is chosen on this).
        with timed() as first_fit_time:
            first_fit = evaluate_sessions(
                SavedModelRecommender(first_fit_model_dir(result), 20), future, fit_sessions,
                ListeningHistory(everything), read_vocabulary(sessions.uri),
                history_plays=_trained_history_length(model_dir), baselines=[])["model"]
        log.info("first fit model scored in %.0f s", first_fit_time.seconds)

    best = {metric: max(report["baselines"], key=lambda name: report["baselines"][name][metric])
            for metric in METRICS}
    ratios = {metric: report["model"][metric] / max(report["baselines"][best[metric]][metric], 1e-12)
              for metric in METRICS}
    payload = {
        "group": args.group, "listeners": sorted(by_user), "future_fraction": args.future_fraction,
        "config": args.config, "hparams_overrides": hparams, "pushed": pushed is not None,
        "push": {key: push_record.get(key) for key in ("pushed", "version", "reason")},
        "model": report["model"], "model_before_final_fit": first_fit, "baselines": report["baselines"],
        "best_baseline": best, "ratio_model_over_best_baseline": ratios,
        "listener_wins": listener_wins(report, best),
        "n_predictions": report["n_predictions"], "skipped_targets": report["skipped_targets"],
        "catalogue_size": report["catalogue_size"],
        "plays_before_cut": len(past), "future_sessions": len(future), "dead_letters": dead_letters,
        "pipeline_seconds": pipeline_time.seconds, "stage_seconds": stages,
        "plays_per_second": len(past) / pipeline_time.seconds,
        "peak_rss_gib": peak_rss_gib(), "peak_rss_before_pipeline_gib": rss_before,
        "read_seconds": read_time.seconds, "evaluate_seconds": eval_time.seconds,
        "pipeline_evaluation": _pipeline_evaluation(result),
        "protocol": report["protocol"],
    }
    out = args.out or os.path.join(REPO_ROOT, "benchmarks", "results", f"{NAME}_{args.group}.json")
    written = write_result(out, NAME, payload)
    wins = payload["listener_wins"]
    print(f"{NAME} [{args.group}, {len(by_user)} listeners]: model HR@20 {report['model']['hr@20']:.3f} vs "
          f"{best['hr@20']} {report['baselines'][best['hr@20']]['hr@20']:.3f} (x{ratios['hr@20']:.2f}), "
          f"MRR@20 {report['model']['mrr@20']:.3f} vs {best['mrr@20']} "
          f"{report['baselines'][best['mrr@20']]['mrr@20']:.3f} (x{ratios['mrr@20']:.2f}); wins on "
          f"{wins['wins']['hr@20']}/{wins['listeners']} listeners (HR), {wins['wins']['mrr@20']} (MRR); "
          f"{report['n_predictions']} cases; {'pushed' if pushed else 'NOT pushed'}"
          + (f" (before final fit: HR@20 {first_fit['hr@20']:.3f}, MRR@20 {first_fit['mrr@20']:.3f})"
             if first_fit else "") + f"; pipeline "
          f"{pipeline_time.seconds:.0f} s for {len(past)} plays, peak RSS {payload['peak_rss_gib']:.1f} GiB "
          f"on {short_machine(written['machine'])}")
    return 0


def _pipeline_evaluation(result) -> dict:
    """The pipeline's own evaluator verdict (its test split, before the cut)."""
    for artifact in result.artifacts.values():
        if artifact.type_name == "ModelEvaluation":
            with open(artifact.path("metrics.json"), encoding="utf-8") as handle:
                report = json.load(handle)
            return {"blessing": report["blessing"], "model": report["metrics"]["model"],
                    "best_baseline": report["metrics"]["best_baseline"]}
    return {}


if __name__ == "__main__":
    sys.exit(main())
