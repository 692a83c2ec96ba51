"""``denoisrec predict``: score a Parquet file or directory with an exported model file.

The CLI layer over :func:`denoisrec.trainer.serving.predict.predict_file` (the one implementation of batch scoring):
under torchrun (``WORLD_SIZE > 1``, e.g. ``torchrun ... -m denoisrec.trainer.serving.predict_cli ARGS``) it joins the
process group so that every rank scores its share of the rows; rank 0 prints the report.

Example::

    denoisrec predict --model-file runs/x/model.pt --data data/small/test --out runs/x/scores.parquet
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict

HELP = "score a Parquet file or directory with an exported model file"


def add_arguments(pr: argparse.ArgumentParser) -> None:
    """Model file, input, output, and what to keep beside the scores."""
    pr.add_argument("--model-file", required=True, help="<run out>/model.pt written by training")
    pr.add_argument("--data", required=True, help="a .parquet file or a directory of them (e.g. data/small/test)")
    pr.add_argument("--out", required=True, help="output Parquet file of scores")
    pr.add_argument("--batch-size", type=int, default=8192, help="rows scored per call")
    pr.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    pr.add_argument(
        "--keep-columns",
        help="input columns copied beside the scores, comma-separated, e.g. "
        "user_id,item_id,row_id (default: the schema's sample id)",
    )
    pr.add_argument(
        "--calibrator", help="calibrator.json written by denoisrec export --calibrate platt: adds score_calibrated"
    )
    pr.add_argument(
        "--no-metrics",
        action="store_true",
        help="skip the metrics of labelled input (they keep 20 bytes a row in memory, 28 with clean labels)",
    )


def run(a: argparse.Namespace) -> int:
    """Score, then print rows, columns and the metrics of labelled input (rank 0)."""
    from denoisrec.trainer.serving.predict import predict_file

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    if distributed:
        from denoisrec.trainer.distributed.env import init_distributed

        env = init_distributed(a.device or "auto")
        rank, world = env.rank, env.world_size
        a.device = a.device or str(env.device)
    try:
        r = predict_file(
            a.model_file,
            a.data,
            a.out,
            batch_size=a.batch_size,
            device=a.device,
            keep_columns=a.keep_columns,
            calibrator=a.calibrator,
            metrics=not a.no_metrics,
            rank=rank,
            world_size=world,
        )
    finally:
        if distributed:
            from denoisrec.trainer.distributed.env import shutdown

            shutdown()
    if rank != 0:
        return 0
    ranks = (
        ""
        if len(r["rows_per_rank"]) == 1
        else " (" + ", ".join(f"rank {i}: {n:,}" for i, n in enumerate(r["rows_per_rank"])) + ")"
    )
    print(f"scored {r['rows']:,} rows{ranks} from {r['files']} file(s) with {r['model']} -> {r['out']}")
    outputs = ["logit", "score"] + (["score_calibrated"] if r["calibrator"] else [])
    print(f"  columns: {', '.join(r['keep_columns'] + outputs)}")
    for name in ("observed", "observed_calibrated", "clean", "clean_calibrated"):
        if name in r:
            print(_metric_line(name, r[name]))
    if r["oov_hashed"]:
        print(f"  out-of-table ids hashed: {r['oov_hashed']}")
    return 0


def _metric_line(name: str, m: Dict[str, Any]) -> str:
    return (
        f"  labels {name:20s} AUC {m['auc']:.4f}  GAUC {m['gauc']:.4f}  logloss {m['logloss']:.4f}  "
        f"NE {m['ne']:.4f}  ECE {m['ece']:.4f}  calib {m['calibration']:.3f}"
    )
