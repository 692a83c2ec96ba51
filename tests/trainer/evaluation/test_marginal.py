"""``eval.marginalise``: scores marginalised over the training distribution of context features unknown at serving.

A hand case of the mean served probability, the shares read from a real split, the refusals, and a run whose
clean-test AUC equals the exported model's scores marginalised by hand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from scipy.special import expit, logit
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.trainer.config.check import check_config
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.data.splits import split_readers
from denoisrec.trainer.errors import UsageError
from denoisrec.trainer.evaluation.metrics import auc
from denoisrec.trainer.evaluation.scoring import Marginal, value_shares


@dataclasses.dataclass
class _Batch:  # the one field Marginal.logits replaces
    sparse_features: KeyedJaggedTensor


def _forward(model: object, batch: _Batch) -> torch.Tensor:
    # z = position − 2·item: reads both keys, so the fixed values must land on position's segment alone
    kjt = batch.sparse_features
    return (kjt["position"].values() - 2.0 * kjt["item"].values()).float().unsqueeze(1)


def test_mean_served_probability_by_hand() -> None:
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["item", "position"], torch.tensor([1, 0, 7, 9]), torch.tensor([1, 1, 1, 1])
    )  # rows: (item 1, position 7), (item 0, position 9)
    m = Marginal(("position",), (((0,), 0.25), ((2,), 0.75)))
    got = m.logits(None, _Batch(kjt), _forward).squeeze(1).numpy()
    # row 0: 0.25·σ(0 − 2) + 0.75·σ(2 − 2); row 1: 0.25·σ(0) + 0.75·σ(2)
    want = [logit(0.25 * expit(-2) + 0.75 * expit(0)), logit(0.25 * expit(0) + 0.75 * expit(2))]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert kjt["position"].values().tolist() == [7, 9]  # the batch itself is untouched


def _readers(data: Path) -> dict:
    cfg = Config()
    cfg.data.path = str(data)
    return split_readers(cfg.data, DataSchema.load(str(data)), 0, 1, 0, torch.device("cpu"))


def test_shares_are_the_training_splits_counts(tiny_data: Path) -> None:
    train = _readers(tiny_data)["train"]
    col = np.concatenate([pq.read_table(f, columns=["position"]).column(0).to_numpy() for f in train.files])
    values, shares = value_shares(train, "position")
    want_v, want_c = np.unique(col, return_counts=True)
    assert values.tolist() == want_v.tolist() and shares == pytest.approx(want_c / len(col))
    m = Marginal.from_reader(train, ["position", "position"])  # a repeat counts once
    assert m.features == ("position",) and [c[0][0] for c in m.combos] == want_v.tolist()
    assert sum(w for _, w in m.combos) == pytest.approx(1.0)


def test_refusals_name_the_option(tiny_data: Path) -> None:
    train = _readers(tiny_data)["train"]
    with pytest.raises(UsageError, match="eval.marginalise=\\['item_id'\\]: 'item_id' is not a single-valued context"):
        Marginal.from_reader(train, ["item_id"])
    with pytest.raises(UsageError, match="value combinations to score per row; at most 256"):
        Marginal.from_reader(train, ["position", "hour"])  # 31 x 24
    cfg = Config()
    cfg.data.path = str(tiny_data)
    cfg.eval.marginalise = ["postion"]
    with pytest.raises(UsageError, match="eval.marginalise: 'postion' is not a context feature .*position"):
        check_config(cfg)


def test_a_runs_clean_test_auc_is_the_marginalised_one(tiny_data: Path, tmp_path: Path) -> None:
    from denoisrec.models import load_model_file
    from denoisrec.trainer.data.block import Where
    from denoisrec.trainer.serving.predict import Scorer
    from denoisrec.trainer.train import train

    cfg = Config()
    cfg.data.path, cfg.data.batch_size = str(tiny_data), 500
    cfg.run.out, cfg.run.curves, cfg.run.progress = str(tmp_path / "run"), False, "none"
    cfg.eval.marginalise = ["position"]
    s = train(check_config(cfg))
    test = pa.concat_tables([pq.read_table(f) for f in sorted((tiny_data / "test").glob("*.parquet"))])
    scorer = Scorer(load_model_file(str(tmp_path / "run" / "model.pt")), torch.device("cpu"))
    i = test.schema.get_field_index("position")
    train_reader = _readers(tiny_data)["train"]
    mean = np.zeros(test.num_rows)
    for v, w in zip(*value_shares(train_reader, "position")):
        fixed = test.set_column(i, test.schema.field(i), pa.array(np.full(test.num_rows, v), test.schema.field(i).type))
        mean += w * expit(scorer(fixed, Where(str(tiny_data / "test"), 0)).astype(np.float64))
    y = test.column("clean_label").to_numpy()
    assert s["metrics"]["test_clean"]["auc"] == pytest.approx(auc(y, mean), abs=1e-6)
    logged = auc(y, scorer(test, Where(str(tiny_data / "test"), 0)))
    assert abs(logged - s["metrics"]["test_clean"]["auc"]) > 1e-4  # BCE reads the position: it does change
