"""Matrix-factorisation scorers on their own embedding tables: DeCA's auxiliary and noise models.

Each head ``m`` scores ``logit_m(u, i) = ⟨e_u, e_i⟩ + b_u + b_i`` from its own user table and item table.
The biases are the last column of each table (``⟨e_u, e_i⟩`` uses the first ``dim − 1`` columns), so a
head has no dense parameter: everything it learns lives in embedding tables that
``DistributedModelParallel`` shards like the target model's, updated by the fused sparse optimizer, and
DDP's graph is untouched.

All heads share ONE ``EmbeddingBagCollection`` (tables ``<prefix><head>_<feature>``, each reading the same
user / item feature), so the heads cost one input and one output all-to-all together instead of one pair
each. In training the trainer folds that collection into the target model's
(:class:`~denoisrec.denoisers.shared_tables.SharedTables`, :mod:`denoisrec.trainer.distributed.shared_lookup`): then the
heads cost no all-to-all of their own, and read the model's pooled output of the step.

Shapes: KJT with (at least) the two features, ``stride() == B`` → ``{head: logits [B]}``.

Example::

    mf = MFHeads(["g", "h"], "user_id", "item_id", num_users=100, num_items=50, dim=8, prefix="deca_",
                 device=torch.device("cpu"))
    kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id"], torch.tensor([1, 2, 3, 4]),
                                              torch.tensor([1, 1, 1, 1]))
    mf(kjt)["h"].shape  # torch.Size([2])
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers.shared_tables import SharedTables


class MFHeads(SharedTables):
    """Matrix factorisations (one per head) on user and item tables of one embedding collection.

    Args:
        heads: names of the MF models, e.g. ``["g", "h", "h_prime"]``.
        user_feature, item_feature: KJT keys of the user and item ids.
        num_users, num_items: their table sizes.
        dim: table width (``dim − 1`` latent factors plus the bias column; at least 2).
        prefix: table-name prefix, e.g. ``deca_`` → tables ``deca_g_user_id``, ``deca_g_item_id``, ...
        device: where to allocate (``meta`` when DistributedModelParallel materialises the shards).
    """

    def __init__(
        self,
        heads: Sequence[str],
        user_feature: str,
        item_feature: str,
        num_users: int,
        num_items: int,
        dim: int,
        prefix: str,
        device: Optional[torch.device] = None,
    ) -> None:
        if dim < 2:
            raise ValueError(f"MF dim={dim}: needs at least one latent factor plus the bias column")
        heads = list(heads)
        table: Dict[str, Dict[str, str]] = {
            h: {f: f"{prefix}{h}_{f}" for f in (user_feature, item_feature)} for h in heads
        }
        tables = [
            EmbeddingBagConfig(
                name=table[h][f],
                embedding_dim=int(dim),
                num_embeddings=int(n),
                feature_names=[f],
                pooling=PoolingType.SUM,
            )
            for h in heads
            for f, n in ((user_feature, num_users), (item_feature, num_items))
        ]
        super().__init__(EmbeddingBagCollection(tables=tables, device=device), "MF")
        self.heads, self.table = heads, table
        self.user_feature, self.item_feature, self.dim = user_feature, item_feature, int(dim)
        self._masks: Dict[Tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def forward(self, features: KeyedJaggedTensor) -> Dict[str, torch.Tensor]:
        """``{head: [B] logit}``: each head's user-item embedding product plus its biases."""
        pooled = self.lookup(features)
        out = {}
        for h in self.heads:
            u, i = pooled[self.table[h][self.user_feature]], pooled[self.table[h][self.item_feature]]
            # ⟨u[:-1], i[:-1]⟩ as a product of whole rows with the bias column zeroed (contiguous, cheaper than
            # the product of the two column slices)
            out[h] = (u * (i * self._factors_mask(i))).sum(1) + u[:, -1] + i[:, -1]
        return out

    def _factors_mask(self, like: torch.Tensor) -> torch.Tensor:
        """``[dim]`` ones with a 0 in the bias column, on ``like``'s device and dtype (made once)."""
        key = (like.device, like.dtype)
        if key not in self._masks:
            mask = torch.ones(self.dim, device=like.device, dtype=like.dtype)
            mask[-1] = 0
            self._masks[key] = mask
        return self._masks[key]
