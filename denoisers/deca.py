"""DeCA: Denoising with Cross-model Agreement (WWW 2022, Eq. 9, 13-15, Algorithms 1-2).

Wang et al., "Learning Robust Recommenders through Cross-Model Agreement"; journal version Eq. 10, Alg. 1.

Models: the target ``f = σ(z)`` (the trained CTR model), and three matrix factorisations on their own
embedding tables (:class:`~denoisrec.denoisers.mf.MFHeads`, tables ``deca_g_*``, ``deca_h_*``,
``deca_hp_*``, which the trainer folds into the target model's ``EmbeddingBagCollection``: one sharded lookup
for both, ``NEEDS.shared_tables``): the auxiliary model ``g`` and the noise models
``h = P(ỹ=1 | y=0)`` and ``h' = P(ỹ=1 | y=1)``. Per sample (DeCA Eq. 9)::

    loss = −E_{y∼f}[log P(ỹ | y)] + α·KL(g ‖ f) + (1 − α)·KL(f ‖ g)          (Bernoulli KL, A.2)

The expectation alternates every step between two sub-tasks (§3.4), chosen by the parity of the global
step; only the sub-task's own noise model is trained in it (the other one is evaluated detached, for the
diagnostics, so its tables receive an exactly-zero gradient: unchanged under the fused row-wise Adagrad,
Adagrad or SGD without weight decay of model-parallel tables, which is why the tables are listed by
``model_parallel_tables`` for the planner; a replicated table or a sparse optimizer with momentum or
weight decay would still move them, and :meth:`DeCA.setup_warnings` warns about both):

- **DP** (denoise positives, ``h' ≡ 1``; Eq. 14): positives ``−(1 − f)·log h``;
  negatives ``−(1 − f)·log(1 − h) + C1·f``.
- **DN** (denoise negatives, ``h ≡ 0``; Eq. 15): positives ``−f·log h' + C2·(1 − f)``;
  negatives ``−f·log(1 − h')``.

The batch loss is the mean over the global positives plus the mean over the global negatives (L2 on
``f`` is the optimizer's weight decay). ``f`` and ``g`` are co-trained through the KL terms.

**Why the paper's constants collapse on impression data, and the marginal likelihood** (``objective``). With
``h``, ``h'`` at their optimum the DP + DN objective is linear in ``f``: summing the ``f``-terms of a sample
with observed-positive probability ``q`` under the class-balanced means (``P`` positives, ``N`` negatives),
``f`` is pushed up only where ``q / (1 − q) > (C1 / C2) · P / N``: ``C1 / C2`` is a threshold on a sample's
odds of being an observed positive *relative to the batch's*. With sampled negatives (the paper: easy,
random items) the odds of a real interaction are far above 100× the base; with observed negatives
(impressions) almost none are, and ``f → 0`` everywhere at the defaults (clean AUC 0.44-0.50). The default
``objective="marginal"`` drops the constants and the bound: it maximises the observed label's likelihood
under the noise model, the quantity whose Jensen upper bound Eq. 9's first term is::

    −log P(ỹ | x) = −log[ f·P(ỹ | y=1) + (1 − f)·P(ỹ | y=0) ],   P(ỹ=1 | y=1) = h',  P(ỹ=1 | y=0) = h
    h' = h + (1 − h)·σ(z_h')          (h' > h: a preferred item is clicked more often; identifiable)

plus the same agreement term, averaged over the global batch; both noise models are trained every step (no
sub-tasks). ``objective="paper"`` keeps Eq. 14-15 exactly; there a collapse of ``f`` (its global mean below
1% of the observed positive rate at a log step after the first 50 steps) stops the run with the reason
(:meth:`DeCA.check_stats`) instead of finishing with AUC 0.5.

**DeCA(p)** (Eq. 13, Alg. 2) replaces ``g`` by ``f'``, a frozen copy of the target architecture trained
with plain BCE from another seed: phase 1 (global steps ``< pretrain_steps``) trains ``f'`` alone with BCE;
phase 2 freezes it (eval mode: no dropout, so ``f'`` is one fixed function; its forward without autograd)
and trains ``f``, ``h``, ``h'`` with ``α·KL(f ‖ f') + (1 − α)·KL(f' ‖ f)``. The trainer
builds ``f'`` (same builder, another seed) and injects it, runs phase 1 before the main loop, or loads
``prior_checkpoint`` instead.

Reported per step: the sub-task, mean ``P(y=1 | ỹ=1) = h'·f / (h'·f + h·(1 − f))`` over positives, and
mean ``h``, ``h'``; with ground truth, the mean ``P(y=1 | ỹ=1)`` of clean vs noisy positives (``report``).
Cost per step: one SUM all-reduce; the auxiliary tables ride in the target model's all-to-alls (folded by
the trainer, :mod:`denoisrec.trainer.distributed.shared_lookup`), or cost one input and one output all-to-all (and the
backward one) together when the heads look them up themselves.

Inference uses ``f`` alone (the trainer's evaluation never calls the denoiser).

Example (one process, unsharded tables)::

    deca = DeCA(tables={"user_id": 100, "item_id": 50}, device=torch.device("cpu"))
    out = deca(logits, batch.labels, batch.sample_ids, batch)   # step 0: DP; step 1: DN; ...
    out.loss.backward()  # gradients reach f, g and h (DP) or h' (DN)
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed import ProcessGroup

from denoisrec.denoisers.base import (
    Denoiser,
    DenoiserNeeds,
    JobFacts,
    LossOutput,
    Pretraining,
    bce_per_sample,
    no_decisions,
)
from denoisrec.denoisers.batch import DenoiserBatch
from denoisrec.denoisers.mf import MFHeads

DP, DN = 0, 1


def bernoulli_kl(za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """``KL(Bern(σ(za)) ‖ Bern(σ(zb)))`` per sample, from logits (stable for large |z|)."""
    a = torch.sigmoid(za)
    return a * (F.logsigmoid(za) - F.logsigmoid(zb)) + (1 - a) * (F.logsigmoid(-za) - F.logsigmoid(-zb))


class DeCA(Denoiser):
    """DeCA with a co-trained MF ``g`` (DeCA Eq. 9, 14, 15; Algorithm 1).

    Args:
        tables: ``{feature: num_embeddings}`` of the batch's sparse features (injected by the trainer).
        objective: ``"marginal"`` (default: −log P(ỹ | x) under the noise model, no constants) or ``"paper"``
            (Eq. 14-15 with ``C1``, ``C2``, alternating DP / DN).
        C1: ``objective="paper"`` only: large constant replacing ``−log(1 − h')`` in DP (default 1000; grid
            {1, 10, 100, 1000}). Given with ``objective="marginal"`` it is an error, not silently unused.
        C2: ``objective="paper"`` only: large constant replacing ``−log h`` in DN (default 10; same grid).
        alpha: KL mixing ``α`` (grid {0, 0.5, 1}).
        user_feature, item_feature: the id features the MFs read.
        mf_dim: width of the MF tables (``mf_dim − 1`` factors plus a bias column).
        device: where the MF tables are allocated (the trainer passes ``meta``; DMP materialises them).
    """

    name = "deca"
    GRID = {"alpha": [0.0, 0.5, 1.0]}  # the paper's C1, C2 grid {1, 10, 100, 1000}: with objective=paper
    OBJECTIVES = ("marginal", "paper")
    COLLAPSE_GRACE_STEPS = 50  # objective="paper": f may start low; a collapse is judged after this
    NEEDS = DenoiserNeeds(injected=("tables", "device"), shared_tables=("mf",))
    HEADS: ClassVar[Tuple[str, ...]] = ("g", "h", "hp")
    reports_posterior = True

    def __init__(
        self,
        tables: Mapping[str, int],
        C1: Optional[float] = None,
        C2: Optional[float] = None,
        alpha: float = 1.0,
        user_feature: str = "user_id",
        item_feature: str = "item_id",
        mf_dim: int = 32,
        objective: str = "marginal",
        device: Optional[torch.device] = None,
        process_group: Optional[ProcessGroup] = None,
    ) -> None:
        super().__init__(process_group)
        if objective not in self.OBJECTIVES:
            raise ValueError(f"{self.name} option objective={objective!r}: expected one of {list(self.OBJECTIVES)}")
        self.objective = objective
        for opt, feat in (("user_feature", user_feature), ("item_feature", item_feature)):
            if feat not in tables:
                raise ValueError(
                    f"{self.name} option {opt}={feat!r}: not a sparse feature of the data (have {sorted(tables)})"
                )
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{self.name} option alpha={alpha}: must lie in [0, 1]")
        if mf_dim < 2:
            raise ValueError(f"{self.name} option mf_dim={mf_dim}: must be >= 2 (one latent factor plus the bias)")
        if objective == "marginal" and (C1 is not None or C2 is not None):
            raise ValueError(
                f"{self.name} options C1={C1}, C2={C2}: used only by objective=paper (the default "
                "objective=marginal has no constants); add -p objective=paper or drop them"
            )
        C1, C2 = (1000.0 if C1 is None else C1), (10.0 if C2 is None else C2)
        if C1 < 0 or C2 < 0:
            raise ValueError(f"{self.name} options C1={C1}, C2={C2}: must be >= 0")
        self.C1, self.C2, self.alpha = float(C1), float(C2), float(alpha)
        self.user_feature, self.item_feature, self.mf_dim = user_feature, item_feature, int(mf_dim)
        # g (DeCA only), h = P(ỹ=1 | y=0), h' = P(ỹ=1 | y=1): one EBC, tables deca_<head>_<feature>.
        self.mf = MFHeads(
            self.HEADS,
            user_feature,
            item_feature,
            int(tables[user_feature]),
            int(tables[item_feature]),
            mf_dim,
            "deca_",
            device,
        )

    def model_parallel_tables(self) -> List[str]:
        """The MF tables, which must be model-parallel.

        A replicated table would be stepped by the dense optimizer, whose momentum moves the sub-task's inactive noise
        model (its gradient is exactly zero).
        """
        return [t for h in self.mf.heads for t in self.mf.table[h].values()]

    def setup_warnings(self, job: JobFacts) -> List[str]:
        """Warnings about optimizers and sharding that would move the inactive noise model.

        A sub-task's inactive noise model gets an exactly-zero gradient; it stays frozen only under a fused sparse
        optimizer without momentum or weight decay on model-parallel tables.
        """
        out = []
        if job.sparse_optimizer == "adam" or job.sparse_weight_decay > 0:
            out.append(
                f"--denoiser {self.name}: the sub-task's inactive noise model gets a zero gradient, which "
                f"optim.sparse={job.sparse_optimizer} with sparse_weight_decay={job.sparse_weight_decay} "
                "still turns into an update; use rowwise_adagrad, adagrad or sgd without weight decay "
                "to keep it exactly frozen"
            )
        if job.sharding_type == "data_parallel":
            out.append(
                f"--denoiser {self.name} with sharding.sharding_type=data_parallel: its noise models' tables "
                "are then stepped by the dense optimizer, whose momentum moves the sub-task's inactive "
                "noise model; prefer a model-parallel sharding type"
            )
        return out

    def hparams(self) -> Dict[str, Any]:
        """DeCA's options as given (``C1``/``C2`` only under ``objective=paper``)."""
        paper = {"C1": self.C1, "C2": self.C2} if self.objective == "paper" else {}
        return {
            "objective": self.objective,
            **paper,
            "alpha": self.alpha,
            "user_feature": self.user_feature,
            "item_feature": self.item_feature,
            "mf_dim": self.mf_dim,
        }

    def check_stats(self, stats: Dict[str, float]) -> None:
        """Stop a collapsed ``objective="paper"`` run at a log step, with the reason.

        The stats are host floats, the same on every rank; the run stops rather than finish with a constant score.
        """
        if self.objective != "paper" or "f_mean" not in stats or self.host_step < self.COLLAPSE_GRACE_STEPS:
            return
        f_mean, pos = stats["f_mean"], stats.get("pos_share", 0.0)
        if pos > 0 and f_mean < 0.01 * pos:
            raise RuntimeError(
                f"{self.name}: f collapsed to 0 at step {self.host_step} (mean f {f_mean:.2g} against an observed "
                f"positive share {pos:.2f}): with objective=paper, C1/C2 = {self.C1 / max(self.C2, 1e-12):g} "
                "is a threshold on a sample's odds of being an observed positive relative to the batch's, which "
                "observed (impression) negatives never reach; use objective=marginal, or C1 close to C2 "
                "(e.g. -p C1=10 -p C2=10)"
            )

    # The parts DeCA(p) overrides.
    def subtask(self) -> int:
        """``DP`` on even global steps, ``DN`` on odd ones (host-side: the step mirror, no device sync)."""
        return self.host_step % 2

    def reference_logits(self, batch: DenoiserBatch, mf: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B]`` reference logits of the agreement term: the MF model ``g``'s."""
        return mf["g"]

    def agreement(self, z: torch.Tensor, zr: torch.Tensor) -> torch.Tensor:
        """``α·KL(g ‖ f) + (1 − α)·KL(f ‖ g)`` (both models receive gradients)."""
        return self.alpha * bernoulli_kl(zr, z) + (1 - self.alpha) * bernoulli_kl(z, zr)

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[DenoiserBatch],
    ) -> LossOutput:
        """DeCA's loss for this step's sub-task (Eq. 14 on DP, Eq. 15 on DN steps): ``[B]`` unit weights."""
        if batch is None or getattr(batch, "sparse_features", None) is None:
            raise ValueError(f"{self.name}: needs the batch's sparse features (pass batch=...)")
        mf = self.mf(batch.sparse_features)
        if self.objective == "marginal":
            return self.marginal_loss(logits, labels, batch, self.reference_logits(batch, mf), mf["h"], mf["hp"])
        task = self.subtask()
        # Only the sub-task's noise model is trained: the other one is detached (diagnostics only).
        zh, zhp = (mf["h"], mf["hp"].detach()) if task == DP else (mf["h"].detach(), mf["hp"])
        return self.deca_loss(logits, labels, batch, task, self.reference_logits(batch, mf), zh, zhp)

    def marginal_loss(
        self,
        z: torch.Tensor,
        labels: torch.Tensor,
        batch: DenoiserBatch,
        zr: torch.Tensor,
        zh: torch.Tensor,
        zhp: torch.Tensor,
    ) -> LossOutput:
        """``−log[f·P(ỹ | y=1) + (1 − f)·P(ỹ | y=0)] + agreement``, mean over the global batch (log space)."""
        pos = labels > 0.5
        posf = pos.to(z.dtype)
        log_h, log_1mh = F.logsigmoid(zh), F.logsigmoid(-zh)
        log_1mhp = log_1mh + F.logsigmoid(-zhp)  # 1 − h' = (1 − h)(1 − σ(z_h'))
        log_hp = torch.logaddexp(log_h, log_1mh + F.logsigmoid(zhp))  # h' = h + (1 − h)·σ(z_h')
        log_f, log_1mf = F.logsigmoid(z), F.logsigmoid(-z)
        log_p1 = torch.logaddexp(log_f + log_hp, log_1mf + log_h)  # log P(ỹ=1 | x)
        log_p0 = torch.logaddexp(log_f + log_1mhp, log_1mf + log_1mh)  # log P(ỹ=0 | x)
        per = -torch.where(pos, log_p1, log_p0) + self.agreement(z, zr)
        with torch.no_grad():
            post = torch.exp(log_f + log_hp - log_p1).detach()  # P(y=1 | ỹ=1) = h'f / P(ỹ=1)
            f = torch.sigmoid(z.detach())
        ones = torch.ones_like(per)
        # One all-reduce: [Σ loss, B, P, Σ_pos P(y=1|ỹ=1), Σ h, Σ h', Σ f].
        loss, value, sums = self.global_mean(
            per,
            ones,
            ones.sum(),
            extra=[posf.sum(), (post * posf).sum(), log_h.detach().exp().sum(), log_hp.detach().exp().sum(), f.sum()],
        )
        n = sums[1].clamp_min(1)
        stats = {
            "post_pos_mean": (sums[3] / sums[2].clamp_min(1)).float(),
            "h_mean": (sums[4] / n).float(),
            "h_prime_mean": (sums[5] / n).float(),
            "f_mean": (sums[6] / n).float(),
            "pos_share": (sums[2] / n).float(),
        }
        self.track_truth(batch, labels, bce_per_sample(z.detach(), labels), (1 - post) * posf, posterior=post)
        dropped, relabelled = no_decisions(labels)
        return LossOutput(loss, value, ones, labels.detach(), dropped, relabelled, stats)

    def deca_loss(
        self,
        z: torch.Tensor,
        labels: torch.Tensor,
        batch: DenoiserBatch,
        task: int,
        zr: torch.Tensor,
        zh: torch.Tensor,
        zhp: torch.Tensor,
    ) -> LossOutput:
        """The sub-task's loss from ``[B]`` logits of ``f`` (``z``), reference ``zr``, ``h`` and ``h'``."""
        pos = labels > 0.5
        posf = pos.to(z.dtype)
        f = torch.sigmoid(z)
        if task == DP:  # Eq. 14 (h' ≡ 1, −log(1 − h') → C1)
            pos_term = -(1 - f) * F.logsigmoid(zh)
            neg_term = -(1 - f) * F.logsigmoid(-zh) + self.C1 * f
        else:  # Eq. 15 (h ≡ 0, −log h → C2)
            pos_term = -f * F.logsigmoid(zhp) + self.C2 * (1 - f)
            neg_term = -f * F.logsigmoid(-zhp)
        per = torch.where(pos, pos_term, neg_term) + self.agreement(z, zr)
        local_pos, local_neg = (per * posf).sum(), (per * (1 - posf)).sum()
        with torch.no_grad():
            zd = z.detach()
            # P(y=1 | ỹ=1) = h'f / (h'f + h(1 − f)), in log space.
            post = torch.sigmoid(F.logsigmoid(zhp) + F.logsigmoid(zd) - F.logsigmoid(zh) - F.logsigmoid(-zd))
        # One all-reduce: [P, N, Σ_pos loss, Σ_neg loss, Σ_pos P(y=1|ỹ=1), Σ h, Σ h', Σ f].
        sums = self.reduce_sums(
            posf.sum(),
            (1 - posf).sum(),
            local_pos,
            local_neg,
            (post * posf).sum(),
            torch.sigmoid(zh.detach()).sum(),
            torch.sigmoid(zhp.detach()).sum(),
            f.detach().sum(),
        )
        n_pos, n_neg = sums[0].clamp_min(1e-12), sums[1].clamp_min(1e-12)
        loss = self.scaled(local_pos, n_pos) + self.scaled(local_neg, n_neg)
        value = (sums[2] / n_pos + sums[3] / n_neg).to(z.dtype)
        n = (sums[0] + sums[1]).clamp_min(1)
        stats = {
            "subtask": torch.full((), float(task), device=z.device),
            "post_pos_mean": (sums[4] / sums[0].clamp_min(1)).float(),
            "h_mean": (sums[5] / n).float(),
            "h_prime_mean": (sums[6] / n).float(),
            "f_mean": (sums[7] / n).float(),
            "pos_share": (sums[0] / n).float(),
        }
        self.track_truth(batch, labels, bce_per_sample(zd, labels), (1 - post) * posf, posterior=post)
        dropped, relabelled = no_decisions(labels)
        return LossOutput(loss, value, torch.ones_like(zd), labels.detach(), dropped, relabelled, stats)


class DeCAPrior(DeCA):
    """DeCA(p): the agreement is with ``f'``, a frozen BCE-pre-trained copy of the target.

    ``f'`` has the target's architecture (DeCA Eq. 13, Algorithm 2).

    Args:
        prior: the ``f'`` model, ``(dense, KJT) → logits [B, 1]`` (injected: the trainer builds it with the
            target's builder and another seed).
        pretrain_steps: phase 1 length in global steps (``f'`` trained with BCE, nothing else); ``None``
            (the default): the trainer pre-trains ``f'`` to early stopping on the observed validation AUC,
            as the paper, within ``pretrain_max_epochs``. 0 with ``prior_checkpoint``.
        pretrain_max_epochs: bound on phase 1 in epochs (early stopping only).
        pretrain_patience: epochs without a better validation AUC before phase 1 stops (the best epoch's
            weights are restored).
        prior_cache: score the training split with the frozen ``f'`` once after phase 1 and look the
            scores up by sample id in phase 2 (``f'`` is a fixed function there, so this is exact), instead
            of its forward every step; costs 12 bytes per training row on every rank.
        prior_checkpoint: a ``torch.save(model.state_dict())`` file of the target architecture, loaded into
            ``f'`` by the trainer after sharding (then no phase 1).
        (the other options as :class:`DeCA`)
    """

    name = "deca_p"
    # static_graph=False: phase 1 trains f' only, phase 2 f (and h, h') only
    NEEDS = DenoiserNeeds(injected=("tables", "device", "prior"), static_graph=False, shared_tables=("mf",))
    HEADS = ("h", "hp")

    def __init__(
        self,
        tables: Mapping[str, int],
        prior: nn.Module,
        C1: Optional[float] = None,
        C2: Optional[float] = None,
        alpha: float = 1.0,
        user_feature: str = "user_id",
        item_feature: str = "item_id",
        mf_dim: int = 32,
        pretrain_steps: Optional[int] = None,
        prior_checkpoint: Optional[str] = None,
        pretrain_max_epochs: float = 5.0,
        pretrain_patience: int = 1,
        prior_cache: bool = True,
        objective: str = "marginal",
        device: Optional[torch.device] = None,
        process_group: Optional[ProcessGroup] = None,
    ) -> None:
        super().__init__(tables, C1, C2, alpha, user_feature, item_feature, mf_dim, objective, device, process_group)
        self.prior = prior
        if prior_checkpoint is not None:
            if pretrain_steps:
                raise ValueError(
                    f"deca_p options prior_checkpoint={prior_checkpoint!r} and "
                    f"pretrain_steps={pretrain_steps}: a loaded prior needs no pre-training"
                )
            pretrain_steps = 0
        if pretrain_steps is not None and pretrain_steps < 0:
            raise ValueError(f"deca_p option pretrain_steps={pretrain_steps}: must be >= 0")
        if not pretrain_max_epochs > 0 or pretrain_patience < 1:
            raise ValueError(
                f"deca_p options pretrain_max_epochs={pretrain_max_epochs}, "
                f"pretrain_patience={pretrain_patience}: must be > 0 and >= 1"
            )
        self.pretrain_steps = pretrain_steps
        self.prior_checkpoint = prior_checkpoint
        self.pretrain_max_epochs, self.pretrain_patience = float(pretrain_max_epochs), int(pretrain_patience)
        # Phase 1's length once run (-1: not yet), checkpointed: a resumed run's phase 2 count starts there.
        self.register_buffer("pretrained_steps", torch.full((), -1, dtype=torch.int64))
        self.prior_cache = bool(prior_cache)
        self._cache: Optional[tuple] = None  # (sorted sample ids [N], f' logits [N]) once set_prior_scores ran

    def set_prior_scores(self, sample_ids: torch.Tensor, logits: torch.Tensor) -> None:
        """Phase 2 reads ``f'`` from these scores (every training row's, any order) instead of running it."""
        order = torch.argsort(sample_ids)
        self._cache = (sample_ids[order].contiguous(), logits[order].float().contiguous())

    def hparams(self) -> Dict[str, Any]:
        """DeCA's options plus the prior's (pre-training length, checkpoint, early stopping, cache)."""
        return {
            **super().hparams(),
            "pretrain_steps": self.pretrain_steps,
            "prior_checkpoint": self.prior_checkpoint,
            "pretrain_max_epochs": self.pretrain_max_epochs,
            "pretrain_patience": self.pretrain_patience,
            "prior_cache": self.prior_cache,
        }

    def pretraining(self) -> Optional[Pretraining]:
        """Phase 1 (DeCA Alg. 2 lines 2-9): ``f'`` with BCE, or loaded from ``prior_checkpoint``."""
        return Pretraining(
            steps=self.pretrain_steps,
            max_epochs=self.pretrain_max_epochs,
            patience=self.pretrain_patience,
            checkpoint=self.prior_checkpoint,
            cache_scores=self.prior_cache,
        )

    def phase_steps(self) -> int:
        """Phase 1's length in steps (raises a one-line error while it is unset)."""
        if self.pretrain_steps is None:
            raise ValueError(
                "deca_p: pretrain_steps is unset; pass -p pretrain_steps=N or "
                "-p prior_checkpoint=PATH (the trainer pre-trains to early stopping)"
            )
        return self.pretrain_steps

    def in_pretraining(self) -> bool:
        """Whether the current step is still in phase 1 (pre-training ``f'`` with BCE)."""
        return self.host_step < self.phase_steps()

    def subtask(self) -> int:
        """``DP`` or ``DN``: the sub-task of the current step, counted from phase 2's first step."""
        return (self.host_step - self.phase_steps()) % 2  # Alg. 2 restarts the count in phase 2

    def prior_logits(self, batch: DenoiserBatch) -> torch.Tensor:
        """``[B]`` logits of the prior ``f'`` on the batch's features."""
        return self.prior(batch.dense_features, batch.sparse_features).reshape(-1)

    def reference_logits(self, batch: DenoiserBatch, mf: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B]`` logits of the frozen prior ``f'``: its cached scores by sample id, else its forward."""
        ids = getattr(batch, "sample_ids", None)
        if self._cache is not None and ids is not None:
            keys, z = self._cache
            at = torch.searchsorted(keys, ids).clamp_max(max(keys.numel() - 1, 0))
            # No host sync: checked on device (a row that was not scored would be an error, not a guess).
            torch._assert_async((keys[at] == ids).all(), "deca_p: a sample id without a cached f' score")
            return z[at]
        with torch.no_grad():  # f' is frozen: its forward without autograd
            return self.prior_logits(batch)

    def agreement(self, z: torch.Tensor, zr: torch.Tensor) -> torch.Tensor:
        """``α·KL(f ‖ f') + (1 − α)·KL(f' ‖ f)`` (``f'`` is frozen)."""
        return self.alpha * bernoulli_kl(z, zr) + (1 - self.alpha) * bernoulli_kl(zr, z)

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[DenoiserBatch],
    ) -> LossOutput:
        """BCE on the prior ``f'`` in phase 1; DeCA's loss with ``f'`` as reference in phase 2."""
        if batch is None or getattr(batch, "sparse_features", None) is None:
            raise ValueError(f"{self.name}: needs the batch's features (pass batch=...)")
        pretraining = self.in_pretraining()
        # f' trains (dropout on) only in phase 1; frozen, it is a fixed function: eval mode (dropout off),
        # whatever model.train() the trainer called. A host-side flag check: no device work.
        if self.prior.training != (pretraining and self.training):
            self.prior.train(pretraining and self.training)
        if not pretraining:
            return super().compute(logits, labels, sample_ids, batch)
        # Phase 1 (Alg. 2 lines 2-9): BCE on f' only; f, h, h' are not in the graph.
        zp = self.prior_logits(batch)
        ell = bce_per_sample(zp, labels)
        ones = torch.ones_like(ell)
        loss, value, _ = self.global_mean(ell, ones, ones.sum())
        dropped, relabelled = no_decisions(labels)
        stats = {"pretraining": value.new_ones(())}
        return LossOutput(loss, value, ones, labels.detach(), dropped, relabelled, stats)
