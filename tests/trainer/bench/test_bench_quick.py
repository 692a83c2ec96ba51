"""``--quick`` fills in the options the user did not type; explicit flags win (issue 13)."""

from __future__ import annotations

from typing import List

import pytest

from denoisrec.trainer.bench import peers, quality, throughput
from denoisrec.trainer.cli import build_parser


def parsed(argv: List[str]):  # type: ignore[no-untyped-def]
    a = build_parser().parse_args(argv)
    a.argv = argv
    return a


@pytest.mark.parametrize(
    "bench,module,explicit,quick",
    [
        ("quality", quality, {"epochs": 4, "seeds": 3}, {"preset": "tiny", "patience": 0, "batch_size": 500}),
        ("throughput", throughput, {"rounds": 9, "batch_size": 128}, {"preset": "tiny", "steps": 2, "warmup": 1}),
        ("peers", peers, {"epochs": 3, "mlp": "8,4"}, {"preset": "tiny", "batch_size": 256}),
    ],
)
def test_explicit_flags_win_over_quick(bench: str, module, explicit: dict, quick: dict) -> None:  # type: ignore
    argv = ["bench", bench, "--quick"]
    for k, v in explicit.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    a = parsed(argv)
    module._apply_quick(a)
    for k, v in explicit.items():
        assert getattr(a, k) == v, k
    for k, v in quick.items():
        assert getattr(a, k) == v, k
    b = parsed(["bench", bench, *argv[2:3]])  # without --quick nothing changes
    b.quick = False
    before = dict(vars(b))
    module._apply_quick(b)
    assert vars(b) == before
