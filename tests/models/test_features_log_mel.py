"""The log-mel front end agrees with librosa's melspectrogram, and Beam workers never import librosa."""
import glob
import os
import subprocess
import sys
import textwrap

import librosa
import numpy as np
import pytest

from musicrec.models import audio_files, features

PARAMS = features.AudioFeatureParams()
# Natural-log units: librosa's STFT runs in double precision, ours in single;
# mel powers then differ by ~1e-6 relative, far below what a model can see.
TOLERANCE = 1e-4


def _librosa_log_mel(waveform: np.ndarray, params: features.AudioFeatureParams) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=waveform, sr=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length,
        window="hann", center=False, power=2.0, n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax)
    return np.log(power + params.log_floor).T


def _tones_and_noise(seconds: float, seed: int = 0, rate: int = 22050) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    clip = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 3520 * t)
    return (clip + 0.05 * rng.standard_normal(t.shape[0])).astype(np.float32)


@pytest.mark.parametrize("params", [
    PARAMS,
    features.AudioFeatureParams(n_fft=1024, hop_length=256, n_mels=40, fmin=0.0, fmax=8000.0),
])
def test_log_mel_matches_librosa_on_synthetic_audio(params):
    # 20.3 s: 873 frames at hop 512, so the 256-frame blocks end on a partial block.
    waveform = _tones_and_noise(20.3, seed=3)
    ours = features.log_mel(waveform, params)
    reference = _librosa_log_mel(waveform, params)
    assert ours.dtype == np.float32 and ours.shape == reference.shape
    assert ours.shape[0] == 1 + (waveform.shape[0] - params.n_fft) // params.hop_length
    assert np.max(np.abs(ours - reference)) < TOLERANCE


def test_log_mel_matches_librosa_on_silence_and_edges():
    silence = np.zeros(PARAMS.n_fft * 3, dtype=np.float32)
    np.testing.assert_allclose(features.log_mel(silence, PARAMS), _librosa_log_mel(silence, PARAMS),
                               atol=TOLERANCE)
    assert features.log_mel(silence[:PARAMS.n_fft - 1], PARAMS).shape == (0, PARAMS.n_mels)
    one_window = _tones_and_noise(PARAMS.n_fft / PARAMS.sample_rate)[:PARAMS.n_fft]
    assert features.log_mel(one_window, PARAMS).shape == (1, PARAMS.n_mels)


def test_log_mel_matches_librosa_on_real_clips(shared_data):
    paths = sorted(glob.glob(os.path.join(shared_data, "gtzan_dev", "*", "*")))[:3]
    assert paths, "gtzan_dev holds no clips"
    for path in paths:
        waveform = audio_files.load_audio(path, PARAMS)
        assert np.max(np.abs(features.log_mel(waveform, PARAMS) - _librosa_log_mel(waveform, PARAMS))) < TOLERANCE


def test_given_filterbank_is_the_cached_one():
    waveform = _tones_and_noise(4.0, seed=5)
    given = features.log_mel(waveform, PARAMS, features.mel_filterbank(PARAMS))
    np.testing.assert_array_equal(given, features.log_mel(waveform, PARAMS))


def test_beam_decode_step_never_imports_librosa_in_a_worker(tmp_path):
    """The decode DoFn, pickled as Beam ships it, decodes a file in a fresh process without librosa."""
    from apache_beam.internal import pickler

    from musicrec.components import audio_decoding

    rate = 22050
    import soundfile as sf

    path = str(tmp_path / "tone.wav")
    sf.write(path, _tones_and_noise(7.0), rate)
    shipped = tmp_path / "dofn.bin"
    shipped.write_bytes(pickler.dumps(audio_decoding.DecodeTrack(PARAMS)))
    script = textwrap.dedent(f"""
        import json, sys
        from apache_beam.internal import pickler
        from musicrec.components import audio_sources
        dofn = pickler.loads(open({str(shipped)!r}, "rb").read())
        dofn.setup()
        outputs = list(dofn.process(audio_sources.AudioSource({path!r}, "rock", "tone")))
        print(json.dumps({{"librosa": "librosa" in sys.modules, "segments": int(outputs[0][1].shape[0])}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"librosa": False, "segments": 2}
