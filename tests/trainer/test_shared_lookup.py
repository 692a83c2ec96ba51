"""The observation model's context tables folded into the model's collection (trainer/shared_lookup.py): the
same loss and gradients as the tower's own lookup, one collection, export of f alone, and the one-line refusal
of a checkpoint written before the fold; sharded on 3 ranks in tests/denoisers/test_observation.py.
"""

import copy
from types import SimpleNamespace

import pytest
import torch
from torchrec import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers.observation import ObservationModel
from denoisrec.models import ModelSpec
from denoisrec.trainer.dist import DistEnv
from denoisrec.trainer.errors import CheckpointError
from denoisrec.trainer.module import TrainModule
from denoisrec.trainer.shared_lookup import refuse_unfolded_checkpoint
from denoisrec.trainer.unsharded import unsharded_state_dict

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


def test_tower_without_the_shared_output_says_so() -> None:
    spec = ModelSpec("dlrm", features=[("user_id", 20)], dense_in_features=2, embedding_dim=8)
    module = TrainModule(spec.build(torch.device("cpu")), ObservationModel(CTX, device=torch.device("cpu")))
    with pytest.raises(RuntimeError, match="no pooled context embeddings were received"):
        module.denoiser.tower(_batch(4).sparse_features)


def test_checkpoint_written_before_the_fold_is_refused_in_one_line() -> None:
    old = ["model.model.sparse_arch.embedding_bag_collection.embedding_bags.t_user_id.weight"]
    old += ["model.denoiser.tower.ebc.embedding_bags.obs_position.weight"]
    new = ["model.sparse_arch.embedding_bag_collection.embedding_bags.obs_position.weight"]
    with pytest.raises(CheckpointError, match="written before the observation model's context tables moved") as e:
        refuse_unfolded_checkpoint("runs/x/checkpoints/step_7", old, new)
    assert "\n" not in str(e.value) and "runs/x/checkpoints/step_7" in str(e.value)
    refuse_unfolded_checkpoint("p", new, new)  # a checkpoint after the fold, or any other denoiser: no error
    refuse_unfolded_checkpoint("p", old[:1], old[:1])


def test_checkpointer_load_refuses_a_pre_fold_checkpoint(tmp_path) -> None:
    import json

    import torch.distributed.checkpoint as dcp

    from denoisrec.trainer.checkpoint import Checkpointer

    spec = ModelSpec("dlrm", features=[("user_id", 20)], dense_in_features=2, embedding_dim=8)
    module = TrainModule(spec.build(torch.device("cpu")), ObservationModel(CTX, device=torch.device("cpu")))
    old = {k: v.clone() for k, v in module.state_dict().items() if "obs_" not in k}
    old["denoiser.tower.ebc.embedding_bags.obs_position.weight"] = torch.zeros(31, 4)
    path = tmp_path / "step_1"
    dcp.save({"model": old}, checkpoint_id=str(path), no_dist=True)
    (path / "meta.json").write_text(json.dumps({"with_optimizer": False, "step": 1, "world_size": 1}))
    env = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), backend="gloo")
    with pytest.raises(CheckpointError, match="step_1: written before the observation model's context tables"):
        Checkpointer(str(tmp_path / "out"), 1, env).load(str(path), module, None)
