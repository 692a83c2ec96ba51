"""A denoiser's own embedding tables, looked up by itself or by the target model's collection.

DeCA's MF heads (:class:`~denoisrec.denoisers.mf.MFHeads`) and the observation model's context tower
(:class:`~denoisrec.denoisers.observation.ContextTower`) score samples from embedding tables of their own.
Looked up in their own ``EmbeddingBagCollection`` they cost a second sharded module per step (a second input
and output all-to-all forward and backward). The trainer may instead fold the tables into the target model's
collection before sharding (:mod:`denoisrec.trainer.distributed.shared_lookup`; the denoiser declares the part in
``DenoiserNeeds.shared_tables``): :meth:`SharedTables.release_tables` hands them over, and from then on the
collection's pooled output of each step arrives by :meth:`SharedTables.receive`. :meth:`SharedTables.lookup`
reads this part's tables the same way on both paths, so the part's arithmetic is unchanged.

Output keys: TorchRec names a table's pooled output by its feature, or ``<feature>@<table>`` when several
tables of the collection read that feature (the MF tables read ``user_id`` beside the model's ``t_user_id``),
so :meth:`SharedTables.lookup` accepts either.

Shapes: a KJT with stride ``B`` (holding the tables' features) → ``{table: [B, D_table]}``.

Example::

    part = SharedTables(EmbeddingBagCollection(tables=[EmbeddingBagConfig(
        name="x_user_id", embedding_dim=4, num_embeddings=10, feature_names=["user_id"])]), "example")
    kjt = KeyedJaggedTensor.from_lengths_sync(["user_id"], torch.tensor([1, 2]), torch.tensor([1, 1]))
    part.lookup(kjt)["x_user_id"].shape   # torch.Size([2, 4]): its own lookup
    ebc = part.release_tables()            # folded: the owner of ``ebc`` looks it up ...
    part.receive(ebc(kjt))                 # ... and hands the pooled output over
    part.lookup(kjt)["x_user_id"].shape   # torch.Size([2, 4])
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class SharedTables(nn.Module):
    """A part of a denoiser that reads its own tables, from its own collection or (folded) from a shared one.

    Args:
        ebc: the part's tables (``meta`` under DMP: sharded by the planner like the model's).
        what: what the tables hold, for the error when no pooled output arrived (e.g. ``"context"``).
    """

    def __init__(self, ebc: EmbeddingBagCollection, what: str) -> None:
        super().__init__()
        self.what = what
        self.ebc: Optional[EmbeddingBagCollection] = ebc
        # (table, its output key when its feature is shared, when not, width), fixed at construction
        self._keys: List[Tuple[str, str, str, int]] = [
            (c.name, f"{f}@{c.name}", f, c.embedding_dim) for c in ebc.embedding_bag_configs() for f in c.feature_names
        ]
        self.pooled: Optional[Any] = None  # folded: the shared collection's output for this step (receive)

    def table_names(self) -> List[str]:
        """This part's table names."""
        return [k[0] for k in self._keys]

    @property
    def folded(self) -> bool:
        """Whether the tables were handed over to a shared collection."""
        return self.ebc is None

    def release_tables(self) -> EmbeddingBagCollection:
        """Hand the tables over to a shared collection and return them (once)."""
        if self.ebc is None:
            raise RuntimeError(f"{type(self).__name__}.release_tables: the tables were already handed over")
        ebc, self.ebc = self.ebc, None
        return ebc

    def receive(self, pooled: Any) -> None:
        """Take this step's shared lookup output.

        A ``KeyedTensor``, or TorchRec's awaitable of one, holding at least this part's tables.
        """
        self.pooled = pooled

    def held_zero(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        """A 0-dim zero in the graph of this step's lookup and of the part's dense parameters.

        For a step that holds the part's output at a constant: its tables and parameters still get a zero gradient
        (as ``0 · output`` would give them), without computing the output. Folded, the tables need no term: the
        shared output's one split (its backward) fills the columns nobody read with zeros.
        """
        pooled = self.lookup(kjt)
        dense = [p for n, p in self.named_parameters() if not n.startswith("ebc.")]
        terms = ([] if self.folded else [t.sum() for t in pooled.values()]) + [p.sum() for p in dense]
        if not terms:
            return torch.zeros((), device=kjt.values().device)
        return 0.0 * torch.stack(terms).sum()

    def lookup(self, kjt: KeyedJaggedTensor) -> Dict[str, torch.Tensor]:
        """``{table: [B, D]}`` pooled embeddings of this step, from the received output once folded."""
        if self.ebc is None:
            if self.pooled is None:
                raise RuntimeError(
                    f"{type(self).__name__}: its tables live in the model's EmbeddingBagCollection, but no pooled "
                    f"{self.what} embeddings were received this step (call the model before the denoiser)"
                )
            kt, self.pooled = self.pooled.to_dict(), None
        elif kjt.stride() == 0 and isinstance(self.ebc, EmbeddingBagCollection):
            # An unsharded EBC cannot pool an empty batch (a sharded one must run: its all-to-alls are
            # collective). The stride is a host int, so this is no device sync.
            dev = kjt.values().device
            return {t: torch.zeros(0, dim, device=dev) for t, _, _, dim in self._keys}
        else:
            kt = self.ebc(kjt).to_dict()
        return {t: kt[shared] if shared in kt else kt[own] for t, shared, own, _ in self._keys}
