"""The Parquet reader: disjoint, complete, equal-step shares; shuffling; exact contents; prefetch; filesystems."""

from pathlib import Path
from typing import List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from denoisrec.trainer.data.assemble import assemble
from denoisrec.trainer.data.block import Counters, Layout, Where, decode
from denoisrec.trainer.data.prefetch import Background
from denoisrec.trainer.data.reader import ParquetBatchReader, steps_per_epoch
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.data.shuffle import Batcher

SHUFFLES = {
    "none": dict(shuffle=False),
    "row_groups": dict(shuffle=True),
    "buffer": dict(shuffle=True, shuffle_buffer=1700),
}


def _read(reader: ParquetBatchReader) -> Tuple[List[np.ndarray], List[int]]:
    batches = list(reader)
    return [b.sample_ids.numpy().copy() for b in batches], [b.size for b in batches]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [500, 700, 4096])
@pytest.mark.parametrize("mode", list(SHUFFLES))
def test_shares_are_disjoint_complete_and_equal_in_steps(
    tiny_data: Path, world: int, batch_size: int, mode: str
) -> None:
    schema = DataSchema.load(str(tiny_data))
    total = ds.dataset(str(tiny_data / "train")).count_rows()
    seen, steps = [], set()
    for rank in range(world):
        r = ParquetBatchReader(str(tiny_data / "train"), schema, batch_size, rank, world, seed=5, **SHUFFLES[mode])
        ids, sizes = _read(r)
        steps.add(len(sizes))
        assert len(sizes) == len(r) == steps_per_epoch(total, world, batch_size)
        share = r.epoch_plan().rank_rows
        # full batches, then one short batch if the share is not a multiple, then empty ones
        expected = [batch_size] * (share // batch_size) + ([share % batch_size] if share % batch_size else [])
        assert sizes == expected + [0] * (len(sizes) - len(expected))
        rep = r.epoch_report()
        assert rep.complete and rep.rows_read == share and rep.batches_read == len(sizes)
        assert (rep.full_batches, rep.short_batches) == (share // batch_size, int(share % batch_size > 0))
        seen.append(np.concatenate(ids))
    assert len(steps) == 1, "ranks must take the same number of steps"
    allids = np.concatenate(seen)
    assert len(allids) == total and len(np.unique(allids)) == total
    shares = [len(s) for s in seen]
    assert max(shares) - min(shares) <= 1


def test_equal_steps_pad_with_empty_batches(tmp_path: Path, tiny_data: Path) -> None:
    """7 rows on 3 ranks with batches of 2: shares 2, 2, 3 -> 2 steps each; rank 0 and 1 end with an empty
    batch, rank 2 with a short one.
    """
    t = pq.read_table(sorted((tiny_data / "train").glob("*.parquet"))[0]).slice(0, 7)
    (tmp_path / "s").mkdir()
    pq.write_table(t, tmp_path / "s" / "a.parquet", row_group_size=3)
    schema = DataSchema.load(str(tiny_data))
    got = []
    for rank in range(3):
        r = ParquetBatchReader(str(tmp_path / "s"), schema, 2, rank, 3)
        got.append([b.size for b in r])
        plan = r.epoch_plan()
        assert plan.steps == 2 and plan.empty_batches == (1 if rank < 2 else 0)
        if rank < 2:
            b = list(r)[-1]
            assert b.size == 0 and b.dense_features.shape == (0, 4) and b.sparse_features.stride() == 0
    assert got == [[2, 0], [2, 0], [2, 1]]


def test_shuffle_is_deterministic_per_seed_and_epoch(tiny_data: Path) -> None:
    schema = DataSchema.load(str(tiny_data))

    def mk(seed: int) -> ParquetBatchReader:
        return ParquetBatchReader(str(tiny_data / "train"), schema, 1000, shuffle=True, shuffle_buffer=2500, seed=seed)

    r = mk(1)
    e0 = np.concatenate(_read(r)[0])
    r.set_epoch(1)
    e1 = np.concatenate(_read(r)[0])
    r2 = mk(1)
    r2.set_epoch(1)
    assert np.array_equal(e1, np.concatenate(_read(r2)[0]))  # same seed and epoch: same order
    assert not np.array_equal(e0, e1)  # another epoch: another order
    assert np.array_equal(np.sort(e0), np.sort(e1))
    assert not np.array_equal(e0, np.concatenate(_read(mk(2))[0]))  # another seed: another order


def test_shuffle_buffer_mixes_rows_across_row_groups(tiny_data: Path) -> None:
    """Row-group order alone keeps each row group's 500 rows together; the buffer mixes them."""
    schema = DataSchema.load(str(tiny_data))
    table = ds.dataset(str(tiny_data / "train")).to_table(columns=["row_id"])
    group_of = {int(r): i // 500 for i, r in enumerate(table.column("row_id").to_numpy())}  # tiny: 500-row groups
    plain = ParquetBatchReader(str(tiny_data / "train"), schema, 500, shuffle=True, seed=3)
    mixed = ParquetBatchReader(str(tiny_data / "train"), schema, 500, shuffle=True, seed=3, shuffle_buffer=3000)
    groups_per_batch = lambda r: [len({group_of[int(i)] for i in ids}) for ids in _read(r)[0]]  # noqa: E731
    assert set(groups_per_batch(plain)) == {1}
    assert min(groups_per_batch(mixed)) >= 3  # a 500-row batch drawn from a 3000-row window of 6 groups


def test_batcher_emits_every_row_once_within_the_buffer_bound() -> None:
    rng = np.random.default_rng(0)

    def block(n: int, start: int):  # a minimal Block: ids only
        from denoisrec.trainer.data.block import Block

        return Block(
            n=n,
            ids=np.arange(start, start + n, dtype=np.int64)[None, :],
            multi=[],
            dense=np.zeros((n, 0), np.float32),
            one_d={},
        )

    b = Batcher(batch_size=64, buffer_rows=300, rng=rng)
    out, start, peak = [], 0, 0
    for n in [100, 37, 250, 1, 500, 90]:
        for parts in b.feed(block(n, start)):
            out.append(np.concatenate([blk.ids[0, rows] for blk, rows in parts]))
        peak = max(peak, b.window_rows)
        start += n
    for parts in b.finish():
        out.append(np.concatenate([blk.ids[0, rows] for blk, rows in parts]))
    sizes = [len(o) for o in out]
    assert sizes[:-1] == [64] * (len(sizes) - 1) and 0 < sizes[-1] <= 64 and sum(sizes) == start
    assert np.array_equal(np.sort(np.concatenate(out)), np.arange(start))
    assert peak < 300  # a window is drained as soon as it reaches the buffer size: at most buffer + one block


@pytest.mark.parametrize("mode", ["none", "buffer"])
def test_batch_contents_match_the_file(tiny_data: Path, mode: str) -> None:
    schema = DataSchema.load(str(tiny_data))
    table = ds.dataset(str(tiny_data / "train")).to_table()
    by_id = {int(r): i for i, r in enumerate(table.column("row_id").to_numpy())}
    col = {c: table.column(c).to_pylist() for c in table.column_names}
    r = ParquetBatchReader(str(tiny_data / "train"), schema, 640, 1, 3, seed=2, **SHUFFLES[mode])
    for b in list(r)[:2]:
        rows = [by_id[int(i)] for i in b.sample_ids]
        kjt = b.sparse_features.to_dict()
        assert b.sparse_features.keys() == schema.sparse_names
        for f in schema.sparse:
            jt = kjt[f.name]
            if f.multi_hot:
                assert jt.lengths().tolist() == [len(col[f.name][i]) for i in rows]
                assert jt.values().tolist() == [v for i in rows for v in col[f.name][i]]
            else:
                assert jt.values().tolist() == [col[f.name][i] for i in rows]
        np.testing.assert_array_equal(
            b.dense_features.numpy(), np.array([[col[c][i] for c in schema.dense] for i in rows], dtype=np.float32)
        )
        assert b.labels.tolist() == [float(col["label"][i]) for i in rows]
        assert b.group_ids.tolist() == [col["user_id"][i] for i in rows]
        assert b.clean_labels.tolist() == [float(col["clean_label"][i]) for i in rows]
        assert b.is_noisy.tolist() == [float(col["is_noisy"][i]) for i in rows]
        assert b.dense_features.dtype.is_floating_point and b.sparse_features.values().dtype.itemsize == 8


def test_prefetch_threads_change_nothing(tiny_data: Path) -> None:
    schema = DataSchema.load(str(tiny_data))

    def mk(p: int) -> ParquetBatchReader:
        return ParquetBatchReader(
            str(tiny_data / "train"),
            schema,
            700,
            0,
            2,
            shuffle=True,
            shuffle_buffer=1500,
            seed=4,
            prefetch=p,
            block_rows=300,
        )

    for a, b in zip(mk(0), mk(3)):
        assert a.sample_ids.tolist() == b.sample_ids.tolist()
        assert a.sparse_features.values().tolist() == b.sparse_features.values().tolist()
        assert a.sparse_features.lengths().tolist() == b.sparse_features.lengths().tolist()
        assert a.dense_features.tolist() == b.dense_features.tolist() and a.labels.tolist() == b.labels.tolist()


def test_breaking_out_of_an_epoch_stops_the_threads(tiny_data: Path) -> None:
    import threading

    schema = DataSchema.load(str(tiny_data))
    r = ParquetBatchReader(str(tiny_data / "train"), schema, 100, prefetch=2)
    it = iter(r)
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("denoisrec-") and t.is_alive()]
    rep = r.epoch_report()
    assert not rep.complete and 100 <= rep.rows_read < 6000


def test_background_reraises_after_the_items_before_the_error() -> None:
    def source():
        yield 1
        yield 2
        raise KeyError("boom")

    it = Background(source(), depth=1)
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(KeyError, match="boom"):
        next(it)


def test_one_d_columns_and_dense_are_zero_copy_views_of_decoded_buffers(tiny_data: Path) -> None:
    schema = DataSchema.load(str(tiny_data))
    layout = Layout(schema, True)
    rb = next(
        pq.ParquetFile(sorted((tiny_data / "train").glob("*.parquet"))[0]).iter_batches(
            batch_size=500, columns=layout.columns
        )
    )
    block = decode(rb, layout, Where("f", 0), Counters())
    row_id_buffer = rb.column("row_id").buffers()[1].address  # int64 in the file: no conversion needed
    assert block.one_d["sample_id"].ctypes.data == row_id_buffer
    batch = assemble([(block, slice(100, 228))], layout)
    assert batch.sample_ids.data_ptr() == row_id_buffer + 100 * 8
    assert batch.dense_features.data_ptr() == block.dense.ctypes.data + 100 * block.dense.strides[0]
    two = assemble([(block, slice(0, 10)), (block, slice(20, 30))], layout)  # two parts: copied
    assert two.sample_ids.tolist() == rb.column("row_id").to_pylist()[:10] + rb.column("row_id").to_pylist()[20:30]


def test_multi_hot_lengths_and_values_come_from_arrow_offsets(tmp_path: Path) -> None:
    """large_list<int32> sliced mid-row-group (the rank boundary): offsets are rebased, values exact."""
    tags = [[1, 2], [], [3], [4, 5, 6], [7], [], [0, 1, 2, 3]]
    t = pa.table(
        {
            "tags": pa.array(tags, type=pa.large_list(pa.int32())),
            "item": pa.array(range(7), pa.int16()),
            "label": pa.array([0, 1] * 3 + [1], pa.int8()),
            "row_id": pa.array(range(7), pa.int64()),
        }
    )
    pq.write_table(t, tmp_path / "a.parquet")
    from denoisrec.trainer.data.schema import SparseFeature

    schema = DataSchema(
        sparse=[SparseFeature("item", 10), SparseFeature("tags", 8, multi_hot=True)],
        dense=[],
        group_id=None,
        clean_label=None,
        is_noisy=None,
    )
    r = ParquetBatchReader(str(tmp_path / "a.parquet"), schema, 4, rank=1, world_size=2)  # rows 3..6
    b = next(iter(r))
    jt = b.sparse_features["tags"]
    assert jt.lengths().tolist() == [3, 1, 0, 4] and jt.values().tolist() == [4, 5, 6, 7, 0, 1, 2, 3]
    assert b.sparse_features["item"].values().tolist() == [3, 4, 5, 6] and b.group_ids is None


def test_reads_through_fsspec_and_pyarrow_filesystems(tiny_data: Path) -> None:
    import fsspec
    import pyarrow.fs as pafs

    mem = fsspec.filesystem("memory")
    for p in tiny_data.rglob("*"):
        if p.is_file():
            mem.pipe(f"/ds5/{p.relative_to(tiny_data)}", p.read_bytes())
    local = ParquetBatchReader(str(tiny_data / "train"), DataSchema.load(str(tiny_data)), 1000, 1, 2)
    via_uri = ParquetBatchReader("memory://ds5/train", DataSchema.load("memory://ds5"), 1000, 1, 2)
    via_fs = ParquetBatchReader("/ds5/train", DataSchema.load("/ds5", filesystem=mem), 1000, 1, 2, filesystem=mem)
    via_arrow = ParquetBatchReader(
        str(tiny_data / "train"), DataSchema.load(str(tiny_data)), 1000, 1, 2, filesystem=pafs.LocalFileSystem()
    )
    expected = np.concatenate(_read(local)[0])
    for r in (via_uri, via_fs, via_arrow):
        assert np.array_equal(np.concatenate(_read(r)[0]), expected)
    assert via_uri.path == "memory://ds5/train"


def test_pin_memory_without_cuda_is_a_clear_error(tiny_data: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: pinning is legal here")
    with pytest.raises(ValueError, match="pin_memory=True needs CUDA"):
        ParquetBatchReader(str(tiny_data / "train"), DataSchema.load(str(tiny_data)), 100, pin_memory=True)


def test_files_with_different_integer_types_read_alike(tiny_data: Path, tmp_path: Path) -> None:
    """One file stores ids as int64, the next as int32 / int16: one scan per physical schema, same batches."""
    files = sorted((tiny_data / "train").glob("*.parquet"))
    (tmp_path / "mixed").mkdir()
    for i, f in enumerate(files):
        t = pq.read_table(f)
        if i == 1:
            t = t.set_column(t.schema.get_field_index("item_id"), "item_id", t.column("item_id").cast(pa.int32()))
            t = t.set_column(t.schema.get_field_index("hour"), "hour", t.column("hour").cast(pa.int16()))
        pq.write_table(t, tmp_path / "mixed" / f.name, row_group_size=500)
    schema = DataSchema.load(str(tiny_data))
    a = list(ParquetBatchReader(str(tiny_data / "train"), schema, 900, shuffle=True, seed=9))
    b = list(ParquetBatchReader(str(tmp_path / "mixed"), schema, 900, shuffle=True, seed=9))
    assert len(b[0].sparse_features.keys()) == len(schema.sparse)
    for x, y in zip(a, b):
        assert x.sparse_features.values().tolist() == y.sparse_features.values().tolist()
        assert x.sample_ids.tolist() == y.sample_ids.tolist()
