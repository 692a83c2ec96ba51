"""``denoisrec predict``: score a Parquet file or directory with an exported model file.

Under torchrun (``WORLD_SIZE > 1``) every rank scores its share of the rows; the work and the printed report
are :func:`denoisrec.trainer.predict_cli.run_predict`.

Example::

    denoisrec predict --model-file runs/x/model.pt --data data/small/test --out runs/x/scores.parquet
"""

from __future__ import annotations

import argparse

HELP = "score a Parquet file or directory with an exported model file"


def add_arguments(pr: argparse.ArgumentParser) -> None:
    """Model file, input, output, and what to keep beside the scores."""
    pr.add_argument("--model-file", required=True, help="<run out>/model.pt written by training")
    pr.add_argument("--data", required=True, help="a .parquet file or a directory of them (e.g. data/small/test)")
    pr.add_argument("--out", required=True, help="output Parquet file of scores")
    pr.add_argument("--batch-size", type=int, default=8192)
    pr.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    pr.add_argument("--keep-columns", help="input columns copied beside the scores, comma-separated, e.g. "
                                           "user_id,item_id,row_id (default: the schema's sample id)")
    pr.add_argument("--calibrator", help="calibrator.json written by denoisrec export --calibrate platt: adds "
                                         "score_calibrated")
    pr.add_argument("--no-metrics", action="store_true", help="skip the metrics of labelled input (they keep "
                                                              "13 bytes a row in memory)")


def run(a: argparse.Namespace) -> int:
    """Score, then print rows, columns and the metrics of labelled input (rank 0)."""
    from denoisrec.trainer.predict_cli import run_predict

    return run_predict(a)
