"""The observation model's cheaper step and the MF heads' product give the loss and gradients of what they replaced.

Each reference below is the earlier code written out on a hand-made batch: the context tower mean-pooled by its own
``EmbeddingBagCollection`` (the tables now pool by sum and the tower divides by the bag length), and the warm-up's held
rates formed as ``bias + 0·tower`` per row, with the id channels computed and multiplied by zero (the held step now
skips both and broadcasts one value). The folded lookup's one split: tests/trainer/distributed/test_shared_lookup.py.
"""

import copy
import math
from types import SimpleNamespace
from typing import Dict, Tuple

import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers.observation import (
    ContextTower,
    ObservationIdNoise,
    ObservationModel,
    observed_log_likelihood,
    trusted_term,
    with_id_noise,
)

CTX = {"position": 31, "scene": 6}
IDS = {"user_id": 5, "item_id": 4}


def _mean_pooled_logits(tower: ContextTower, kjt: KeyedJaggedTensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The earlier tower: one MEAN-pooled table per feature, ``(a, b)`` from the first two columns (or the MLP)."""
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=f"obs_{f}",
                embedding_dim=tower.ebc.embedding_bags[f"obs_{f}"].weight.shape[1],
                num_embeddings=tower.ebc.embedding_bags[f"obs_{f}"].weight.shape[0],
                feature_names=[f],
                pooling=PoolingType.MEAN,
            )
            for f in tower.features
        ]
    )
    for f in tower.features:  # the tower's own weights, so gradients compare table by table
        ebc.embedding_bags[f"obs_{f}"].weight = tower.ebc.embedding_bags[f"obs_{f}"].weight
    kt = ebc(kjt).to_dict()
    if tower.mlp is None:
        ab = torch.stack([kt[f][:, :2] for f in tower.features]).sum(0)
    else:
        ab = tower.mlp(torch.cat([kt[f] for f in tower.features], dim=1))
    ab = ab + tower.bias
    return ab[:, 0], ab[:, 1]


def _multi_hot_batch() -> KeyedJaggedTensor:
    # position single-valued; scene a bag per row: lengths 1, 3, 0 (an empty bag pools to 0), 2
    return KeyedJaggedTensor.from_lengths_sync(
        ["position", "scene"],
        torch.tensor([3, 0, 30, 7, 1, 4, 5, 0, 2, 2]),
        torch.tensor([1, 1, 1, 1, 1, 3, 0, 2], dtype=torch.int32),
    )


@pytest.mark.parametrize("hidden", [[], [8]])
def test_tower_sum_tables_divided_by_bag_length_give_the_mean_pooled_logits_and_gradients(hidden: list) -> None:
    torch.manual_seed(0)
    tower = ContextTower(CTX, dim=4, hidden=hidden, bias_init=(0.3, -0.2), device=torch.device("cpu"))
    assert {c.pooling for c in tower.ebc.embedding_bag_configs()} == {PoolingType.SUM}
    with torch.no_grad():  # rows away from 0 so a wrong divisor shows
        for p in tower.parameters():
            p.normal_(0, 0.5)
    ref_tower = copy.deepcopy(tower)
    kjt = _multi_hot_batch()
    a, b = tower(kjt)
    ra, rb = _mean_pooled_logits(ref_tower, kjt)
    assert torch.allclose(a, ra, atol=1e-6) and torch.allclose(b, rb, atol=1e-6)
    w = torch.tensor([0.7, -1.1, 0.4, 2.0])  # distinct weights per row, so each row's gradient counts
    (w * a + 2 * w * b).sum().backward()
    (w * ra + 2 * w * rb).sum().backward()
    for (name, p), (_, q) in zip(tower.named_parameters(), ref_tower.named_parameters()):
        assert p.grad is not None and q.grad is not None and float(q.grad.abs().sum()) > 0, name
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def _batch(n: int, seed: int = 0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    pos, scene = torch.randint(0, 31, (n,), generator=g), torch.randint(0, 6, (n,), generator=g)
    users, items = torch.randint(0, 5, (n,), generator=g), torch.randint(0, 4, (n,), generator=g)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["position", "scene", "user_id", "item_id"],
        torch.cat([pos, scene, users, items]),
        torch.ones(4 * n, dtype=torch.int32),
    )
    trusted = torch.full((n,), float("nan"))
    trusted[::3] = (torch.rand(len(trusted[::3]), generator=g) < 0.5).float()
    return SimpleNamespace(
        sparse_features=kjt,
        is_noisy=(torch.rand(n, generator=g) < 0.3).float(),
        trusted_labels=trusted,
    )


def _held_reference(d: ObservationModel, z: torch.Tensor, y: torch.Tensor, b: SimpleNamespace) -> torch.Tensor:
    """The earlier held step's mean loss: the tower (and id channels) computed per row, then ``bias + 0·output``."""
    za, zb = d.tower(b.sparse_features)
    za, zb = d.tower.bias[0] + 0.0 * za, d.tower.bias[1] + 0.0 * zb
    u = None if d.u is None else d.u * d.rates_lr_scale
    u = None if u is None else u.detach() + 0.0 * u
    log_p, log_q, _, _ = observed_log_likelihood(z, za, zb, d.form, u)
    if d.id_heads is not None:
        km = d.id_heads(b.sparse_features)
        k0 = math.log(d.id_noise_init / (1 - d.id_noise_init))
        k, m = km["fp"] + k0, km["fn"] + k0
        log_p, log_q = with_id_noise(log_p, log_q, k0 + 0.0 * k, k0 + 0.0 * m)
    per_row = -(y * log_p + (1 - y) * log_q)
    if d.trusted_weight > 0:
        per_row = per_row + d.trusted_weight * trusted_term(z, b.trusted_labels)[0]
    return per_row.mean()


def _build(cls: type, form: str, hidden: list, tower_warmup: int = 2) -> ObservationModel:
    kw: Dict[str, object] = {"tables": {**CTX, **IDS}} if cls is ObservationIdNoise else {}
    d = cls(
        CTX,
        form=form,
        hidden=hidden,
        tower_warmup=tower_warmup,
        rates_lr_scale=50.0,
        trusted_weight=10.0,
        device=torch.device("cpu"),
        **kw,
    )
    with torch.no_grad():  # tables away from their initial values, so a tower that leaked into the rates would show
        for p in d.parameters():
            if p is not d.u:
                p.normal_(0, 0.5)
    return d


@pytest.mark.parametrize(
    "cls,form,hidden",
    [
        (ObservationIdNoise, "examination", []),
        (ObservationIdNoise, "mixture", [8]),
        (ObservationModel, "examination", [8]),
        (ObservationModel, "product", []),
    ],
)
def test_held_step_gives_the_per_row_formulations_loss_and_zero_tower_gradients(
    cls: type, form: str, hidden: list
) -> None:
    torch.manual_seed(0)
    d = _build(cls, form, hidden)
    ref = copy.deepcopy(d)
    d.train()
    assert d.tower_frozen()
    b, n = _batch(12), 12
    y = (torch.rand(n, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    z = torch.randn(n, generator=torch.Generator().manual_seed(4))
    z1, z2 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = d(z1, y, torch.arange(n), b)
    want = _held_reference(ref, z2, y, b)
    assert float(out.value) == pytest.approx(float(want), rel=1e-6)
    out.loss.backward()
    want.backward()
    assert float(z2.grad.abs().sum()) > 0 and torch.allclose(z1.grad, z2.grad, atol=1e-7)
    for (name, p), (_, q) in zip(d.named_parameters(), ref.named_parameters()):
        assert q.grad is not None and p.grad is not None, name  # in the graph (DDP needs every dense parameter)
        assert torch.equal(p.grad, torch.zeros_like(p.grad)) and torch.equal(q.grad, torch.zeros_like(q.grad)), name


def test_live_step_still_reads_the_tower_and_the_id_channels() -> None:
    torch.manual_seed(0)
    d = _build(ObservationIdNoise, "examination", [], tower_warmup=0)
    d.train()
    assert not d.tower_frozen()
    b, n = _batch(12), 12
    y = (torch.rand(n, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    z = torch.randn(n, requires_grad=True)
    out = d(z, y, torch.arange(n), b)
    out.loss.backward()
    grads = {name: float(p.grad.abs().sum()) for name, p in d.named_parameters()}
    assert all(g > 0 for g in grads.values()), grads
    za, zb = d.tower(b.sparse_features)
    log_p, log_q, _, _ = observed_log_likelihood(z.detach(), za.detach(), zb.detach(), "examination", d.u * 50.0)
    km = d.id_heads(b.sparse_features)
    k0 = math.log(0.02 / 0.98)
    log_p, log_q = with_id_noise(log_p, log_q, km["fp"].detach() + k0, km["fn"].detach() + k0)
    want = -(y * log_p + (1 - y) * log_q) + 10.0 * trusted_term(z.detach(), b.trusted_labels)[0]
    assert float(out.value) == pytest.approx(float(want.mean()), rel=1e-6)


def test_mf_heads_give_the_two_slices_product_and_its_gradients() -> None:
    from denoisrec.denoisers.mf import MFHeads

    torch.manual_seed(0)
    mf = MFHeads(["fp", "fn"], "user_id", "item_id", 5, 4, dim=4, prefix="x_", device=torch.device("cpu"))
    with torch.no_grad():  # a large bias column, so a bias leaking into the factor product would show
        for p in mf.parameters():
            p.normal_(0, 0.5)
            p[:, -1] += 3.0
    ref = copy.deepcopy(mf)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["user_id", "item_id"], torch.tensor([0, 4, 2, 2, 3, 0, 1, 3]), torch.ones(8, dtype=torch.int32)
    )
    got = mf(kjt)
    kt = ref.lookup(kjt)  # {table: [B, dim]}
    w = torch.tensor([0.5, -1.0, 2.0, 0.3])
    loss, ref_loss = torch.zeros(()), torch.zeros(())
    for k, h in enumerate(("fp", "fn")):
        u, i = kt[f"x_{h}_user_id"], kt[f"x_{h}_item_id"]
        want = (u[:, :-1] * i[:, :-1]).sum(1) + u[:, -1] + i[:, -1]  # the earlier formulation
        assert torch.allclose(got[h], want, atol=1e-6), h
        loss, ref_loss = loss + (k + 1) * (w * got[h]).sum(), ref_loss + (k + 1) * (w * want).sum()
    loss.backward()
    ref_loss.backward()
    for (name, p), (_, q) in zip(mf.named_parameters(), ref.named_parameters()):
        assert float(q.grad.abs().sum()) > 0 and torch.allclose(p.grad, q.grad, atol=1e-6), name
