"""denoisrec.trainer: configuration, sharding, the training loop, evaluation and the ``denoisrec`` CLI."""
