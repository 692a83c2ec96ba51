"""denoisrec.trainer.datasets: offline tools that *write* datasets, apart from the runtime ingest that reads them.

As TorchRec keeps ``torchrec/datasets/`` apart from its training modules, these run once before training
and never in a training process. They write the on-disk format that :mod:`denoisrec.trainer.data` reads
(``<out>/{train,valid,test}/*.parquet`` + ``schema.json``) and depend on it only for the schema types.

| module | command | what it writes |
|---|---|---|
| :mod:`.synthetic` | ``denoisrec gen-data`` | synthetic noisy implicit feedback with ground truth (presets) |
| :mod:`.convert` | ``denoisrec convert`` | MovieLens-100K / DeCA rating files with noise ground truth from the rating |

Example::

    from denoisrec.trainer.datasets.synthetic import PRESETS, generate
    generate("/tmp/tiny", PRESETS["tiny"], seed=0)      # then: denoisrec train --data /tmp/tiny
"""
