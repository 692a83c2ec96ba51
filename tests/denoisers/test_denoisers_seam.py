"""The loss-layer seam: BCE, T-CE and R-CE against hand-computed batches, and the exact top-k select."""

import math

import pytest
import torch

from denoisrec.denoisers import build_denoiser
from denoisrec.denoisers.collectives import order_keys, radix_select, top_k_mask


def sp(x: float) -> float:
    """softplus: BCE of a positive with logit -x, or of a negative with logit x."""
    return math.log1p(math.exp(x))


Z = torch.tensor([2.0, -1.0, 0.5, -2.0, 1.0, 0.0])
Y = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
IDS = torch.arange(100, 106)
# Per-sample BCE by hand: positives ℓ = softplus(-z), negatives ℓ = softplus(z).
L = [sp(-2.0), sp(1.0), sp(-0.5), sp(-2.0), sp(1.0), math.log(2.0)]


def test_bce_is_the_mean_loss() -> None:
    out = build_denoiser("bce")(Z, Y, IDS)
    assert out.value.item() == pytest.approx(sum(L) / 6, rel=1e-6)
    assert out.weight.tolist() == [1.0] * 6 and not out.dropped.any()


@pytest.mark.parametrize(
    "step,dropped",
    [
        (0, []),  # ε = 0
        (1, []),  # ε = 0.125: ⌊0.75⌋ = 0 (ε·B < 1 drops nothing)
        (2, [1]),  # ε = 0.25: ⌊1.5⌋ = 1 → the largest positive loss (index 1; index 4 is a negative)
        (3, [1, 5]),  # ε = 0.375: ⌊2.25⌋ = 2
        (4, [1, 5, 2]),  # ε = 0.5 = ε_max reached at num_gradual
        (9, [1, 5, 2]),  # capped at ε_max
    ],
)
def test_tce_drops_the_largest_positive_losses_on_its_ramp(step: int, dropped: list) -> None:
    tce = build_denoiser("tce", eps_max=0.5, num_gradual=4)
    tce.step.fill_(step)
    out = tce(Z, Y, IDS)
    assert sorted(torch.nonzero(out.dropped).flatten().tolist()) == sorted(dropped)
    kept = [loss for i, loss in enumerate(L) if i not in dropped]
    assert out.value.item() == pytest.approx(sum(kept) / len(kept), rel=1e-6)
    assert out.stats["eps"].item() == pytest.approx(min(step * 0.5 / 4, 0.5))
    assert tce.step.item() == step + 1  # the forward advanced the schedule


def test_tce_all_negative_batch_and_fewer_positives_than_the_drop_count() -> None:
    tce = build_denoiser("tce", eps_max=0.99, num_gradual=0)
    out = tce(Z[3:5], torch.zeros(2), IDS[3:5])
    assert not out.dropped.any()
    assert out.value.item() == pytest.approx((L[3] + L[4]) / 2, rel=1e-6)
    out = tce(Z, Y, IDS)  # ⌊0.99·6⌋ = 5 > 4 positives: all positives dropped
    assert out.dropped.tolist() == [True, True, True, False, False, True]
    assert out.value.item() == pytest.approx((L[3] + L[4]) / 2, rel=1e-6)


def test_tce_ties_are_broken_by_sample_id_not_position() -> None:
    tce = build_denoiser("tce", eps_max=0.25, num_gradual=0)
    z = torch.tensor([0.0, 0.0, 3.0, 3.0])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    out = tce(z, y, torch.tensor([9, 4, 1, 2]))
    assert out.dropped.tolist() == [True, False, False, False]  # equal losses: the larger id is dropped
    out = tce(z, y, torch.tensor([4, 9, 1, 2]))
    assert out.dropped.tolist() == [False, True, False, False]


def test_tce_gradient_flows_only_through_kept_samples() -> None:
    tce = build_denoiser("tce", eps_max=0.5, num_gradual=0)
    z = Z.clone().requires_grad_(True)
    out = tce(z, Y, IDS)
    out.loss.backward()
    expect = (torch.sigmoid(Z) - Y) / 3.0  # mean over the 3 kept samples
    expect[out.dropped] = 0.0
    torch.testing.assert_close(z.grad, expect)


def test_rce_weights_are_confidences_and_detached() -> None:
    beta = 0.25
    rce = build_denoiser("rce", beta=beta)
    z = Z.clone().requires_grad_(True)
    out = rce(z, Y, IDS)
    p = [1 / (1 + math.exp(-v)) for v in Z.tolist()]
    w = [p[i] ** beta if Y[i] == 1 else (1 - p[i]) ** beta for i in range(6)]
    assert out.weight.tolist() == pytest.approx(w, rel=1e-6)
    assert out.value.item() == pytest.approx(sum(wi * li for wi, li in zip(w, L)) / 6, rel=1e-6)
    out.loss.backward()
    torch.testing.assert_close(z.grad, torch.tensor(w) * (torch.sigmoid(Z) - Y) / 6)
    assert build_denoiser("rce", beta=0.0)(Z, Y, IDS).value.item() == pytest.approx(sum(L) / 6, rel=1e-6)


def test_unknown_denoiser_or_option_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown denoiser"):
        build_denoiser("nope")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['eps'\]"):
        build_denoiser("tce", eps=0.1)


@pytest.mark.parametrize("early_exit", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_radix_top_k_equals_a_sort(seed: int, early_exit: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(0, 300, (1,), generator=g))
    loss = (torch.randint(0, 6, (n,), generator=g).float() / 3) if seed % 2 else torch.rand(n, generator=g) * 20
    ids = torch.randperm(1 << 20, generator=g)[:n]
    valid = torch.rand(n, generator=g) < 0.7
    ks = torch.tensor([0, 1, n // 3, n, n + 5])
    keys = order_keys(loss, ids)
    sel = radix_select(keys, valid, ks, early_exit=early_exit)
    masks = valid.unsqueeze(0) & (keys.unsqueeze(0) >= sel.thr.unsqueeze(1))
    for j, k in enumerate(ks.tolist()):
        ranked = torch.sort(keys[valid], descending=True).values
        assert set(keys[masks[j]].tolist()) == set(ranked[:k].tolist())
        if not early_exit and 0 < k <= len(ranked):
            assert int(sel.thr[j]) == int(ranked[k - 1])  # all rounds: the k-th largest key itself
    assert torch.equal(masks, top_k_mask(keys, valid, ks))  # the CPU default exits early; same sets


@pytest.mark.parametrize("seed", range(20))
def test_radix_sums_over_the_selection_and_hints_change_nothing_but_the_rounds(seed: int) -> None:
    from denoisrec.denoisers import collectives as C

    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(0, 300, (1,), generator=g))
    loss = (torch.randint(0, 6, (n,), generator=g).float() / 3) if seed % 2 else torch.rand(n, generator=g) * 20
    keys = order_keys(loss, torch.randperm(1 << 20, generator=g)[:n])
    valid = torch.rand(n, generator=g) < 0.7
    ks = torch.tensor([n // 3, n // 7])
    vals = torch.randint(0, 1 << 30, (2, n), generator=g)
    calls = []
    real = C.all_reduce
    C.all_reduce = lambda t, op="sum", group=None: calls.append(1) or real(t, op, group)  # type: ignore
    ref_calls: list = []  # the all-reduces of the select without a hint (the loop's first pass)
    try:
        ref = radix_select(keys, valid, ks, sums=vals, early_exit=False)
        for hint in (None, ref.top, ref.top + 1):  # no guess, the right one, a wrong one
            calls.clear()
            sel = radix_select(keys, valid, ks, sums=vals, hint=hint)
            masks = valid.unsqueeze(0) & (keys.unsqueeze(0) >= sel.thr.unsqueeze(1))
            want = torch.sort(keys[valid], descending=True).values
            for j, k in enumerate(ks.tolist()):
                assert set(keys[masks[j]].tolist()) == set(want[:k].tolist())
                assert int(sel.sums[j]) == int((vals[j] * masks[j]).sum())  # Σ over the selected set, exact
            if hint is ref.top and n > 0:
                assert len(calls) <= max(1, len(ref_calls) - 1)  # the right guess saves the second round
            if hint is None:
                ref_calls = list(calls)
    finally:
        C.all_reduce = real


def test_radix_select_exits_early_once_the_histogram_decides() -> None:
    from denoisrec.denoisers import collectives as C

    calls = []
    real = C.all_reduce
    try:
        C.all_reduce = lambda t, op="sum", group=None: (calls.append(t.numel()), t)[1]  # type: ignore[assignment]
        keys = order_keys(torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 10, torch.arange(1000))
        valid = torch.ones(1000, dtype=torch.bool)
        C.radix_select(keys, valid, torch.tensor([7]), early_exit=False)
        full, calls[:] = len(calls), []
        sel = C.radix_select(keys, valid, torch.tensor([7]), early_exit=True)
        assert full == len(C.SHIFTS) and 1 <= len(calls) < full
        assert int((keys >= sel.thr[0]).sum()) == 7
        calls[:] = []
        C.radix_select(keys, torch.zeros(1000, dtype=torch.bool), torch.tensor([3]), early_exit=True)
        assert len(calls) == 1  # nothing to select: decided by the first histogram
    finally:
        C.all_reduce = real  # type: ignore[assignment]
