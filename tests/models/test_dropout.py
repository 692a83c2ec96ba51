"""Dropout16: the drop rate it states, unbiased outputs, the gradient through the same mask, eval identity."""

import pytest
import torch

from denoisrec.models.dropout import Dropout16


def test_drop_rate_scale_and_mean_are_the_stated_ones() -> None:
    drop = Dropout16(0.2)
    assert drop.threshold == 13107 and drop.scale == pytest.approx(65536 / (65536 - 13107))
    torch.manual_seed(0)
    y = drop(torch.ones(1000, 1000))
    values = y.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(drop.scale)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - 13107 / 65536) < 0.002  # 4.5 standard deviations of 1M draws at p = 0.2
    assert abs(float(y.mean()) - 1.0) < 0.003  # inverted dropout: E[y] = x
    # Every 16-bit lane of a 64-bit draw is used, and none is biased (the lanes are interleaved by position).
    lanes = (y.flatten()[: 4 * 200_000].view(-1, 4) == 0).float().mean(0)
    assert torch.all((lanes - 0.2).abs() < 0.006), lanes


def test_gradient_uses_the_forward_mask_and_eval_is_identity() -> None:
    drop = Dropout16(0.5)
    x = torch.randn(37, 11, requires_grad=True)  # a size not divisible by 4: the last draw is partly used
    torch.manual_seed(3)
    y = drop(x)
    y.sum().backward()
    kept = y != 0
    assert torch.equal(x.grad != 0, kept)
    assert torch.allclose(y[kept], x[kept] * drop.scale)
    torch.manual_seed(3)
    assert torch.equal(drop(x), y)  # reproducible from the seed
    assert drop.eval()(x) is x
    assert Dropout16(0.0)(x) is x


def test_bad_rate_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"model option dropout=1.0: must lie in \[0, 1\)"):
        Dropout16(1.0)
