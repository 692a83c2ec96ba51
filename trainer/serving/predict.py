r"""``denoisrec predict``: score Parquet files with an exported model file, streaming, on one or N ranks.

The model file holds the unsharded model (see docs/checkpoints.md); every rank loads all of it. Rows are
taken in file order (files sorted by path, row groups in order); rank ``r`` of ``W`` scores the rows
``[r·N/W, (r+1)·N/W)`` of that sequence (the reader's split rule), one record batch at a time, and writes
them as they come, so memory is bounded by a batch (plus 20 bytes a row, 28 with clean labels, for the
metrics of labelled input, which ``metrics=False`` turns off; the rows are gathered to rank 0 alone, see
:mod:`denoisrec.trainer.evaluation.metric_state`). Output columns:

- the ``keep_columns`` (default: the schema's ``sample_id`` column, e.g. ``row_id``), copied from the input
  with their Arrow types, so the scores join back to the input;
- ``logit`` and ``score`` (= σ(logit)), float32; ``score_calibrated`` with a calibrator
  (:mod:`denoisrec.trainer.serving.calibration`).

One process writes ``out`` (a ``.parquet`` file; any other path is a directory holding ``part-00000.parquet``);
under torchrun every rank writes ``out/part-<rank>.parquet``. The report gives the rows of every rank.
Labels are optional in the input; when it has them (``label``, ``clean_label``), AUC, GAUC, logloss, NE, ECE
and calibration are computed over all ranks' rows. Ids outside a table follow the schema's policy (error or
hash), as in training.

Example::

    denoisrec predict --model-file runs/deepfm/model.pt --data data/small/test --out scores.parquet \
        --keep-columns user_id,item_id,row_id
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from scipy.special import expit

from denoisrec.models import LoadedModel, load_model_file
from denoisrec.trainer.data.assemble import assemble
from denoisrec.trainer.data.block import Counters, Layout, Where, decode
from denoisrec.trainer.data.fs import DataPath, open_parquet
from denoisrec.trainer.data.schema import SCHEMA_FILE, SPLITS, DataSchema
from denoisrec.trainer.errors import DataError
from denoisrec.trainer.evaluation.metric_state import MetricState, Rows
from denoisrec.trainer.evaluation.metrics import all_metrics

OUTPUT_COLUMNS = ("logit", "score", "score_calibrated")


def input_files(path: str) -> List[str]:
    """The Parquet files `path` names (a file, a folder of them, or a glob); a dataset folder is refused."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, SCHEMA_FILE)):
        splits = [s for s in SPLITS if os.path.isdir(os.path.join(path, s))]
        raise DataError(
            f"{path}: a dataset root (it has {SCHEMA_FILE}); pass one split, e.g. "
            f"{os.path.join(path, splits[0] if splits else 'test')}"
        )
    return DataPath.resolve(path).parquet_files()


def parse_keep_columns(value: Optional[str], schema: DataSchema) -> List[str]:
    """``--keep-columns a,b,c`` as a list; ``None`` gives the schema's sample id column (if any)."""
    if value is None:
        return [schema.sample_id] if schema.sample_id else []
    cols = [c.strip() for c in value.split(",")] if value.strip() else []
    if any(not c for c in cols):
        raise ValueError(f"predict --keep-columns {value!r}: an empty column name (expected name,name,...)")
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise ValueError(f"predict --keep-columns: column(s) {dup} named twice")
    clash = [c for c in cols if c in OUTPUT_COLUMNS]
    if clash:
        raise ValueError(
            f"predict --keep-columns: {clash} would collide with the output column(s) {list(OUTPUT_COLUMNS)}"
        )
    return cols


@dataclass
class Piece:
    """Rows ``[start, stop)`` of row group ``row_group`` of ``path``."""

    path: str
    row_group: int
    start: int
    stop: int


def rank_share(files: Sequence[str], rank: int, world_size: int) -> Tuple[List[Piece], int]:
    """The pieces of rows ``[r·N/W, (r+1)·N/W)`` of the files' rows in order, and ``N``."""
    groups: List[Tuple[str, int, int]] = []  # (path, row group, rows)
    for path in files:
        md = parquet_file(path).metadata
        groups += [(path, g, md.row_group(g).num_rows) for g in range(md.num_row_groups)]
    total = sum(n for _, _, n in groups)
    lo, hi = rank * total // world_size, (rank + 1) * total // world_size
    pieces, at = [], 0
    for path, g, n in groups:
        a, b = max(lo, at), min(hi, at + n)
        if a < b:
            pieces.append(Piece(path, g, a - at, b - at))
        at += n
    return pieces, total


def table_batches(piece: Piece, columns: List[str], batch_size: int) -> Iterator[Tuple[int, pa.Table]]:
    """``(row of the row group, table)`` of ``piece``, at most ``batch_size`` rows each."""
    pf = parquet_file(piece.path)
    at = 0
    for rb in pf.iter_batches(batch_size=batch_size, columns=columns, row_groups=[piece.row_group]):
        a, b = max(piece.start, at), min(piece.stop, at + rb.num_rows)
        if a < b:
            yield a, pa.Table.from_batches([rb.slice(a - at, b - a)])
        at += rb.num_rows
        if at >= piece.stop:
            return


class Scorer:
    """The model of a model file with the reader's decoding (schema checks, OOV and NaN policies).

    ``scorer(table)`` → float32 logits ``[n]`` of an Arrow table holding the feature columns.
    """

    def __init__(self, loaded: LoadedModel, device: torch.device) -> None:
        self.loaded = loaded
        self.model = loaded.model.eval()
        self.device = device
        self.schema = DataSchema.from_dict(loaded.schema)
        self.features = self.schema.sparse_names + list(self.schema.dense)
        # the features alone: the other columns are passed through, not read into the batch
        view = DataSchema.from_dict(
            {**self.schema.to_dict(), "sample_id": None, "group_id": None, "clean_label": None, "is_noisy": None}
        )
        self.layout = Layout(view, with_ground_truth=False)
        self.counters = Counters()  # ids hashed / values imputed under the schema's policies, as in training

    @torch.no_grad()
    def __call__(self, table: pa.Table, where: Where) -> np.ndarray:
        n = table.num_rows
        if self.schema.label not in table.column_names:
            table = table.append_column(self.schema.label, pa.array(np.zeros(n, np.float32)))
        block = decode(table.combine_chunks().to_batches()[0], self.layout, where, self.counters)
        batch = assemble([(block, slice(0, n))], self.layout)
        logits = self.model(batch.dense_features.to(self.device), batch.sparse_features.to(self.device))
        return logits.squeeze(-1).float().cpu().numpy().astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return expit(x.astype(np.float64)).astype(np.float32)


def parquet_file(path: str) -> pq.ParquetFile:
    """Open one input file; :class:`DataError` naming it when it is truncated or not Parquet."""
    return open_parquet(DataPath.resolve(path), path)


def _out_file(out: str, rank: int, world_size: int) -> str:
    if world_size == 1 and out.endswith(".parquet"):
        return out
    return os.path.join(out, f"part-{rank:05d}.parquet")


def _check_columns(files: Sequence[str], scorer: Scorer, keep: Sequence[str]) -> set:
    """Every file has the model's features and the kept columns (one-line errors naming file and column);
    returns the columns every file has.
    """
    common: Optional[set] = None
    for path in files:
        names = parquet_file(path).schema_arrow.names
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise DataError(f"{path}: column(s) {dup} appear more than once; write each column once")
        missing = [c for c in scorer.features if c not in names]
        if missing:
            raise DataError(f"{path}: missing feature column(s) {missing} that model {scorer.loaded.spec.name!r} reads")
        absent = [c for c in keep if c not in names]
        if absent:
            raise DataError(
                f"{path}: --keep-columns {absent[0]!r} is not a column of this file (it has {', '.join(names)})"
            )
        common = set(names) if common is None else common & set(names)
    return common or set()


@torch.no_grad()
def predict_file(
    model_file: str,
    data: str,
    out: str,
    batch_size: int = 8192,
    device: Optional[str] = None,
    keep_columns: Optional[str] = None,
    calibrator: Optional[str] = None,
    metrics: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Dict[str, Any]:
    """Score rank ``rank``'s share of ``data`` into ``out`` (see the module docstring); return the report
    (rows per rank, files, metrics when labelled). With ``world_size > 1`` every rank of the initialised
    process group calls it (the row counts and metrics are gathered).
    """
    from denoisrec.trainer.serving.calibration import load_calibrator

    world = world_size
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    scorer = Scorer(load_model_file(model_file, dev), dev)
    schema = scorer.schema
    keep = parse_keep_columns(keep_columns, schema)
    platt = load_calibrator(calibrator) if calibrator else None
    files = input_files(data)
    common = _check_columns(files, scorer, keep)
    pieces, total = rank_share(files, rank, world)
    if total == 0:
        raise DataError(f"{data}: no rows to score")
    named = {"label": schema.label, "clean": schema.clean_label, "group": schema.group_id}
    label_cols: Dict[str, str] = {k: c for k, c in named.items() if c and c in common}
    targets = [name for key, name in (("label", "observed"), ("clean", "clean")) if key in label_cols]
    # labels of arbitrary input are kept as float64 (exact for any numeric column); logits are float32
    state = (
        MetricState(targets, label_dtype=torch.float64, device=dev, sync=world > 1)
        if metrics and "label" in label_cols
        else None
    )

    target = _out_file(out, rank, world)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    tmp = f"{target}.tmp"
    writer: Optional[pq.ParquetWriter] = None
    rows = 0
    read = list(dict.fromkeys(scorer.features + keep + list(label_cols.values())))
    try:
        for piece in pieces:
            for first, table in table_batches(piece, read, batch_size):
                logit = scorer(table, Where(piece.path, piece.row_group, first))
                cols = {c: table.column(c) for c in keep}
                cols["logit"] = pa.array(logit)
                cols["score"] = pa.array(_sigmoid(logit))
                if platt is not None:
                    cols["score_calibrated"] = pa.array(_sigmoid(platt.apply(logit)))
                out_table = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, out_table.schema)
                writer.write_table(out_table)
                rows += table.num_rows
                if state is not None:
                    state.update(logit, *_labels_of(table, label_cols))
        if writer is None:  # an empty share (more ranks than rows): an empty file of the same columns
            pf_schema = parquet_file(files[0]).schema_arrow
            fields = [pf_schema.field(c) for c in keep] + [
                pa.field(c, pa.float32()) for c in OUTPUT_COLUMNS if c != "score_calibrated" or platt is not None
            ]
            writer = pq.ParquetWriter(tmp, pa.schema(fields))
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, target)

    rows_per_rank = [rows]
    if world > 1:
        rows_per_rank = [None] * world  # type: ignore[list-item]
        dist.all_gather_object(rows_per_rank, rows)
    report: Dict[str, Any] = {
        "rows": int(sum(rows_per_rank)),
        "rows_per_rank": rows_per_rank,
        "rows_in_input": total,
        "files": len(files),
        "out": out,
        "model": scorer.loaded.spec.name,
        "keep_columns": keep,
        "calibrator": calibrator,
        "oov_hashed": scorer.counters.snapshot()["oov_hashed"],
    }
    if report["rows"] != total:
        raise RuntimeError(f"predict: scored {report['rows']:,} rows of {total:,}")
    if state is not None:
        report.update(state.compute(partial(_metrics, platt=platt)))
    return report


def _labels_of(table: pa.Table, label_cols: Dict[str, str]) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
    """The ``observed``/``clean`` labels and the group ids (``None`` without a group column) of ``table``."""
    col = lambda key: table.column(label_cols[key]).to_numpy(zero_copy_only=False)  # noqa: E731
    labels = {name: col(key) for key, name in (("label", "observed"), ("clean", "clean")) if key in label_cols}
    return labels, (col("group").astype(np.int64) if "group" in label_cols else None)


def _metrics(rows: Rows, platt: Any) -> Dict[str, Any]:
    """Metrics of the gathered rows against observed and (when present) clean labels, and of the calibrated
    scores with a calibrator (rank 0 computes them; :meth:`MetricState.compute` broadcasts them).
    """
    out: Dict[str, Any] = {}
    for name, y in rows.labels.items():
        out[name] = all_metrics(y, rows.logits, rows.groups)
        if platt is not None:
            out[name + "_calibrated"] = all_metrics(y, platt.apply(rows.logits.astype(np.float64)), rows.groups)
    return out
