"""In-batch negatives with logQ correction, for catalogues too large for a full softmax.

Each example's positives are scored against the other targets of the batch
(sampled in proportion to their training frequency), so the logit of
candidate ``j`` is corrected by ``- log q(j)``, ``q`` the unigram frequency
(Yi et al., "Sampling-bias-corrected neural modeling", RecSys 2019). A
candidate equal to the example's own target elsewhere in the batch (an
accidental hit) is masked. The trainer shares every weight with the core
model, so training it trains the model that is exported.
"""
from __future__ import annotations

import keras
import numpy as np

from musicrec.models.next_track.model import NextTrackHParams, output_embeddings

MASKED_LOGIT = -1e9


class InBatchSoftmaxLoss(keras.layers.Layer):
    """Per-example cross-entropy ``[batch]`` of each target against the batch's other targets."""

    def __init__(self, core_model: keras.Model, hparams: NextTrackHParams, log_q: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        # Closures, so that the core model's weights are not tracked here a second time.
        self._table = lambda: output_embeddings(core_model, hparams)
        self._bias = lambda: core_model.get_layer("next_track_logits").bias
        self._repeat = core_model.get_layer("repeat_scores").call if hparams.repeat_scores else None
        self.log_q = keras.ops.convert_to_tensor(log_q.astype(np.float32))

    def call(self, inputs):
        ops = keras.ops
        vector, state, ids, targets = inputs
        targets = ops.cast(targets, "int32")
        candidates = ops.take(self._table(), targets, axis=0)  # [b, d]
        logits = ops.matmul(vector, ops.transpose(candidates))  # [b, b]
        logits = logits + (ops.take(self._bias(), targets) - ops.take(self.log_q, targets))[None, :]
        if self._repeat is not None:
            # The repeat layer's bonus over the batch's candidates: score every id (cheap:
            # O(batch × slots) scatter into zeros), then read the candidates' columns.
            n_ids = ops.shape(self._table())[0]
            bonus = self._repeat([ops.zeros((ops.shape(targets)[0], n_ids)), ids, state])
            logits = logits + ops.take(bonus, targets, axis=1)
        batch = ops.shape(targets)[0]
        diagonal = ops.eye(batch, dtype="bool")
        accidental = ops.logical_and(ops.equal(targets[:, None], targets[None, :]), ops.logical_not(diagonal))
        logits = ops.where(accidental, ops.cast(MASKED_LOGIT, logits.dtype), logits)
        labels = ops.arange(batch, dtype="int32")
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def build_in_batch_trainer(core_model: keras.Model, hparams: NextTrackHParams,
                           target_counts: np.ndarray) -> keras.Model:
    """A model ``(ids [b, input_length], targets [b]) → loss [b]`` sharing ``core_model``'s weights.

    Args:
        core_model: :func:`model.build_model`'s model.
        hparams: its hyperparameters.
        target_counts: ``[n_ids]`` training target counts, for ``q``.

    Compile it with ``loss=lambda _, loss: loss`` and feed ``((inputs, targets), targets)``.
    """
    counts = np.maximum(np.asarray(target_counts, dtype=np.float64), 1.0)
    log_q = np.log(counts / counts.sum())
    state = core_model.get_layer("session_dropout").output
    vector = core_model.get_layer("session_projection").output if hparams.tied_embeddings else state
    targets = keras.Input(shape=(), dtype="int32", name="targets")
    loss = InBatchSoftmaxLoss(core_model, hparams, log_q, name="in_batch_softmax")(
        [vector, state, core_model.input, targets])
    return keras.Model([core_model.input, targets], loss, name="next_track_in_batch")
