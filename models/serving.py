"""Serving models: a trained denoisrec model as plain torch, with its input preprocessing, for export.

:func:`serving_model` turns a loaded model (``load_model_file(...).model``: TorchRec's
``EmbeddingBagCollection`` + the model's dense layers) into a :class:`ServingModel` made of ``torch.nn``
only: every table becomes an ``nn.EmbeddingBag`` over the same unsharded weights with the same pooling
(``sum``), and every dense part the same math over the same parameters (``nn.Linear``/``nn.ReLU`` for
TorchRec's ``MLP``, the cross, dot and FM interactions written out). It scripts (TorchScript) and exports
(``torch.export``), and the artefact loads with ``torch`` alone: no denoisrec, TorchRec or FBGEMM.

**Input** (raw values, as they arrive; the module applies the schema's preprocessing)::

    dense:   float32 [B, n_dense]            the schema's dense columns in schema order (NaN/inf allowed
                                             when the schema's nan_policy is "impute")
    values:  Dict[str, int64 [N_f]]          per sparse feature f: the ids of all B rows, concatenated
    offsets: Dict[str, int64 [B + 1]]        per sparse feature f: row b's ids are values[f][offsets[f][b]:
                                             offsets[f][b+1]] (offsets[f][0] = 0, offsets[f][B] = N_f); a
                                             single-valued feature has offsets = arange(B + 1)

Every sparse feature of the schema must be present (extra keys are ignored). **Output**:
``{"logit": [B], "score": [B]}`` (``score = σ(logit)``), plus ``"score_calibrated"`` ``[B]`` when a
calibrator was attached (Platt: ``σ(a·logit + b)``, see :mod:`denoisrec.trainer.serving.calibration`).

**Preprocessing** (the reader's, :mod:`denoisrec.trainer.data.block`): ids outside ``[0, num_embeddings)``
are hashed with ``splitmix64(id) mod num_embeddings`` where the feature's OOV policy is ``hash`` and stop
the call (a runtime error naming the feature) where it is ``error``; non-finite dense values are replaced
by ``impute_value`` under ``nan_policy: impute`` and stop the call under ``error``.

Example::

    loaded = load_model_file("runs/x/model.pt")
    sm = serving_model(loaded.model, loaded.spec, loaded.schema).eval()
    scripted = torch.jit.script(sm)
    out = scripted(torch.randn(2, 13), {"user_id": torch.tensor([3, 7]), ...},
                   {"user_id": torch.tensor([0, 1, 2]), ...})
    out["score"].shape  # torch.Size([2])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.models.dlrm import DLRM
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet
from torchrec.modules.mlp import MLP

from denoisrec.models.dcnv2 import DCNv2
from denoisrec.models.deepfm import DeepFM
from denoisrec.models.first_order import EXTRA
from denoisrec.models.fm import FM
from denoisrec.models.layers import FirstOrder
from denoisrec.models.spec import ModelSpec
from denoisrec.models.widedeep import WideDeep


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix64_mod(ids: torch.Tensor, n: int) -> torch.Tensor:
    """``splitmix64(id) mod n`` on int64 bit patterns, equal to the reader's numpy uint64 version.

    Multiplication wraps modulo 2⁶⁴ in two's complement, as uint64's does; the unsigned remainder of a 64-bit
    pattern ``u`` is ``(2·((u >> 1) mod n) + (u & 1)) mod n``.
    """
    # splitmix64's constants 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB as signed 64-bit
    # literals (torch has no uint64 arithmetic; TorchScript needs literals here); see trainer/data/checks.py.
    z = ids + (-7046029254386353131)
    z = (z ^ _shr(z, 30)) * (-4658895280553007687)
    z = (z ^ _shr(z, 27)) * (-7723592293110705685)
    z = z ^ _shr(z, 31)
    return (torch.remainder(_shr(z, 1), n) * 2 + (z & 1)) % n


def _check(ok: torch.Tensor, msg: str) -> None:
    """Raise ``RuntimeError(msg)`` unless ``ok``.

    A Python raise under TorchScript, an assertion op under ``torch.export`` (which cannot branch on data).
    """
    if torch.jit.is_scripting():
        if not bool(ok):
            raise RuntimeError(msg)
    else:
        torch._assert_async(ok, msg)


class Preprocess(nn.Module):
    """The reader's input policies on raw serving input: feature order, OOV policy, dense imputation.

    Args:
        features: sparse feature names in the model's table order.
        sizes: each feature's ``num_embeddings``.
        hash_oov: per feature, ``True`` to hash out-of-table ids, ``False`` to reject them.
        impute: replace non-finite dense values by ``impute_value`` (``False``: reject them).
        impute_value: the replacement.

    Shapes: ``dense [B, n_dense]``, ``values[f] [N_f]``, ``offsets[f] [B + 1]`` → the same, repaired, as
    lists in feature order.
    """

    def __init__(
        self, features: List[str], sizes: List[int], hash_oov: List[bool], impute: bool, impute_value: float
    ) -> None:
        super().__init__()
        self.features = list(features)
        self.sizes = [int(s) for s in sizes]
        self.hash_oov = [bool(h) for h in hash_oov]
        self.impute = bool(impute)
        self.impute_value = float(impute_value)

    def forward(
        self, dense: torch.Tensor, values: Dict[str, torch.Tensor], offsets: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, List[torch.Tensor], List[torch.Tensor]]:
        """``(dense, values, offsets)`` repaired (NaN imputed, out-of-table ids hashed), lists in feature order."""
        finite = torch.isfinite(dense)
        if self.impute:
            dense = torch.where(finite, dense, torch.full_like(dense, self.impute_value))
        else:
            _check(finite.all(), "dense input has NaN or infinite values (nan_policy: error)")
        vals: List[torch.Tensor] = []
        offs: List[torch.Tensor] = []
        for i, name in enumerate(self.features):
            v = values[name].long()
            n = self.sizes[i]
            inside = (v >= 0) & (v < n)
            if self.hash_oov[i]:
                v = torch.where(inside, v, splitmix64_mod(v, n))
            else:
                _check(
                    inside.all(),
                    "sparse feature '" + name + "' has ids outside its table [0, " + str(n) + ") (oov_policy: error)",
                )
            vals.append(v)
            offs.append(offsets[name].long())
        return dense, vals, offs


class Bags(nn.Module):
    """One ``nn.EmbeddingBag`` (sum pooling) per feature, over the trained, unsharded weights.

    Shapes: lists of ``values [N_f]`` and ``offsets [B + 1]`` → list of pooled ``[B, D_f]``.
    """

    def __init__(self, weights: List[torch.Tensor]) -> None:
        super().__init__()
        self.bags = nn.ModuleList(
            [
                nn.EmbeddingBag.from_pretrained(
                    w.detach().clone().float().contiguous(), freeze=True, mode="sum", include_last_offset=True
                )
                for w in weights
            ]
        )

    def forward(self, values: List[torch.Tensor], offsets: List[torch.Tensor]) -> List[torch.Tensor]:
        """Each feature's pooled embeddings, ``[B, D_f]``, in feature order."""
        out: List[torch.Tensor] = []
        for i, bag in enumerate(self.bags):
            out.append(bag(values[i], offsets[i]))
        return out


def _plain_mlp(m: nn.Module) -> nn.Sequential:
    """TorchRec's ``MLP`` as ``nn.Sequential(Linear, ReLU, ...)`` over copies of its parameters.

    Perceptrons of Linear + activation; dropout is inert in eval.
    """
    if not isinstance(m, MLP):
        raise TypeError(f"serving export: expected torchrec MLP, got {type(m).__name__}")
    layers: List[nn.Module] = []
    for p in m._mlp:
        lin = p._linear
        new = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None)
        new.load_state_dict(lin.state_dict())
        layers.append(new)
        act = p._activation_fn
        parts = list(act) if isinstance(act, nn.Sequential) else [act]
        kinds = {type(a).__name__ if isinstance(a, nn.Module) else getattr(a, "__name__", str(a)) for a in parts}
        if kinds <= {"Identity", "Dropout", "Dropout16"}:
            continue
        if kinds - {"ReLU", "relu", "Dropout", "Dropout16"}:
            raise TypeError(f"serving export: unsupported MLP activation {sorted(kinds)}")
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _copy(m: nn.Module) -> nn.Module:
    """A plain ``nn.Linear``/``nn.Sequential`` mixing TorchRec MLPs and Linears, as plain torch."""
    if isinstance(m, MLP):
        return _plain_mlp(m)
    if isinstance(m, nn.Linear):
        new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        new.load_state_dict(m.state_dict())
        return new
    if isinstance(m, nn.Sequential):
        return nn.Sequential(*[_copy(c) for c in m])
    raise TypeError(f"serving export: cannot convert {type(m).__name__} to plain torch")


def _weights(ebc: EmbeddingBagCollection) -> List[torch.Tensor]:
    """The tables' weights in table (= feature) order."""
    return [ebc.embedding_bags[c.name].weight for c in ebc.embedding_bag_configs()]


def _split_tables(ebc: EmbeddingBagCollection, first: FirstOrder) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """``(embedding weights, first-order rows)`` per feature, in feature order, for either layout.

    The ``"fused"`` layout's ``[N, D + 4]`` tables are split into ``[N, D]`` and ``[N, 4]``, so the served network
    is the same for both layouts (:mod:`denoisrec.models.first_order`).
    """
    if first.linear_ebc is not None:
        return _weights(ebc), _weights(first.linear_ebc)
    fused = _weights(ebc)
    return [w[:, :-EXTRA] for w in fused], [w[:, -EXTRA:] for w in fused]


class Linear1(nn.Module):
    """The first-order part ``b + Σ_f mean(w_f[id]) + u·x`` (:class:`denoisrec.models.layers.FirstOrder`).

    Shapes: ``dense [B, n_dense]``, values / offsets lists → ``[B, 1]``.
    """

    def __init__(self, first: FirstOrder, rows: List[torch.Tensor]) -> None:
        super().__init__()
        self.bags = Bags(rows)
        self.bias = nn.Parameter(first.bias.detach().clone(), requires_grad=False)
        self.has_dense = first.dense_linear is not None
        n = first.dense_linear.in_features if first.dense_linear is not None else 0
        self.dense_linear = nn.Linear(max(n, 1), 1, bias=False)
        if first.dense_linear is not None:
            self.dense_linear.load_state_dict(first.dense_linear.state_dict())

    def forward(self, dense: torch.Tensor, values: List[torch.Tensor], offsets: List[torch.Tensor]) -> torch.Tensor:
        """``[B, 1]``: bias plus the sparse weights plus the dense linear term."""
        w = torch.cat(self.bags(values, offsets), dim=1)  # [B, 4F]
        out = w.reshape(w.shape[0], len(values), -1).mean(dim=2).sum(dim=1, keepdim=True) + self.bias
        if self.has_dense:
            out = out + self.dense_linear(dense)
        return out


class FMNet(nn.Module):
    """FM (and DeepFM's FM part), with DeepFM's deep network when ``deep``.

    ``b + Σ w + Σ u·x + ½ Σ_d [(Σ_i v_id)² − Σ_i v_id²]`` over the sparse fields and the dense fields ``x_j·v_j``
    (:mod:`denoisrec.models.fm`); with ``deep``, DeepFM adds ``DNN(flatten(fields))``.

    Shapes: ``dense [B, n_dense]``, values / offsets lists → ``[B, 1]``.
    """

    def __init__(self, fm: FM, deep: Optional[nn.Module] = None) -> None:
        super().__init__()
        emb, rows = _split_tables(fm.sparse_arch, fm.first_order)
        self.bags = Bags(emb)
        self.first = Linear1(fm.first_order, rows)
        self.has_dense_fields = fm.dense_fields is not None
        vec = fm.dense_fields.vectors if fm.dense_fields is not None else torch.zeros(1, 1)
        self.dense_vectors = nn.Parameter(vec.detach().clone(), requires_grad=False)
        self.has_deep = deep is not None
        self.deep = deep if deep is not None else nn.Identity()

    def forward(self, dense: torch.Tensor, values: List[torch.Tensor], offsets: List[torch.Tensor]) -> torch.Tensor:
        """``[B, 1]`` logits: first-order plus pairwise terms (plus the deep network)."""
        fields = torch.stack(self.bags(values, offsets), dim=1)  # [B, F, D]
        if self.has_dense_fields:
            fields = torch.cat([fields, dense.unsqueeze(-1) * self.dense_vectors], dim=1)
        pair = 0.5 * (fields.sum(dim=1).pow(2) - fields.pow(2).sum(dim=1)).sum(dim=1, keepdim=True)
        out = self.first(dense, values, offsets) + pair
        if self.has_deep:
            out = out + self.deep(fields.flatten(1))
        return out


class DLRMNet(nn.Module):
    """DLRM: bottom MLP on dense, pairwise dots of ``[dense ; e_1 … e_F]``, top MLP.

    The upper triangle of the dots, as ``torchrec.models.dlrm.DLRM``. Shapes: ``dense [B, n_dense]``, values / offsets →
    ``[B, 1]``.
    """

    if TYPE_CHECKING:  # for mypy only: TorchScript cannot read string annotations on a module class
        triu: torch.Tensor  # buffer: [2, F(F+1)/2] the upper triangle's (row, column) indices

    def __init__(self, m: DLRM) -> None:
        super().__init__()
        self.bags = Bags(_weights(m.sparse_arch.embedding_bag_collection))
        self.bottom = _copy(m.dense_arch.model)
        self.top = _copy(m.over_arch.model)
        f = len(self.bags.bags)
        self.register_buffer("triu", torch.triu_indices(f + 1, f + 1, offset=1), persistent=False)

    def forward(self, dense: torch.Tensor, values: List[torch.Tensor], offsets: List[torch.Tensor]) -> torch.Tensor:
        """``[B, 1]`` logits: the top MLP over the bottom output and the pairwise dot products."""
        d = self.bottom(dense)  # [B, D]
        x = torch.cat([d.unsqueeze(1), torch.stack(self.bags(values, offsets), dim=1)], dim=1)  # [B, F+1, D]
        inter = torch.bmm(x, x.transpose(1, 2))[:, self.triu[0], self.triu[1]]
        return self.top(torch.cat([d, inter], dim=1))


class CrossLayers(nn.Module):
    """DCN-V2's cross layers ``x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l``.

    ``W_l`` full (``CrossNet``) or ``U_l V_l`` (``LowRankCrossNet``). Shapes: ``[B, N]`` → ``[B, N]``.
    """

    if TYPE_CHECKING:  # for mypy only: TorchScript cannot read string annotations on a module class
        w: torch.Tensor  # buffer: [L, N, r] (low rank) or [L, N, N]
        v: torch.Tensor  # buffer: [L, r, N] (low rank) or unused [L, 1, 1]
        b: torch.Tensor  # buffer: [L, N]

    def __init__(self, cross: nn.Module) -> None:
        super().__init__()
        self.low_rank = isinstance(cross, LowRankCrossNet)
        if isinstance(cross, LowRankCrossNet):
            w = torch.stack([t.detach() for t in cross.W_kernels])  # [L, N, r]
            v = torch.stack([t.detach() for t in cross.V_kernels])  # [L, r, N]
            b = torch.stack([t.detach() for t in cross.bias])  # [L, N]
        elif isinstance(cross, CrossNet):
            w = torch.stack([t.detach() for t in cross.kernels])  # [L, N, N]
            v = torch.zeros(w.shape[0], 1, 1)
            b = torch.stack([t.detach().squeeze(1) for t in cross.bias])  # [L, N]
        else:
            raise TypeError(f"serving export: unsupported cross network {type(cross).__name__}")
        self.layers = int(w.shape[0])
        self.register_buffer("w", w.clone())
        self.register_buffer("v", v.clone())
        self.register_buffer("b", b.clone())

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """``[B, N]``: cross layers ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l`` from ``x0`` ``[B, N]``."""
        x = x0
        for i in range(self.layers):
            if self.low_rank:
                xw = nn.functional.linear(nn.functional.linear(x, self.v[i]), self.w[i])
            else:
                xw = nn.functional.linear(x, self.w[i])  # W_l x_l, (B, N)
            x = x0 * (xw + self.b[i]) + x
        return x


class DCNNet(nn.Module):
    """DCN-V2, stacked ``Linear(DNN(Cross(x0)))`` or parallel ``Linear([Cross(x0) ; DNN(x0)])``.

    ``x0 = [dense ; e_1 … e_F]`` (:mod:`denoisrec.models.dcnv2`). Shapes: as :class:`DLRMNet`.
    """

    def __init__(self, m: DCNv2) -> None:
        super().__init__()
        self.bags = Bags(_weights(m.sparse_arch))
        self.cross = CrossLayers(m.cross)
        self.stacked = m.structure == "stacked"
        self.has_deep = m.deep is not None
        self.deep = _copy(m.deep) if m.deep is not None else nn.Identity()
        self.logit = _copy(m.logit)

    def forward(self, dense: torch.Tensor, values: List[torch.Tensor], offsets: List[torch.Tensor]) -> torch.Tensor:
        """``[B, 1]`` logits: the cross network, stacked or parallel with the deep network."""
        x0 = torch.cat([dense] + self.bags(values, offsets), dim=1)
        if self.stacked:
            h = self.cross(x0)
            if self.has_deep:
                h = self.deep(h)
        else:
            h = self.cross(x0)
            if self.has_deep:
                h = torch.cat([h, self.deep(x0)], dim=1)
        return self.logit(h)


class WideDeepNet(nn.Module):
    """Wide & Deep: ``FirstOrder(x) + DNN([dense ; e_1 … e_F])`` (:mod:`denoisrec.models.widedeep`)."""

    def __init__(self, m: WideDeep) -> None:
        super().__init__()
        emb, rows = _split_tables(m.sparse_arch, m.wide)
        self.bags = Bags(emb)
        self.wide = Linear1(m.wide, rows)
        self.deep = _copy(m.deep)

    def forward(self, dense: torch.Tensor, values: List[torch.Tensor], offsets: List[torch.Tensor]) -> torch.Tensor:
        """``[B, 1]`` logits: the wide (first-order) part plus the deep network."""
        x = torch.cat([dense] + self.bags(values, offsets), dim=1)
        return self.wide(dense, values, offsets) + self.deep(x)


class ServingModel(nn.Module):
    """Preprocessing, the plain-torch network and an optional Platt calibrator (see the module docstring).

    Args:
        pre: the input policies.
        net: the network, ``(dense, values list, offsets list) → [B, 1]``.
        platt: ``(a, b)`` of ``σ(a·logit + b)``, or ``None``.
    """

    def __init__(self, pre: Preprocess, net: nn.Module, platt: Optional[List[float]] = None) -> None:
        super().__init__()
        self.pre = pre
        self.net = net
        self.calibrated = platt is not None
        self.platt_a = float(platt[0]) if platt is not None else 1.0
        self.platt_b = float(platt[1]) if platt is not None else 0.0

    def forward(
        self, dense: torch.Tensor, values: Dict[str, torch.Tensor], offsets: Dict[str, torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """``{logit, score}`` ``[B]`` each (plus ``calibrated`` with a calibrator) from raw inputs."""
        dense, vals, offs = self.pre(dense.float(), values, offsets)
        logit = self.net(dense, vals, offs).squeeze(1)
        out = {"logit": logit, "score": torch.sigmoid(logit)}
        if self.calibrated:
            out["score_calibrated"] = torch.sigmoid(self.platt_a * logit + self.platt_b)
        return out


def _network(model: nn.Module) -> nn.Module:
    if isinstance(model, DLRM):
        return DLRMNet(model)
    if isinstance(model, DCNv2):
        return DCNNet(model)
    if isinstance(model, DeepFM):
        return FMNet(model.fm, deep=_copy(model.deep.dense_module))
    if isinstance(model, FM):
        return FMNet(model)
    if isinstance(model, WideDeep):
        return WideDeepNet(model)
    raise TypeError(f"serving export: no plain-torch version of {type(model).__name__}")


def serving_model(
    model: nn.Module, spec: ModelSpec, schema: Mapping[str, Any], platt: Optional[List[float]] = None
) -> ServingModel:
    """The plain-torch :class:`ServingModel` of ``model``, with ``schema``'s input policies.

    ``model`` is an unsharded denoisrec model on CPU, e.g. ``load_model_file(path).model``; ``schema`` is the model
    file's.
    """
    feats = {f["name"]: f for f in schema["sparse"]}
    names = [n for n, _ in spec.features]
    missing = [n for n in names if n not in feats]
    if missing:
        raise ValueError(f"serving export: the schema has no sparse feature(s) {missing} of the model")
    policy = lambda n: feats[n].get("oov_policy") or schema.get("oov_policy", "error")  # noqa: E731
    pre = Preprocess(
        names,
        [k for _, k in spec.features],
        [policy(n) == "hash" for n in names],
        schema.get("nan_policy", "error") == "impute",
        float(schema.get("impute_value", 0.0)),
    )
    served = ServingModel(pre, _network(model), platt).eval()
    for p in served.parameters():
        p.requires_grad_(False)
    return served
