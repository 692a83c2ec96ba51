"""Dropout whose mask costs a quarter of a random draw per value: 16 random bits per activation.

``y = x · m / (1 − p̂)`` with ``m = [u ≥ k]``, ``u`` uniform on ``{0, …, 2¹⁶ − 1}`` and ``k = round(p · 2¹⁶)``,
so each value is dropped with probability ``p̂ = k / 2¹⁶`` (``p`` to within ``2⁻¹⁷``: 0.2 → 0.199997) and
``E[y] = x`` exactly (Srivastava et al., 2014, inverted dropout). The bits come from 64-bit draws
(``torch.randint`` over the full int64 range, viewed as four int16 lanes), one draw per four activations.

Why: ``nn.Dropout`` draws one ``bernoulli_`` per value; on CPU that was 5.5% of the Criteo-like DeepFM step
(benchmarks/README.md, "Training step: profile") and the masks of a 256-128-64 MLP at batch 8192 cost
more than its first layer's forward matmul. Measured on one core: 24 ms for ``bernoulli_`` on an
``[8192, 256]`` mask against 4.8 ms here. The random stream follows ``torch.manual_seed`` as before (other
masks than ``nn.Dropout``'s for the same seed).

Shapes: any ``x`` → same shape; identity in ``eval()`` or with ``p = 0``.

Example::

    drop = Dropout16(0.2)
    y = drop(torch.ones(4, 8))            # training: entries 0 or 1 / (1 − 0.199997)
    drop.eval()(torch.ones(4, 8)).sum()  # tensor(32.)
"""

from __future__ import annotations

import torch
from torch import nn

_BITS = 1 << 16


class Dropout16(nn.Module):
    """Inverted dropout with 16-bit masks (see module docstring).

    Args:
        p: drop probability in ``[0, 1)``; applied as ``round(p · 2¹⁶) / 2¹⁶``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"model option dropout={p}: must lie in [0, 1)")
        self.p = float(p)
        self.threshold = round(self.p * _BITS)  # k: drop where u < k
        self.scale = _BITS / (_BITS - self.threshold)  # 1 / (1 − p̂)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """``m / (1 − p̂)`` in ``x``'s shape and dtype: ``0`` or ``1 / (1 − p̂)`` per value."""
        n = x.numel()
        draws = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        lanes = draws.view(torch.int16)[:n].view(x.shape)  # u − 2¹⁵, uniform on [−2¹⁵, 2¹⁵)
        return (lanes >= self.threshold - _BITS // 2).to(x.dtype).mul_(self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x · m / (1 − p̂)`` when training with ``p > 0``, else ``x``."""
        if not self.training or self.threshold == 0:
            return x
        return x * self.mask(x)

    def extra_repr(self) -> str:
        """``p=…`` in the module's repr."""
        return f"p={self.p}"
