"""The models on one process (unsharded CPU tables): shapes, the formulas they claim, options, model files."""

from pathlib import Path

import pytest
import torch
from torchrec import KeyedJaggedTensor

from denoisrec.models import FM, MODELS, DCNv2, DeepFM, ModelSpec, WideDeep, load_model_file, save_model_file
from denoisrec.models.dropout import Dropout16
from denoisrec.models.embeddings import embedding_bag_collection
from denoisrec.models.layers import FirstOrder, FMInteraction

FEATURES = [("user_id", 30), ("item_id", 20), ("tags", 10)]
CPU = torch.device("cpu")


def kjt(reverse: bool = False) -> KeyedJaggedTensor:
    # 3 rows; "tags" is multi-hot: row 0 has two tags, row 1 none, row 2 one (``reverse``: the rows 2, 1, 0).
    if reverse:
        return KeyedJaggedTensor.from_lengths_sync(
            keys=["user_id", "item_id", "tags"],
            values=torch.tensor([29, 2, 1, 5, 19, 0, 7, 5, 4]),
            lengths=torch.tensor([1, 1, 1, 1, 1, 1, 1, 0, 2]),
        )
    return KeyedJaggedTensor.from_lengths_sync(
        keys=["user_id", "item_id", "tags"],
        values=torch.tensor([1, 2, 29, 0, 19, 5, 5, 4, 7]),
        lengths=torch.tensor([1, 1, 1, 1, 1, 1, 2, 0, 1]),
    )


def build(name: str, n_dense: int, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return ModelSpec(name, FEATURES, n_dense, embedding_dim=8, params=params).build(CPU)


@pytest.mark.parametrize("name,n_dense", [(m, d) for m in sorted(MODELS) for d in (0, 4) if (m, d) != ("dlrm", 0)])
def test_every_model_maps_to_one_logit_and_trains_every_parameter(name: str, n_dense: int) -> None:
    model = build(name, n_dense)
    dense = torch.randn(3, n_dense)
    out = model(dense, kjt())
    assert out.shape == (3, 1)
    # A row's logit depends on that row alone and on its features: the rows reversed give the logits reversed,
    # and three different rows give three different logits.
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(dense.flip(0), kjt(reverse=True)).flip(0), model(dense, kjt()), atol=1e-6)
    model.train()
    assert len(set(out.squeeze(1).tolist())) == 3, out
    out.pow(2).sum().backward()  # not the logit sum: FM's zero-initialised first-order rows need a nonzero signal
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"{name}: parameters outside the graph: {no_grad}"


def test_dlrm_without_dense_features_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"needs at least one dense feature.*dcnv2, deepfm, fm or widedeep"):
        build("dlrm", 0)


def test_fm_interaction_is_the_sum_of_pairwise_dot_products() -> None:
    v = torch.randn(5, 4, 3, dtype=torch.float64)
    hand = torch.zeros(5, 1, dtype=torch.float64)
    for i in range(4):
        for j in range(i + 1, 4):
            hand[:, 0] += (v[:, i] * v[:, j]).sum(dim=1)
    assert torch.allclose(FMInteraction()(v), hand)
    # Its written-out gradient against numerical differences (a 1-field bag of fields: no pairs, zero gradient)
    assert torch.autograd.gradcheck(FMInteraction(), (v.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(FMInteraction(), (torch.randn(2, 1, 3, dtype=torch.float64, requires_grad=True),))


def test_first_order_is_bias_plus_mean_row_weights_plus_dense_linear() -> None:
    ebc = embedding_bag_collection(FEATURES, 4, device=CPU)
    first = FirstOrder(ebc, num_dense=2)
    tables = first.linear_ebc.embedding_bags
    assert all(torch.count_nonzero(t.weight) == 0 for t in tables.values())  # starts at zero
    with torch.no_grad():
        for t in tables.values():
            t.weight.copy_(torch.arange(t.weight.numel(), dtype=torch.float32).view_as(t.weight))
        first.bias.fill_(0.5)
        first.dense_linear.weight.copy_(torch.tensor([[2.0, -1.0]]))
    dense = torch.tensor([[1.0, 1.0], [0.0, 3.0], [2.0, 0.0]])
    row = lambda i: 4 * i + 1.5  # noqa: E731  mean of the entries 4i, 4i+1, 4i+2, 4i+3
    hand = torch.tensor(
        [
            0.5 + row(1) + row(0) + row(5) + row(4) + 2 - 1,  # user 1, item 0, tags {5, 4}
            0.5 + row(2) + row(19) + 0.0 - 3,  # user 2, item 19, no tags
            0.5 + row(29) + row(5) + row(7) + 4,  # user 29, item 5, tag 7
        ]
    ).unsqueeze(1)
    assert torch.allclose(first(dense, kjt()), hand)


@pytest.mark.parametrize("layout", ["fused", "table"])
def test_fm_is_first_order_plus_pairwise_over_sparse_and_dense_fields(layout: str) -> None:
    model = build("fm", 2, first_order=layout)
    assert isinstance(model, FM)
    dense = torch.randn(3, 2)
    pooled = model.sparse_arch(kjt()).values().view(3, 3, -1)  # unsharded: table order; fused: 8 + 4 columns
    fields = torch.cat([pooled[..., :8], dense.unsqueeze(-1) * model.dense_fields.vectors], dim=1)
    pairwise = sum((fields[:, i] * fields[:, j]).sum(1) for i in range(5) for j in range(i + 1, 5))
    if layout == "fused":
        first = model.first_order.combine(dense, pooled[..., 8:].mean(2).sum(1, keepdim=True))
    else:
        first = model.first_order(dense, kjt())
    expected = first.squeeze(1) + pairwise
    assert torch.allclose(model(dense, kjt()).squeeze(1), expected, atol=1e-6)


def test_deepfm_adds_a_dnn_over_the_flattened_fields_to_the_fm() -> None:
    model = build("deepfm", 2, mlp=[16, 16], dropout=0.2).eval()
    assert isinstance(model, DeepFM)
    dense = torch.randn(3, 2)
    fields = model.fm.fields(dense, kjt())
    assert fields.shape == (3, 5, 8)
    expected = model.fm(dense, kjt()) + model.deep.dense_module(fields.flatten(1))
    assert torch.allclose(model(dense, kjt()), expected, atol=1e-6)
    dropouts = [m for m in model.modules() if isinstance(m, Dropout16)]
    assert len(dropouts) == 2 and all(d.p == 0.2 for d in dropouts)


def test_widedeep_is_linear_plus_dnn_over_dense_and_embeddings() -> None:
    model = build("widedeep", 4, mlp=[8], first_order="table")
    assert isinstance(model, WideDeep)
    dense = torch.randn(3, 4)
    x = torch.cat([dense, model.sparse_arch(kjt()).values()], dim=1)
    assert x.shape == (3, 4 + 3 * 8)
    assert torch.allclose(model(dense, kjt()), model.wide(dense, kjt()) + model.deep(x), atol=1e-6)


@pytest.mark.parametrize("low_rank,structure", [(None, "stacked"), (3, "stacked"), (None, "parallel"), (2, "parallel")])
def test_dcnv2_cross_network_shapes_and_structures(low_rank, structure) -> None:
    n = 4 + 3 * 8
    model = build("dcnv2", 4, cross_layers=2, low_rank=low_rank, structure=structure, mlp=[16])
    assert isinstance(model, DCNv2)
    if low_rank is None:
        assert [tuple(k.shape) for k in model.cross.kernels] == [(n, n)] * 2
    else:
        assert [tuple(k.shape) for k in model.cross.W_kernels] == [(n, low_rank)] * 2
    assert model.logit.in_features == (16 if structure == "stacked" else n + 16)
    dense = torch.randn(3, 4)
    x0 = torch.cat([dense, model.sparse_arch(kjt()).values()], dim=1)
    h = model.deep(model.cross(x0)) if structure == "stacked" else torch.cat([model.cross(x0), model.deep(x0)], 1)
    assert torch.allclose(model(dense, kjt()), model.logit(h), atol=1e-6)


def test_dcnv2_full_rank_cross_layer_formula() -> None:
    model = build("dcnv2", 0, cross_layers=1, mlp=[])
    x0 = torch.randn(2, 24)
    w, b = model.cross.kernels[0], model.cross.bias[0].squeeze(1)
    assert torch.allclose(model.cross(x0), x0 * (x0 @ w.T + b) + x0, atol=1e-5)


def test_bad_options_are_errors_naming_the_option() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['dropout'\]"):
        build("dlrm", 4, dropout=0.1)
    with pytest.raises(ValueError, match="structure='side'"):
        build("dcnv2", 4, structure="side")
    with pytest.raises(ValueError, match="dropout=1.5"):
        build("deepfm", 4, dropout=1.5)
    with pytest.raises(ValueError, match="over_arch"):
        build("dlrm", 4, over_arch=[32, 8])
    with pytest.raises(ValueError, match="multiple of 4"):
        ModelSpec("dcnv2", FEATURES, 0, embedding_dim=6).build(CPU)


def test_per_table_widths_for_models_that_allow_them() -> None:
    dims = {"user_id": 16}
    model = ModelSpec("dcnv2", FEATURES, 1, embedding_dim=8, dims=dims, params={"mlp": [4]}).build(CPU)
    assert model.sparse_arch(kjt()).values().shape == (3, 16 + 8 + 8)
    assert model(torch.randn(3, 1), kjt()).shape == (3, 1)
    with pytest.raises(ValueError, match="one embedding width"):
        ModelSpec("fm", FEATURES, 1, embedding_dim=8, dims=dims).build(CPU)
    with pytest.raises(ValueError, match="unknown sparse feature"):
        ModelSpec("dcnv2", FEATURES, 1, dims={"nope": 8}).build(CPU)


def test_embedding_init_defaults_and_override() -> None:
    fm = build("fm", 0)
    assert max(t.weight.abs().max().item() for t in fm.sparse_arch.embedding_bags.values()) <= 0.01
    wide = ModelSpec("widedeep", FEATURES, 0, embedding_dim=8, embedding_init=0.5).build(CPU)
    w = wide.sparse_arch.embedding_bags["t_user_id"].weight
    assert 0.1 < w.abs().max().item() <= 0.5


def test_model_file_round_trip_gives_the_same_scores(tmp_path: Path) -> None:
    spec = ModelSpec("deepfm", FEATURES, 2, embedding_dim=8, params={"mlp": [8]})
    model = spec.build(CPU).eval()
    schema = {
        "sparse": [{"name": n, "num_embeddings": k, "multi_hot": n == "tags"} for n, k in FEATURES],
        "dense": ["d0", "d1"],
    }
    save_model_file(str(tmp_path / "m.pt"), spec, model.state_dict(), schema, extra={"step": 7})
    loaded = load_model_file(str(tmp_path / "m.pt"))
    assert loaded.spec == spec and loaded.extra == {"step": 7} and loaded.schema == schema
    dense = torch.randn(3, 2)
    assert torch.equal(loaded.model.eval()(dense, kjt()), model(dense, kjt()))
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.pt: not a denoisrec model file"):
        load_model_file(str(tmp_path / "bad.pt"))


@pytest.mark.parametrize("module", ["dlrm", "dcnv2", "deepfm", "fm", "widedeep", "layers", "embeddings", "spec"])
def test_docstring_examples_run(module: str) -> None:
    """Each model module's ``Example::`` block runs as written (with torch, KJT and the module's names)."""
    import importlib
    import textwrap

    mod = importlib.import_module(f"denoisrec.models.{module}")
    doc = mod.__doc__
    assert "Example::" in doc, module
    block = doc.split("Example::", 1)[1].split("\n\n", 2)[1]  # the indented paragraph after the marker
    namespace = {
        "torch": torch,
        "KeyedJaggedTensor": KeyedJaggedTensor,
        "embedding_bag_collection": embedding_bag_collection,
        **vars(mod),
    }
    exec(compile(textwrap.dedent(block), f"<{module} example>", "exec"), namespace)  # noqa: S102
