"""Assembling a :class:`Batch` from ``(block, rows)`` parts of decoded :class:`Block` s.

``rows`` is a ``slice`` (consecutive rows) or an ``int64`` index array (the shuffle buffer's rows, gathered
here straight into the batch's buffers: one pass over the values, ``np.take`` into the output).

- The dense matrix and the 1-D columns of a batch that lies inside one block are views, no copy (1-D columns
  when the file's type already is the batch's: ``int64`` ids, ``float32`` labels).
- KJT values and lengths are one fresh buffer each, written once; keys in schema order.
- A batch lies inside one block when it is a single slice part: then the dense matrix and 1-D columns are
  views; an index part always copies (gathers).
- With ``pin=True`` every output buffer is allocated in pinned memory and written in place (no second copy
  to pin), so the host-to-GPU copy can be asynchronous.
- No parts make an empty batch (the equal-steps padding): every field with zero rows.

Example::

    batch = assemble([(block, slice(0, 128)), (other_block, slice(0, 2))], layout)
    batch.sparse_features.stride()  # 130
"""

from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.trainer.data.batch import Batch
from denoisrec.trainer.data.block import Block, Layout, list_index

# Arrow buffers are read-only; torch.from_numpy warns about it. Batches are inputs and are not written in place.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

Rows = Union[slice, np.ndarray]
Part = Tuple[Block, Rows]

_NP = {torch.float32: np.dtype(np.float32), torch.int64: np.dtype(np.int64), torch.int32: np.dtype(np.int32)}


def _alloc(shape: Sequence[int], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    if pin:
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=True)
    return torch.from_numpy(np.empty(tuple(shape), dtype=_NP[dtype]))  # cheaper than torch.empty


def count(rows: Rows) -> int:
    """How many rows ``rows`` names."""
    return rows.stop - rows.start if isinstance(rows, slice) else len(rows)


def _put(dst: np.ndarray, src: np.ndarray, rows: Rows) -> None:
    """``dst[...] = src[rows]`` along the first axis, without a temporary when the dtypes match."""
    if isinstance(rows, slice):
        dst[...] = src[rows]
    elif src.dtype == dst.dtype:
        src.take(rows, axis=0, out=dst, mode="clip")  # 'clip': no bounds-check buffering; rows are valid
    else:
        dst[...] = src.take(rows, axis=0, mode="clip")


def _lengths(off: np.ndarray, rows: Rows) -> Tuple[np.ndarray, np.ndarray]:
    """List starts and lengths of ``rows`` from Arrow offsets."""
    if isinstance(rows, slice):
        starts = off[rows.start:rows.stop]
        return starts, off[rows.start + 1:rows.stop + 1] - starts
    starts = off[rows]
    return starts, off[rows + 1] - starts


def _one_d(parts: Sequence[Part], role: str, dtype: torch.dtype, n: int, pin: bool) -> Optional[torch.Tensor]:
    if len(parts) == 1 and not pin and isinstance(parts[0][1], slice):
        v = parts[0][0].one_d[role][parts[0][1]]  # type: ignore[index]
        if v.dtype == _NP[dtype]:
            return torch.from_numpy(v)  # zero-copy view of the Arrow buffer
    out = _alloc((n,), dtype, pin)
    o, p = out.numpy(), 0
    for block, rows in parts:
        k = count(rows)
        _put(o[p:p + k], block.one_d[role], rows)  # type: ignore[arg-type]
        p += k
    return out


def assemble(parts: Sequence[Part], layout: Layout, pin: bool = False) -> Batch:
    """A :class:`Batch` of the rows ``parts`` name, in order (see the module docstring)."""
    n = sum(count(r) for _, r in parts)
    nkeys = len(layout.keys)
    lengths_t = _alloc((nkeys * n,), torch.int32, pin)
    lengths = lengths_t.numpy()
    multi_total, key = 0, 0
    lists: Dict[int, list] = {}  # multi-hot feature -> per part (starts, lengths) when gathered
    for kind, a, b in layout.segments:  # lengths: 1 for single-valued keys, offset differences for lists
        if kind == "single":
            lengths[key * n:(key + b - a) * n] = 1
            key += b - a
            continue
        seg, p = lengths[key * n:(key + 1) * n], 0
        for block, rows in parts:
            off, k = block.multi[a][0], count(rows)
            if isinstance(rows, slice):
                np.subtract(off[rows.start + 1:rows.stop + 1], off[rows.start:rows.stop], out=seg[p:p + k],
                            casting="unsafe")
                multi_total += int(off[rows.stop]) - int(off[rows.start])
            else:
                starts, lens = _lengths(off, rows)
                seg[p:p + k] = lens
                multi_total += int(lens.sum())
                lists.setdefault(a, []).append((starts, lens))
            p += k
        key += 1
    total = n * len(layout.single) + multi_total
    values_t = _alloc((total,), torch.int64, pin)
    values, pos = values_t.numpy(), 0
    for kind, a, b in layout.segments:
        if kind == "single":
            out, p = values[pos:pos + (b - a) * n].reshape(b - a, n), 0
            for block, rows in parts:
                k = count(rows)
                if isinstance(rows, slice):
                    out[:, p:p + k] = block.ids[a:b, rows]
                else:  # every column of the run in one gather
                    out[:, p:p + k] = block.ids[a:b].take(rows, axis=1, mode="clip")
                p += k
            pos += (b - a) * n
            continue
        gathered = iter(lists.get(a, []))
        for block, rows in parts:
            off, vals = block.multi[a]
            if isinstance(rows, slice):
                s, e = int(off[rows.start]), int(off[rows.stop])
                values[pos:pos + e - s] = vals[s:e]
                pos += e - s
            else:
                starts, lens = next(gathered)
                m = int(lens.sum())
                _put(values[pos:pos + m], vals, list_index(starts, lens, m))
                pos += m
    assert pos == total, "reader bug: KJT values not filled"
    kjt = KeyedJaggedTensor(keys=layout.keys, values=values_t, lengths=lengths_t, stride=n)

    if len(parts) == 1 and not pin and isinstance(parts[0][1], slice):
        dense = torch.from_numpy(parts[0][0].dense[parts[0][1]])  # a view
    else:
        dense = _alloc((n, len(layout.schema.dense)), torch.float32, pin)
        dn, p = dense.numpy(), 0
        for block, rows in parts:
            k = count(rows)
            _put(dn[p:p + k], block.dense, rows)
            p += k
    one: Dict[str, Optional[torch.Tensor]] = {}
    for role, (col, dt) in layout.one_d.items():
        if col is None:
            one[role] = None
        elif not parts:  # an empty batch (the equal-steps padding): the same fields, zero rows
            one[role] = _alloc((0,), dt, pin)
        else:
            one[role] = _one_d(parts, role, dt, n, pin)
    return Batch(
        dense_features=dense,
        sparse_features=kjt,
        labels=one["label"],  # type: ignore[arg-type]
        sample_ids=one["sample_id"],
        group_ids=one["group_id"],
        clean_labels=one["clean_label"],
        is_noisy=one["is_noisy"],
    )
