"""``denoisrec predict``: score a Parquet file (or a directory of them) with an exported model file.

One process, no process group: the model file holds the unsharded model (see docs/checkpoints.md). Rows
are scored in file order (files sorted by path) and written to one Parquet file with the columns

- the schema's ``sample_id`` column (e.g. ``row_id``) and ``group_id`` column when the input has them,
- ``logit`` and ``score`` (= sigmoid(logit)), float32,
- ``label`` / ``clean_label`` as in the input, when present (so the output can be evaluated directly).

The label columns are optional in the input. Ids outside a table follow the schema's policy (error or
hash), as in training.

Example::

    denoisrec predict --model-file runs/deepfm/model.pt --data data/small/test --out scores.parquet
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from denoisrec.models import load_model_file
from denoisrec.trainer.data.assemble import assemble
from denoisrec.trainer.data.block import Counters, Layout, Where, decode
from denoisrec.trainer.data.checks import DataError
from denoisrec.trainer.data.fs import DataPath
from denoisrec.trainer.data.schema import SCHEMA_FILE, SPLITS, DataSchema
from denoisrec.trainer.metrics import all_metrics


def _input_files(path: str) -> List[str]:
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, SCHEMA_FILE)):
        splits = [s for s in SPLITS if os.path.isdir(os.path.join(path, s))]
        raise DataError(f"{path}: a dataset root (it has {SCHEMA_FILE}); pass one split, e.g. "
                        f"{os.path.join(path, splits[0] if splits else 'test')}")
    return DataPath.resolve(path).parquet_files()


def _record_batches(pf: pq.ParquetFile, columns: List[str], batch_size: int) -> Iterator[Tuple[int, int, pa.Table]]:
    """``(row group, first row in it, table of one record batch)`` in file order."""
    for rg in range(pf.metadata.num_row_groups):
        first = 0
        for rb in pf.iter_batches(batch_size=batch_size, columns=columns, row_groups=[rg]):
            yield rg, first, pa.Table.from_batches([rb])
            first += rb.num_rows


@torch.no_grad()
def predict_file(model_file: str, data: str, out: str, batch_size: int = 8192,
                 device: Optional[str] = None) -> Dict[str, Any]:
    """Score every row of ``data`` into ``out``; return a report (rows, files, metrics when labelled)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loaded = load_model_file(model_file, dev)
    model = loaded.model.eval()
    schema = DataSchema.from_dict(loaded.schema)
    files = _input_files(data)
    feature_cols = schema.sparse_names + list(schema.dense)
    passthrough = [c for c in (schema.sample_id, schema.group_id, schema.label, schema.clean_label) if c]
    passthrough = list(dict.fromkeys(passthrough))
    # the features alone: the other columns are passed through, not read into the batch
    view = DataSchema.from_dict({**schema.to_dict(), "sample_id": None, "group_id": None,
                                 "clean_label": None, "is_noisy": None})
    layout = Layout(view, with_ground_truth=False)
    counters = Counters()  # ids hashed / values imputed under the schema's policies, as in training
    writer: Optional[pq.ParquetWriter] = None
    rows = 0
    scored: Dict[str, List[np.ndarray]] = {"logit": [], "label": [], "clean": [], "group": []}
    tmp = f"{out}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
        for path in files:
            pf = pq.ParquetFile(path)
            names = set(pf.schema_arrow.names)
            missing = [c for c in feature_cols if c not in names]
            if missing:
                raise DataError(f"{path}: missing feature column(s) {missing} that model "
                                f"{loaded.spec.name!r} reads")
            keep = [c for c in passthrough if c in names]
            for rg, first, table in _record_batches(pf, feature_cols + keep, batch_size):
                n = table.num_rows
                if schema.label not in names:
                    table = table.append_column(schema.label, pa.array(np.zeros(n, np.float32)))
                block = decode(table.to_batches()[0], layout, Where(path, rg, first), counters)
                batch = assemble([(block, slice(0, n))], layout)
                logits = model(batch.dense_features.to(dev), batch.sparse_features.to(dev)).squeeze(-1).float()
                logit = logits.cpu().numpy().astype(np.float32)
                cols = {c: table.column(c) for c in keep}
                cols["logit"] = pa.array(logit)
                cols["score"] = pa.array((1.0 / (1.0 + np.exp(-logit.astype(np.float64)))).astype(np.float32))
                out_table = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, out_table.schema)
                writer.write_table(out_table)
                rows += n
                scored["logit"].append(logit)
                for key, col in (("label", schema.label), ("clean", schema.clean_label), ("group", schema.group_id)):
                    if col and col in keep:
                        scored[key].append(table.column(col).to_numpy(zero_copy_only=False))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise DataError(f"{data}: no rows to score")
    os.replace(tmp, out)
    report: Dict[str, Any] = {"rows": rows, "files": len(files), "out": out, "model": loaded.spec.name,
                              "oov_hashed": counters.snapshot()["oov_hashed"]}
    logit_all = np.concatenate(scored["logit"])
    groups = np.concatenate(scored["group"]) if scored["group"] else np.zeros(rows, np.int64)
    for key, name in (("label", "observed"), ("clean", "clean")):
        if scored[key] and sum(len(a) for a in scored[key]) == rows:
            report[name] = all_metrics(np.concatenate(scored[key]), logit_all, groups)
    return report
