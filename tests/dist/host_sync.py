"""A guard that finds where a training step makes the host wait for the device.

A step that reads a device value on the host (``.item()``, ``bool(t)``, ``.tolist()``) or asks for an output
whose shape depends on the data (``nonzero``, boolean-mask indexing) stalls the CPU until the GPU has
caught up, and the next step's kernels are no longer queued ahead. The denoisers are written to avoid that
(radix select on device, one collective for all counts); this guard is how the tests hold them to it.

- **CUDA**: :func:`torch.cuda.set_sync_debug_mode` — the CUDA runtime's own check of every synchronising
  call (device-to-host copies, stream and device synchronisations, ``.item()``, ``nonzero``). It is
  authoritative.
- **CPU**: there is no device to wait for, so a :class:`~torch.overrides.TorchFunctionMode` flags the tensor
  operations that synchronise on CUDA (:data:`CPU_SYNC_OPS`, plus indexing with a boolean tensor). It is an
  approximation that lets CPU CI catch the usual regressions before a GPU run does.

Each sync is attributed to the innermost Python frame outside ``torch`` that issued it. ``own`` syncs are
those issued from this project's packages (``denoisrec.trainer``, ``models``, ``denoisers``); the others
(TorchRec's input distribution, FBGEMM) are the libraries' and are only recorded. On CUDA a sync in a
backward pass surfaces at the ``backward()`` call (the autograd engine replays its warnings there), so it
is marked ``in_backward`` and not counted as ours (see :meth:`HostSyncGuard.own`).

``mode="error"`` raises :class:`HostSyncError` (CPU) or the CUDA runtime's ``RuntimeError`` at the first
sync; ``mode="warn"`` records every sync in :attr:`HostSyncGuard.syncs` and lets the step finish.

Example::

    with HostSyncGuard(torch.device("cpu"), mode="error"):
        loss = denoiser(logits, labels, ids).loss      # fine: everything stays a tensor
    with HostSyncGuard(torch.device("cpu"), mode="warn") as g:
        float(loss)                                    # recorded
    g.own()  # [HostSync(op='__float__', file='.../example.py', line=...)]
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

import torch
from torch.overrides import TorchFunctionMode

from denoisrec.trainer.errors import HostSyncError

MODES = ("error", "warn")
_T = torch.Tensor
# Operations that wait for a CUDA device: host reads of a value, and outputs whose shape depends on data.
CPU_SYNC_OPS: Dict[Callable[..., Any], str] = {
    _T.item: "item",
    _T.tolist: "tolist",
    _T.numpy: "numpy",
    _T.cpu: "cpu",
    _T.__bool__: "__bool__",
    _T.__int__: "__int__",
    _T.__float__: "__float__",
    _T.__index__: "__index__",
    _T.is_nonzero: "is_nonzero",
    _T.nonzero: "nonzero",
    torch.nonzero: "nonzero",
    torch.argwhere: "argwhere",
    _T.masked_select: "masked_select",
    torch.masked_select: "masked_select",
    torch.unique: "unique",
    _T.unique: "unique",
    torch.unique_consecutive: "unique_consecutive",
    torch.bincount: "bincount",
    _T.bincount: "bincount",
    torch.equal: "equal",
    torch.allclose: "allclose",
    _T.equal: "equal",
    _T.allclose: "allclose",
}
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_AUTOGRAD = os.path.join(_TORCH_DIR, "autograd") + os.sep
_SKIP = (_TORCH_DIR, os.path.abspath(__file__), os.path.dirname(warnings.__file__) + os.sep + "warnings.py")


@dataclass(frozen=True)
class HostSync:
    """One synchronising call: what it was and the Python line outside ``torch`` that issued it."""

    op: str
    file: str
    line: int
    in_backward: bool = False  # reported through ``backward()``: the op ran in some autograd node

    def __str__(self) -> str:
        return f"{self.op}{' (in backward)' if self.in_backward else ''} at {self.file}:{self.line}"


def own_roots() -> Tuple[str, ...]:
    """The folders of this project's packages (a sync issued from there is ours)."""
    import denoisrec.denoisers
    import denoisrec.models
    import denoisrec.trainer

    return tuple(
        os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep
        for m in (denoisrec.trainer, denoisrec.models, denoisrec.denoisers)
    )


def _caller(frame: Optional[FrameType]) -> Tuple[str, int, bool]:
    """The innermost frame outside ``torch``, this module and ``warnings`` (who asked for the sync), and
    whether the call went through ``torch.autograd`` (a backward pass).
    """
    in_backward = False
    while frame is not None:
        f = os.path.abspath(frame.f_code.co_filename)
        if not f.startswith(_SKIP):
            return f, frame.f_lineno, in_backward
        in_backward = in_backward or f.startswith(_AUTOGRAD)
        frame = frame.f_back
    return "<unknown>", 0, in_backward


def _bool_index(args: Tuple[Any, ...]) -> bool:
    idx = args[1] if len(args) > 1 else None
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool and i.dim() > 0 for i in items)


class _CpuSyncMode(TorchFunctionMode):
    def __init__(self, on_sync: Callable[[str], None]) -> None:
        super().__init__()
        self.on_sync = on_sync

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = CPU_SYNC_OPS.get(func)
        if name is None and func is _T.__getitem__ and _bool_index(args):
            name = "__getitem__[bool mask]"
        if name is not None:
            self.on_sync(name)
        return func(*args, **(kwargs or {}))


class HostSyncGuard:
    """Context manager: fail on (``error``) or record (``warn``) host synchronisations on ``device``.

    Args:
        device: the device the guarded code runs on (``cuda``: the runtime's check; ``cpu``: the op list).
        mode: ``error`` or ``warn``.

    Attributes:
        syncs: every sync recorded in ``warn`` mode, in order (:class:`HostSync`).
    """

    def __init__(self, device: torch.device, mode: str = "error") -> None:
        if mode not in MODES:
            raise ValueError(f"HostSyncGuard mode={mode!r}: expected one of {MODES}")
        self.device, self.mode = torch.device(device), mode
        self.syncs: List[HostSync] = []
        self._exit: List[Callable[[], None]] = []

    def own(self) -> List[HostSync]:
        """The recorded syncs issued from this project's code (not TorchRec's or FBGEMM's).

        A CUDA sync inside a backward pass is reported, by the autograd engine, at the ``backward()`` call;
        which node issued it is unknown, so it is not counted as ours. (The denoisers' backward is checked
        on its own: the GPU test runs each denoiser's loss *and* backward under ``mode="error"``.)
        """
        roots = own_roots()
        return [s for s in self.syncs if s.file.startswith(roots) and not s.in_backward]

    def _record(self, op: str, frame: Optional[FrameType]) -> None:
        file, line, in_backward = _caller(frame)
        sync = HostSync(op, file, line, in_backward)
        if self.mode == "error":
            raise HostSyncError(f"host synchronisation inside a guarded step: {sync}")
        self.syncs.append(sync)

    def __enter__(self) -> "HostSyncGuard":
        if self.device.type == "cuda":
            self._enter_cuda()
        else:
            mode = _CpuSyncMode(lambda op: self._record(op, sys._getframe()))
            mode.__enter__()
            self._exit.append(lambda: mode.__exit__(None, None, None))
        return self

    def _enter_cuda(self) -> None:
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(self.mode)
        self._exit.append(lambda: torch.cuda.set_sync_debug_mode(previous))
        if self.mode == "warn":
            # The runtime warns from C++; the Python stack at that moment says who asked.
            catcher = warnings.catch_warnings()
            catcher.__enter__()
            warnings.simplefilter("always")
            shown = warnings.showwarning

            def show(
                message: Warning | str,
                category: type[Warning],
                filename: str,
                lineno: int,
                file: TextIO | None = None,
                line: str | None = None,
            ) -> None:
                if "synchroniz" in str(message):
                    self._record("cuda sync", sys._getframe())
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            self._exit.append(lambda: catcher.__exit__(None, None, None))

    def __exit__(self, *exc: Any) -> None:
        while self._exit:
            self._exit.pop()()
