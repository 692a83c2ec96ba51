"""The one training step, two ways: a plain loop, or TorchRec's ``TrainPipelineSparseDist``.

Training, DeCA(p)'s phase 1, ``bench throughput`` and ``bench ingest`` all step with it.

Both run ``zero_grad → forward (under autocast) → backward → step`` on the ``TrainOptimizer``'s combined
optimizer and yield the module's outputs ``(loss value, logits, LossOutput)`` once per step. The pipeline
copies batch ``i+2`` to the device and runs the input all-to-all of batch ``i+1`` while batch ``i``
computes (CUDA streams on GPU; on CPU the same code runs without streams, which is how the tests cover it).
Both give the same parameters for the same batches.

Each stage of the plain loop runs under a ``torch.profiler`` label (``denoisrec.next_batch``, ``.to_device``,
``.zero_grad``, ``.forward``, ``.backward``, ``.optimizer_step``; free when no profiler is recording).

Why not TorchRec's ``TrainPipelineBase`` for the plain loop (torchrec 1.8): its ``progress`` calls
``self._model`` and ignores ``custom_model_fwd`` (no autocast), fetches the next batch before the current
step's forward (a session that stops early would have read, and accounted, one batch it never trained on), and
always runs backward (``run.nonfinite=skip`` must skip backward and update on a non-finite loss).

Evaluation in between needs the unmodified model: call :meth:`Stepper.pause` before and
:meth:`Stepper.resume` after (the pipeline swaps the sharded modules' forward while attached).

Example::

    stepper = Stepper(dmp, opt.optimizer, env.device, pipelined=True, autocast=autocast_context("bf16", dev))
    for value, logits, out in stepper.run(batches):
        ...
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, ContextManager, Iterator, List, Optional, Tuple

import torch
from torch import nn
from torch.autograd.profiler import record_function

from denoisrec.trainer.data.train_labels import select_train_labels

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PIPELINE_MODES = ("auto", "on", "off")


def autocast_context(precision: str, device: torch.device) -> Callable[[], ContextManager[Any]]:
    """A factory of ``torch.autocast`` contexts for ``precision`` (``fp32``: no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"run.precision={precision!r}: expected one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def use_pipeline(mode: Any, device: torch.device) -> bool:
    """``auto``: on CUDA only. ``on``/``off`` (YAML reads those as booleans; both spellings are accepted)."""
    if isinstance(mode, bool):
        mode = "on" if mode else "off"
    if mode not in PIPELINE_MODES:
        raise ValueError(f"run.pipeline={mode!r}: expected one of {PIPELINE_MODES}")
    return mode == "on" or (mode == "auto" and device.type == "cuda")


class Stepper:
    """Args:
    model: the DMP-wrapped ``TrainModule``.
    optimizer: the combined optimizer (fused sparse + dense).
    device: where batches go.
    pipelined: use ``TrainPipelineSparseDist``.
    autocast: factory of the forward's autocast context.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        pipelined: bool,
        autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
        skip_nonfinite: bool = False,
    ) -> None:
        if skip_nonfinite and pipelined:
            raise ValueError(
                "run.nonfinite=skip needs run.pipeline=off (the pipeline runs backward before the loss can be read)"
            )
        self.model, self.optimizer, self.device = model, optimizer, device
        self.skip_nonfinite = skip_nonfinite  # a non-finite loss skips backward and update (trainer/loop/nonfinite.py)
        self.last_skipped = False
        self.autocast = autocast
        self.pipeline: Optional[Any] = None
        self.last_batch: Optional[Any] = None  # the plain loop's current batch (hooks read it; None when pipelined)
        self.input_wait_seconds = 0.0  # time the step spent waiting for the next batch (the reader)
        if pipelined:
            from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

            self.pipeline = TrainPipelineSparseDist(model, optimizer, device, custom_model_fwd=self._forward)

    def _forward(self, batch: Any) -> Tuple[torch.Tensor, Any]:
        with self.autocast():
            return self.model(batch)

    def run(self, batches: Iterator[Any]) -> Iterator[Tuple[torch.Tensor, torch.Tensor, Any]]:
        """Train on ``batches``, yielding each step's ``(value, logits, LossOutput)`` after its update."""
        if self.pipeline is None:
            it = iter(batches)
            while True:
                with record_function("denoisrec.next_batch"):  # waiting on the reader
                    t0 = time.perf_counter()
                    batch = next(it, None)
                    self.input_wait_seconds += time.perf_counter() - t0
                if batch is None:
                    return
                with record_function("denoisrec.to_device"):
                    batch = batch.to(self.device, non_blocking=True)
                self.last_batch = batch
                with record_function("denoisrec.zero_grad"):
                    self.optimizer.zero_grad()
                with record_function("denoisrec.forward"):
                    loss, output = self._forward(batch)
                # the loss is the global batch's (identical on every rank), so every rank skips alike
                self.last_skipped = self.skip_nonfinite and not bool(torch.isfinite(loss.detach()).all())
                if self.last_skipped:
                    yield output
                    continue
                with record_function("denoisrec.backward"):
                    loss.backward()
                with record_function("denoisrec.optimizer_step"):
                    self.optimizer.step()
                yield output
        timed = self._timed(iter(batches))
        while True:
            try:
                output = self.pipeline.progress(timed)
            except StopIteration:
                return
            yield output

    def _timed(self, it: Iterator[Any]) -> Iterator[Any]:
        """``it``, adding the time each ``next`` takes to :attr:`input_wait_seconds`."""
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            self.input_wait_seconds += time.perf_counter() - t0
            if batch is None:
                return
            yield batch

    @property
    def pipelined_modules(self) -> int:
        """How many sharded modules the pipeline drives (0 without a pipeline)."""
        return len(self.pipeline._pipelined_modules) if self.pipeline is not None else 0

    def pause(self) -> None:
        """Give the model back its own forward (for evaluation, checkpoints of the model alone, export)."""
        if self.pipeline is not None:
            self.pipeline.detach()

    def resume(self) -> None:
        if self.pipeline is not None:
            self.pipeline.attach(self.model)


class CycledBatches:
    """An endless iterator over ``batches`` in memory (for benchmarks), each with the labels training reads
    (``data.train_label``). ``batches`` may be replaced in place (``feed[:] = bigger``) between steps.
    """

    def __init__(self, batches: List[Any], train_label: str = "label") -> None:
        self.batches, self.train_label, self.i = batches, train_label, 0

    def __iter__(self) -> "CycledBatches":
        return self

    def __next__(self) -> Any:
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        return select_train_labels(batch, self.train_label)
