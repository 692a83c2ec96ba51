"""The denoiser option catalog and the constructors agree at every edge: each bounded option of each catalog
denoiser just inside its interval is accepted by both, just outside refused by both; each listed choice is
accepted by the constructor and a misspelt one refused by both (the catalog refuses early, without torch; the
constructor guards every other caller).
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Tuple

import pytest
import torch

from denoisrec.denoisers import build_denoiser
from denoisrec.trainer.config.options import DENOISER_OPTIONS, Opt, UsageError, check_denoiser_params

CONTEXT = {
    "tables": {"user_id": 5, "item_id": 7},
    "context_tables": {"position": 4},
    "device": torch.device("cpu"),
    "prior": torch.nn.Linear(1, 1),
}


def probes(o: Opt) -> Iterator[Tuple[Any, bool]]:
    """``(value, accepted?)`` just inside and just outside each bound of ``o`` (a span: 0 and -1; a list of
    widths: [1] and [0]; a multiple of 4: the bound plus 4 and plus 1).
    """
    if o.kind in ("span", "ints"):
        yield ([1], True) if o.kind == "ints" else (0, True)
        yield ([0], False) if o.kind == "ints" else (-1, False)
        return
    if o.multiple_of > 1 and o.lo is not None:
        yield int(o.lo) + o.multiple_of, True
        yield int(o.lo) + 1, False
    step = 1 if o.kind == "int" else 1e-6
    for bound, is_open, sign in ((o.lo, o.lo_open, -1), (o.hi, o.hi_open, 1)):
        if bound is None:
            continue
        inside = bound - sign * step if is_open else bound
        outside = bound if is_open else bound + sign * step
        cast = int if o.kind == "int" else float
        yield cast(inside), True
        yield cast(outside), False


def cases() -> Iterator[Tuple[str, str, Any, bool]]:
    for name, opts in DENOISER_OPTIONS.items():
        for k, o in opts.items():
            if o.kind in ("int", "float", "span", "ints"):
                for value, ok in probes(o):
                    yield name, k, value, ok
            for choice in o.choices:
                yield name, k, choice, True
            if o.choices:
                yield name, k, o.choices[0][:-1] + "x", False


def accepted_by_catalog(name: str, params: Dict[str, Any]) -> bool:
    try:
        check_denoiser_params(name, params)
    except UsageError:
        return False
    return True


def accepted_by_constructor(name: str, params: Dict[str, Any]) -> bool:
    try:
        build_denoiser(name, context=CONTEXT, **params)
    except ValueError as e:
        assert next(iter(params)) in str(e), f"{name}: the error names no argument: {e}"
        return False
    return True


CASES = list(cases())


@pytest.mark.parametrize("name,option,value,ok", CASES, ids=[f"{n}-{k}={v!r}" for n, k, v, _ in CASES])
def test_catalog_and_constructor_agree_at_the_edge(name: str, option: str, value: Any, ok: bool) -> None:
    params = {option: value, **partners(name, option, value)}
    assert accepted_by_catalog(name, params) is ok, f"catalog: {name} {params}"
    assert accepted_by_constructor(name, params) is ok, f"constructor: {name} {params}"


def partners(name: str, option: str, value: Any) -> Dict[str, Any]:
    """The other options an edge needs to be a valid combination (the constructors' constraints between
    options): DeCA's C1, C2 act only under objective=paper; the observation models need h_init < h_prime_init.
    """
    if option in ("C1", "C2"):
        return {"objective": "paper"}
    if name.startswith("observation") and option == "h_init":
        return {"h_prime_init": (1.0 + value) / 2 if 0 < value < 1 else 0.5}
    if name.startswith("observation") and option == "h_prime_init":
        return {"h_init": value / 2 if 0 < value < 1 else 0.5}
    return {}
