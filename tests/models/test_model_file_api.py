"""The one model-file API (``denoisrec.models.model_file``): written by the checkpointer's export, read back by
``read_model_file`` / ``load_model_file`` / ``read_weights`` (DeCA(p)'s ``prior_checkpoint``).
"""

from pathlib import Path

import pytest
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.models import ModelSpec, load_model_file, read_model_file, read_weights, save_model_file
from denoisrec.models.model_file import FORMAT
from denoisrec.trainer.checkpoint.checkpointer import Checkpointer
from denoisrec.trainer.distributed.env import DistEnv

FEATURES = [("user_id", 7), ("item_id", 11)]
SCHEMA = {"sparse": [{"name": n, "num_embeddings": k} for n, k in FEATURES], "dense": ["d0"]}
CPU = torch.device("cpu")


def kjt(b: int = 3) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(
        keys=["user_id", "item_id"],
        values=torch.tensor([0, 3, 6, 1, 5, 10]),
        lengths=torch.ones(2 * b, dtype=torch.int32),
        stride=b,
    )


class Job(nn.Module):
    """A ``TrainModule``'s shape: the model under ``model.``, training-time parts beside it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.denoiser = nn.Linear(1, 1)  # never exported


def test_checkpointer_export_round_trips_through_read_and_load(tmp_path: Path) -> None:
    spec = ModelSpec("dlrm", FEATURES, 1, embedding_dim=4, params={"dense_arch": [4], "over_arch": [4, 1]})
    job = Job(spec.build(CPU)).eval()
    env = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=CPU, backend="gloo")
    path = Checkpointer(str(tmp_path), 1, env).export_model(
        job, str(tmp_path / "model.pt"), spec, SCHEMA, extra={"step": 12}
    )
    f = read_model_file(path)  # metadata and weights, nothing built
    assert f.spec == spec and f.schema == SCHEMA and f.extra == {"step": 12}
    assert set(f.state_dict) == set(job.model.state_dict())  # the model only: no denoiser, no "model." prefix
    assert all(torch.equal(f.state_dict[k], v) for k, v in job.model.state_dict().items())
    dense = torch.randn(3, 1)
    assert torch.equal(load_model_file(path).model.eval()(dense, kjt()), job.model(dense, kjt()))
    assert read_weights(path).keys() == f.state_dict.keys()


def test_read_weights_takes_a_plain_state_dict_and_names_a_bad_file(tmp_path: Path) -> None:
    spec = ModelSpec("fm", FEATURES, 1, embedding_dim=4)
    state = spec.build(CPU).state_dict()
    torch.save(state, tmp_path / "plain.pt")
    got = read_weights(str(tmp_path / "plain.pt"))
    assert got.keys() == state.keys() and all(torch.equal(got[k], v) for k, v in state.items())
    torch.save({"a": 1}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="odd.pt: expected a model file or a state_dict"):
        read_weights(str(tmp_path / "odd.pt"))
    with pytest.raises(ValueError, match="odd.pt: not a denoisrec model file"):
        read_model_file(str(tmp_path / "odd.pt"))
    save_model_file(str(tmp_path / "m.pt"), spec, state, SCHEMA)
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert blob["format"] == FORMAT
    torch.save({**blob, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="future.pt: model file version 99"):
        read_weights(str(tmp_path / "future.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt: no such model file"):
        load_model_file(str(tmp_path / "missing.pt"))
