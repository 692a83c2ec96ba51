"""denoisrec.trainer.data: runtime ingest: the dataset schema, ``Batch``, the streaming Parquet reader, validation.

The offline tools that write datasets (synthetic generator, converters) live in :mod:`denoisrec.trainer.datasets`.
"""
