"""What the reader and ``denoisrec validate`` check, and the two repair policies (OOV hashing, imputation).

Footer-level checks (:func:`schema_problems`): every column the schema names exists with a usable type.
Value-level checks (run on every decoded block, never trusting Parquet statistics, which a hostile or buggy
writer can get wrong): nulls in id and label columns, labels outside {0, 1}, ids outside their table, NaN /
±inf / null dense values. Each returns a :class:`Finding` (how many values, the first one and where), so the
reader can raise on the first and ``validate`` can count them all.

Example::

    f = out_of_table(np.array([3, 7, -1]), 5)     # Finding(count=2, first=1, value=7)
    hash_ids(np.array([7, -1]), 5)                # splitmix64(id) mod 5, as int64
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from denoisrec.trainer.data.schema import DataSchema

# DataError: re-exported (`as`) for imports written before errors.py existed; new code imports it from there
from denoisrec.trainer.errors import DataError as DataError
from denoisrec.trainer.errors import oneline


@dataclass(frozen=True)
class Finding:
    """``count`` bad values in an array; the first at index ``first`` with value ``value``."""

    count: int
    first: int
    value: Any


def _first(mask: np.ndarray, values: np.ndarray) -> Finding:
    idx = np.flatnonzero(mask)
    return Finding(int(idx.size), int(idx[0]), values[idx[0]].item())


def out_of_table(values: np.ndarray, num_embeddings: int) -> Optional[Finding]:
    """Ids outside ``[0, num_embeddings)``. One min and one max pass when all ids are fine."""
    if values.size == 0:
        return None
    if values.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got {values.dtype}")
    lo, hi = values.min(), values.max()
    if lo >= 0 and hi < num_embeddings:
        return None
    return _first((values < 0) | (values >= num_embeddings), values)


def not_binary(values: np.ndarray) -> Optional[Finding]:
    """Label values other than 0 and 1 (NaN included)."""
    if values.size == 0 or values.dtype == np.bool_:
        return None
    if values.dtype.kind in "iu":
        lo, hi = values.min(), values.max()
        if lo >= 0 and hi <= 1:
            return None
    bad = (values != 0) & (values != 1)
    return _first(bad, values) if bad.any() else None


def not_binary_or_null(values: np.ndarray) -> Optional[Finding]:
    """Trusted-label values other than 0, 1 and NaN (a null, after the cast to float)."""
    if values.size == 0:
        return None
    bad = (values != 0) & (values != 1) & ~np.isnan(values)
    return _first(bad, values) if bad.any() else None


def not_finite(values: np.ndarray) -> Optional[Finding]:
    """NaN or ±inf (nulls arrive here as NaN)."""
    if values.size == 0 or values.dtype.kind in "iub":
        return None
    ok = np.isfinite(values)
    if ok.all():
        return None
    return _first(~ok, values)


# splitmix64's finaliser (Steele, Lea & Flood 2014): a bijective mix of the 64 bits, so nearby new ids
# (e.g. N, N+1, ... past the table) spread over the whole table instead of piling onto ids 0, 1, ...
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 of each value's 64-bit two's-complement pattern, as ``uint64``."""
    z = values.astype(np.int64).view(np.uint64) + _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash_ids(values: np.ndarray, num_embeddings: int) -> np.ndarray:
    """``splitmix64(id) mod num_embeddings`` for every value (``int64``)."""
    with np.errstate(over="ignore"):
        return (splitmix64(values) % np.uint64(num_embeddings)).astype(np.int64)


def hash_out_of_table(values: np.ndarray, num_embeddings: int, finding: Finding) -> np.ndarray:
    """``values`` (as int64, a copy) with the ids outside the table replaced by :func:`hash_ids`."""
    out = values.astype(np.int64, copy=True)
    bad = (out < 0) | (out >= num_embeddings)
    out[bad] = hash_ids(out[bad], num_embeddings)
    return out


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_int_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _is_label(t: pa.DataType) -> bool:
    return _is_number(t) or pa.types.is_boolean(t)


def expected_types(schema: DataSchema, with_ground_truth: bool) -> Dict[str, Tuple[str, Callable[[pa.DataType], bool]]]:
    """Column → (description of the expected type, predicate on a pyarrow type)."""
    out: Dict[str, Tuple[str, Callable[[pa.DataType], bool]]] = {}
    for f in schema.sparse:
        what, ok = ("list<integer> (multi-hot sparse", _is_int_list) if f.multi_hot else ("integer (sparse id", _is_int)
        out[f.name] = (f"{what}{', context feature' if f.role == 'context' else ''})", ok)
    for c in schema.dense:
        out[c] = ("float or integer (dense)", _is_number)
    out[schema.label] = ("0/1 integer, bool or float (label)", _is_label)
    for id_col in (schema.group_id, schema.sample_id):
        if id_col is not None:
            out.setdefault(id_col, ("integer (id)", _is_int))
    if with_ground_truth and schema.ground_truth:
        out[schema.clean_label] = ("0/1 integer, bool or float (clean label)", _is_label)  # type: ignore[index]
        out[schema.is_noisy] = ("0/1 integer, bool or float (noise flag)", _is_label)  # type: ignore[index]
    if with_ground_truth and schema.trusted_label is not None:
        out[schema.trusted_label] = ("0/1 integer, bool or float, null where none (trusted label)", _is_label)
    return out


def schema_problems(arrow_schema: pa.Schema, schema: DataSchema, with_ground_truth: bool) -> List[str]:
    """Missing or mistyped columns of one file, as messages (empty when the file fits the schema)."""
    problems = []
    for col, (what, ok) in expected_types(schema, with_ground_truth).items():
        idx = arrow_schema.get_field_index(col)
        if idx < 0 and arrow_schema.names.count(col) > 1:
            problems.append(f"column {col!r} appears {arrow_schema.names.count(col)} times; write each column once")
        elif idx < 0:
            problems.append(f"missing column {col!r} (expected {what})")
        elif not ok(arrow_schema.field(idx).type):
            problems.append(f"column {col!r} has type {arrow_schema.field(idx).type}, expected {what}")
    return problems


def must_be_whole(schema: DataSchema, with_ground_truth: bool) -> List[str]:
    """Columns in which a null is an error whatever the policies: ids, labels, the group and sample ids."""
    cols = [f.name for f in schema.sparse] + [schema.label]
    cols += [c for c in (schema.group_id, schema.sample_id) if c is not None]
    if with_ground_truth and schema.ground_truth:
        cols += [schema.clean_label, schema.is_noisy]  # type: ignore[list-item]
    return list(dict.fromkeys(cols))


def label_columns(schema: DataSchema, with_ground_truth: bool) -> List[str]:
    cols = [schema.label]
    if with_ground_truth and schema.ground_truth:
        cols += [schema.clean_label, schema.is_noisy]  # type: ignore[list-item]
    return cols


def diagnose_row_group(pf: pq.ParquetFile, index: int, columns: List[str]) -> str:
    """Which columns of a row group fail to decode (for the message of a corrupt row group)."""
    bad = []
    for c in columns:
        try:
            pf.read_row_group(index, columns=[c], use_threads=False)
        except Exception as e:  # noqa: BLE001 - we are collecting the failures
            bad.append(f"{c!r} ({type(e).__name__}: {oneline(e)})")
    return "; failing column(s): " + ", ".join(bad) if bad else ""
