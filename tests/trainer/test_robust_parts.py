"""The parts that keep runs safe, one at a time and without training (issue 17): the split listing (hidden
paths, symbolic links), schema roles, the run lock, checkpoint verification and pruning, the ``--out``
policy, the non-finite guard, metrics compaction and the check of valid/test before training.
Whole runs that are killed, damaged and collided are in tests/trainer/test_robust_runs.py.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from denoisrec.trainer.checkpoint.checkpointer import Checkpointer
from denoisrec.trainer.checkpoint.files import checksums, list_steps, problem
from denoisrec.trainer.checkpoint.out_policy import OutDirError, decide
from denoisrec.trainer.checkpoint.run_history import compact_metrics
from denoisrec.trainer.checkpoint.run_lock import RunLock, RunLockError
from denoisrec.trainer.cli import main
from denoisrec.trainer.data.fs import DataPath
from denoisrec.trainer.data.preflight import check_eval_splits
from denoisrec.trainer.data.reader import ParquetBatchReader
from denoisrec.trainer.data.schema import DataSchema
from denoisrec.trainer.data.validate import validate_dataset
from denoisrec.trainer.distributed.env import DistEnv
from denoisrec.trainer.errors import DataError
from denoisrec.trainer.loop.nonfinite import NonFiniteError, NonFiniteGuard

ENV = DistEnv(0, 1, 0, 1, torch.device("cpu"), "gloo")


@pytest.fixture()
def ds(tiny_data: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset (tests below damage it)."""
    out = tmp_path / "ds"
    shutil.copytree(tiny_data, out)
    return out


# ------------------------------------------------------------------------------------------ listing (item 4)
def test_hidden_paths_are_ignored_and_said_by_validate_and_reader(ds: Path, capsys: pytest.CaptureFixture) -> None:
    train = ds / "train"
    (train / "_temporary" / "0").mkdir(parents=True)
    shutil.copy(train / "part-00000.parquet", train / "_temporary" / "0" / "part-00000.parquet")  # 2,500 duplicates
    shutil.copy(train / "part-00001.parquet", train / ".part-00001.parquet.crc")
    (train / "_SUCCESS").write_text("")
    reader = ParquetBatchReader(str(train), DataSchema.load(str(ds)), 256)
    assert reader.total_rows == 6000 and len(reader.files) == 3
    assert sorted(os.path.basename(p.rstrip("/")) for p in reader.ignored) == [
        ".part-00001.parquet.crc",
        "_SUCCESS",
        "_temporary",
    ]
    assert main(["validate", str(ds), "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "6,000 rows" in text and "ignored 3 hidden path(s) starting with _ or . (Spark/Hive convention" in text


def test_symlink_loop_dangling_and_outside_links_are_refused_by_both(
    ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    train = ds / "train"
    schema = DataSchema.load(str(ds))
    os.symlink(".", train / "loop")  # would turn 6,000 rows into 246,000
    with pytest.raises(DataError, match=r"train/loop: symbolic link to the folder .* \(a cycle"):
        ParquetBatchReader(str(train), schema, 256)
    assert main(["validate", str(ds), "--split", "train"]) == 1
    assert "a cycle: it points to a folder that contains it" in capsys.readouterr().out
    os.remove(train / "loop")

    os.symlink(tmp_path / "gone.parquet", train / "part-00009.parquet")
    with pytest.raises(DataError, match=r"part-00009.parquet: dangling symbolic link"):
        ParquetBatchReader(str(train), schema, 256)
    os.remove(train / "part-00009.parquet")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(train / "part-00000.parquet", outside / "x.parquet")
    os.symlink(outside / "x.parquet", train / "part-00010.parquet")
    with pytest.raises(DataError, match="outside the split folder"):
        DataPath.resolve(str(train)).parquet_files()
    os.remove(train / "part-00010.parquet")

    os.symlink(train / "part-00000.parquet", train / "part-00011.parquet")  # the same file twice
    report = validate_dataset(str(ds), splits=["train"])
    assert not report.ok and any("which the split holds already" in i.message for i in report.all_issues())

    # The split folder itself may be a link.
    os.remove(train / "part-00011.parquet")
    os.symlink(train, tmp_path / "train_link")
    assert len(ParquetBatchReader(str(tmp_path / "train_link"), schema, 256).files) == 3


# ------------------------------------------------------------------------------------ schema roles (item 8)
@pytest.mark.parametrize(
    "role,where", [("label", "dense"), ("row_id", "sparse"), ("clean_label", "dense"), ("user_id", "dense")]
)
def test_answer_columns_can_never_be_features(ds: Path, role: str, where: str, capsys: pytest.CaptureFixture) -> None:
    d = json.loads((ds / "schema.json").read_text())
    if where == "dense":
        d["dense"].append(role)
    else:
        d["sparse"].append({"name": role, "num_embeddings": 10**6})
    if role == "user_id":
        d["sparse"] = [f for f in d["sparse"] if f["name"] != "user_id"]
    (ds / "schema.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=f"column '{role}' is the .* and also listed under '{where}'"):
        DataSchema.load(str(ds))
    assert main(["validate", str(ds)]) == 2  # validate refuses the schema too
    assert f"column '{role}'" in capsys.readouterr().err


def test_group_id_may_be_a_sparse_feature(tiny_data: Path) -> None:
    schema = DataSchema.load(str(tiny_data))
    assert schema.group_id == "user_id" and "user_id" in schema.sparse_names


# --------------------------------------------------------------------------------------- run lock (items 6, 10)
def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    a = RunLock(str(tmp_path))
    a.acquire()
    with pytest.raises(RunLockError, match=rf"in use by another run \(pid {os.getpid()} on "):
        RunLock(str(tmp_path)).acquire()
    a.release()
    assert not (tmp_path / ".lock").exists()

    # A live process of this host (another pid) holds it: refused. Once it is dead: taken over.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from denoisrec.trainer.checkpoint.run_lock import _start_time, socket

        (tmp_path / ".lock").write_text(
            json.dumps({"pid": holder.pid, "host": socket.gethostname(), "start": _start_time(holder.pid), "time": "t"})
        )
        with pytest.raises(RunLockError, match=f"pid {holder.pid}"):
            RunLock(str(tmp_path)).acquire()
    finally:
        holder.kill()
        holder.wait()
    b = RunLock(str(tmp_path))
    b.acquire()
    assert b.took_over["pid"] == holder.pid
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    b.release()

    # A recycled pid (alive, another start time) is stale too; another host's lock never is.
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": "1"}))
    RunLock(str(tmp_path)).acquire()
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "start": None, "time": "t"}))
    with pytest.raises(RunLockError, match="pid 1 on elsewhere"):
        RunLock(str(tmp_path)).acquire()


# ------------------------------------------------------------------------------- checkpoint files (items 1, 2, 7)
def _fake_checkpoint(path: Path, step: int) -> None:
    (path / "rng").mkdir(parents=True)
    (path / "__0_0.distcp").write_bytes(bytes(range(256)) * 8)
    (path / "rng" / "rank0.pt").write_bytes(b"rng" * 10)
    meta = {
        "step": step,
        "epoch": 0,
        "batches_in_epoch": step,
        "steps_per_epoch": 100,
        "world_size": 1,
        "global_batch": 8,
        "spec": {},
        "denoiser": {},
        "files": checksums(str(path)),
    }
    (path / "meta.json").write_text(json.dumps(meta))


def test_every_damage_is_named_and_auto_falls_back_to_the_newest_intact(tmp_path: Path) -> None:
    root = tmp_path / "run" / "checkpoints"
    for s in (8, 9, 10):
        _fake_checkpoint(root / f"step_{s:08d}", s)
    assert [s for s, _ in list_steps(str(root))] == [8, 9, 10] and problem(str(root / "step_00000010")) is None
    shard = root / "step_00000010" / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x01  # one flipped bit
    shard.write_bytes(bytes(data))
    assert (
        problem(str(root / "step_00000010")) == f"{shard}: content differs from its checksum in meta.json "
        "(damaged: a flipped bit or a partial write)"
    )
    shard9 = root / "step_00000009" / "__0_0.distcp"
    shard9.write_bytes(shard9.read_bytes()[:100])
    assert (
        problem(str(root / "step_00000009")) == f"{shard9}: 100 bytes, meta.json says 2,048 (truncated or overwritten)"
    )
    ck = Checkpointer(str(tmp_path / "run"), 2, ENV)
    assert ck.resolve("auto") == os.path.realpath(root / "step_00000008")
    assert len(ck.skipped) == 2 and str(shard) in ck.skipped[0] and str(shard9) in ck.skipped[1]
    assert sorted(os.listdir(root)) == ["damaged-step_00000009", "damaged-step_00000010", "step_00000008"]

    meta = root / "step_00000008" / "meta.json"
    good = meta.read_text()
    meta.write_text(good[:40])
    assert f"{meta}: not valid JSON" in problem(str(root / "step_00000008"))
    d = json.loads(good)
    del d["global_batch"]
    meta.write_text(json.dumps(d))
    assert (
        problem(str(root / "step_00000008")) == f"{meta}: missing key(s) ['global_batch'], damaged or not a "
        "denoisrec checkpoint"
    )
    with pytest.raises(ValueError, match="none is complete and intact, refusing to start again from step 0"):
        Checkpointer(str(tmp_path / "run"), 2, ENV).resolve("auto")
    os.remove(root / "step_00000008" / "rng" / "rank0.pt")
    meta.write_text(good)
    assert (
        problem(str(root / "step_00000008")) == f"{root / 'step_00000008' / 'rng' / 'rank0.pt'}: missing "
        "(meta.json lists it)"
    )


def test_saves_are_published_whole_and_pruned_by_step_number(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    (root / "step_00000100").mkdir(parents=True)  # an older run's higher-numbered checkpoint
    (root / ".tmp-step_00000007-dead").mkdir()  # a save that was killed
    ck = Checkpointer(str(tmp_path), 2, ENV)
    model = torch.nn.Linear(3, 1)
    for s in (9, 10, 11):
        ck.save(s, model, None, {"step": s})
        assert os.readlink(root / "latest") == f"step_{s:08d}"
    # by number: 100 and the newest save stay (by name, 11 would have been deleted right after it was written)
    assert sorted(os.listdir(root)) == ["latest", "step_00000011", "step_00000100"]
    assert problem(str(root / "step_00000011")) is None
    meta = json.loads((root / "step_00000011" / "meta.json").read_text())
    assert meta["format_version"] == 3 and set(meta["files"]) == {".metadata", "__0_0.distcp", "rng/rank0.pt"}
    ck.save(11, model, None, {"step": 11})  # the same step again: replaced whole
    assert sorted(os.listdir(root)) == ["latest", "step_00000011", "step_00000100"]


# ------------------------------------------------------------------------------------------ --out policy
def test_out_policy(tmp_path: Path) -> None:
    run = SimpleNamespace(out=str(tmp_path / "o"), resume="never", overwrite=False)
    assert decide(run, None) is None  # nothing there
    os.makedirs(tmp_path / "o" / "checkpoints" / "step_00000004")
    with pytest.raises(
        OutDirError,
        match=r"holds checkpoints \(step_00000004\) and this launch would not continue "
        r"it \(run.resume=never\).*run.overwrite=true",
    ):
        decide(run, None)
    assert decide(run, str(tmp_path / "o" / "checkpoints" / "step_00000004")) is None  # resuming it
    run.overwrite = True
    assert decide(run, None) == "overwrite"
    shutil.rmtree(tmp_path / "o" / "checkpoints")
    run.overwrite, run.resume = False, "auto"
    (tmp_path / "o" / "summary.json").write_text("{}")
    with pytest.raises(OutDirError, match=r"a finished run \(summary.json\)"):
        decide(run, None)
    os.remove(tmp_path / "o" / "summary.json")
    (tmp_path / "o" / "metrics.jsonl").write_text("")
    assert decide(run, None) == "restart"  # an unfinished run that never checkpointed: start over


# ------------------------------------------------------------------------------------------ non-finite (item 3)
def test_guard_names_the_first_bad_step_and_skip_stops_after_too_many() -> None:
    g = NonFiniteGuard("stop", check_every=4, device=torch.device("cpu"))
    for step, loss in enumerate([0.5, 0.4, float("inf"), float("nan")], 1):
        g.observe(step, torch.tensor(loss))
        if step < 3:
            g.check(step)
    assert g.due(4) and not g.due(3)
    with pytest.raises(NonFiniteError, match=r"non-finite training loss or gradient at step 3 \(found at step 4\)"):
        g.check(4)
    g = NonFiniteGuard("stop", 1, torch.device("cpu"))
    g.observe(1, torch.tensor(0.3), grad_norm=torch.tensor(float("nan")))
    with pytest.raises(NonFiniteError, match="at step 1"):
        g.check(1)
    s = NonFiniteGuard("skip", 1, torch.device("cpu"), max_skips=2)
    for step, bad in enumerate([True, True, False, True, True], 1):
        s.skipped_step(step, bad)
    assert s.skipped == 4
    with pytest.raises(NonFiniteError, match="3 consecutive steps up to step 6"):
        s.skipped_step(6, True)
    with pytest.raises(ValueError, match="run.nonfinite='sometimes'"):
        NonFiniteGuard("sometimes", 1, torch.device("cpu"))


# ----------------------------------------------------------------------------------------- metrics (item 9)
def test_compact_metrics_drops_replays_and_keeps_the_last_record(tmp_path: Path) -> None:
    f = tmp_path / "metrics.jsonl"
    recs = [(4, "train", 1), (8, "train", 2), (8, "valid", 3), (12, "train", 4), (8, "train", 5), (16, "train", 6)]
    f.write_text("".join(json.dumps({"step": s, "kind": k, "v": v}) + "\n" for s, k, v in recs) + '{"step": 2')
    assert compact_metrics(str(f), upto_step=8) == 4  # 12 and 16 are replays, the first (8, train) replaced, a cut line
    got = [json.loads(x) for x in f.read_text().splitlines()]
    assert [(r["step"], r["kind"], r["v"]) for r in got] == [(4, "train", 1), (8, "valid", 3), (8, "train", 5)]
    assert compact_metrics(str(f)) == 0


# ------------------------------------------------------------------------------------ valid/test first (item 5)
def test_bad_values_in_valid_are_found_before_training(ds: Path) -> None:
    schema = DataSchema.load(str(ds))
    check_eval_splits(str(ds), schema)  # clean
    f = next((ds / "valid").glob("*.parquet"))
    t = pq.read_table(f)
    labels = t.column("label").to_numpy().copy()
    labels[-1] = 2
    t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(labels, type=pa.int8()))
    pq.write_table(t, f, row_group_size=500)
    with pytest.raises(
        DataError,
        match=rf"valid split, checked before training: {f}: row group 2: column 'label': "
        r"1 value\(s\) outside \{0, 1\}",
    ):
        check_eval_splits(str(ds), schema)
    check_eval_splits(str(ds), schema, max_row_groups=0)  # off
