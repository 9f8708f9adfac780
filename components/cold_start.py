"""ColdStart: appends tracks with audio but no plays to the next-track model.

Inputs:
- ``examples`` (Sessions): the play-log examples the next-track model trained
  on; ``vocab.txt`` says which tracks have plays. Named ``examples`` like the
  Trainer's input, so ML Metadata's "trained on" and lineage queries see
  through this stage.
- ``model`` (Model): the trained next-track model (its ``checkpoint/``).
- ``genre_model`` (Model): the trained genre model (its ``serving/`` SavedModel
  gives the audio ``embedding``).
- ``audio_examples`` (AudioExamples): every split's segments, averaged per track.

Output ``model`` (Model), laid out like a trained next-track model so the
Evaluator, the Pusher and warm starting take it as is: ``serving/`` (the
extended SavedModel), ``checkpoint/`` (weights and the extended vocabulary),
``cold_start/summary.json`` (warm and cold tracks, regressor fit) and, when
``eval_plays`` is given, ``cold_start/holdout_cases.jsonl``, which the
Evaluator scores (see ``musicrec.models.next_track.cold_start``).

After a final fit that did not refit (its candidate was not blessed) there is
no model to extend: the stage writes only ``cold_start.json`` saying so, and
the Pusher, which reads the same evaluation, pushes nothing.
"""
from __future__ import annotations

from typing import Any, Mapping

from musicrec.components.base import Artifact, ComponentSpec, given_params, write_json_atomic
from musicrec.components.model_kinds import split_files

AUDIO_SPLITS = ("train", "eval", "test")
RECORD_FILENAME = "cold_start.json"


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact],
        params: Mapping[str, Any]) -> None:
    """Fits the audio → track-embedding regressor and exports the extended model.

    Params: ``ridge_alphas`` (list of penalties, optional), ``warm_norm``
    (rescale predictions to the warm tracks' mean length), ``eval_plays``
    (held-out plays CSV, or ``None``), ``batch_size`` (tracks per genre-model
    call); left out, ``models.next_track.cold_start``'s defaults apply.
    """
    if inputs["model"].properties.get("refitted") is False:
        # A final fit of a candidate that was not blessed: nothing was trained, nothing to extend.
        write_json_atomic(outputs["model"].path(RECORD_FILENAME), {
            "extended": False, "model": inputs["model"].uri,
            "reason": "the final fit did not refit (the candidate was not blessed): nothing to extend"})
        outputs["model"].properties.update(kind="next_track", cold_start=False, refitted=False)
        return
    from musicrec.models.next_track import cold_start
    from musicrec.models.next_track.data import read_vocabulary

    audio_files = [f for split in AUDIO_SPLITS for f in split_files(inputs["audio_examples"], split)]
    if not audio_files:
        raise ValueError(f"no audio shards under {inputs['audio_examples'].uri}")
    track_ids, vectors = cold_start.audio_embeddings(
        inputs["genre_model"].path("serving"), audio_files, **given_params(params, batch_size=int))
    result = cold_start.extend_with_cold_tracks(
        inputs["model"].uri, read_vocabulary(inputs["examples"].uri), track_ids, vectors,
        params.get("ridge_alphas") or cold_start.DEFAULT_ALPHAS, **given_params(params, warm_norm=bool))
    out = outputs["model"]
    cold_start.export_extended(result, out.uri)
    n_cases = None
    if params.get("eval_plays"):
        n_cases = cold_start.write_holdout_cases(params["eval_plays"], out.uri,
                                                 result.hparams.max_prefix_length)
    fits = result.summary()["regressors"]
    out.properties.update(
        kind="next_track", cold_start=True, vocab_size=len(result.vocabulary),
        warm_tracks=len(result.warm_tracks), cold_tracks=len(result.cold_tracks),
        regressor_loo_r2=min(fit["loo_r2"] for fit in fits.values()),
        **({"holdout_cases": n_cases} if n_cases is not None else {}),
        **{key: value for key, value in inputs["model"].properties.items()
           if key in ("train_metrics", "warm_start")})


SPEC = ComponentSpec(
    name="cold_start",
    inputs={"examples": "Sessions", "model": "Model", "genre_model": "Model",
            "audio_examples": "AudioExamples"},
    outputs={"model": "Model"}, executor=run)

