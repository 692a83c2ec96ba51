"""The denoiser's own tables folded into the model's collection (trainer/distributed/shared_lookup.py): the observation
model's context tower and DeCA / DeCA(p)'s MF heads give the same loss and gradients as their own lookup, one
collection, export of f alone, and the one-line refusal of a checkpoint written before the fold; sharded on 3
ranks in tests/denoisers/test_observation.py and tests/trainer/distributed/test_deca_folded.py, on 1 and 3 ranks against
one unfolded process in tests/denoisers/test_distributed_denoisers.py.
"""

import copy
from types import SimpleNamespace

import pytest
import torch
from torchrec import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers.observation import ObservationModel
from denoisrec.models import ModelSpec
from denoisrec.trainer.distributed.env import DistEnv
from denoisrec.trainer.distributed.shared_lookup import refuse_unfolded_checkpoint
from denoisrec.trainer.distributed.unsharded import unsharded_state_dict
from denoisrec.trainer.errors import CheckpointError
from denoisrec.trainer.module import TrainModule

CTX = {"position": 31, "scene": 6}


def _batch(n: int) -> SimpleNamespace:
    g = torch.Generator().manual_seed(1)
    users, pos, scene = (torch.randint(0, k, (n,), generator=g) for k in (20, 31, 6))
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["user_id", "position", "scene"], torch.cat([users, pos, scene]), torch.ones(3 * n, dtype=torch.int32)
    )
    return SimpleNamespace(
        sparse_features=kjt,
        dense_features=torch.randn(n, 2, generator=g),
        labels=(torch.rand(n, generator=g) < 0.5).float(),
        sample_ids=torch.arange(n),
        is_noisy=None,
    )


def _batch_with_items(n: int) -> SimpleNamespace:
    """:func:`_batch` with an ``item_id`` feature after ``user_id`` (the id noise MFs read both)."""
    b = _batch(n)
    values = b.sparse_features.values()
    b.sparse_features = KeyedJaggedTensor.from_lengths_sync(
        ["user_id", "item_id", "position", "scene"],
        torch.cat([values[:n], torch.arange(n) % 15, values[n:]]),
        torch.ones(4 * n, dtype=torch.int32),
    )
    return b


@pytest.mark.parametrize("name", ["dlrm", "deepfm"])
def test_folded_tower_gives_the_unfolded_loss_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(name, features=[("user_id", 20)], dense_in_features=2, embedding_dim=8)
    model = spec.build(torch.device("cpu"))
    den = ObservationModel(CTX, device=torch.device("cpu"))
    with torch.no_grad():  # tables away from their initial values, so a lost weight would show
        for p in den.tower.parameters():
            p.normal_(0, 0.5)
    ref_model, ref_den = copy.deepcopy(model), copy.deepcopy(den)
    module = TrainModule(model, den)
    b = _batch(24)

    ebcs = [m for m in module.modules() if isinstance(m, EmbeddingBagCollection)]
    names = [c.name for e in ebcs for c in e.embedding_bag_configs()]
    assert den.tower.ebc is None and not any(isinstance(m, EmbeddingBagCollection) for m in den.modules())
    assert {"obs_position", "obs_scene", "t_user_id"} <= set(names)  # one collection holds both (FM's w_ aside)
    assert module.shared_lookup is not None and module.shared_lookup.tables == ["obs_position", "obs_scene"]

    module.train()
    loss, (value, logits, _) = module(b)
    loss.backward()
    ref_logits = ref_model(b.dense_features, b.sparse_features).squeeze(-1)
    ref = ref_den(ref_logits, b.labels, b.sample_ids, b)
    ref.loss.backward()
    assert torch.allclose(logits, ref_logits.detach()) and float(value) == pytest.approx(float(ref.value), rel=1e-6)
    bags = module.model.get_submodule(module.shared_lookup.path).embedding_bags
    for t in ("obs_position", "obs_scene"):
        got, want = bags[t].weight.grad, ref_den.tower.ebc.embedding_bags[t].weight.grad
        assert want.abs().sum() > 0 and torch.allclose(got, want, atol=1e-7), t
    # The model's own table learns as before.
    ref_t = [p for n, p in ref_model.named_parameters() if "t_user_id" in n][0]
    assert torch.allclose(bags["t_user_id"].weight.grad, ref_t.grad, atol=1e-7)

    # Evaluation and export: f alone (no obs_* table in the model file's state).
    env = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), backend="gloo")
    state = unsharded_state_dict(module, env)
    assert state is not None and not any("obs_" in k for k in state)
    assert set(state) == set(ref_model.state_dict())


def _graph_nodes(root: object, name: str) -> int:
    """How many autograd nodes called ``name`` the graph below ``root`` holds."""
    seen, todo, n = set(), [root], 0
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        n += type(node).__name__ == name
        todo.extend(f for f, _ in node.next_functions)
    return n


@pytest.mark.parametrize("name", ["dlrm", "dcnv2"])
def test_model_and_parts_read_the_collections_output_through_one_split(name: str) -> None:
    # Split per reader, each split's backward would rebuild the whole [B, ΣD] gradient and autograd would add them.
    from denoisrec.denoisers import build_denoiser

    spec = ModelSpec(name, features=[("user_id", 20), ("item_id", 15)], dense_in_features=2, embedding_dim=8)
    den = build_denoiser(
        "observation_ids",
        context={"context_tables": CTX, "tables": {"user_id": 20, "item_id": 15}, "device": torch.device("cpu")},
    )
    module = TrainModule(spec.build(torch.device("cpu")), den)
    b = _batch_with_items(6)
    module.train()
    loss, _ = module(b)
    assert _graph_nodes(loss.grad_fn, "SplitWithSizesBackward0") == 1
    loss.backward()
    bags = module.model.get_submodule(module.shared_lookup.path).embedding_bags
    assert all(bags[t].weight.grad is not None for t in module.shared_lookup.tables)


def test_held_warmup_step_folded_gives_the_unfolded_loss_and_zero_table_gradients() -> None:
    from denoisrec.denoisers import build_denoiser

    torch.manual_seed(0)
    spec = ModelSpec("dlrm", features=[("user_id", 20), ("item_id", 15)], dense_in_features=2, embedding_dim=8)
    model = spec.build(torch.device("cpu"))
    ctx = {"context_tables": CTX, "tables": {"user_id": 20, "item_id": 15}, "device": torch.device("cpu")}
    den = build_denoiser("observation_ids", context=ctx, form="examination", tower_warmup=2, hidden=[4])
    ref_model, ref_den = copy.deepcopy(model), copy.deepcopy(den)
    module = TrainModule(model, den)
    b = _batch_with_items(6)
    module.train()
    ref_den.train()
    assert den.tower_frozen() and ref_den.tower_frozen()
    loss, (value, logits, _) = module(b)
    loss.backward()
    ref = ref_den(ref_model(b.dense_features, b.sparse_features).squeeze(-1), b.labels, b.sample_ids, b)
    ref.loss.backward()
    assert float(value) == pytest.approx(float(ref.value), rel=1e-6)
    bags = module.model.get_submodule(module.shared_lookup.path).embedding_bags
    for t in module.shared_lookup.tables:  # held: a zero gradient, as the unfolded tables get
        got = bags[t].weight.grad
        assert got is not None and float(got.abs().sum()) == 0.0, t
    for p in [*den.tower.mlp.parameters(), den.u]:  # the dense parameters stay in the graph (DDP)
        assert p.grad is not None and float(p.grad.abs().sum()) == 0.0


def test_tower_without_the_shared_output_says_so() -> None:
    spec = ModelSpec("dlrm", features=[("user_id", 20)], dense_in_features=2, embedding_dim=8)
    module = TrainModule(spec.build(torch.device("cpu")), ObservationModel(CTX, device=torch.device("cpu")))
    with pytest.raises(RuntimeError, match="no pooled context embeddings were received"):
        module.denoiser.tower(_batch(4).sparse_features)


def test_checkpoint_written_before_the_fold_is_refused_in_one_line() -> None:
    old = ["model.model.sparse_arch.embedding_bag_collection.embedding_bags.t_user_id.weight"]
    old += ["model.denoiser.tower.ebc.embedding_bags.obs_position.weight"]
    new = ["model.sparse_arch.embedding_bag_collection.embedding_bags.obs_position.weight"]
    with pytest.raises(CheckpointError, match=r"written before the denoiser's tables \['obs_position'\] moved") as e:
        refuse_unfolded_checkpoint("runs/x/checkpoints/step_7", old, new)
    assert "\n" not in str(e.value) and "runs/x/checkpoints/step_7" in str(e.value)
    refuse_unfolded_checkpoint("p", new, new)  # a checkpoint after the fold, or any other denoiser: no error
    refuse_unfolded_checkpoint("p", old[:1], old[:1])


def test_checkpointer_load_refuses_a_pre_fold_checkpoint(tmp_path) -> None:
    import json

    import torch.distributed.checkpoint as dcp

    from denoisrec.trainer.checkpoint.checkpointer import Checkpointer

    spec = ModelSpec("dlrm", features=[("user_id", 20)], dense_in_features=2, embedding_dim=8)
    module = TrainModule(spec.build(torch.device("cpu")), ObservationModel(CTX, device=torch.device("cpu")))
    old = {k: v.clone() for k, v in module.state_dict().items() if "obs_" not in k}
    old["denoiser.tower.ebc.embedding_bags.obs_position.weight"] = torch.zeros(31, 4)
    path = tmp_path / "step_1"
    dcp.save({"model": old}, checkpoint_id=str(path), no_dist=True)
    (path / "meta.json").write_text(json.dumps({"with_optimizer": False, "step": 1, "world_size": 1}))
    env = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), backend="gloo")
    with pytest.raises(CheckpointError, match="step_1: written before the denoiser's tables"):
        Checkpointer(str(tmp_path / "out"), 1, env).load(str(path), module, None)


# ---- DeCA / DeCA(p): the MF heads' tables read user_id / item_id beside the model's own tables -------------


def _deca_batch(n: int) -> SimpleNamespace:
    g = torch.Generator().manual_seed(2)
    users, items = torch.randint(0, 20, (n,), generator=g), torch.randint(0, 15, (n,), generator=g)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["user_id", "item_id"], torch.cat([users, items]), torch.ones(2 * n, dtype=torch.int32)
    )
    return SimpleNamespace(
        sparse_features=kjt,
        dense_features=torch.randn(n, 2, generator=g),
        labels=(torch.rand(n, generator=g) < 0.5).float(),
        sample_ids=torch.arange(n),
        is_noisy=(torch.rand(n, generator=g) < 0.3).float(),
    )


def _deca(name: str, spec: ModelSpec):  # type: ignore[no-untyped-def]
    from denoisrec.denoisers import build_denoiser

    context = {"tables": {"user_id": 20, "item_id": 15}, "device": torch.device("cpu")}
    if name == "deca_p":
        context["prior"] = spec.build(torch.device("cpu"), table_prefix="prior_")
        return build_denoiser(name, context=context, pretrain_steps=0, mf_dim=6, alpha=0.5)
    return build_denoiser(name, context=context, mf_dim=6, alpha=0.5, objective="paper", C1=10.0)


@pytest.mark.parametrize("name,model", [("deca", "dlrm"), ("deca", "fm"), ("deca_p", "deepfm"), ("deca_p", "dcnv2")])
def test_folded_mf_heads_give_the_unfolded_loss_and_gradients(name: str, model: str) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(model, features=[("user_id", 20), ("item_id", 15)], dense_in_features=2, embedding_dim=8)
    f = spec.build(torch.device("cpu"))
    den = _deca(name, spec)
    with torch.no_grad():  # tables away from their initial values, so a lost weight would show
        for p in den.mf.parameters():
            p.normal_(0, 0.5)
    ref_model, ref_den = copy.deepcopy(f), copy.deepcopy(den)
    module = TrainModule(f, den)
    lookup = module.shared_lookup
    assert lookup is not None and den.mf.folded and den.mf.ebc is None
    heads = ("g", "h", "hp") if name == "deca" else ("h", "hp")
    mf_tables = [f"deca_{h}_{feat}" for h in heads for feat in ("user_id", "item_id")]
    assert lookup.tables == mf_tables
    # Both read user_id / item_id: TorchRec keys them <feature>@<table>; the model gets its own back by name.
    assert lookup.renames == {"user_id@t_user_id": "user_id", "item_id@t_item_id": "item_id"}
    bags = module.model.get_submodule(lookup.path).embedding_bags
    assert set(mf_tables) | {"t_user_id", "t_item_id"} == set(bags)

    b = _deca_batch(24)
    module.train()
    ref_den.train()
    for step in range(2):  # DP then DN (objective=paper): the inactive noise model gets a zero gradient
        for m in (module, ref_model, ref_den):
            m.zero_grad(set_to_none=True)
        loss, (value, logits, out) = module(b)
        loss.backward()
        ref_logits = ref_model(b.dense_features, b.sparse_features).squeeze(-1)
        ref = ref_den(ref_logits, b.labels, b.sample_ids, b)
        ref.loss.backward()
        assert torch.equal(logits, ref_logits.detach()), step
        assert float(value) == pytest.approx(float(ref.value), rel=1e-6), step
        assert out.stats.keys() == ref.stats.keys()
        for k in ref.stats:
            assert float(out.stats[k]) == pytest.approx(float(ref.stats[k]), rel=1e-6), (step, k)
        for t in mf_tables:
            got, want = bags[t].weight.grad, ref_den.mf.ebc.embedding_bags[t].weight.grad
            want = torch.zeros_like(got) if want is None else want
            assert torch.allclose(got, want, atol=1e-6), (step, t)
        assert any(float(bags[t].weight.grad.abs().sum()) > 0 for t in mf_tables)
        for feat in ("user_id", "item_id"):  # the model's own tables learn as before
            ref_t = [p for n, p in ref_model.named_parameters() if f"embedding_bags.t_{feat}." in n][0]
            assert torch.allclose(bags[f"t_{feat}"].weight.grad, ref_t.grad, atol=1e-6), (step, feat)
    assert den.report().keys() == ref_den.report().keys()

    # Evaluation and export: f alone (no deca_* table in the model file's state), the same logits.
    env = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), backend="gloo")
    state = unsharded_state_dict(module, env)
    assert state is not None and set(state) == set(ref_model.state_dict())
    module.eval()
    _, (_, logits, _) = module(b)
    assert torch.equal(logits, ref_model(b.dense_features, b.sparse_features).squeeze(-1).detach())


def test_checkpointer_load_refuses_a_pre_fold_deca_checkpoint(tmp_path) -> None:
    import json

    import torch.distributed.checkpoint as dcp

    from denoisrec.trainer.checkpoint.checkpointer import Checkpointer

    spec = ModelSpec("dlrm", features=[("user_id", 20), ("item_id", 15)], dense_in_features=2, embedding_dim=8)
    module = TrainModule(spec.build(torch.device("cpu")), _deca("deca", spec))
    old = {k: v.clone() for k, v in module.state_dict().items() if "deca_" not in k}
    old["denoiser.mf.ebc.embedding_bags.deca_h_user_id.weight"] = torch.zeros(20, 6)
    path = tmp_path / "step_3"
    dcp.save({"model": old}, checkpoint_id=str(path), no_dist=True)
    (path / "meta.json").write_text(json.dumps({"with_optimizer": False, "step": 3, "world_size": 1}))
    env = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), backend="gloo")
    with pytest.raises(CheckpointError) as e:
        Checkpointer(str(tmp_path / "out"), 1, env).load(str(path), module, None)
    msg = str(e.value)
    assert "\n" not in msg and "step_3: written before the denoiser's tables ['deca_h_user_id']" in msg
    assert "denoiser.mf.ebc.embedding_bags.*" in msg


def test_a_model_without_a_t_collection_keeps_the_parts_own_lookup() -> None:
    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
            return self.w(dense)

    spec = ModelSpec("dlrm", features=[("user_id", 20), ("item_id", 15)], dense_in_features=2, embedding_dim=8)
    den = _deca("deca", spec)
    module = TrainModule(Linear(), den)
    assert module.shared_lookup is None and not den.mf.folded
    loss, _ = module(_deca_batch(8))
    loss.backward()
    assert den.mf.ebc is not None and den.mf.ebc.embedding_bags["deca_g_user_id"].weight.grad.abs().sum() > 0


def test_folded_tables_are_planned_again_beside_the_models_own_sharding_types() -> None:
    from denoisrec.trainer.distributed.shared_lookup import aligned_constraints

    def plan(**types: str) -> SimpleNamespace:
        sharding = {t: SimpleNamespace(sharding_type=v) for t, v in types.items()}
        return SimpleNamespace(plan={"model.sparse_arch.embedding_bag_collection": sharding})

    module = SimpleNamespace(
        shared_lookup=SimpleNamespace(path="sparse_arch.embedding_bag_collection", tables=["deca_h_user_id"])
    )
    keep = {"t_scene": "kept"}
    # The planner put the MF table column-wise beside table-wise model tables: a second all-to-all group.
    got = aligned_constraints(
        plan(t_user_id="table_wise", t_scene="data_parallel", deca_h_user_id="column_wise"), module, keep
    )
    assert got is not None and got["t_scene"] == "kept" and got["deca_h_user_id"].sharding_types == ["table_wise"]
    # Already in the model's group, or the model's tables all replicated, or nothing folded: plan kept.
    assert aligned_constraints(plan(t_user_id="table_wise", deca_h_user_id="table_wise"), module, keep) is None
    assert aligned_constraints(plan(t_user_id="data_parallel", deca_h_user_id="column_wise"), module, keep) is None
    assert aligned_constraints(plan(t_user_id="table_wise"), SimpleNamespace(shared_lookup=None), keep) is None
