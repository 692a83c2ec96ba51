"""denoisrec.trainer.bench: the ``denoisrec bench`` commands (throughput, quality, peers, ingest).

Each bench is a module here with two functions, listed in :data:`denoisrec.trainer.bench.cli.BENCHES`:

- ``add_arguments(parser)``: its command-line options;
- ``run(args) -> int``: run it and write its report (JSON + Markdown + PNG, see :mod:`.report`).
"""
