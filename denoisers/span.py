"""A schedule length in steps, in epochs, or as a share of the run: T-CE's ``num_gradual``, DART's ``T_i``/``T_m``.

The papers give their ramps in optimizer steps tuned for runs of 100K+ steps (T-CE ``num_gradual`` up to
30,000, DART ``T_m`` 20,000); in a 3-epoch run of 300 steps such a ramp never starts. A :class:`Span` lets an
option say what it means on any run length::

    1000      → 1000 steps                   (an int, or an integer-valued float)
    "1ep"     → 1 epoch  = steps_per_epoch    ("0.5ep", "2epochs" alike)
    "30%"     → 30% of the run = ⌊0.3 · total_steps⌋

Epochs and shares are resolved to steps once the trainer knows the run length
(:meth:`~denoisrec.denoisers.base.Denoiser.bind_run`); a denoiser used outside the trainer with such an
option must be bound first (a clear error says so).

Example::

    Span.parse("tce option num_gradual", "1ep").steps(steps_per_epoch=98, total_steps=294)   # 98
    Span.parse("dart option t_m", "50%").steps(98, 294)                                     # 147
    Span.parse("tce option num_gradual", 30000).steps(98, 294)                              # 30000
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Optional

_EPOCHS = re.compile(r"^\s*(\d+\.?\d*|\.\d+)\s*(ep|epoch|epochs)\s*$")
_SHARE = re.compile(r"^\s*(\d+\.?\d*|\.\d+)\s*%\s*$")


@dataclass(frozen=True)
class Span:
    """``value`` in ``unit`` (``steps``, ``epochs`` or ``run``, the last a fraction in [0, 1])."""

    value: float
    unit: str
    text: str

    @classmethod
    def parse(cls, option: str, raw: Any) -> "Span":
        """Read ``raw`` (see the module docstring); ``option`` names it in the one-line error."""
        if isinstance(raw, bool):
            raise ValueError(f"{option}={raw!r}: expected steps (1000), epochs ('1ep') or a share of the run ('30%')")
        if isinstance(raw, (int, float)):
            if raw < 0 or not float(raw).is_integer():
                raise ValueError(
                    f"{option}={raw!r}: a step count must be a whole number >= 0 "
                    "(or give epochs, '1ep', or a share of the run, '30%')"
                )
            return cls(float(raw), "steps", str(int(raw)))
        text = str(raw)
        m = _EPOCHS.match(text)
        if m:
            return cls(float(m.group(1)), "epochs", text.strip())
        m = _SHARE.match(text)
        if m and float(m.group(1)) <= 100:
            return cls(float(m.group(1)) / 100.0, "run", text.strip())
        if text.strip().isdigit():
            return cls(float(text), "steps", text.strip())
        raise ValueError(
            f"{option}={raw!r}: expected steps (1000), epochs ('1ep') or a share of the run ('30%', at most 100%)"
        )

    @property
    def relative(self) -> bool:
        """Whether the span is given in epochs or as a share of the run (resolved by :meth:`steps`)."""
        return self.unit != "steps"

    def steps(self, steps_per_epoch: Optional[int], total_steps: Optional[int]) -> int:
        """The span in steps (rounded down; at least 1 for a non-zero epoch / share span)."""
        if self.unit == "steps":
            return int(self.value)
        if steps_per_epoch is None or total_steps is None:
            raise ValueError(
                f"'{self.text}' is relative to the run length: the trainer binds it "
                "(Denoiser.bind_run(steps_per_epoch, total_steps)); outside the trainer give steps"
            )
        base = steps_per_epoch if self.unit == "epochs" else total_steps
        n = math.floor(self.value * base + 1e-9)
        return max(n, 1) if self.value > 0 else 0

    def __str__(self) -> str:
        return self.text
