"""The first-order weights of FM, DeepFM and Wide&Deep in the embedding lookup ("fused" layout).

The linear term ``Σ_f w_f[id_f]`` (:class:`~denoisrec.models.layers.FirstOrder`) needs one weight per id. Two
layouts hold it (the model option ``first_order``):

- ``"fused"``: every table ``t_<feature>`` is :data:`EXTRA` columns wider, ``[N, D + 4]``; columns
  ``[0, D)`` hold the embedding ``v[id]`` and ``[D, D + 4)`` the id's first-order row, whose mean is
  ``w_f[id]``. One collection, so one input distribution, one pooled output and one fused backward + sparse
  update per step instead of two.
- ``"table"`` (default): the first-order rows in their own collection (tables ``w_<feature>`` of width 4).

The math is the same: a sum-pooled bag of ids pools each column independently, so the pooled fused row is
``[Σ v[id] ; Σ w-row[id]]``, exactly the two old lookups side by side. The first-order columns start at zero
(:class:`TailZeroUniform`, honoured by DMP when it materialises a shard), the embedding columns uniform as
before. Under an element-wise sparse optimizer (``adagrad``, ``adam``, ``sgd``) training is the same too;
``rowwise_adagrad`` keeps one accumulator per row, which the fused layout shares between ``v[id]`` and
``w[id]`` (a different optimizer there, not only a faster one).

Not the default: on this CPU machine it measured no faster than two lookups in one process (table/fused
0.97–1.01 in CPU time per Criteo-like step) and 7% slower in wall time on 2 gloo ranks (benchmarks/README.md,
"One lookup for DeepFM's first-order weights"): the split of the pooled rows costs what the second lookup did.

Shapes: pooled fused fields ``[B, F, D + 4]`` → ``(fields [B, F, D], Σ_f w_f [B, 1])`` (:func:`split_fields`).

Example::

    ebc = embedding_bag_collection([("user_id", 10), ("item_id", 5)], 8, device=torch.device("cpu"))
    fused = fused_collection(ebc)                       # tables t_user_id, t_item_id of width 12
    fused.embedding_bags["t_user_id"].weight[:, 8:].abs().sum()   # tensor(0.): first-order rows start at zero
    fields, w = split_fields(torch.randn(2, 2, 12), 8)  # [2, 2, 8] and [2, 1]
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import torch
from torchrec import EmbeddingBagCollection

from denoisrec.models.embeddings import MIN_WIDTH, ebc_device

EXTRA = MIN_WIDTH  # first-order columns per fused row (FBGEMM needs widths divisible by 4)
LAYOUTS = ("fused", "table")
# "<path>.embedding_bags.<prefix>t_<feature>.weight" / "...w_<feature>...": prefix "" or "prior_" (a model copy)
_TABLE_KEY = re.compile(r"^(?:.*\.)?embedding_bags\.(?P<prefix>(?:[^.]*?_)?)(?P<kind>[tw])_(?P<feature>[^.]+)\.weight$")


def check_layout(first_order: str) -> bool:
    """``True`` for the fused layout; a one-line error naming the option unless it is one of :data:`LAYOUTS`."""
    if first_order not in LAYOUTS:
        raise ValueError(f"model option first_order={first_order!r}: expected one of {list(LAYOUTS)}")
    return first_order == "fused"


class TailZeroUniform:
    """A table's ``init_fn``: uniform in ``[low, high]``, then zero in the columns from ``width`` on.

    Works on a plain tensor (an unsharded table, a rank's table-wise or data-parallel copy; a rank without a
    shard of the table passes an empty placeholder, left alone) and on a ``ShardedTensor`` (DMP calls ``init_fn``
    on the sharded weight after materialising it: each local shard is zeroed where its columns,
    ``shard_offsets[1]`` on, reach ``width``; a column-wise plan splits the row into shards).
    """

    def __init__(self, low: float, high: float, width: int) -> None:
        self.low, self.high, self.width = float(low), float(high), int(width)

    def _fill(self, t: torch.Tensor, col0: int) -> None:
        t.uniform_(self.low, self.high)
        t[:, max(self.width - col0, 0) :].zero_()

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        """Fill ``weight`` in place (see the class docstring) and return it."""
        with torch.no_grad():
            shards = getattr(weight, "local_shards", None)
            if shards is None:
                if weight.dim() == 2:  # not a sharded table's empty placeholder on a rank without a shard
                    self._fill(weight, 0)
            else:
                for s in shards():
                    self._fill(s.tensor, int(s.metadata.shard_offsets[1]))
        return weight


def fused_collection(ebc: EmbeddingBagCollection) -> EmbeddingBagCollection:
    """``ebc``'s tables, each :data:`EXTRA` columns wider for the first-order rows (which start at zero).

    The embedding columns start as ``ebc``'s tables were configured (``weight_init_min/max``); on a real device
    they are copied from ``ebc`` so a model built over trained tables keeps them.
    """
    configs = []
    for c in ebc.embedding_bag_configs():
        init = TailZeroUniform(c.get_weight_init_min(), c.get_weight_init_max(), c.embedding_dim)
        configs.append(replace(c, embedding_dim=c.embedding_dim + EXTRA, init_fn=init))
    device = ebc_device(ebc)
    fused = EmbeddingBagCollection(tables=configs, device=device)
    if device.type != "meta":
        with torch.no_grad():
            for c in ebc.embedding_bag_configs():
                fused.embedding_bags[c.name].weight[:, : c.embedding_dim].copy_(ebc.embedding_bags[c.name].weight)
    return fused


class _SplitFields(torch.autograd.Function):
    """:func:`split_fields` with a backward that writes both gradients into one new ``[B, F, D + 4]`` tensor.

    Two slices of the pooled rows would each allocate a zero-filled gradient of the full width and add them
    (``aten::fill_`` + ``copy_`` + ``add`` over ``B·F·(D + 4)`` values every step): measured, that cost more
    than the second lookup it replaces.
    """

    @staticmethod
    def forward(ctx: Any, pooled: torch.Tensor, dim: int) -> Tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        ctx.dim, ctx.shape = dim, pooled.shape
        fields = pooled[..., :dim].contiguous()  # [B, F, D]: the FM's and the DNN's input
        weights = pooled[..., dim:].sum(dim=(1, 2)).unsqueeze(1) / EXTRA  # [B, 1]: Σ_f mean(w-row_f)
        return fields, weights

    @staticmethod
    def backward(ctx: Any, g_fields: Optional[torch.Tensor], g_weights: Optional[torch.Tensor]) -> Any:  # type: ignore[override]
        grad = g_fields.new_empty(ctx.shape) if g_fields is not None else g_weights.new_empty(ctx.shape)  # type: ignore[union-attr]
        dim = ctx.dim
        if g_fields is None:
            grad[..., :dim].zero_()
        else:
            grad[..., :dim].copy_(g_fields)
        if g_weights is None:
            grad[..., dim:].zero_()
        else:
            grad[..., dim:].copy_((g_weights / EXTRA).unsqueeze(2).expand(-1, ctx.shape[1], EXTRA))
        return grad, None


def split_fields(pooled: torch.Tensor, dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(fields [B, F, D], Σ_f w_f [B, 1])`` from pooled fused rows ``[B, F, D + 4]``.

    ``w_f`` is the mean of feature ``f``'s 4 first-order columns (Rendle's ``w_f[id]``, summed over a bag's ids).
    """
    fields, weights = _SplitFields.apply(pooled, dim)
    return fields, weights


def fuse_state(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` with every ``<prefix>w_<feature>`` table moved into its ``<prefix>t_<feature>`` table's last columns.

    ``[N, D] + [N, 4] → [N, D + 4]``: weights of the ``"table"`` layout for a model of the ``"fused"`` layout.
    Every other key (bias, dense weights, MLPs) is the same in both layouts.

    Example::

        fuse_state({"a.embedding_bags.t_x.weight": torch.ones(3, 8), "b.embedding_bags.w_x.weight": torch.zeros(3, 4)})
        # {"a.embedding_bags.t_x.weight": [3, 12] tensor}
    """
    rows = {}
    for key in state:
        m = _TABLE_KEY.match(key)
        if m and m["kind"] == "w":
            rows[(m["prefix"], m["feature"])] = key
    out = dict(state)
    for key in state:
        m = _TABLE_KEY.match(key)
        if m and m["kind"] == "t" and (m["prefix"], m["feature"]) in rows:
            w_key = rows.pop((m["prefix"], m["feature"]))
            out[key] = torch.cat([state[key], state[w_key]], dim=1)
            del out[w_key]
    return out


def has_table_layout(keys: Iterable[str]) -> bool:
    """Whether state-dict ``keys`` hold separate first-order tables (``...embedding_bags.<prefix>w_<feature>...``)."""
    return any((m := _TABLE_KEY.match(k)) is not None and m["kind"] == "w" for k in keys)
