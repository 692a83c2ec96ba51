"""The trainer's pure parts: LR schedule, early stopping, presets and flag precedence, data position."""

import math
from typing import List

import pytest

from denoisrec.trainer.cli import build_parser, config_from_args
from denoisrec.trainer.config.presets import apply_preset
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.evaluation.early_stop import EarlyStopping
from denoisrec.trainer.loop.schedule import LRSchedule
from denoisrec.trainer.run_setup import resume_step, train_batches


def test_linear_warmup_then_linear_decay_to_the_floor() -> None:
    s = LRSchedule(warmup_steps=4, decay="linear", total_steps=10, min_lr_ratio=0.1)
    got = [s.multiplier(t) for t in range(10)]
    # warm-up (t+1)/4, then from 1 at t=4 down to 0.1 at t=9 in 5 equal steps of 0.18
    assert got == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.82, 0.64, 0.46, 0.28, 0.1])


def test_cosine_decay_and_no_decay() -> None:
    s = LRSchedule(warmup_steps=0, decay="cosine", total_steps=5, min_lr_ratio=0.0)
    assert [s.multiplier(t) for t in range(5)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(5)]
    )
    assert LRSchedule(warmup_steps=2).multiplier(1) == 1.0 and LRSchedule().multiplier(123) == 1.0
    with pytest.raises(ValueError, match="optim.decay='step'"):
        LRSchedule(decay="step")


def test_early_stopping_counts_validations_without_improvement() -> None:
    es = EarlyStopping(patience=2)
    assert [es.update(s, a) for s, a in [(1, 0.70), (2, 0.72), (3, 0.71), (4, 0.73), (5, 0.72)]] == [
        True,
        True,
        False,
        True,
        False,
    ]
    assert not es.stop and es.best_step == 4
    es.update(6, float("nan"))
    assert es.stop and es.best_auc == 0.73
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(es.state_dict())
    assert restored == es
    off = EarlyStopping(patience=0)
    for s in range(10):
        off.update(s, 0.5)
    assert not off.stop


def test_presets_map_onto_each_models_options() -> None:
    cfg = Config()
    cfg.model.name = "dlrm"
    apply_preset(cfg, "lcd")
    assert cfg.model.embedding_dim == 8 and cfg.model.params == {"over_arch": [256, 128, 64, 1]}
    assert cfg.data.global_batch_size == 8192
    cfg = Config()
    cfg.model.name = "deepfm"
    apply_preset(cfg, "dart")
    assert cfg.model.params == {"mlp": [16, 16], "dropout": 0.2} and cfg.model.embedding_dim == 16
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.sparse) == (1e-3, 1e-6, "adam")
    assert cfg.run.early_stop_patience == 2 and cfg.data.global_batch_size == 2048
    cfg = Config()
    cfg.model.name = "fm"
    apply_preset(cfg, "dart")
    assert cfg.model.params == {}  # FM has neither an MLP nor dropout
    with pytest.raises(ValueError, match="--preset 'nope'"):
        apply_preset(Config(), "nope")


def test_cli_precedence_config_then_preset_then_flags_then_set(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("model: {name: dlrm, embedding_dim: 32}\ndata: {batch_size: 100}\n")
    a = build_parser().parse_args(
        [
            "train",
            "--config",
            str(tmp_path / "c.yaml"),
            "--preset",
            "dart",
            "--model",
            "widedeep",
            "--set",
            "model.params.dropout=0.1",
        ]
    )
    cfg = config_from_args(a)
    assert cfg.model.name == "widedeep"
    assert cfg.model.embedding_dim == 16  # the preset over the file
    assert cfg.model.params == {"mlp": [16, 16], "dropout": 0.1}  # --set over the preset, mapped for widedeep


class FakeBatch(tuple):
    """An (epoch, index) pair with the ``size`` (rows) that row accounting reads."""

    size = 10


class FakeReader:
    """3 steps per epoch; batches are (epoch, index) pairs of 10 rows."""

    def __init__(self) -> None:
        self.epoch = 0
        self.skipped: List[tuple] = []  # (epoch, batches, rows) marked as skipped on resume

    def __len__(self) -> int:
        return 3

    def epoch_report(self) -> "FakeReader":
        return self

    def mark_skipped(self, batches: int, rows: int) -> None:
        self.skipped.append((self.epoch, batches, rows))

    def set_epoch(self, e: int) -> None:
        self.epoch = e

    def __iter__(self):
        return iter([FakeBatch((self.epoch, i)) for i in range(3)])


def test_train_batches_continue_from_the_data_position() -> None:
    reader = FakeReader()
    assert list(train_batches(reader, 4, 8)) == [(1, 1), (1, 2), (2, 0), (2, 1)]
    assert reader.skipped == [(1, 1, 10)]  # the batch an earlier launch trained: skipped, not read
    assert list(train_batches(FakeReader(), 0, 2)) == [(0, 0), (0, 1)]
    assert list(train_batches(FakeReader(), 6, 6)) == []


def test_resume_step_maps_rows_when_the_layout_changes() -> None:
    meta = {"step": 25, "epoch": 2, "batches_in_epoch": 5, "steps_per_epoch": 10, "global_batch": 200}
    assert resume_step(meta, 10, 200) == 25  # same layout: the step itself
    # 3 ranks × 100 rows: 5 batches of 200 rows = 1000 rows into epoch 2 → 3 whole batches of 300 (900 rows)
    assert resume_step(meta, 7, 300) == 2 * 7 + 3


def test_sparse_optimizer_limits_of_fbgemm_cpu_are_clear_errors() -> None:
    import torch

    from denoisrec.trainer.distributed.sharding import check_sparse_optimizer

    with pytest.raises(ValueError, match="on CPU use another optim.sparse, or --sharding data_parallel"):
        check_sparse_optimizer("adam", "table_wise", torch.device("cpu"))
    check_sparse_optimizer("adam", "data_parallel", torch.device("cpu"))
    check_sparse_optimizer("adam", None, torch.device("cuda"))
    check_sparse_optimizer("rowwise_adagrad", None, torch.device("cpu"))
    with pytest.raises(ValueError, match="optim.sparse='lamb'"):
        check_sparse_optimizer("lamb", None, torch.device("cpu"))
