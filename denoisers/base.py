"""The denoising contract: ``(logits, labels, sample ids, batch) → LossOutput``.

A denoiser is an ``nn.Module`` whose only job is to turn a batch's logits and observed labels into a
scalar loss plus per-sample decisions. It

- decides on the **global** batch (statistics via :mod:`denoisrec.denoisers.collectives`), so any split of
  the same global batch over any number of ranks gives the same decisions and loss value;
- keeps its schedule state (the global step) in buffers, so it is checkpointed with the model;
- never reads ``clean_labels`` / ``is_noisy`` to decide; it may report against them;
- detaches the weights and corrected targets that the papers treat as constants.

**Gradient scaling.** Data-parallel training averages dense gradients over the ``W`` ranks. For a global
mean ``L = Σ_i w_i·ℓ_i / D`` (``D`` the global denominator) each rank backpropagates
``W · Σ_{i on rank} w_i·ℓ_i / D``; the average of these gradients is exactly ``∇L``, also for uneven
splits. (Model-parallel embedding shards receive the sum over ranks, TorchRec's convention.)

**Diagnostics.** Per-step global statistics (schedule values, shares handled) come in
``LossOutput.stats`` at no extra collective: they are folded into the reductions the loss needs anyway.
Ground-truth diagnostics (precision / recall of the handled samples against ``is_noisy``, mean loss of
noisy vs clean positives) are accumulated *locally* on device every step and reduced once by
:meth:`Denoiser.report`, which the trainer calls at log time on every rank.

Example::

    d = BCE()
    out = d(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]))
    out.loss.backward()  # out.value == mean BCE; out.weight == [1, 1]; out.target == labels
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed import ProcessGroup

from denoisrec.denoisers import collectives as C
from denoisrec.denoisers.batch import DenoiserBatch


@dataclass
class LossOutput:
    """What a denoiser returns for one batch (``B`` = this rank's batch size).

    Attributes:
        loss: scalar to backpropagate on this rank (see "Gradient scaling" above).
        value: detached global loss, identical on every rank.
        weight: ``[B]`` detached per-sample weight in the global mean; 0 for dropped samples.
        target: ``[B]`` detached BCE target used for each sample (corrected or relabelled).
        dropped: ``[B]`` bool, samples discarded from the loss.
        relabelled: ``[B]`` bool, samples whose target was flipped or corrected.
        stats: detached global scalars (schedule values, shares of handled samples, ...).
    """

    loss: torch.Tensor
    value: torch.Tensor
    weight: torch.Tensor
    target: torch.Tensor
    dropped: torch.Tensor
    relabelled: torch.Tensor
    stats: Dict[str, torch.Tensor] = field(default_factory=dict)


def bce_per_sample(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``ℓ_i = −[y_i log σ(z_i) + (1 − y_i) log(1 − σ(z_i))]`` from logits (numerically stable)."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")


@dataclass(frozen=True)
class Pretraining:
    """A phase before the main loop that trains part of the denoiser alone with BCE.

    For example DeCA(p)'s prior ``f'`` (DeCA Alg. 2 lines 2-9). The trainer runs it (or loads ``checkpoint``
    instead) before the first step.

    Attributes:
        steps: the phase's length in global steps; ``None``: to early stopping on the observed validation
            AUC within ``max_epochs`` (``patience`` epochs without a better AUC).
        max_epochs: bound on the phase in epochs (early stopping only).
        patience: epochs without a better validation AUC before the phase stops.
        checkpoint: a model file to load instead of training (then ``steps == 0``).
        cache_scores: score the training split once with the frozen result and hand the scores back
            (``set_prior_scores``) instead of running it every step.
    """

    steps: Optional[int] = None
    max_epochs: float = 1.0
    patience: int = 1
    checkpoint: Optional[str] = None
    cache_scores: bool = False


@dataclass(frozen=True)
class JobFacts:
    """What the trainer tells a denoiser about the job it is built into (for :meth:`Denoiser.setup_warnings`).

    Attributes:
        sparse_optimizer: the fused optimizer of model-parallel tables (``optim.sparse``).
        sparse_weight_decay: its weight decay (``optim.sparse_weight_decay``).
        sharding_type: one sharding type forced for every table (``sharding.sharding_type``), or ``None``.
    """

    sparse_optimizer: str = "rowwise_adagrad"
    sparse_weight_decay: float = 0.0
    sharding_type: Optional[str] = None


@dataclass(frozen=True)
class DenoiserNeeds:
    """What a denoiser needs from the trainer, declared instead of probed.

    The trainer's side reads it in :mod:`denoisrec.trainer.denoising.build`.

    A class declares the parts known before it is built in its ``NEEDS`` class attribute; the instance's
    :attr:`Denoiser.needs` adds the parts that depend on its options (tables, pre-training).

    Attributes:
        injected: constructor arguments the trainer supplies (``tables``: sparse feature sizes,
            ``context_tables``: the context features' sizes, ``device``, ``prior``: a copy of the target
            architecture); they are not user options.
        context_tower: the denoiser reads the context features (schema ``role: context``) in its own tower,
            so the target model need not see them (``model.context=auto``); it reports the learned rates by
            :meth:`Denoiser.context_report`.
        static_graph: ``False`` when the set of trained dense parameters changes between steps (DeCA's
            alternating sub-tasks, DeCA(p)'s phases): DDP must then find unused parameters.
        run_length: schedules are given in epochs or as a share of the run; the trainer calls
            :meth:`Denoiser.bind_run` with the run's length before the first step.
        model_parallel_tables: the denoiser's own embedding tables the planner must shard model-parallel.
        pretraining: a phase the trainer runs before the main loop, or ``None``.
        shared_tables: the denoiser's parts (submodule paths, each a
            :class:`~denoisrec.denoisers.shared_tables.SharedTables`: DeCA's ``"mf"``, the observation
            model's ``"tower"``) whose embedding tables the trainer folds into the target model's collection,
            so one sharded lookup serves both (:mod:`denoisrec.trainer.distributed.shared_lookup`).
    """

    injected: Tuple[str, ...] = ()
    context_tower: bool = False
    static_graph: bool = True
    run_length: bool = False
    model_parallel_tables: Tuple[str, ...] = ()
    pretraining: Optional[Pretraining] = None
    shared_tables: Tuple[str, ...] = ()


# Local sums accumulated every step when the batch carries ``is_noisy`` (reduced by ``report``): the
# [4, 4] matrix Σ_i row_r(i)·col_c(i) of these per-sample rows and columns (one matmul per step).
TRUTH_ROWS: Tuple[str, ...] = ("noisy_pos", "clean_pos", "all", "noisy")
TRUTH_COLS: Tuple[str, ...] = ("count", "loss", "handled", "posterior")


class Denoiser(nn.Module):
    """Base class: holds the global step and the process group; subclasses implement :meth:`compute`.

    Class attributes a subclass may set:

    - ``name``: registry name (``--denoiser NAME``).
    - ``GRID``: the papers' hyperparameter grid, ``{option: [values]}`` (the sweep reads it).
    - ``NEEDS``: a :class:`DenoiserNeeds`, what the trainer must supply or do (injected constructor
      arguments, a context tower, a dynamic graph, run-length binding); the instance's :attr:`needs` adds
      its model-parallel tables and pre-training phase.
    - ``positives_only``: the method only ever handles observed positives (recall is measured on them).

    Args:
        process_group: the data-parallel group statistics are global over (default: the world).
    """

    name: ClassVar[str] = ""
    GRID: ClassVar[Dict[str, List[Any]]] = {}
    NEEDS: ClassVar[DenoiserNeeds] = DenoiserNeeds()
    step: torch.Tensor  # buffer: the global step, int64 scalar
    truth_sums: torch.Tensor  # buffer: [4, 4] float64 ground-truth sums since the last report()
    positives_only: ClassVar[bool] = True
    reports_posterior: ClassVar[bool] = False

    def __init__(self, process_group: Optional[ProcessGroup] = None) -> None:
        super().__init__()
        self.process_group = process_group
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer(
            "truth_sums", torch.zeros(len(TRUTH_ROWS), len(TRUTH_COLS), dtype=torch.float64), persistent=False
        )
        self._host_step = 0
        self._host_key: Optional[Tuple[int, int]] = None
        self.steps_per_epoch: Optional[int] = None  # the run's length, set by bind_run (None outside a run)
        self.total_steps: Optional[int] = None

    @property
    def needs(self) -> DenoiserNeeds:
        """This denoiser's declaration: the class's ``NEEDS``, its tables and its pre-training.

        The model-parallel tables and the :meth:`pretraining` phase depend on its options.
        """
        return replace(
            type(self).NEEDS, model_parallel_tables=tuple(self.model_parallel_tables()), pretraining=self.pretraining()
        )

    def pretraining(self) -> Optional[Pretraining]:
        """The phase the trainer runs before the main loop (``None``: none; DeCA(p) overrides)."""
        return None

    def setup_warnings(self, job: JobFacts) -> List[str]:
        """Warnings, one line each, about a job set up in a way this denoiser cannot work well in.

        The trainer prints them once, after building it. None by default; DeCA overrides.
        """
        return []

    def context_report(self) -> Dict[str, Dict[str, List[Any]]]:
        """Learned per-context-value rates (a collective) for a denoiser declaring ``context_tower``."""
        return {}

    def bind_run(self, steps_per_epoch: int, total_steps: int) -> List[str]:
        """Tell the denoiser the run's length before its first step; returns warnings, one line each.

        The trainer calls it when ``NEEDS`` declares ``run_length`` (see :mod:`~denoisrec.denoisers.span`): schedules
        given in epochs or as a share of the run resolve to steps. The warnings name schedules that do not act within
        ``total_steps``.
        """
        self.steps_per_epoch, self.total_steps = int(steps_per_epoch), int(total_steps)
        return []

    @property
    def host_step(self) -> int:
        """The global step as a Python int, mirrored from the ``step`` buffer without a device sync.

        The mirror advances with every training forward; if the buffer was changed from outside
        (``load_state_dict``, ``.to(device)``, a test's ``fill_``) it is re-read once (one ``.item()``,
        outside the steady state). Used only for host-side phase switches (LCD's start, DeCA's
        sub-task parity); device-side schedules read the buffer itself.
        """
        key = (self.step.data_ptr(), self.step._version)
        if key != self._host_key:
            self._host_step = int(self.step.item())
            self._host_key = key
        return self._host_step

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor] = None,
        batch: Optional[DenoiserBatch] = None,
    ) -> LossOutput:
        """Loss for one batch at the current global step; advances the step in training mode.

        Args:
            logits: ``[B]`` model outputs before the sigmoid.
            labels: ``[B]`` observed 0/1 labels.
            sample_ids: ``[B]`` stable per-sample keys (deterministic tie-breaking across ranks).
            batch: the whole batch, for denoisers that read features (DeCA) or report diagnostics.
        """
        out = self.compute(logits, labels.to(logits.dtype), sample_ids, batch)
        if self.training:
            t = self.host_step
            self.step.add_(1)
            self._host_step, self._host_key = t + 1, (self.step.data_ptr(), self.step._version)
        return out

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[DenoiserBatch],
    ) -> LossOutput:
        """The subclass's loss on ``logits``, ``labels`` ``[B]``: a ``LossOutput`` (``forward`` calls it)."""
        raise NotImplementedError

    # ---- global reductions -------------------------------------------------------------------------------

    def reduce_sums(self, *local: torch.Tensor) -> torch.Tensor:
        """One SUM all-reduce of local scalars, stacked in float64 (exact for counts below 2^53)."""
        vec = torch.stack([t.detach().to(torch.float64).reshape(()) for t in local])
        return C.global_sum(vec, self.process_group)

    def scaled(self, local_sum: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
        """What this rank backpropagates for the global ``Σ local_sum / denominator``.

        See "Gradient scaling"; ``denominator`` is global and clamped to 1e-12 so an empty global batch gives 0.
        """
        w = C.world_size(self.process_group)
        return local_sum * (w / denominator.detach().clamp_min(1e-12)).to(local_sum.dtype)

    def global_mean(
        self,
        per_sample: torch.Tensor,
        weight: torch.Tensor,
        local_count: torch.Tensor,
        extra: Sequence[torch.Tensor] = (),
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss_to_backprop, value, sums)`` for ``L = Σ weight·per_sample / Σ local_count``.

        Computed over the global batch in ONE all-reduce, which also sums the ``extra`` local scalars.

        ``local_count`` is this rank's share of the denominator (its batch size, or its kept samples);
        ``sums`` is the reduced float64 vector ``[Σ weight·ℓ, Σ local_count, *Σ extra]``.
        """
        local = (weight.detach() * per_sample).sum()
        sums = self.reduce_sums(local, local_count, *extra)
        denom = sums[1].clamp_min(1e-12)
        return self.scaled(local, denom), (sums[0] / denom).to(local.dtype), sums

    # ---- diagnostics -------------------------------------------------------------------------------------

    def track_truth(
        self,
        batch: Optional[DenoiserBatch],
        labels: torch.Tensor,
        ell: torch.Tensor,
        handled: torch.Tensor,
        posterior: Optional[torch.Tensor] = None,
    ) -> None:
        """Accumulate this step's local ground-truth sums (no collective; nothing if the batch has none).

        Args:
            batch: the batch; its ``is_noisy`` column (if any) is the ground truth.
            labels: ``[B]`` observed 0/1 labels.
            ell: ``[B]`` per-sample BCE against the observed label.
            handled: ``[B]`` handling amount in ``[0, 1]`` (1 = dropped / relabelled; ``1 − w`` for a
                weight, ``|y* − y|`` for a corrected target). Never used to decide anything.
            posterior: DeCA's ``[B]`` P(y=1 | ỹ=1), reported for clean vs noisy positives.
        """
        noisy_t = getattr(batch, "is_noisy", None) if batch is not None else None
        if noisy_t is None:
            return
        with torch.no_grad():
            dt = ell.dtype
            noisy = (noisy_t.reshape(-1) > 0.5).to(dt)
            pos = (labels.reshape(-1) > 0.5).to(dt)
            pn = pos * noisy
            ones = torch.ones_like(pn)
            post = posterior.detach().reshape(-1).to(dt) if posterior is not None else ones
            rows = torch.stack([pn, pos - pn, ones, noisy])  # [4, B]
            cols = torch.stack([ones, ell.detach().reshape(-1), handled.detach().reshape(-1).to(dt), post], 1)
            self.truth_sums += (rows @ cols).to(torch.float64)  # [4, 4]

    def report(self) -> Dict[str, torch.Tensor]:
        """Ground-truth diagnostics since the last call, global over the group; resets the sums.

        ONE all-reduce: call it on every rank at the same step. Empty when no batch carried ``is_noisy``.

        This is the project's one definition of noise identification (docs/denoisers.md, "Noise
        identification"): **soft** — a sample counts with its handling amount in ``[0, 1]`` (see
        :meth:`track_truth`), so hard decisions (T-CE's drops, DART's identified set) count 0 or 1 and soft
        ones (R-CE's ``1 − w``, the bootstraps' corrections, DeCA's posterior) their amount. The candidates
        are the observed positives (``positives_only``) or every sample.

        - ``precision``: noisy share of the handled amount; ``random_precision``: noisy share of the
          candidates (what random handling would get);
        - ``recall``: handled amount on noisy candidates over the noisy candidates; ``handled_share``: the
          handled amount over the candidates (the recall random handling would get);
        - ``count_candidates``, ``count_noisy_candidates``, ``sum_handled``, ``sum_handled_noisy``: the sums
          behind these ratios, so windows can be pooled exactly (``bench quality`` pools a run's log lines);
        - ``loss_noisy_pos`` / ``loss_clean_pos``: mean BCE of truly noisy / clean positives;
        - DeCA: ``post_noisy_pos`` / ``post_clean_pos``, the mean P(y=1 | ỹ=1).
        """
        tot = C.global_sum(self.truth_sums, self.process_group)
        self.truth_sums.zero_()
        S = {(r, c): tot[i, j] for i, r in enumerate(TRUTH_ROWS) for j, c in enumerate(TRUTH_COLS)}
        if float(tot[:, 0].sum()) == 0.0:  # log time, not the hot path
            return {}
        if self.positives_only:  # candidates: the observed positives
            cand, cand_noisy = S["noisy_pos", "count"] + S["clean_pos", "count"], S["noisy_pos", "count"]
        else:
            cand, cand_noisy = S["all", "count"], S["noisy", "count"]
        v = {
            "handled": S["all", "handled"],
            "handled_noisy": S["noisy", "handled"],
            "cand": cand,
            "cand_noisy": cand_noisy,
            "pos_noisy": S["noisy_pos", "count"],
            "pos_clean": S["clean_pos", "count"],
            "loss_pos_noisy": S["noisy_pos", "loss"],
            "loss_pos_clean": S["clean_pos", "loss"],
            "post_pos_noisy": S["noisy_pos", "posterior"],
            "post_pos_clean": S["clean_pos", "posterior"],
        }

        def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.where(b > 0, a / b.clamp_min(1e-300), torch.full_like(a, float("nan"))).float()

        out = {
            "precision": ratio(v["handled_noisy"], v["handled"]),
            "random_precision": ratio(v["cand_noisy"], v["cand"]),
            "recall": ratio(v["handled_noisy"], v["cand_noisy"]),
            "handled_share": ratio(v["handled"], v["cand"]),
            "count_candidates": v["cand"],
            "count_noisy_candidates": v["cand_noisy"],  # float64: exact counts
            "sum_handled": v["handled"],
            "sum_handled_noisy": v["handled_noisy"],
            "loss_noisy_pos": ratio(v["loss_pos_noisy"], v["pos_noisy"]),
            "loss_clean_pos": ratio(v["loss_pos_clean"], v["pos_clean"]),
        }
        if self.reports_posterior:
            out["post_noisy_pos"] = ratio(v["post_pos_noisy"], v["pos_noisy"])
            out["post_clean_pos"] = ratio(v["post_pos_clean"], v["pos_clean"])
        return out

    def check_stats(self, stats: Dict[str, float]) -> None:
        """Check this step's global stats at a log step; raise to stop a run that has failed.

        The stats are host floats, the same on every rank; a denoiser raises on a failure it can recognise (e.g. DeCA's
        collapse).
        """

    def model_parallel_tables(self) -> List[str]:
        """Embedding tables of this denoiser that must be sharded model-parallel (not replicated)."""
        return []

    def extra_repr(self) -> str:
        """``option=value, ...`` of :meth:`hparams` (the module's repr)."""
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())

    def hparams(self) -> Dict[str, Any]:
        """The hyperparameters as ``{option: value}`` (none here); run logs and reports print them."""
        return {}


def no_decisions(labels: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
    """All-false ``dropped`` and ``relabelled`` masks."""
    z = torch.zeros_like(labels, dtype=torch.bool)
    return z, z.clone()


def soft_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``ℓ = −[y* log σ(z) + (1 − y*) log(1 − σ(z))]`` for a soft target ``y*`` in ``[0, 1]``.

    A constant target uses the fused BCE-with-logits, whose gradient ``σ(z) − y*`` is formed before any
    scaling (so it is the same on every rank however the loss is scaled). A target in the graph (Reed's
    attached bootstrap) uses ``softplus(z) − y*·z``, differentiable in ``y*`` too.
    """
    if target.requires_grad:
        return F.softplus(logits) - target * logits
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
