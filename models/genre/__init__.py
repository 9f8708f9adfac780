"""The genre classifier: LSTM and CRNN over log-mel segments (docs/genre.md).

``hparams`` holds the classifier's settings, ``model`` builds the Keras
models from the layers of ``layers`` and the loss of ``losses``, ``data``
reads ``AudioExamples``, ``augment`` adds SpecAugment to the training input,
``train`` is the Trainer's ``run_fn`` (``train_pretrained`` with the
musicnn front end; ``training_log`` writes both runs' record),
``signatures`` and ``waveform`` export
``serving_default`` and ``from_waveform``, ``evaluate`` scores a SavedModel
and the classical baseline, ``plots`` draws the PNGs.
"""
