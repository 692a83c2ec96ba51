"""Global batch statistics over the data-parallel group, exact and world-size independent.

Every denoiser decides on the *global* batch: with the same global batch, any number of ranks and any split
of it decide exactly what one process decides on the whole batch. This module provides the statistics:

- :func:`all_reduce` — SUM / MIN / MAX of a small tensor (an identity on one process);
- :func:`radix_select` / :func:`kth_largest_keys` — the exact k-th largest of 64-bit keys across ranks by
  radix select over 11-bit digits: up to six rounds, each all-reducing a fixed ``[K, 2048]`` histogram of
  one digit of the keys (the first round one row that also carries the caller's counts). The traffic is at
  most ``6 · K · 2048 · 8`` bytes whatever the world size, and on GPU nothing leaves the device (no
  ``.item()``); on CPU the select stops as soon as the histogram has decided it (usually after 2 rounds).
  Small all-reduces cost their latency, not their bytes, so wider digits and fewer rounds are cheaper
  (on 2 gloo ranks a 16 KB all-reduce takes as long as a 2 KB one);
- :func:`order_keys` — a total order on samples: the loss's float bits above a 32-bit sample key, so equal
  losses are ordered by sample id, never by rank.

Counters (:data:`COUNTER`) record the calls and bytes each collective adds, for the throughput benchmark.

Example (one process; with ``torch.distributed`` initialised the same call is global)::

    loss = torch.tensor([0.3, 0.9, 0.1, 0.9])
    keys = order_keys(loss, torch.arange(4))
    thr = kth_largest_keys(keys, torch.ones(4, dtype=torch.bool), torch.tensor([2]))
    top2 = keys >= thr  # tensor([False, True, False, True])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.distributed as dist

ProcessGroup = Optional[dist.ProcessGroup]
NO_KEY = torch.iinfo(torch.int64).max  # larger than every order key: "select nothing"
DIGIT_BITS = 11  # radix digit width: 6 rounds cover the 63 bits of a non-negative int64 key
BINS = 1 << DIGIT_BITS
SHIFTS = tuple(range(63 - DIGIT_BITS, -DIGIT_BITS, -DIGIT_BITS))[:-1] + (0,)  # (52, 41, 30, 19, 8, 0)
_SHIFT_T = torch.tensor(SHIFTS, dtype=torch.int64)
_MASK_T = torch.tensor(
    [(1 << (63 - SHIFTS[0])) - 1] + [(1 << (a - b)) - 1 for a, b in zip(SHIFTS, SHIFTS[1:])], dtype=torch.int64
)  # each round's digit width (the last one is narrower)


@dataclass
class CollectiveCounter:
    """Collective calls and payload bytes issued by this module (per process)."""

    calls: int = 0
    bytes: int = 0
    max_call_bytes: int = 0  # the largest single payload: what must not grow with the world size

    def reset(self) -> None:
        """Zero the counts (a test or benchmark measuring one call)."""
        self.calls, self.bytes, self.max_call_bytes = 0, 0, 0


COUNTER = CollectiveCounter()


def world_size(group: ProcessGroup = None) -> int:
    """Ranks in ``group`` (1 without an initialised process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def all_reduce(t: torch.Tensor, op: str = "sum", group: ProcessGroup = None) -> torch.Tensor:
    """Reduce ``t`` over the group (out of place, detached). ``op`` is ``sum``, ``min`` or ``max``."""
    t = t.detach().clone()
    if world_size(group) == 1:
        return t
    red = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op]
    nbytes = t.numel() * t.element_size()
    COUNTER.calls += 1
    COUNTER.bytes += nbytes
    COUNTER.max_call_bytes = max(COUNTER.max_call_bytes, nbytes)
    dist.all_reduce(t, op=red, group=group)
    return t


def global_sum(t: torch.Tensor, group: ProcessGroup = None) -> torch.Tensor:
    """``t`` summed over the group (out of place, detached)."""
    return all_reduce(t, "sum", group)


def global_count(mask: torch.Tensor, group: ProcessGroup = None) -> torch.Tensor:
    """Number of true entries of ``mask`` over all ranks (int64 scalar)."""
    return all_reduce(mask.sum(dtype=torch.int64), "sum", group)


def global_min_max(x: torch.Tensor, mask: Optional[torch.Tensor] = None, group: ProcessGroup = None) -> torch.Tensor:
    """``[min, max]`` of ``x`` (where ``mask``) over all ranks in one MAX all-reduce; ``[inf, -inf]`` if empty."""
    x = x.detach()
    if mask is not None:
        lo = torch.where(mask, x, torch.full_like(x, float("inf")))
        hi = torch.where(mask, x, torch.full_like(x, float("-inf")))
    else:
        lo = hi = x
    inf = torch.full((), float("inf"), dtype=x.dtype, device=x.device)
    local = torch.stack([-(lo.min() if lo.numel() else inf), hi.max() if hi.numel() else -inf])
    both = all_reduce(local, "max", group)
    return torch.stack([-both[0], both[1]])


def order_keys(values: torch.Tensor, sample_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """int64 keys ordering samples by ``values`` (non-negative floats) then by the low 32 bits of their id.

    For non-negative IEEE floats the bit pattern is monotone in the value, so comparing keys compares
    values first; equal values fall back to the sample id, which is the same whichever rank holds the sample.
    Without ids the local position is used (exact on one process only). Negative values count as 0.
    """
    v = values.detach().float()
    v = torch.where(v > 0, v, torch.zeros_like(v))  # also maps -0.0 to +0.0
    bits = v.view(torch.int32).to(torch.int64)
    if sample_ids is None:
        sample_ids = torch.arange(v.numel(), device=v.device)
    return (bits << 32) | (sample_ids.to(torch.int64) & 0xFFFFFFFF)


@dataclass
class Selection:
    """Result of :func:`radix_select` (all global, identical on every rank).

    Attributes:
        thr: ``[K]`` thresholds; ``valid & (keys >= thr[j])`` selects exactly ``k[j]`` samples
            (:data:`NO_KEY` where ``k[j] == 0``). The k-th largest key itself when all rounds ran; after an
            early exit the smallest key with the decided prefix, which selects the same samples.
        k: ``[K]`` int64 counts actually selected, ``min(requested, n_valid)``.
        n_valid: int64 scalar, the global number of valid entries.
        extra: the global sum of the ``extra`` counts passed in (``None`` if none were).
        sums: ``[K]`` int64 global sums of the ``sums`` values passed in over each selected set (``None`` if
            none were): e.g. the fixed-point loss of the dropped samples, with no collective of its own.
    """

    thr: torch.Tensor
    k: torch.Tensor
    n_valid: torch.Tensor
    extra: Optional[torch.Tensor]
    sums: Optional[torch.Tensor] = None
    top: Optional[torch.Tensor] = None  # [K] the chosen top digits: the next call's ``hint``


KFn = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


_CONSTANTS: dict = {}


def _digit_constants(dev: torch.device) -> "tuple[torch.Tensor, torch.Tensor]":
    """``[R, 1]`` shifts and masks of the digits, cached per device (no host-to-device copy per call)."""
    if dev not in _CONSTANTS:
        _CONSTANTS[dev] = (_SHIFT_T.to(dev).unsqueeze(1), _MASK_T.to(dev).unsqueeze(1))
    return _CONSTANTS[dev]


FIXED_POINT = float(1 << 24)  # :func:`fixed_point` resolution: 6e-8 per sample
_FIXED_MAX = 1e5  # per-sample cap, so a batch of 1e6 samples stays far inside int64


def fixed_point(x: torch.Tensor) -> torch.Tensor:
    """``round(x · 2^24)`` as int64 (``x`` clamped to [0, 1e5]), for exact global sums.

    Integer sums are exact and order-free, so a global sum of them is the same on any number of ranks. Divide by
    :data:`FIXED_POINT` to read back.
    """
    x = torch.nan_to_num(x.detach().to(torch.float64), nan=_FIXED_MAX, posinf=_FIXED_MAX)  # NaN: the cap, not garbage
    return torch.round(x.clamp(0.0, _FIXED_MAX) * FIXED_POINT).to(torch.int64)


def keep_nonfinite(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``value``, made NaN when this rank's ``x`` holds a non-finite entry.

    ``value`` is read back from :func:`fixed_point` sums, which cap NaN and inf. ``0 · Σx`` is 0 for finite ``x`` and
    NaN otherwise, so the trainer's non-finite guard (which gathers its flag across ranks) still sees a diverged step.
    No sync, no collective.
    """
    return value + (x.detach().sum() * 0).to(value.dtype)


def radix_select(
    keys: torch.Tensor,
    valid: torch.Tensor,
    k: Union[torch.Tensor, KFn],
    group: ProcessGroup = None,
    extra: Optional[torch.Tensor] = None,
    early_exit: Optional[bool] = None,
    sums: Optional[torch.Tensor] = None,
    hint: Optional[torch.Tensor] = None,
) -> Selection:
    """Exact global k-th largest key among ``valid`` entries, for several k at once.

    Keys must be non-negative int64 and distinct across the group (see :func:`order_keys`).

    Radix select from the most significant digit (:data:`DIGIT_BITS` bits): each of the 6 rounds histograms
    the current digit of the keys that still match the chosen prefix, all-reduces the histogram, and fixes
    the digit at which the running count from the top reaches the remaining rank. All on device; traffic
    independent of the world size.

    The first round's histogram is the same for every k, so it is one ``[BINS]`` row; it also carries
    ``extra`` (a small int64 vector of local counts, e.g. this rank's batch size), summed in the same
    all-reduce. ``k`` may therefore be a function ``k(n_valid, extra_global) → [K]`` evaluated on device
    after that round: counts such as ``⌊ε·B⌋`` or ``⌊τ·|positives|⌋`` cost no collective of their own.

    **Early exit** (``early_exit``; default: on when the keys are on the CPU). After a round, when for every
    k the keys still needed are *all* the keys in the chosen bin, the selection is already decided:
    ``keys >= prefix`` (the lower digits zero) takes every key above the bin and the whole bin, exactly k.
    The remaining rounds are skipped. Every rank reads the same all-reduced histogram, so all ranks stop at
    the same round and the collectives stay matched. Reading the decision is a host read of the histogram:
    free for CPU tensors, a device synchronisation on GPU, so there it is off and all rounds run. With
    losses as keys the chosen bin is usually down to the one k-th key after the second round (22 bits).
    ``thr`` is then not the k-th key itself but selects the same set (see :class:`Selection`).

    **Sums over the selection** (``sums``: int64 ``[N]``, or ``[K, N]`` one row per k). Every round's
    all-reduce also carries, per bin, the sum of these values over the matching keys; the selected set is
    the keys above the chosen bin at every round plus the whole bin of the last round, so its global sum is
    read from the reduced rows (:attr:`Selection.sums`): what the caller would otherwise all-reduce after
    the select (T-CE's and DART's loss value) costs no collective, only wider payloads.

    **Hint** (``hint``: ``[K]`` guesses of each k's top digit, e.g. the previous step's
    :attr:`Selection.top`; used with the early exit, i.e. on CPU). The first all-reduce also carries, for
    each k, the second digit's histogram of the keys whose top digit equals the guess. When every guess was
    right, the second round needs no all-reduce of its own, and as the second round usually decides, the
    select is then one all-reduce. A wrong guess costs nothing but the wider first payload. Every rank
    holds the same hint (it comes from a global result), so the ranks still take the same path.
    """
    keys = keys.reshape(-1)
    valid = valid.reshape(-1)
    dev = keys.device
    if early_exit is None:
        early_exit = dev.type == "cpu"
    if not early_exit:
        hint = None  # deciding to skip a round is a host read: only where it is free
    # Every round's digit at once: [R, N].
    shifts, masks = _digit_constants(dev)
    digits = (keys.unsqueeze(0) >> shifts) & masks
    one = valid.to(torch.int64)
    vals = None
    if sums is not None:  # [R, N], zero where not valid
        rows = 1 if sums.dim() == 1 else sums.shape[0]  # (an empty rank: -1 cannot be inferred from 0)
        vals = sums.reshape(rows, keys.numel()).to(device=dev, dtype=torch.int64) * one.unsqueeze(0)
    n_rows = 0 if vals is None else vals.shape[0]
    # Round 1 (the top digit): one histogram row (and R rows of sums), plus the extra counts, in one all-reduce.
    hist0 = torch.zeros(BINS, dtype=torch.int64, device=dev).scatter_add_(0, digits[0], one)
    parts = [hist0]
    if vals is not None:
        parts.append(
            torch.zeros(n_rows, BINS, dtype=torch.int64, device=dev)
            .scatter_add_(1, digits[0].unsqueeze(0).expand(n_rows, -1), vals)
            .reshape(-1)
        )
    n_hint = 0 if hint is None else hint.numel()
    if hint is not None:  # the second digit of the keys under each guessed top digit (and their sums)
        if n_rows not in (0, 1, n_hint):
            raise ValueError(f"radix_select: sums has {n_rows} rows for {n_hint} hints (expected 1 or {n_hint})")
        under = one.unsqueeze(0) * (digits[0].unsqueeze(0) == hint.reshape(-1, 1).to(dev))  # [H, N]
        idx1 = digits[1].unsqueeze(0).expand(n_hint, -1)
        parts.append(torch.zeros(n_hint, BINS, dtype=torch.int64, device=dev).scatter_add_(1, idx1, under).reshape(-1))
        if vals is not None:
            parts.append(
                torch.zeros(n_hint, BINS, dtype=torch.int64, device=dev)
                .scatter_add_(1, idx1, vals.expand(n_hint, -1) * under)
                .reshape(-1)
            )
    n_extra = 0 if extra is None else extra.numel()
    if extra is not None:
        parts.append(extra.reshape(-1).to(device=dev, dtype=torch.int64))
    payload = all_reduce(torch.cat(parts) if len(parts) > 1 else hist0, "sum", group)
    hist0 = payload[:BINS]
    at = BINS * (1 + n_rows)
    sum_hist = payload[BINS:at].view(n_rows, BINS) if n_rows else None
    pre_hist1 = pre_sums1 = None
    if n_hint:
        pre_hist1 = payload[at : at + n_hint * BINS].view(n_hint, BINS)
        at += n_hint * BINS
        if vals is not None:
            pre_sums1 = payload[at : at + n_hint * BINS].view(n_hint, BINS)
            at += n_hint * BINS
    extra_g = payload[at:] if n_extra else None
    n_valid = hist0.sum()
    kk = (k(n_valid, extra_g) if callable(k) else k).reshape(-1).to(device=dev, dtype=torch.int64)
    kk = torch.minimum(kk.clamp_min(0), n_valid)
    nk = kk.numel()
    if n_hint not in (0, nk):
        raise ValueError(f"radix_select: {n_hint} hints for {nk} k's")
    remaining = kk.clamp_min(1)  # the rank (from the top) still to find among the matching keys
    prefix = torch.zeros(nk, dtype=torch.int64, device=dev)
    offsets = (torch.arange(nk, device=dev) * BINS).unsqueeze(1)
    hist = hist0.unsqueeze(0).expand(nk, -1)
    if vals is not None:
        if n_rows not in (1, nk):
            raise ValueError(f"radix_select: sums has {n_rows} rows for {nk} k's (expected 1 or {nk})")
        vals = vals.expand(nk, -1)
        sum_hist = sum_hist.expand(nk, -1)  # type: ignore[union-attr]
        acc = torch.zeros(nk, dtype=torch.int64, device=dev)  # sums of the keys above the chosen bins
    match = one.unsqueeze(0)  # [K or 1, N]: 1 where the key still matches the chosen prefix
    top = None
    for r, shift in enumerate(SHIFTS):
        if r == 1 and hint is not None and bool(((top == hint.reshape(-1).to(dev)) | (kk == 0)).all()):
            assert pre_hist1 is not None  # read from the first round's payload whenever a hint is given
            hist = pre_hist1  # every guess was right: this round was reduced with the first
            if vals is not None:
                sum_hist = pre_sums1
        elif r > 0:
            idx = (digits[r].unsqueeze(0) + offsets).reshape(-1)
            hist = torch.zeros(nk * BINS, dtype=torch.int64, device=dev)
            hist.scatter_add_(0, idx, match.expand(nk, -1).reshape(-1))
            if vals is None:
                hist = all_reduce(hist.view(nk, BINS), "sum", group)
            else:  # counts and sums in one all-reduce
                sh = torch.zeros(nk * BINS, dtype=torch.int64, device=dev).scatter_add_(
                    0, idx, (vals * match).reshape(-1)
                )
                both = all_reduce(torch.cat([hist, sh]), "sum", group)
                hist, sum_hist = both[: nk * BINS].view(nk, BINS), both[nk * BINS :].view(nk, BINS)
        cs = hist.cumsum(1)
        at_or_above = cs[:, -1:] - cs + hist  # matching keys whose digit is >= b
        sel = ((at_or_above >= remaining.unsqueeze(1)).sum(1) - 1).clamp_min(0)  # largest b reaching it
        sel2 = sel.unsqueeze(1)
        in_bin = hist.gather(1, sel2).squeeze(1)
        remaining = remaining - (at_or_above.gather(1, sel2) - in_bin.unsqueeze(1)).squeeze(1)
        prefix = prefix | (sel << shift)
        if r == 0:
            top = sel
        if vals is not None:
            scs = sum_hist.cumsum(1)  # type: ignore[union-attr]
            acc = acc + (scs[:, -1] - scs.gather(1, sel2).squeeze(1))  # the bins above the chosen one
            last_bin = sum_hist.gather(1, sel2).squeeze(1)  # type: ignore[union-attr]
        if early_exit and r + 1 < len(SHIFTS) and bool(((remaining == in_bin) | (kk == 0)).all()):
            break  # every k takes its whole bin: keys >= prefix is the exact selection
        if r + 1 < len(SHIFTS):
            match = match * (digits[r].unsqueeze(0) == sel2)
    thr = torch.where(kk > 0, prefix, torch.full_like(prefix, NO_KEY))
    # The selection = every key above the chosen bins + the whole last chosen bin (one key after 6 rounds).
    picked = None if vals is None else torch.where(kk > 0, acc + last_bin, torch.zeros_like(acc))
    return Selection(thr, kk, n_valid, extra_g, picked, top)


def kth_largest_keys(
    keys: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, group: ProcessGroup = None
) -> torch.Tensor:
    """Exact global k-th largest key among ``valid`` entries, for each k in ``k`` (shape ``[K]``).

    Returns a ``[K]`` tensor ``thr`` such that ``valid & (keys >= thr[j])`` selects exactly
    ``min(k[j], n_valid)`` samples globally; where that is 0 ``thr[j]`` is :data:`NO_KEY` (selects nothing).
    See :func:`radix_select`.
    """
    return radix_select(keys, valid, k, group).thr


def top_k_mask(keys: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, group: ProcessGroup = None) -> torch.Tensor:
    """Boolean ``[K, N]`` (or ``[N]`` for a scalar ``k``): the global top-``k`` valid entries by key."""
    thr = kth_largest_keys(keys, valid, k, group)
    mask = valid.unsqueeze(0) & (keys.unsqueeze(0) >= thr.unsqueeze(1))
    return mask[0] if k.dim() == 0 else mask
