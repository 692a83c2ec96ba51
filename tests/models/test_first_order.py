"""The first-order weights in the embedding lookup (``first_order="fused"``) against their own tables ("table"):
the same logits and gradients for the same weights, a hand-computed case, the initialisation, old weights.
"""

from pathlib import Path

import pytest
import torch
from torchrec import KeyedJaggedTensor

from denoisrec.models import ModelSpec, load_model_file, save_model_file
from denoisrec.models.embeddings import embedding_bag_collection
from denoisrec.models.first_order import fuse_state, fused_collection, has_table_layout
from denoisrec.trainer.checkpoint.checkpointer import refuse_other_first_order_layout
from denoisrec.trainer.errors import CheckpointError

FEATURES = [("user_id", 30), ("item_id", 20), ("tags", 10)]
CPU = torch.device("cpu")


def kjt() -> KeyedJaggedTensor:
    # 3 rows; "tags" is multi-hot: row 0 has two tags, row 1 none, row 2 one.
    return KeyedJaggedTensor.from_lengths_sync(
        keys=["user_id", "item_id", "tags"],
        values=torch.tensor([1, 2, 29, 0, 19, 5, 5, 4, 7]),
        lengths=torch.tensor([1, 1, 1, 1, 1, 1, 2, 0, 1]),
    )


def build(name: str, n_dense: int, layout: str, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = ModelSpec(name, FEATURES, n_dense, embedding_dim=8, params={**params, "first_order": layout})
    return spec.build(CPU)


def test_fm_fused_logit_by_hand() -> None:
    # Two single-valued features of width 4; row (a=1, b=0):
    # logit = b + mean(w_a[1]) + mean(w_b[0]) + <v_a[1], v_b[0]> = 0.25 + 1 + 1.5 + (1·3 + 2·1) = 7.75
    ebc = embedding_bag_collection([("a", 3), ("b", 2)], 4, device=CPU)
    from denoisrec.models import FM

    model = FM(ebc, 0, first_order="fused")  # tables t_a, t_b of width 4 + 4
    tables = model.sparse_arch.embedding_bags
    assert [tuple(t.weight.shape) for t in tables.values()] == [(3, 8), (2, 8)]
    with torch.no_grad():
        tables["t_a"].weight.zero_()
        tables["t_b"].weight.zero_()
        tables["t_a"].weight[1] = torch.tensor([1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
        tables["t_b"].weight[0] = torch.tensor([3.0, 1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0])
        model.first_order.bias.fill_(0.25)
    x = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 0]), torch.tensor([1, 1]))
    assert model(torch.zeros(1, 0), x).item() == pytest.approx(7.75)

    # The same numbers in the separate layout give the same logit.
    table = FM(ebc, 0, first_order="table")
    table.load_state_dict(
        {
            "sparse_arch.embedding_bags.t_a.weight": tables["t_a"].weight[:, :4],
            "sparse_arch.embedding_bags.t_b.weight": tables["t_b"].weight[:, :4],
            "first_order.linear_ebc.embedding_bags.w_a.weight": tables["t_a"].weight[:, 4:],
            "first_order.linear_ebc.embedding_bags.w_b.weight": tables["t_b"].weight[:, 4:],
            "first_order.bias": torch.tensor([0.25]),
        }
    )
    assert table(torch.zeros(1, 0), x).item() == pytest.approx(7.75)


@pytest.mark.parametrize(
    "name,n_dense,params", [("fm", 2, {}), ("deepfm", 2, {"mlp": [16, 8], "dropout": 0.2}), ("widedeep", 4, {})]
)
def test_fused_and_table_layouts_give_the_same_logits_and_gradients(name: str, n_dense: int, params) -> None:
    table = build(name, n_dense, "table", **params)
    with torch.no_grad():  # non-zero first-order rows, so they count
        for k, v in table.state_dict().items():
            if ".w_" in k:
                v.uniform_(-0.5, 0.5)
    fused = build(name, n_dense, "fused", **params)
    fused.load_state_dict(fuse_state(table.state_dict()))  # strict: the same keys but the w_ tables
    dense = torch.randn(3, n_dense)
    for m in (table, fused):
        torch.manual_seed(5)  # the same dropout masks
        m(dense, kjt()).pow(2).sum().backward()
    torch.manual_seed(5)
    out_t = table(dense, kjt())
    torch.manual_seed(5)
    assert torch.allclose(fused(dense, kjt()), out_t, atol=1e-6)
    grads = {n: p.grad for n, p in table.named_parameters()}
    want = fuse_state(grads)  # the fused table's gradient is the two old gradients side by side
    got = {n: p.grad for n, p in fused.named_parameters()}
    assert set(got) == set(want)
    for n in got:
        assert torch.allclose(got[n], want[n], atol=1e-6), n


def test_fused_tables_start_uniform_with_zero_first_order_rows() -> None:
    ebc = embedding_bag_collection(FEATURES, 8, device=CPU, init_range=(-0.01, 0.01))
    fused = fused_collection(ebc)
    for c in ebc.embedding_bag_configs():
        w = fused.embedding_bags[c.name].weight
        assert w.shape == (c.num_embeddings, 12)
        assert torch.equal(w[:, :8], ebc.embedding_bags[c.name].weight)  # the given embeddings are kept
        assert torch.count_nonzero(w[:, 8:]) == 0
    # What DMP does when it materialises a table: the config's init_fn on the weight (sharded: tests/dist).
    c = fused.embedding_bag_configs()[0]
    w = torch.full((30, 12), 7.0)
    c.init_fn(w)
    assert torch.count_nonzero(w[:, 8:]) == 0 and w[:, :8].abs().max() <= 0.01 and w[:, :8].abs().min() > 0


def test_old_model_files_and_priors_with_first_order_tables_still_load(tmp_path: Path) -> None:
    table = build("deepfm", 2, "table", mlp=[8])
    state = table.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            if ".w_" in k:
                v.uniform_(-0.5, 0.5)
    assert has_table_layout(state)
    old = ModelSpec("deepfm", FEATURES, 2, embedding_dim=8, params={"mlp": [8]})  # no first_order: before the option
    save_model_file(str(tmp_path / "old.pt"), old, state, schema={})
    loaded = load_model_file(str(tmp_path / "old.pt"))
    assert "first_order" not in loaded.spec.params  # the default layout is the one these files hold
    dense = torch.randn(3, 2)
    table.eval(), loaded.model.eval()
    assert torch.allclose(loaded.model(dense, kjt()), table(dense, kjt()), atol=1e-6)
    # ... and the same weights fused into a default (fused) model: what DeCA(p)'s prior does with such a file.
    fused = ModelSpec("deepfm", FEATURES, 2, embedding_dim=8, params={"mlp": [8], "first_order": "fused"}).build(CPU)
    fused.eval()
    prior_keys = {k.replace(".t_", ".prior_t_").replace(".w_", ".prior_w_"): v for k, v in state.items()}
    fused_prior = fuse_state(prior_keys)
    assert not has_table_layout(fused_prior)
    fused.load_state_dict({k.replace(".prior_t_", ".t_"): v for k, v in fused_prior.items()})
    assert torch.allclose(fused(dense, kjt()), table(dense, kjt()), atol=1e-6)


def test_resuming_a_checkpoint_of_the_other_layout_is_a_clear_error() -> None:
    old = ["model.model.fm.first_order.linear_ebc.embedding_bags.w_user_id.weight", "model.model.fm.first_order.bias"]
    new = ["model.model.fm.sparse_arch.embedding_bags.t_user_id.weight", "model.model.fm.first_order.bias"]
    refuse_other_first_order_layout("ckpt", old, old)
    refuse_other_first_order_layout("ckpt", new, new)
    with pytest.raises(CheckpointError, match=r"ckpt: written with model.params.first_order=table.*first_order=table"):
        refuse_other_first_order_layout("ckpt", old, new)
    with pytest.raises(CheckpointError, match=r"first_order=fused"):
        refuse_other_first_order_layout("ckpt", new, old)


def test_unknown_layout_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"model option first_order='both': expected one of \['fused', 'table'\]"):
        build("fm", 0, "both")
