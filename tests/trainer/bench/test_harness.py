"""The bench harness (trainer/bench/harness.py) on real torchrun ranks: a 2-rank job's result is read back; a
failing rank raises one RanksFailed carrying its stderr tail.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from denoisrec.trainer.bench.harness import RanksFailed, run_spec

WORKER = textwrap.dedent(
    """
    import sys

    import torch
    import torch.distributed as dist

    from denoisrec.trainer.bench.harness import read_spec, write_result


    def worker(spec_path):
        spec = read_spec(spec_path)
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        if spec["fail_rank"] == rank:
            raise ValueError(f"rank {rank} refuses: bad spec value {spec['value']}")
        t = torch.tensor([float(spec["value"] + rank)])
        dist.all_reduce(t)
        if rank == 0:
            write_result(spec, {"sum": t.item(), "world": dist.get_world_size()})
        dist.barrier()
        dist.destroy_process_group()


    if __name__ == "__main__":
        assert sys.argv[1] == "--worker"
        worker(sys.argv[2])
    """
)


@pytest.fixture
def script(tmp_path: Path) -> str:
    path = tmp_path / "tiny_worker.py"
    path.write_text(WORKER)
    return str(path)


def test_two_ranks_result_read(script: str) -> None:
    result = run_spec(script, {"value": 5, "fail_rank": -1}, 2, what="bench tiny", threads=1, timeout=120)
    assert result == {"sum": 11.0, "world": 2}  # (5 + 0) + (5 + 1), all-reduced over both ranks


def test_failing_rank_raises_one_error_with_stderr_tail(script: str) -> None:
    with pytest.raises(RanksFailed) as info:
        run_spec(script, {"value": 7, "fail_rank": 1}, 2, what="bench tiny", threads=1, timeout=120)
    e = info.value
    assert e.returncode not in (0, None)
    assert "rank 1 refuses: bad spec value 7" in e.tail
    assert str(e).startswith("bench tiny: ") and "torch.distributed.run" in str(e)
    assert e.reason == "ValueError: rank 1 refuses: bad spec value 7"


def test_in_process_one_rank(tmp_path: Path) -> None:
    from denoisrec.trainer.bench.harness import read_spec, write_result

    def here(path: str) -> None:
        spec = read_spec(path)
        write_result(spec, {"doubled": spec["value"] * 2})

    assert run_spec("unused.module", {"value": 4}, 1, what="bench tiny", in_process=here) == {"doubled": 8}
