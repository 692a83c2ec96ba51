"""Building blocks the models share, beyond what TorchRec offers.

- :func:`mlp`: TorchRec's ``MLP`` with dropout after each hidden activation (16-bit masks,
  :class:`~denoisrec.models.dropout.Dropout16`).
- :class:`FMInteraction`: the factorization machine's pairwise term (Rendle, 2010).
- :class:`DenseFields`: dense features as FM fields (``x_j · v_j``).
- :class:`FirstOrder`: bias + first-order weights of sparse ids and dense values (the "wide"/linear part).

Example::

    fields = torch.randn(2, 3, 4)                       # B=2 rows, F=3 fields of width D=4
    FMInteraction()(fields).shape                        # torch.Size([2, 1])
    mlp(12, [8, 1], dropout=0.2, activation_on_last=False)(fields.flatten(1)).shape  # torch.Size([2, 1])
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor
from torchrec.modules.mlp import MLP

from denoisrec.models.dropout import Dropout16
from denoisrec.models.embeddings import linear_bag_collection


def check_sizes(option: str, sizes: Sequence[int], allow_empty: bool = True) -> list:
    """``sizes`` as a list; a one-line error naming ``option`` unless all are positive ints."""
    sizes = list(sizes)
    if (not sizes and not allow_empty) or any((not isinstance(s, int)) or s <= 0 for s in sizes):
        raise ValueError(f"model option {option}={sizes}: expected a list of positive layer sizes")
    return sizes


def check_dropout(dropout: float) -> float:
    """``dropout`` as a float; a one-line error unless it lies in ``[0, 1)``."""
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"model option dropout={dropout}: must lie in [0, 1)")
    return float(dropout)


def mlp(in_size: int, layer_sizes: Sequence[int], dropout: float = 0.0, activation_on_last: bool = True) -> MLP:
    """TorchRec's ``MLP`` (Linear + ReLU per layer) with ``Dropout16(dropout)`` after every ReLU.

    Args:
        in_size: input width.
        layer_sizes: output width of each layer.
        dropout: drop probability after each activation (0 disables it).
        activation_on_last: apply ReLU (and dropout) after the last layer too; ``False`` for a logit layer.
    """
    p = check_dropout(dropout)
    activation = (lambda: nn.Sequential(nn.ReLU(), Dropout16(p))) if p > 0 else (lambda: nn.ReLU())
    return MLP(in_size, list(layer_sizes), activation=activation, activation_on_last=activation_on_last)


class FMInteraction(nn.Module):
    """Pairwise interactions of ``F`` fields: ``Σ_{i<j} <v_i, v_j> = ½ Σ_d [(Σ_i v_id)² − Σ_i v_id²]``.

    TorchRec's ``FactorizationMachine`` computes ``½[(Σ_{i,d} v_id)² − Σ_{i,d} v_id²]`` instead, which also
    multiplies different dimensions (and the entries of one field) with each other; this is the FM of Rendle
    (2010) used by DeepFM.

    Shapes: ``[B, F, D]`` → ``[B, 1]``.

    Example::

        v = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])   # one row, fields (1, 2) and (3, 4)
        FMInteraction()(v)                              # tensor([[11.]]) = 1·3 + 2·4
    """

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """``[B, 1]``: ``½ Σ_k [(Σ_f v_fk)² − Σ_f v_fk²]`` of ``fields`` ``[B, F, D]``."""
        return _PairwiseSum.apply(fields)


class _PairwiseSum(torch.autograd.Function):
    """:class:`FMInteraction` with its gradient written out: ``∂/∂v_fk = (Σ_i v_ik − v_fk) · g``.

    Autograd's version runs ``pow``'s backward twice (a copy and two products over ``[B, F, D]`` each) and an
    expand: 23 ms against 10 ms forward + backward for ``[8192, 26, 16]`` on one core.
    """

    @staticmethod
    def forward(ctx: Any, fields: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = fields.sum(dim=1)  # [B, D]: Σ_f v_fk
        ctx.save_for_backward(fields, total)
        square_of_sum = total.pow(2).sum(dim=1, keepdim=True)
        sum_of_square = fields.pow(2).sum(dim=(1, 2)).unsqueeze(1)
        return 0.5 * (square_of_sum - sum_of_square)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        fields, total = ctx.saved_tensors
        return (total.unsqueeze(1) - fields) * grad.unsqueeze(2)  # [B, F, D]


class DenseFields(nn.Module):
    """Each dense feature ``j`` as an FM field ``x_j · v_j`` with a learned vector ``v_j``.

    ``v_j`` has width ``D`` and starts uniform in ``[−init, init]`` (small, like the FM tables).

    Shapes: ``[B, n_dense]`` → ``[B, n_dense, D]``.

    Example::

        DenseFields(4, 8)(torch.randn(2, 4)).shape  # torch.Size([2, 4, 8])
    """

    def __init__(self, num_dense: int, dim: int, init: float = 0.01) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.empty(num_dense, dim))
        nn.init.uniform_(self.vectors, -init, init)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        """``[B, n_dense, D]``: each dense value times its field vector."""
        return dense.unsqueeze(-1) * self.vectors


class FirstOrder(nn.Module):
    """The linear part of FM, DeepFM and Wide&Deep: ``b + Σ_f w_f[id] + Σ_j u_j·x_j``.

    Each id's weight is a row of 4 entries (FBGEMM's minimum width), all starting at zero, and ``w_f[id]`` is
    their mean; a multi-hot bag sums its ids' weights. The rows live either in the model's own tables (the
    ``"fused"`` layout, :mod:`denoisrec.models.first_order`: the model passes their pooled sum to
    :meth:`combine`) or, with ``fused=False``, in their own ``EmbeddingBagCollection`` here (tables
    ``w_<feature>``, sharded like every table, looked up by :meth:`forward`). ``u`` is a dense
    ``Linear(n_dense, 1)`` starting at zero (absent without dense features).

    Args:
        ebc: the model's sparse arch (the features and table sizes to mirror).
        num_dense: number of dense features (may be 0).
        fused: the rows live in the model's tables (no collection of their own).

    Shapes: ``dense [B, n_dense]``, KJT with stride ``B`` (or the pooled ``Σ_f w_f`` ``[B, 1]``) → ``[B, 1]``.

    Example::

        ebc = embedding_bag_collection([("user_id", 10)], 4, device=torch.device("cpu"))
        first = FirstOrder(ebc, num_dense=2)
        kjt = KeyedJaggedTensor.from_lengths_sync(["user_id"], torch.tensor([1, 2]), torch.tensor([1, 1]))
        first(torch.randn(2, 2), kjt).shape  # torch.Size([2, 1])
        first.combine(torch.randn(2, 2), torch.zeros(2, 1)).shape  # torch.Size([2, 1]): weights looked up elsewhere
    """

    def __init__(self, ebc: EmbeddingBagCollection, num_dense: int, fused: bool = False) -> None:
        super().__init__()
        self.linear_ebc: Optional[EmbeddingBagCollection] = None if fused else linear_bag_collection(ebc)
        self.num_fields = len(ebc.embedding_bag_configs())
        self.bias = nn.Parameter(torch.zeros(1))
        self.dense_linear: Optional[nn.Linear] = None
        if num_dense > 0:
            self.dense_linear = nn.Linear(num_dense, 1, bias=False)
            nn.init.zeros_(self.dense_linear.weight)  # a linear model starts at zero, like the sparse weights

    def combine(self, dense: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``[B, 1]``: ``b + weights + u·x``; ``weights [B, 1]`` is the pooled ``Σ_f w_f`` (means of rows)."""
        out = weights + self.bias
        if self.dense_linear is not None:
            out = out + self.dense_linear(dense)
        return out

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """``[B, 1]``: bias plus the sparse features' weights (own tables) plus the dense linear term."""
        if self.linear_ebc is None:
            raise RuntimeError(
                "FirstOrder(fused=True) has no tables of its own: call combine() with the pooled weights"
            )
        w = self.linear_ebc(sparse).values()  # [B, 4F], any feature order: the weights are summed
        return self.combine(dense, w.reshape(w.shape[0], self.num_fields, -1).mean(dim=2).sum(dim=1, keepdim=True))
