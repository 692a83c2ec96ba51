"""A matrix-factorisation scorer on its own embedding tables: DeCA's auxiliary and noise models.

``logit(u, i) = ⟨e_u, e_i⟩ + b_u + b_i`` over one user-id and one item-id feature of the batch's KJT. The
biases are the last column of each table (so ``⟨e_u, e_i⟩`` uses the first ``dim − 1`` columns): the model
has no dense parameter at all, so everything it learns lives in an ``EmbeddingBagCollection`` that
``DistributedModelParallel`` shards like the target model's tables, updated by the fused sparse optimizer,
and DDP's graph is not touched. Table names carry a ``prefix`` so several MFs (and the target model) never
collide.

Shapes: KJT with (at least) the two features, ``stride() == B`` → logits ``[B]``.

Example::

    mf = MF("user_id", "item_id", num_users=100, num_items=50, dim=8, prefix="g_", device=torch.device("cpu"))
    kjt = KeyedJaggedTensor.from_lengths_sync(["user_id", "item_id"], torch.tensor([1, 2, 3, 4]),
                                              torch.tensor([1, 1, 1, 1]))
    mf(kjt).shape  # torch.Size([2])
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class MF(nn.Module):
    """Args:
        user_feature, item_feature: KJT keys of the user and item ids.
        num_users, num_items: their table sizes.
        dim: table width (``dim − 1`` latent factors plus the bias column; at least 2).
        prefix: table-name prefix, e.g. ``deca_g_`` → tables ``deca_g_user_id``, ``deca_g_item_id``.
        device: where to allocate (``meta`` when DistributedModelParallel materialises the shards).
    """

    def __init__(self, user_feature: str, item_feature: str, num_users: int, num_items: int, dim: int,
                 prefix: str, device: Optional[torch.device] = None) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"MF dim={dim}: needs at least one latent factor plus the bias column")
        self.user_feature, self.item_feature, self.dim = user_feature, item_feature, int(dim)
        tables = [
            EmbeddingBagConfig(name=f"{prefix}{f}", embedding_dim=self.dim, num_embeddings=int(n),
                               feature_names=[f], pooling=PoolingType.SUM)
            for f, n in ((user_feature, num_users), (item_feature, num_items))
        ]
        self.ebc = EmbeddingBagCollection(tables=tables, device=device)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        if features.stride() == 0 and isinstance(self.ebc, EmbeddingBagCollection):
            # An unsharded EBC cannot pool an empty batch (a sharded one must run: its all-to-alls are
            # collective). The stride is a host int, so this is no device sync.
            return torch.zeros(0, device=features.values().device)
        kt = self.ebc(features)
        u, i = kt[self.user_feature], kt[self.item_feature]
        return (u[:, :-1] * i[:, :-1]).sum(1) + u[:, -1] + i[:, -1]
