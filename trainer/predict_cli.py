r"""The ``denoisrec predict`` and ``denoisrec export`` commands: argument handling and printed reports.

``predict`` under torchrun (``WORLD_SIZE > 1``) joins the process group and scores its share of the rows
(:mod:`denoisrec.trainer.predict`); ``export`` writes a serving artefact (:mod:`denoisrec.trainer.serving`).

Example::

    torchrun --nproc_per_node 2 -m denoisrec.trainer.predict_cli --model-file runs/x/model.pt \
        --data data/small/test --out runs/x/scores --keep-columns user_id,item_id,row_id
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict


def _metric_line(name: str, m: Dict[str, Any]) -> str:
    return (f"  labels {name:20s} AUC {m['auc']:.4f}  GAUC {m['gauc']:.4f}  logloss {m['logloss']:.4f}  "
            f"NE {m['ne']:.4f}  ECE {m['ece']:.4f}  calib {m['calibration']:.3f}")


def run_predict(a: argparse.Namespace) -> int:
    from denoisrec.trainer.predict import predict_file

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    if distributed:
        from denoisrec.trainer.dist import init_distributed

        env = init_distributed(a.device or "auto")
        rank, world = env.rank, env.world_size
        a.device = a.device or str(env.device)
    try:
        r = predict_file(a.model_file, a.data, a.out, batch_size=a.batch_size, device=a.device,
                         keep_columns=a.keep_columns, calibrator=a.calibrator, metrics=not a.no_metrics,
                         rank=rank, world_size=world)
    finally:
        if distributed:
            from denoisrec.trainer.dist import shutdown

            shutdown()
    if rank != 0:
        return 0
    ranks = "" if len(r["rows_per_rank"]) == 1 else \
        " (" + ", ".join(f"rank {i}: {n:,}" for i, n in enumerate(r["rows_per_rank"])) + ")"
    print(f"scored {r['rows']:,} rows{ranks} from {r['files']} file(s) with {r['model']} -> {r['out']}")
    outputs = ["logit", "score"] + (["score_calibrated"] if r["calibrator"] else [])
    print(f"  columns: {', '.join(r['keep_columns'] + outputs)}")
    for name in ("observed", "observed_calibrated", "clean", "clean_calibrated"):
        if name in r:
            print(_metric_line(name, r[name]))
    if r["oov_hashed"]:
        print(f"  out-of-table ids hashed: {r['oov_hashed']}")
    return 0


def run_export(a: argparse.Namespace) -> int:
    from denoisrec.trainer.serving import export_serving

    r = export_serving(a.run, a.format, out=a.out, calibrate=a.calibrate, valid=a.valid)
    print(f"exported {r['model']} as {r['format']} -> {r['artefact']} ({r['artefact_bytes'] / 2**20:,.1f} MiB; "
          f"tables {r['table_bytes'] / 2**20:,.1f} MiB); load {r['load_seconds']:.2f}s; "
          f"probe max |diff| {r['probe_max_abs_diff']:.2g}")
    c = r.get("calibration")
    if c:
        print(f"  Platt calibrator a={c['a']:.4f} b={c['b']:+.4f} on {c['rows']:,} rows of {c['valid']}: "
              f"valid logloss {c['valid_logloss_before']:.4f} -> {c['valid_logloss_after']:.4f}")
    print(f"  inputs and outputs: {r['spec']}")
    return 0


if __name__ == "__main__":  # ``python -m denoisrec.trainer.predict_cli ARGS`` is ``denoisrec predict ARGS``
    from denoisrec.trainer.cli import main

    sys.exit(main(["predict", *sys.argv[1:]]))
