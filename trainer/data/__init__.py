"""denoisrec.trainer.data: the dataset schema, ``Batch``, the streaming Parquet reader, the generator."""
