"""The genre model's front ends (``genre_model.frontend``) and the features each one reads.

- ``musicnn_msd`` (default): the pretrained MSD_musicnn network, frozen,
  under a small clip head (:mod:`musicrec.models.genre.pretrained`). It reads
  its own fixed features (:data:`MUSICNN_MSD_FEATURES`: 16 kHz, 96 mel bands,
  3 s patches); ``audio.features`` must not set any.
- ``log_mel``: today's from-scratch LSTM/CRNN over the configured log-mel
  (``audio.features``, :class:`~musicrec.models.features.AudioFeatureParams`),
  for users who cannot accept the pretrained weights' licence terms (NOTICE)
  or who train on other material than music.
"""
from __future__ import annotations

from typing import Any, Mapping

from musicrec.models.features import AudioFeatureParams

FRONTENDS = ("musicnn_msd", "log_mel")
DEFAULT_FRONTEND = "musicnn_msd"

# The sample rate of the waveform a genre model's from_waveform signature takes, whatever
# rate its features use (it resamples in-graph): clients need to know no feature parameter.
WAVEFORM_SAMPLE_RATE = 22050

# The features MSD_musicnn was trained on (its extractor's settings): 16 kHz mono, 512-sample
# windows, hop 256, 96 Slaney mel bands from 0 to 8 kHz, centred frames, log10(1 + 10000 *
# mel power), non-overlapping 3 s patches of 187 frames. Defined here, in a light module, so
# that the config and the clients know them without importing Keras.
MUSICNN_MSD_FEATURES = AudioFeatureParams(
    sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, fmin=0.0, fmax=None,
    segment_seconds=3.0, segment_hop_seconds=3.0, center=True, compression="log10_1p")


def check_frontend(frontend: str) -> str:
    """``frontend`` if it is one of :data:`FRONTENDS`; else ``ValueError`` naming them."""
    if frontend not in FRONTENDS:
        raise ValueError(f"genre_model.frontend must be one of {list(FRONTENDS)}, got {frontend!r}")
    return frontend


def frontend_feature_params(frontend: str, overrides: Mapping[str, Any] | None = None
                            ) -> AudioFeatureParams:
    """The audio features ``frontend`` reads: the one source of truth for ingestion, training and clients.

    Args:
        frontend: one of :data:`FRONTENDS`.
        overrides: ``audio.features`` of the config, keys of
            :class:`AudioFeatureParams` over its defaults (``log_mel`` only).

    Raises:
        ValueError: an unknown front end or feature key, a bad value, or
            overrides given for ``musicnn_msd``, whose features are fixed.
    """
    overrides = dict(overrides or {})
    if check_frontend(frontend) == "musicnn_msd":
        if overrides:
            raise ValueError(f"the musicnn_msd front end reads fixed features; audio.features "
                             f"sets {sorted(overrides)}: remove them, or set "
                             f"genre_model.frontend: log_mel to train on other features")
        return MUSICNN_MSD_FEATURES
    return AudioFeatureParams.from_dict(overrides)


__all__ = ["FRONTENDS", "DEFAULT_FRONTEND", "MUSICNN_MSD_FEATURES", "WAVEFORM_SAMPLE_RATE", "check_frontend",
           "frontend_feature_params"]
