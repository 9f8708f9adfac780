"""The next-track recommender: a recurrent model over the listener's history and session (docs/recommender.md).

Read in the order the data flows: ``sessions`` reads the ``Sessions``
records, ``history`` keeps each listener's earlier plays, ``data`` turns
both into examples in the input ``layout`` (ids, boundary, slots);
``hparams`` holds the settings; ``model`` builds the core model from
``layers``, ``repeat_scores`` or ``candidates`` (with ``global_rules``);
``train`` is the Trainer's ``run_fn`` (``sampled`` and ``optimizer`` for
large catalogues, ``callbacks`` for its epoch log and validation ranking);
``serving`` exports the SavedModel's signatures; ``evaluate`` scores it
against the baselines; ``cold_start`` (with ``ridge`` and
``track_weights``) appends tracks that have audio but no plays.
"""
