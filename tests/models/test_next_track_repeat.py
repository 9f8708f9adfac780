"""RepeatScores: the repeat term's window and the successor evidence, against hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.repeat_scores import RepeatScores

N_IDS = 12
UNITS = 3
# history_length 6 | boundary | session of 3 (left-padded): 10 slots.
HISTORY = [4, 7, 5, 8, 9, 4]
SESSION = [0, 4, 5]  # anchor 0 (the last play) is 5, anchor 1 is 4
IDS = np.array([HISTORY + [-1] + SESSION], dtype=np.int64)


def layer(successor_lags: int, repeat_history_length: int, **options) -> RepeatScores:
    repeat = RepeatScores(6, successor_lags, successor_anchors=2, repeat_history_length=repeat_history_length,
                          **options)
    repeat.build([(None, N_IDS), IDS.shape, (None, UNITS)])
    return repeat


def evidence_table(repeat: RepeatScores) -> np.ndarray:
    """The layer's sparse successor evidence as a dense ``[N_IDS, channels]`` table."""
    ids = np.maximum(IDS, 0).astype(np.int32)
    rows, tracks, channels, values = (np.asarray(part) for part in
                                      repeat._successor_evidence(ids, (IDS > 0).astype(np.float32), N_IDS))
    assert set(rows) == {0}
    assert len(set(zip(tracks, channels))) == len(tracks), "every (row, track, channel) once"
    table = np.zeros((N_IDS, repeat.channels), np.float32)
    np.add.at(table, (tracks, channels), values)
    return table


def test_successor_evidence_weighs_one_over_anchor_rank_times_lag():
    evidence = evidence_table(layer(successor_lags=2, repeat_history_length=6))
    expected = np.zeros((N_IDS, 2), np.float32)
    # Anchor 0 (track 5) was in slot 2: 8 followed it (lag 1), then 9 (lag 2).
    expected[8, 0], expected[9, 0] = 1.0, 0.5
    # Anchor 1 (track 4), weight 1/2, was in slot 0: 7 (lag 1), then 5 (lag 2). Its match in
    # slot 5 is followed by the boundary and padding, which gain nothing; its own slot is skipped.
    expected[7, 1], expected[5, 1] = 0.5, 0.25
    np.testing.assert_allclose(evidence, expected, atol=1e-6)


def test_recent_matches_and_predecessors_get_channels_of_their_own():
    # Channels: anchor group + 2 × (match in the last 5 slots) + 4 × (predecessor).
    evidence = evidence_table(layer(successor_lags=1, repeat_history_length=6, successor_recent_slots=5,
                                    predecessor_lags=1))
    expected = np.zeros((N_IDS, 8), np.float32)
    # Anchor 0 (5) matched in slot 2 (old): 8 followed, 7 preceded.
    expected[8, 0], expected[7, 4] = 1.0, 1.0
    # Anchor 1 (4), weight 1/2, matched in slot 0 (old): 7 followed, nothing before; and in slot 5
    # (recent: slots 5..9 are the last 5): the boundary followed (nothing), 9 preceded.
    expected[7, 1] = 0.5
    expected[9, 1 + 2 + 4] = 0.5
    np.testing.assert_allclose(evidence, expected, atol=1e-6)


def test_repeat_term_reads_only_the_recent_history_and_successors_enter_through_the_gates():
    repeat = layer(successor_lags=2, repeat_history_length=2)
    repeat.bucket_bias.assign(np.ones(repeat.bucket_bias.shape, np.float32))
    gate_bias = np.array([0.3, 0.7, 2.0, 1.5], np.float32)
    repeat.gate_bias.assign(gate_bias)
    state = np.random.default_rng(0).normal(size=(1, UNITS)).astype(np.float32)  # kernels are 0
    logits = np.asarray(repeat([np.zeros((1, N_IDS), np.float32), IDS, state]))[0]
    expected = np.zeros(N_IDS, np.float32)
    # Repeat: one per play in the last 2 history slots (9, 4) and the session (4, 5); 7 and 8
    # are older than repeat_history_length.
    expected[9] += 1.0
    expected[4] += 2.0
    expected[5] += 1.0
    evidence = {8: (1.0, 0.0), 9: (0.5, 0.0), 7: (0.0, 0.5), 5: (0.0, 0.25)}
    for track, channels in evidence.items():
        for channel, value in enumerate(channels):
            expected[track] += gate_bias[channel] * value + gate_bias[2 + channel] * np.log1p(value)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_without_successor_lags_only_the_repeat_term_remains():
    repeat = layer(successor_lags=0, repeat_history_length=6)
    assert not hasattr(repeat, "gate_kernel")
    repeat.bucket_bias.assign(np.ones(repeat.bucket_bias.shape, np.float32))
    logits = np.asarray(repeat([np.zeros((1, N_IDS), np.float32), IDS, np.zeros((1, UNITS), np.float32)]))[0]
    assert logits[4] == pytest.approx(3.0) and logits[5] == pytest.approx(2.0)
    assert logits[7] == pytest.approx(1.0) and logits[0] == 0.0


def test_hparams_reject_bad_successor_settings():
    with pytest.raises(ValueError, match="successor"):
        NextTrackHParams(successor_anchors=0)
    with pytest.raises(ValueError, match="successor"):
        NextTrackHParams(successor_lags=-1)
    with pytest.raises(ValueError, match="predecessor_lags"):
        NextTrackHParams(predecessor_lags=-2)


def test_rows_of_a_batch_score_as_they_do_alone():
    """Scatter indices carry the row: batching requests (as the server does) changes no row's logits."""
    repeat = layer(successor_lags=2, repeat_history_length=4)
    rng = np.random.default_rng(1)
    repeat.kernel.assign(rng.normal(size=repeat.kernel.shape).astype(np.float32))
    repeat.gate_kernel.assign(rng.normal(size=repeat.gate_kernel.shape).astype(np.float32))
    other = np.array([[0, 0, 3, 6, 3, 2, -1, 6, 3, 2]], dtype=np.int64)
    batch_ids = np.concatenate([IDS, other, IDS])
    state = rng.normal(size=(3, UNITS)).astype(np.float32)
    base = rng.normal(size=(3, N_IDS)).astype(np.float32)
    together = np.asarray(repeat([base, batch_ids, state]))
    for row in range(3):
        alone = np.asarray(repeat([base[row:row + 1], batch_ids[row:row + 1], state[row:row + 1]]))[0]
        np.testing.assert_allclose(together[row], alone, rtol=1e-5, atol=1e-5)
    assert not np.allclose(together[0], together[1])
