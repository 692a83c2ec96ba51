"""Assembling a :class:`Batch` from ``(block, slice)`` parts of decoded :class:`Block` s.

- The dense matrix and the 1-D columns of a batch that lies inside one block are views, no copy (1-D columns
  when the file's type already is the batch's: ``int64`` ids, ``float32`` labels).
- KJT values and lengths are one fresh buffer each, written once; keys in schema order.
- With ``pin=True`` every output buffer is allocated in pinned memory and written in place (no second copy
  to pin), so the host-to-GPU copy can be asynchronous.
- No parts make an empty batch (the equal-steps padding): every field with zero rows.

Example::

    batch = assemble([(block, slice(0, 128)), (other_block, slice(0, 2))], layout)
    batch.sparse_features.stride()  # 130
"""

from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.trainer.data.batch import Batch
from denoisrec.trainer.data.block import Block, Layout

# Arrow buffers are read-only; torch.from_numpy warns about it. Batches are inputs and are not written in place.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

Part = Tuple[Block, slice]

_NP = {torch.float32: np.dtype(np.float32), torch.int64: np.dtype(np.int64), torch.int32: np.dtype(np.int32)}


# The batch's per-row columns: the layout's role (:attr:`Layout.one_d`) -> the :class:`Batch` field.
BATCH_FIELDS = {
    "label": "labels",
    "sample_id": "sample_ids",
    "group_id": "group_ids",
    "clean_label": "clean_labels",
    "is_noisy": "is_noisy",
    "trusted_label": "trusted_labels",
}


def pinned_empty(shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in page-locked host memory (needs CUDA)."""
    return torch.empty(shape, dtype=dtype, pin_memory=True)


def alloc_out(shape: Sequence[int], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    """A fresh output buffer of a batch: in pinned memory with ``pin``, so it is written in place once and
    the host-to-device copy (``batch.to(device, non_blocking=True)``) can be asynchronous.
    """
    if pin:
        return pinned_empty(tuple(shape), dtype)
    return torch.from_numpy(np.empty(tuple(shape), dtype=_NP[dtype]))  # cheaper than torch.empty


def make_batch(dense: torch.Tensor, kjt: KeyedJaggedTensor, one_d: Dict[str, Optional[torch.Tensor]]) -> Batch:
    """The :class:`Batch` of assembled columns; ``one_d`` maps roles to columns (:data:`BATCH_FIELDS`)."""
    return Batch(
        dense_features=dense,
        sparse_features=kjt,
        **{BATCH_FIELDS[role]: t for role, t in one_d.items()},  # type: ignore[arg-type]
    )


def _one_d(parts: Sequence[Part], role: str, dtype: torch.dtype, n: int, pin: bool) -> Optional[torch.Tensor]:
    if len(parts) == 1 and not pin:
        v = parts[0][0].one_d[role][parts[0][1]]  # type: ignore[index]
        if v.dtype == _NP[dtype]:
            return torch.from_numpy(v)  # zero-copy view of the Arrow buffer
    out = alloc_out((n,), dtype, pin)
    o, p = out.numpy(), 0
    for block, rows in parts:
        k = rows.stop - rows.start
        o[p : p + k] = block.one_d[role][rows]  # type: ignore[index]
        p += k
    return out


def assemble(parts: Sequence[Part], layout: Layout, pin: bool = False) -> Batch:
    """A :class:`Batch` of the rows ``parts`` name, in order (see the module docstring)."""
    n = sum(r.stop - r.start for _, r in parts)
    nkeys = len(layout.keys)
    lengths_t = alloc_out((nkeys * n,), torch.int32, pin)
    lengths = lengths_t.numpy()
    multi_total, key = 0, 0
    for kind, a, b in layout.segments:  # lengths: 1 for single-valued keys, offset differences for lists
        if kind == "single":
            lengths[key * n : (key + b - a) * n] = 1
            key += b - a
            continue
        seg, p = lengths[key * n : (key + 1) * n], 0
        for block, rows in parts:
            off, k = block.multi[a][0], rows.stop - rows.start
            np.subtract(
                off[rows.start + 1 : rows.stop + 1], off[rows.start : rows.stop], out=seg[p : p + k], casting="unsafe"
            )
            multi_total += int(off[rows.stop]) - int(off[rows.start])
            p += k
        key += 1
    total = n * len(layout.single) + multi_total
    values_t = alloc_out((total,), torch.int64, pin)
    values, pos = values_t.numpy(), 0
    for kind, a, b in layout.segments:
        if kind == "single":
            out, p = values[pos : pos + (b - a) * n].reshape(b - a, n), 0
            for block, rows in parts:
                k = rows.stop - rows.start
                out[:, p : p + k] = block.ids[a:b, rows]
                p += k
            pos += (b - a) * n
            continue
        for block, rows in parts:
            off, vals = block.multi[a]
            s, e = int(off[rows.start]), int(off[rows.stop])
            values[pos : pos + e - s] = vals[s:e]
            pos += e - s
    assert pos == total, "reader bug: KJT values not filled"
    kjt = KeyedJaggedTensor(keys=layout.keys, values=values_t, lengths=lengths_t, stride=n)

    if len(parts) == 1 and not pin:
        dense = torch.from_numpy(parts[0][0].dense[parts[0][1]])  # a view
    else:
        dense = alloc_out((n, len(layout.schema.dense)), torch.float32, pin)
        dn, p = dense.numpy(), 0
        for block, rows in parts:
            k = rows.stop - rows.start
            dn[p : p + k] = block.dense[rows]
            p += k
    one: Dict[str, Optional[torch.Tensor]] = {}
    for role, (col, dt) in layout.one_d.items():
        if col is None:
            one[role] = None
        elif not parts:  # an empty batch (the equal-steps padding): the same fields, zero rows
            one[role] = alloc_out((0,), dt, pin)
        else:
            one[role] = _one_d(parts, role, dt, n, pin)
    return make_batch(dense, kjt, one)
