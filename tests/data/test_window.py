"""The shuffle window's row gathers (trainer/data/window.py) and the assembly pool (trainer/data/workers.py):
the same batches as the value-permute reference (``Batcher`` + ``permute`` + ``assemble``) bit for bit,
padded multi-hot lists equal to the variable path, any worker count, odd world sizes, the pinned path.
"""

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from denoisrec.trainer.data import assemble as assemble_mod
from denoisrec.trainer.data import window as window_mod
from denoisrec.trainer.data.assemble import assemble
from denoisrec.trainer.data.block import Counters
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema, SparseFeature
from denoisrec.trainer.data.shuffle import Batcher
from denoisrec.trainer.data.window import MultiHot, Window, WindowBatcher, assemble_gather
from denoisrec.trainer.data.workers import ordered_map


def _tensors(b: Any) -> Dict[str, torch.Tensor]:
    kjt = b.sparse_features
    out = {"dense": b.dense_features, "values": kjt.values(), "lengths": kjt.lengths(), "labels": b.labels}
    for k in ("sample_ids", "group_ids", "clean_labels", "is_noisy"):
        if getattr(b, k) is not None:
            out[k] = getattr(b, k)
    return out


def _assert_same(a: List[Any], b: List[Any]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.sparse_features.keys() == y.sparse_features.keys()
        tx, ty = _tensors(x), _tensors(y)
        assert tx.keys() == ty.keys()
        for k in tx:
            assert tx[k].dtype == ty[k].dtype, k
            assert torch.equal(tx[k], ty[k]), k  # bit for bit (dense floats included)


def _reference(reader: ParquetBatchReader, epoch: int) -> List[Any]:
    """The value-permute reader's batches (Batcher + permute + assemble) on the reader's own blocks."""
    plan = reader.epoch_plan(epoch)
    rng = np.random.Generator(np.random.PCG64([reader.seed, plan.rank, plan.world_size, epoch, 1]))
    batcher = Batcher(reader.batch_size, reader.shuffle_buffer, rng)
    out = []
    for block in reader._blocks(plan, Counters()):
        out += [assemble(p, reader.layout) for p in batcher.feed(block)]
    out += [assemble(p, reader.layout) for p in batcher.finish()]
    out += [assemble([], reader.layout)] * (plan.steps - len(out))
    return out


def _wide_data(root: Path, rows: int = 3001) -> DataSchema:
    """int64 ids in one column (no int32 window), a short list (padded) and a long-tailed one (variable)."""
    rng = np.random.default_rng(5)
    short = [list(rng.integers(0, 50, rng.integers(0, 6))) for _ in range(rows)]
    long_ = [list(rng.integers(0, 90, 200 if i % 97 == 0 else rng.integers(0, 3))) for i in range(rows)]
    table = pa.table(
        {
            "user_id": pa.array(rng.integers(0, 40, rows), pa.int64()),
            "big": pa.array(rng.integers(0, 3_000_000_000, rows), pa.int64()),
            "short": pa.array(short, pa.list_(pa.int32())),
            "item": pa.array(rng.integers(0, 70, rows), pa.int32()),
            "long": pa.array(long_, pa.large_list(pa.int64())),
            "x": pa.array(rng.normal(size=rows), pa.float64()),
            "label": pa.array(rng.integers(0, 2, rows), pa.int8()),
            "row_id": pa.array(np.arange(rows), pa.int64()),
        }
    )
    (root / "train").mkdir(parents=True)
    pq.write_table(table.slice(0, 1800), root / "train" / "part-0.parquet", row_group_size=400)
    pq.write_table(table.slice(1800), root / "train" / "part-1.parquet", row_group_size=700)
    return DataSchema(
        sparse=[
            SparseFeature("user_id", 40),
            SparseFeature("big", 3_000_000_000),
            SparseFeature("short", 50, multi_hot=True),
            SparseFeature("item", 70),
            SparseFeature("long", 90, multi_hot=True),
        ],
        dense=["x"],
        clean_label=None,
        is_noisy=None,
    )


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("world,rank", [(1, 0), (3, 2)])
def test_window_gather_equals_the_value_permute_bit_for_bit(
    tiny_data: Path, world: int, rank: int, workers: int
) -> None:
    schema = DataSchema.load(str(tiny_data))
    for buffer in (1700, 2100):  # carried rows between windows; a window larger than the share
        r = ParquetBatchReader(
            str(tiny_data / "train"), schema, 300, rank, world, shuffle=True, seed=4, shuffle_buffer=buffer,
            prefetch=2, workers=workers, block_rows=450,
        )
        for epoch in (0, 1):
            r.set_epoch(epoch)
            _assert_same(list(r), _reference(r, epoch))


def test_window_gather_on_int64_ids_and_long_lists(tmp_path: Path) -> None:
    schema = _wide_data(tmp_path)
    r = ParquetBatchReader(str(tmp_path / "train"), schema, 256, shuffle=True, seed=1, shuffle_buffer=1000)
    got = list(r)
    _assert_same(got, _reference(r, 0))
    assert got[0].sparse_features.values().dtype == torch.int64


def test_padded_multi_hot_equals_the_variable_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    parts = []
    for n in (5, 0, 40, 13):
        lens = rng.integers(0, 7, n)
        off = np.zeros(n + 1, np.int32)
        np.cumsum(lens, out=off[1:])
        parts.append((off, rng.integers(0, 1000, int(off[-1])).astype(np.int32)))
    n = 58
    padded = MultiHot(parts, n)
    monkeypatch.setattr(window_mod, "PAD_MAX_WIDTH", 0)  # force offsets + values
    variable = MultiHot(parts, n)
    assert padded.padded is not None and variable.padded is None
    vals = np.concatenate([v for _, v in parts])
    off = np.concatenate([[0], np.cumsum(padded.lengths)])
    for index in (rng.permutation(n), np.array([57, 0, 3, 3]), np.zeros(0, np.int64)):
        la, va = padded.take(index)
        lb, vb = variable.take(index)
        want = [v for i in index for v in vals[off[i] : off[i + 1]]]
        assert la.tolist() == lb.tolist() == [int(padded.lengths[i]) for i in index]
        assert va.tolist() == vb.tolist() == want
        assert va.dtype == vb.dtype == np.int32


def test_window_batcher_carries_the_rest_into_the_next_window(tiny_data: Path) -> None:
    """Every row once, batches full until the last, rows carried over between windows (sample ids)."""
    r = ParquetBatchReader(str(tiny_data / "train"), DataSchema.load(str(tiny_data)), 64, prefetch=0)
    blocks = list(r._blocks(r.epoch_plan(), Counters()))
    wb = WindowBatcher(64, 300, np.random.default_rng(0))
    ids = []
    for block in blocks:
        ids += [g.window.one_d["sample_id"][g.index] for g in wb.feed(block)]  # type: ignore[index]
        assert wb.window_rows < 300
    ids += [g.window.one_d["sample_id"][g.index] for g in wb.finish()]  # type: ignore[index]
    sizes = [len(i) for i in ids]
    assert sizes[:-1] == [64] * (len(sizes) - 1) and 0 < sizes[-1] <= 64
    assert sorted(np.concatenate(ids).tolist()) == sorted(np.concatenate([b.one_d["sample_id"] for b in blocks]))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_give_identical_batches_and_exact_uneven_shares_on_3_ranks(tiny_data: Path, workers: int) -> None:
    schema = DataSchema.load(str(tiny_data))
    seen, steps = [], set()
    for rank in range(3):
        kw: Dict[str, Any] = dict(shuffle=True, seed=9, shuffle_buffer=1700, block_rows=500)
        one = ParquetBatchReader(str(tiny_data / "train"), schema, 700, rank, 3, prefetch=0, **kw)
        many = ParquetBatchReader(str(tiny_data / "train"), schema, 700, rank, 3, prefetch=3, workers=workers, **kw)
        a, b = list(one), list(many)
        _assert_same(a, b)
        steps.add(len(b))
        plan = many.epoch_plan()
        assert many.epoch_report().complete and sum(x.size for x in b) == plan.rank_rows
        seen += [x.sample_ids.numpy().copy() for x in b]
    assert len(steps) == 1
    ids = np.concatenate(seen)
    assert len(ids) == len(set(ids.tolist())) == many.total_rows


def test_ordered_map_keeps_order_and_raises_after_the_results_before_it() -> None:
    assert list(ordered_map(lambda x: x * x, iter(range(20)), workers=3)) == [x * x for x in range(20)]

    def source():  # type: ignore[no-untyped-def]
        yield from range(5)
        raise ValueError("bad row group")

    got = []
    with pytest.raises(ValueError, match="bad row group"):
        for x in ordered_map(lambda x: x + 1, source(), workers=2):
            got.append(x)
    assert got == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="workers=0"):
        next(ordered_map(lambda x: x, iter([1]), workers=0))


def test_pinned_path_writes_every_output_into_pinned_buffers(
    tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``pin`` every output tensor is one of the pinned allocations (no view of an Arrow or window
    buffer left to copy), and the batch equals the unpinned one. pin_memory itself needs CUDA: the
    allocator is replaced by a recording one here.
    """
    made: List[torch.Tensor] = []

    def fake_pinned(shape, dtype):  # type: ignore[no-untyped-def]
        t = torch.empty(shape, dtype=dtype)
        made.append(t)
        return t

    monkeypatch.setattr(assemble_mod, "pinned_empty", fake_pinned)
    r = ParquetBatchReader(str(tiny_data / "train"), DataSchema.load(str(tiny_data)), 512, prefetch=0)
    blocks = list(r._blocks(r.epoch_plan(), Counters()))
    window = Window(blocks[:2])
    g = window_mod.Gather(window, np.random.default_rng(0).permutation(window.n)[:512])
    part = [(blocks[0], slice(0, 100))]
    for build in (lambda pin: assemble_gather(g, r.layout, pin), lambda pin: assemble(part, r.layout, pin)):
        made.clear()
        pinned, plain = build(True), build(False)
        made_ptrs = {t.data_ptr() for t in made}
        for k, t in _tensors(pinned).items():
            assert t.data_ptr() in made_ptrs, k
        _assert_same([pinned], [plain])
