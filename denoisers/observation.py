"""The observation model: learn *how each label was observed* beside *what the user prefers*.

In impression logs the observed label ``ỹ`` is the clean preference ``y`` seen through the conditions of the
impression (list position, scene, device, time: the **context** ``c``). With ``f(x) = σ(z) = P(y=1 | x)``
the target model over the preference features ``x`` only, and a small context tower giving the noise rates
``h(c) = P(ỹ=1 | y=0, c)`` and ``h'(c) = P(ỹ=1 | y=1, c)``, the observed label has the likelihood
(DeCA's noise model, Wang et al. WWW 2022 Eq. 3, with the noise rates a function of the context; the
position-bias "shallow tower" of industrial rankers)::

    P(ỹ=1 | x, c) = f(x)·h'(c) + (1 − f(x))·h(c)                                        (mixture)
    L = −(1/B) Σ_i [ỹ_i log P(ỹ=1 | x_i, c_i) + (1 − ỹ_i) log P(ỹ=0 | x_i, c_i)]

**Identifiability.** The tower outputs two logits ``a, b`` and ``h = σ(a)``, ``h' = h + (1 − h)·σ(b)``, so
``h' > h`` everywhere: without it ``(f, h, h') → (1 − f, h', h)`` explains the data equally well. Every term
is evaluated in log space: ``log h' = logaddexp(log σ(a), log σ(−a) + log σ(b))``,
``log(1 − h') = log σ(−a) + log σ(−b)``, ``log P(ỹ=1) = logaddexp(log f + log h', log(1 − f) + log h)``,
``log P(ỹ=0) = logaddexp(log f + log(1 − h'), log(1 − f) + log(1 − h))``.

``form="examination"`` shares one *attention* factor between the two rates (the examination hypothesis of
position-aware learning, PAL, and exactly the generator's process): the tower's logit ``a`` gives
``e(c) = σ(a)``, the probability that the user attended to the impression, and two global learnt rates give
what an inattentive impression records, ``q₀ = P(ỹ=1 | y=0, inattentive) = σ(u₀)`` and
``q₁ = P(ỹ=0 | y=1, inattentive) = σ(u₁)`` (``u = rates_lr_scale · v`` with ``v`` the trained
parameter: the dense optimizer then moves ``u`` ``rates_lr_scale`` times faster, at the tower's pace, which a
run of a few hundred steps needs)::

    h(c) = (1 − e(c))·q₀,   1 − h'(c) = (1 − e(c))·q₁                                  (examination)

One free function of the context instead of two: the context can only scale *both* noise rates together, so it
cannot explain extra clicks of a confounded position (the old ranker put liked items on top) by a higher
``h`` there without also lowering ``h'``. ``q₀`` and ``q₁`` are free in ``(0, 1)``: an inattentive label may
carry no information about ``y`` or even point the wrong way (``q₀ + q₁ > 1``, as a background play of a disliked
song that is more likely than of a liked one; the generator's ``q_fp = 0.55``, ``q_fn = 0.5``). Bounding
``q₀ + q₁ < 1`` (which made ``h' > h`` hold everywhere) biased the fit on such data: the excess false
positives of inattentive impressions went into ``f`` (``f_mean`` +17–20% over the clean rate). ``h' − h =
e + (1 − e)(1 − q₀ − q₁)`` stays positive wherever attention dominates; the label-swapped solution ``(1 − f, …)``
needs ``q₀, q₁ → 1``, far from the initialisation (``q₀ = h_init / g``, ``q₁ = (1 − h_prime_init) / g`` with
``1 − e = g ≥ 0.5``), and the warm-up lets ``f`` learn its sign from ``x`` first. In log space
``log h = log σ(−a) + log q₀``, ``log(1 − h) = logaddexp(log σ(a), log σ(−a) + log(1 − q₀))``, and alike for
``h'``.

**A given noise model** (``noise_file``): the examination form's ``a(c)``, ``q₀``, ``q₁`` read from a JSON file
(:class:`~denoisrec.denoisers.noise_file.NoiseModel`: measured on randomised traffic, or the generator's truth
for an oracle) instead of learnt; ``f`` alone trains. The oracle bounds what any noise model can buy.

**Tower warm-up** (``tower_warmup``: steps, epochs ``"1ep"`` or a share of the run ``"25%"``, see
:mod:`~denoisrec.denoisers.span`): for the first ``tower_warmup`` steps the tower's output is held at its initial
value (``h = h_init``, ``h' = h_prime_init`` everywhere; zero gradient to the tower and to ``q₀, q₁``), so ``f``
first learns the preference from ``x`` before the context may explain anything: under a confounded logging policy an
early tower otherwise absorbs the preference signal that ``f`` has not yet learnt. (A held step computes neither
the tower nor the id channels: their rates are one value for every row.)

``form="product"`` is the simpler factorisation ``P(ỹ=1 | x, c) = a(c)·f(x)`` with ``a = σ(b)`` (no false
positives: ``h ≡ 0``, ``h' = a``), the position-bias model of unbiased learning to rank.

**Noise the context does not explain** (:class:`ObservationIdNoise`, ``observation_ids``): two matrix
factorisations over the user and item ids (DeCA's MF noise models, :class:`~denoisrec.denoisers.mf.MFHeads`,
tables ``obs_id_fp_*``, ``obs_id_fn_*``, folded into the model's collection like the tower's) add a click
``p₀₁(u, i) = σ(k(u, i) + logit(id_noise_init))`` and a miss ``p₁₀(u, i) = σ(m(u, i) + logit(id_noise_init))``
that happen whatever the preference and the context (an item's clickbait, a user's random clicks).
Composed after the context's rates::

    P(ỹ=1 | x, c, u, i) = P(ỹ=1 | x, c)·(1 − p₁₀) + P(ỹ=0 | x, c)·p₀₁                     (id noise)

in log space ``log P(ỹ=1) = logaddexp(log P₁ + log σ(−m'), log P₀ + log σ(k'))`` and alike for ``ỹ=0``, with
``k' = k + logit(id_noise_init)``; the per-row rates become ``h ← h·(1 − p₁₀) + (1 − h)·p₀₁`` (and alike for
``h'``).

**Trusted labels in the objective** (``trusted_weight``): rows whose batch carries a trusted label ``t``
(``batch.trusted_labels``, NaN elsewhere; a rated sample, purchases) add that label's cross-entropy on ``f``::

    L = (1/B) Σ_i [ −log P(ỹ_i | x_i, c_i) + w·1[t_i known]·(−t_i log f_i − (1 − t_i) log(1 − f_i)) ]   (trusted)

A few clean labels pin the *level* of ``f`` (which the observed labels alone leave free: a squashed ``f`` with
low ``h`` explains them about as well), and with it the level of ``h`` and ``h'``.

**Composition with T-CE** (ADT Eq. 2-3 on the mixture): ``eps_max > 0`` drops, at step ``T``, the
``⌊ε(T)·B⌋`` observed positives with the largest mixture NLL (``ε(T) = min(T·eps_max/num_gradual,
eps_max)``), exactly like :class:`~denoisrec.denoisers.adt.TruncatedBCE` on BCE.

Evaluation, ``predict`` and the exported model use ``f`` alone: the tower lives in the denoiser, which the
trainer's evaluation never calls, and the exported model file holds the target model only.

Diagnostics: per step the global means of ``f``, ``h``, ``h'`` (``f_mean`` estimates the clean positive
rate); per value of every single-valued context feature an exponential moving average (``diag_decay``
per step) of ``h`` and ``h'`` over the training rows, read by :meth:`ObservationModel.context_report`
(the trainer writes it beside the generator's truth).

Shapes: ``logits [B]``, ``labels [B]``, ``batch.sparse_features`` a KJT holding the context features.

Example::

    obs = ObservationModel(context_tables={"position": 31, "scene": 6}, device=torch.device("cpu"))
    out = obs(logits, batch.labels, batch.sample_ids, batch)
    out.loss.backward()   # gradients reach f (through logits) and the context tower
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed import ProcessGroup
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers import collectives as C
from denoisrec.denoisers.adt import share_of_batch
from denoisrec.denoisers.base import Denoiser, DenoiserNeeds, LossOutput, bce_per_sample
from denoisrec.denoisers.batch import DenoiserBatch
from denoisrec.denoisers.mf import MFHeads
from denoisrec.denoisers.noise_file import NoiseModel
from denoisrec.denoisers.shared_tables import SharedTables
from denoisrec.denoisers.span import Span

FORMS = ("mixture", "examination", "product")
TABLE_PREFIX = "obs_"
ID_NOISE_PREFIX = "obs_id_"  # the id-noise MF tables: obs_id_fp_<feature>, obs_id_fn_<feature>


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def clean_labels(batch: Optional[DenoiserBatch], labels: torch.Tensor) -> Optional[torch.Tensor]:
    """``[B]`` the clean labels ``ỹ XOR is_noisy`` when the batch carries ground truth, else ``None``."""
    noisy = getattr(batch, "is_noisy", None) if batch is not None else None
    if noisy is None:
        return None
    y = (labels.reshape(-1) > 0.5).to(torch.float32)
    return torch.where(noisy.reshape(-1) > 0.5, 1 - y, y)


class ContextTower(SharedTables):
    """Two noise logits ``(a, b)`` per sample from the context features.

    One mean-pooled table per feature (``obs_<feature>``, sharded by the planner like the model's, initialised near 0).
    The tables pool by sum and the tower divides by the bag's length (``max(len, 1)``; 1 for a single-valued feature):
    the same mean, and the tables then share the model's sum-pooled lookup (FBGEMM groups a collection's tables by
    pooling; its CPU mean pooling is several times slower than its sum).

    With ``hidden=[]`` (the default) the logits are additive in the features,
    ``a = a₀ + Σ_k E_k[c_k, 0]``, ``b = b₀ + Σ_k E_k[c_k, 1]``: every parameter is an embedding row, trained
    by the fused sparse optimizer at ``optim.sparse_lr`` (fast enough to follow ``f`` from the first
    steps). With ``hidden`` the concatenated embeddings go through an MLP (interactions between features; a
    dense part trained at ``optim.lr``).

    Args:
        features: ``{context feature: num_embeddings}``.
        dim: table width (a multiple of 4, FBGEMM's requirement).
        hidden: MLP widths; ``[]``: additive logits.
        bias_init: ``(a₀, b₀)``.
        device: where the tables are allocated (``meta`` under DMP); the MLP is built on the default device.
    """

    bias: torch.Tensor  # buffer: [2] the logits' offsets (a₀, b₀)

    def __init__(
        self,
        features: Mapping[str, int],
        dim: int,
        hidden: Sequence[int],
        bias_init: Tuple[float, float],
        device: Optional[torch.device] = None,
        init_scale: float = 0.01,
    ) -> None:
        if dim < 4 or dim % 4:
            raise ValueError(f"observation option dim={dim}: must be a positive multiple of 4")
        if not all(int(h) >= 1 for h in hidden):
            raise ValueError(f"observation option hidden={list(hidden)}: widths must be positive integers")
        ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=f"{TABLE_PREFIX}{f}",
                    embedding_dim=dim,
                    num_embeddings=int(n),
                    feature_names=[f],
                    pooling=PoolingType.SUM,  # the mean is taken in forward (class docstring)
                    weight_init_min=-init_scale,
                    weight_init_max=init_scale,
                )
                for f, n in features.items()
            ],
            device=device,
        )
        super().__init__(ebc, "context")  # folded into the model's collection by the trainer (SharedTables)
        self.features = list(features)
        self.mlp: Optional[nn.Module] = None
        self.register_buffer("bias", torch.tensor(bias_init, dtype=torch.float32))
        if hidden:
            layers: List[nn.Module] = []
            width = dim * len(self.features)
            for h in hidden:
                layers += [nn.Linear(width, int(h)), nn.ReLU()]
                width = int(h)
            out = nn.Linear(width, 2)
            nn.init.normal_(out.weight, std=0.01)
            nn.init.zeros_(out.bias)
            self.mlp = nn.Sequential(*layers, out)

    def _bag_weights(self, kjt: KeyedJaggedTensor, dtype: torch.dtype) -> torch.Tensor:
        """``[B, F]`` ``1 / max(len, 1)`` of each row's bag of each feature (1 for a single-valued feature)."""
        bags = kjt.to_dict()  # cached on the KJT
        return torch.stack([bags[f].lengths() for f in self.features], 1).clamp_min(1).to(dtype).reciprocal()

    def forward(self, kjt: KeyedJaggedTensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` ``[B]`` logits each: ``h = σ(a)``, ``h' = h + (1 − h)·σ(b)``."""
        pooled = self.lookup(kjt)  # {obs_<feature>: [B, dim]} sums, its own lookup or the model's (folded)
        sums = [pooled[f"{TABLE_PREFIX}{f}"] for f in self.features]  # F × [B, dim]
        if self.mlp is None:
            emb = torch.stack([t[:, :2] for t in sums])  # [F, B, 2]
            if kjt.stride() > 0:  # mean pooling (a KJT of no rows cannot be split by feature; nothing to divide)
                emb = emb * self._bag_weights(kjt, emb.dtype).t().unsqueeze(2)
            ab = emb.sum(0)  # [B, 2]: additive effects
        else:
            emb = torch.stack(sums, 1)  # [B, F, dim]
            if kjt.stride() > 0:
                emb = emb * self._bag_weights(kjt, emb.dtype).unsqueeze(2)
            ab = self.mlp(emb.flatten(1))  # [B, 2]
        ab = ab + self.bias
        return ab[:, 0], ab[:, 1]


def observed_log_likelihood(
    z: torch.Tensor, za: torch.Tensor, zb: torch.Tensor, form: str = "mixture", u: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log P(ỹ=1), log P(ỹ=0), log h, log h')`` per sample, in log space.

    From the target logit ``z`` and the tower's ``(a, b)`` (module docstring). ``form="product"``: ``log h = −inf``;
    ``form="examination"``: ``e = σ(a)`` and ``u = [u₀, u₁]`` the global inattentive rates (``b`` unused).
    """
    log_f, log_1f = F.logsigmoid(z), F.logsigmoid(-z)
    if form == "examination":
        if u is None:
            raise ValueError("observed_log_likelihood(form='examination'): needs u = [u0, u1]")
        log_q0, log_1q0 = F.logsigmoid(u[0]), F.logsigmoid(-u[0])
        log_q1, log_1q1 = F.logsigmoid(u[1]), F.logsigmoid(-u[1])
        log_e, log_1e = F.logsigmoid(za), F.logsigmoid(-za)
        log_h = log_1e + log_q0  # h = (1 − e)·q₀
        log_1h = torch.logaddexp(log_e, log_1e + log_1q0)
        log_1hp = log_1e + log_q1  # 1 − h' = (1 − e)·q₁
        log_hp = torch.logaddexp(log_e, log_1e + log_1q1)
        log_p = torch.logaddexp(log_f + log_hp, log_1f + log_h)
        log_q = torch.logaddexp(log_f + log_1hp, log_1f + log_1h)
        return log_p, log_q, log_h, log_hp
    if form == "product":
        log_hp, log_1hp = F.logsigmoid(zb), F.logsigmoid(-zb)
        log_p = log_f + log_hp
        log_q = torch.logaddexp(log_1f, log_f + log_1hp)
        return log_p, log_q, torch.full_like(z, -math.inf), log_hp
    log_h, log_1h = F.logsigmoid(za), F.logsigmoid(-za)
    log_hp = torch.logaddexp(log_h, log_1h + F.logsigmoid(zb))  # h' = h + (1 − h)·σ(b)
    log_1hp = log_1h + F.logsigmoid(-zb)  # 1 − h' = (1 − h)(1 − σ(b))
    log_p = torch.logaddexp(log_f + log_hp, log_1f + log_h)
    log_q = torch.logaddexp(log_f + log_1hp, log_1f + log_1h)
    return log_p, log_q, log_h, log_hp


def with_id_noise(
    log_p: torch.Tensor, log_q: torch.Tensor, k: torch.Tensor, m: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(log P(ỹ=1), log P(ỹ=0))`` after the id channels (module docstring, id noise), in log space.

    ``log_p``, ``log_q`` are the context model's; ``k``, ``m`` the logits of ``p₀₁`` and ``p₁₀`` (``[B]`` each).
    """
    lk, l1k, lm, l1m = F.logsigmoid(k), F.logsigmoid(-k), F.logsigmoid(m), F.logsigmoid(-m)
    return torch.logaddexp(log_p + l1m, log_q + lk), torch.logaddexp(log_p + lm, log_q + l1k)


def trusted_term(logits: torch.Tensor, trusted: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(−t log f − (1 − t) log(1 − f) on the trusted rows and 0 elsewhere, the trusted-row mask)``, ``[B]`` each.

    ``trusted`` is ``batch.trusted_labels`` (NaN where a row has none) or ``None`` (no row has one).
    """
    if trusted is None:
        zero = torch.zeros_like(logits)
        return zero, zero.bool()
    t = trusted.reshape(-1).to(logits.dtype)
    known = ~torch.isnan(t)
    bce = F.binary_cross_entropy_with_logits(logits, torch.where(known, t, torch.zeros_like(t)), reduction="none")
    return torch.where(known, bce, torch.zeros_like(bce)), known


class ObservationModel(Denoiser):
    """Observed-label likelihood of a clean preference model ``f`` seen through a context noise model.

    Args:
        context_tables: ``{context feature: num_embeddings}`` (injected: the schema's ``role: context``
            features).
        form: ``mixture`` (``f·h' + (1 − f)·h``) or ``product`` (``a·f``).
        dim: width of the context tables (a multiple of 4).
        hidden: the context tower's MLP widths (``[]``, the default: additive logits, all sparse).
        h_init, h_prime_init: ``h`` and ``h'`` at initialisation (``0 < h_init < h_prime_init < 1``).
        tower_warmup: steps, epochs (``"1ep"``) or share of the run (``"25%"``) during which the tower is held at
            its initial rates (0: off).
        rates_lr_scale: ``form=examination``: how much faster than ``optim.lr`` the global rates ``q₀, q₁`` learn.
        noise_file: ``form=examination``: a JSON noise model (:mod:`~denoisrec.denoisers.noise_file`) that fixes
            ``a(c)``, ``q₀``, ``q₁``; only ``f`` trains ("": learnt).
        eps_max, num_gradual: T-CE on the mixture NLL (0: off).
        diag_decay: per-step decay of the per-context-value averages of ``h``, ``h'``.
        trusted_weight: weight ``w`` of the trusted rows' cross-entropy on ``f`` (module docstring, trusted; 0: off).
        device: where the tower's tables are allocated (injected; ``meta`` under DMP).
    """

    name = "observation"
    GRID = {"form": ["mixture", "examination"], "tower_warmup": [0, "25%"], "rates_lr_scale": [1.0, 50.0]}
    NEEDS = DenoiserNeeds(
        injected=("context_tables", "device"), context_tower=True, run_length=True, shared_tables=("tower",)
    )
    positives_only = False
    reports_posterior = True

    ctx_sums: torch.Tensor  # buffer: [values, 5] float64 EMA of [rows, w₀, Σw₀·h, w₁, Σw₁·h'] per context value

    def __init__(
        self,
        context_tables: Mapping[str, int],
        form: str = "mixture",
        dim: int = 4,
        hidden: Sequence[int] = (),
        h_init: float = 0.1,
        h_prime_init: float = 0.9,
        eps_max: float = 0.0,
        num_gradual: int = 0,
        diag_decay: float = 0.99,
        device: Optional[torch.device] = None,
        process_group: Optional[ProcessGroup] = None,
        tower_warmup: Any = 0,
        rates_lr_scale: float = 1.0,
        noise_file: str = "",
        trusted_weight: float = 0.0,
    ) -> None:
        super().__init__(process_group)
        if not context_tables:
            raise ValueError(
                "--denoiser observation: the schema has no context features (role: context); "
                "with none, h and h' are constants and it degrades to BCE on a rescaled score: "
                "mark the context columns role: context in schema.json, or use --denoiser bce"
            )
        if form not in FORMS:
            raise ValueError(f"observation option form={form!r}: expected one of {FORMS}")
        if not 0.0 < h_init < h_prime_init < 1.0:
            raise ValueError(
                f"observation options h_init={h_init}, h_prime_init={h_prime_init}: need 0 < h_init < h_prime_init < 1"
            )
        if not 0.0 <= eps_max < 1.0 or num_gradual < 0:
            raise ValueError(
                f"observation options eps_max={eps_max}, num_gradual={num_gradual}: need "
                "0 <= eps_max < 1 and num_gradual >= 0"
            )
        if not rates_lr_scale > 0:
            raise ValueError(f"observation option rates_lr_scale={rates_lr_scale}: must be > 0")
        warmup = Span.parse("observation option tower_warmup", tower_warmup)
        if warmup.unit == "run" and warmup.value >= 1.0:
            raise ValueError(
                f"observation option tower_warmup={tower_warmup!r}: the tower would never train; give less than 100%"
            )
        if not 0.0 <= diag_decay < 1.0:
            raise ValueError(f"observation option diag_decay={diag_decay}: must lie in [0, 1)")
        if noise_file and form != "examination":
            raise ValueError(f"observation option noise_file={noise_file!r}: needs form=examination (got {form!r})")
        if not trusted_weight >= 0:
            raise ValueError(f"observation option trusted_weight={trusted_weight}: must be >= 0")
        self.trusted_weight = float(trusted_weight)
        self.id_heads: Optional[MFHeads] = None  # the user × item channels (ObservationIdNoise)
        self.id_noise_init = 0.02
        self.noise_file = str(noise_file)
        self.noise = NoiseModel.read(self.noise_file, context_tables) if noise_file else None
        self.form, self.dim, self.hidden = form, int(dim), [int(h) for h in hidden]
        self.h_init, self.h_prime_init = float(h_init), float(h_prime_init)
        self.eps_max, self.num_gradual, self.diag_decay = float(eps_max), int(num_gradual), float(diag_decay)
        self.tower_warmup, self.rates_lr_scale = warmup, float(rates_lr_scale)
        self.warmup_steps = 0 if warmup.relative else int(warmup.value)  # relative spans: set by bind_run
        self.u: Optional[nn.Parameter] = None
        if form == "product":
            bias = (0.0, _logit(h_prime_init))
        elif form == "examination":
            # e = 0.5 at initialisation unless q₀, q₁ ≤ 0.9 need more inattention: h = g·q₀, 1 − h' = g·q₁.
            g = max(0.5, h_init / 0.9, (1.0 - h_prime_init) / 0.9)
            if g >= 1.0:
                raise ValueError(
                    f"observation options h_init={h_init}, h_prime_init={h_prime_init}: "
                    "form=examination needs h_init < 0.9 and h_prime_init > 0.1"
                )
            q0, q1 = h_init / g, (1.0 - h_prime_init) / g
            bias = (_logit(1.0 - g), 0.0)
            self.u = nn.Parameter(torch.tensor([_logit(q0), _logit(q1)]) / self.rates_lr_scale)
        else:
            bias = (_logit(h_init), _logit((h_prime_init - h_init) / (1.0 - h_init)))
        self.tower = ContextTower(context_tables, self.dim, self.hidden, bias, device)
        # Per value of each context feature: EMA of [rows, Σh, Σh'] (diagnostics; not checkpointed).
        self.context_tables = {f: int(n) for f, n in context_tables.items()}
        offsets, total = {}, 0
        for f, n in self.context_tables.items():
            offsets[f], total = total, total + n
        self.offsets = offsets
        self.register_buffer(
            "ctx_sums",
            torch.zeros(
                total, 5, dtype=torch.float64, device=None if device is None or device.type == "meta" else device
            ),
            persistent=False,
        )

    def model_parallel_tables(self) -> List[str]:
        """The tower's tables, kept model-parallel so the fused sparse optimizer trains them.

        Row-wise Adagrad at ``optim.sparse_lr``: the planner would replicate such small tables, and the dense Adam at
        ``optim.lr`` then moves a noise rate by ~``lr`` per step, too slowly to follow ``f``.
        """
        ids = [] if self.id_heads is None else [t for h in self.id_heads.heads for t in self.id_heads.table[h].values()]
        return [f"{TABLE_PREFIX}{f}" for f in self.tower.features] + ids

    @property
    def needs(self) -> DenoiserNeeds:
        """The class's declaration, plus the id-noise channels' tables to fold when there are some."""
        n = super().needs
        return replace(n, shared_tables=n.shared_tables + ("id_heads",)) if self.id_heads is not None else n

    def hparams(self) -> Dict[str, Any]:
        """The observation model's options as given (``trusted_weight`` only when on)."""
        extra: Dict[str, Any] = {}
        if self.trusted_weight > 0:
            extra["trusted_weight"] = self.trusted_weight
        return {
            **extra,
            "form": self.form,
            "dim": self.dim,
            "hidden": self.hidden,
            "h_init": self.h_init,
            "h_prime_init": self.h_prime_init,
            "eps_max": self.eps_max,
            "num_gradual": self.num_gradual,
            "tower_warmup": str(self.tower_warmup),
            "rates_lr_scale": self.rates_lr_scale,
            "noise_file": self.noise_file,
        }

    def bind_run(self, steps_per_epoch: int, total_steps: int) -> List[str]:
        """Resolve ``tower_warmup`` against the run; returns a warning if it spans the whole run."""
        msgs = super().bind_run(steps_per_epoch, total_steps)
        self.warmup_steps = self.tower_warmup.steps(steps_per_epoch, total_steps)
        if self.warmup_steps >= total_steps > 0:
            msgs.append(
                f"observation option tower_warmup={self.tower_warmup}: {self.warmup_steps} step(s), the whole "
                f"run of {total_steps}: the context tower never trains (h, h' stay at h_init, h_prime_init)"
            )
        return msgs

    def tower_frozen(self) -> bool:
        """Whether this step is in the tower's warm-up (its output held at the initial rates)."""
        return self.training and self.host_step < self.warmup_steps

    def drop_rate(self, step: torch.Tensor) -> torch.Tensor:
        """T-CE's ``ε(T) = min(T · eps_max / num_gradual, eps_max)`` (float64)."""
        if self.num_gradual == 0:
            return torch.full((), self.eps_max, dtype=torch.float64, device=step.device)
        return (step.to(torch.float64) * self.eps_max / self.num_gradual).clamp(max=self.eps_max)

    def compute(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        sample_ids: Optional[torch.Tensor],
        batch: Optional[DenoiserBatch],
    ) -> LossOutput:
        """NLL of the observed labels under ``f·h' + (1 − f)·h`` (DeCA Eq. 3, context rates)."""
        if batch is None or getattr(batch, "sparse_features", None) is None:
            raise ValueError("observation: needs the batch's context features (pass batch=...)")
        u = None if self.u is None else self.u * self.rates_lr_scale
        held = self.noise is None and self.tower_frozen()
        if held:  # the initial rates, one value for every row (0-dim); the tower gets a zero gradient
            zero = self.tower.held_zero(batch.sparse_features)
            za, zb = self.tower.bias[0] + zero, self.tower.bias[1] + zero
            u = None if u is None else u.detach() + 0.0 * u
        else:
            za, zb = self.tower(batch.sparse_features)
        if self.noise is not None:  # a given noise model: the tower in the graph with a zero gradient
            za = self.noise.attention_logit(batch.sparse_features).to(za.dtype) + 0.0 * za
            zb = 0.0 * zb
            u = None if u is None else self.noise.rates_logits(u) + 0.0 * u
        log_p, log_q, log_h, log_hp = observed_log_likelihood(logits, za, zb, self.form, u)
        log_h, log_hp = log_h.expand_as(logits), log_hp.expand_as(logits)  # [B] (0-dim while held)
        id_km: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        if self.id_heads is not None:  # the user × item channels, composed after the context's rates
            k0 = _logit(self.id_noise_init)
            if held:  # held at the initial rates with the tower (0-dim)
                k = m = k0 + self.id_heads.held_zero(batch.sparse_features)
            else:
                km = self.id_heads(batch.sparse_features)
                k, m = km["fp"] + k0, km["fn"] + k0
            log_p, log_q = with_id_noise(log_p, log_q, k, m)
            id_km = (k, m)
        nll = -(labels * log_p + (1 - labels) * log_q)  # [B]
        pos = labels > 0.5
        if self.eps_max > 0:  # T-CE on the mixture NLL: drop the largest-loss observed positives
            eps = self.drop_rate(self.step)
            keys = C.order_keys(nll.detach(), sample_ids)
            local_n = torch.full((1,), labels.numel(), dtype=torch.int64, device=labels.device)
            sel = C.radix_select(keys, pos, share_of_batch(eps), self.process_group, local_n)
            dropped = pos & (keys >= sel.thr[0])
        else:
            dropped = torch.zeros_like(pos)
        weight = (~dropped).to(nll.dtype)
        with torch.no_grad():
            f = torch.sigmoid(logits.detach())
            h, hp = log_h.detach().exp(), log_hp.detach().exp()
            if id_km is not None:  # the rows' total rates: h ← h·(1 − p₁₀) + (1 − h)·p₀₁, alike for h'
                p01, p10 = torch.sigmoid(id_km[0].detach()), torch.sigmoid(id_km[1].detach())
                h, hp = h * (1 - p10) + (1 - h) * p01, hp * (1 - p10) + (1 - hp) * p01
            self._accumulate_context(batch.sparse_features, h, hp, clean_labels(batch, labels))
        # One all-reduce: [Σ w·nll, Σ w, Σ f, Σ h, Σ h', B, n_dropped(, trusted rows, Σ f on them)].
        extra = [f.sum(), h.sum(), hp.sum(), torch.ones_like(f).sum(), dropped.sum()]
        trusted = getattr(batch, "trusted_labels", None) if self.trusted_weight > 0 else None
        if self.trusted_weight > 0 and trusted is None:
            raise ValueError(
                f"{self.name} option trusted_weight={self.trusted_weight}: the batch has no trusted labels; the data "
                "needs a trusted label column (schema.json trusted_label; gen-data --trusted-train-rows N), or drop it"
            )
        if trusted is None:
            loss, value, sums = self.global_mean(nll, weight, weight.sum(), extra=extra)
        else:  # the trusted rows' cross-entropy on f, never dropped (module docstring, trusted)
            t_bce, known = trusted_term(logits, trusted)
            kf = known.to(f.dtype)
            kept = nll if self.eps_max == 0 else weight * nll  # (weight is all ones without T-CE)
            per_sample = kept + self.trusted_weight * t_bce
            loss, value, sums = self.global_mean(
                per_sample, torch.ones_like(weight), weight.sum(), extra=[*extra, kf.sum(), (kf * f).sum()]
            )
        n = sums[5].clamp_min(1)
        stats = {
            "f_mean": (sums[2] / n).float(),
            "h_mean": (sums[3] / n).float(),
            "h_prime_mean": (sums[4] / n).float(),
        }
        if trusted is not None:
            stats["trusted_rows"] = sums[7].float()
            stats["f_mean_trusted"] = (sums[8] / sums[7].clamp_min(1)).float()
        if self.warmup_steps:
            stats["tower_frozen"] = torch.tensor(float(self.tower_frozen()))
        if self.eps_max > 0:
            stats["eps"] = eps.float()
            stats["drop_share"] = (sums[6] / n).float()
        if getattr(batch, "is_noisy", None) is not None:  # ground-truth diagnostics (synthetic data only)
            with torch.no_grad():
                # P(y=1 | ỹ, x, c): f·h'/P(ỹ=1) for positives, f·(1 − h')/P(ỹ=0) for negatives.
                post = torch.where(
                    pos,
                    f * hp / log_p.detach().exp().clamp_min(1e-30),
                    f * (1 - hp) / log_q.detach().exp().clamp_min(1e-30),
                )
                handled = torch.where(pos, 1 - post, post)  # believed-flipped amount, never used to decide
            self.track_truth(batch, labels, bce_per_sample(logits.detach(), labels), handled, posterior=post)
        return LossOutput(loss, value, weight, labels.detach(), dropped, torch.zeros_like(dropped), stats)

    # ---- per-context-value diagnostics -------------------------------------------------------------------

    def _accumulate_context(
        self, kjt: KeyedJaggedTensor, h: torch.Tensor, hp: torch.Tensor, clean: Optional[torch.Tensor]
    ) -> None:
        """Add this step's ``h``, ``h'`` per context value.

        ``h`` over the clean negatives, ``h'`` over the clean positives when the batch has ground truth (so
        ``P(ỹ=1 | y, value)`` compares like with like with the generator's empirical truth, which averages over
        the rows of that ``y``), over every row otherwise.
        """
        if not self.training or h.numel() == 0:
            return
        if self.ctx_sums.device != h.device:
            self.ctx_sums = self.ctx_sums.to(h.device)
        self.ctx_sums.mul_(self.diag_decay)
        w1 = torch.ones_like(h) if clean is None else clean.to(h.dtype)
        w0 = torch.ones_like(h) if clean is None else 1 - w1
        vals = torch.stack([torch.ones_like(h), w0, w0 * h, w1, w1 * hp], 1).to(torch.float64)  # [B, 5]
        feats = kjt.to_dict()
        for f, off in self.offsets.items():
            jt = feats.get(f)
            if jt is None or jt.values().numel() != h.numel():
                continue  # multi-hot (or absent) context: no per-value average
            idx = jt.values().to(torch.int64).clamp(0, self.context_tables[f] - 1) + off
            self.ctx_sums.index_add_(0, idx, vals)

    def context_report(self) -> Dict[str, Dict[str, List[Any]]]:
        """Per single-valued context feature: its recent values and their mean learned ``h``, ``h'``.

        The means are EMA-weighted over the training rows with that value (``h`` over the clean negatives, ``h'``
        over the clean positives when the data has ground truth). A collective: call it on every rank.
        """
        tot = C.global_sum(self.ctx_sums.clone(), self.process_group).cpu()
        out: Dict[str, Dict[str, List[Any]]] = {}
        for f, off in self.offsets.items():
            t = tot[off : off + self.context_tables[f]]
            seen = torch.nonzero((t[:, 1] > 1e-9) & (t[:, 3] > 1e-9)).flatten()
            if seen.numel() == 0:
                continue
            out[f] = {
                "values": seen.tolist(),
                "h": (t[seen, 2] / t[seen, 1]).tolist(),
                "h_prime": (t[seen, 4] / t[seen, 3]).tolist(),
                "weight": t[seen, 0].tolist(),
            }
        return out


class ObservationTCE(ObservationModel):
    """The observation model composed with T-CE (ADT Eq. 2-3 on the mixture NLL).

    ``eps_max`` is on by default and swept (the sweep picks it on observed-label validation). Options as
    :class:`ObservationModel`.
    """

    name = "observation_tce"
    GRID = {"eps_max": [0.05, 0.1, 0.2], "hidden": [[], [32]]}

    def __init__(
        self,
        context_tables: Mapping[str, int],
        form: str = "mixture",
        dim: int = 4,
        hidden: Sequence[int] = (),
        h_init: float = 0.1,
        h_prime_init: float = 0.9,
        eps_max: float = 0.1,
        num_gradual: int = 0,
        diag_decay: float = 0.99,
        device: Optional[torch.device] = None,
        process_group: Optional[ProcessGroup] = None,
        tower_warmup: Any = 0,
        rates_lr_scale: float = 1.0,
        noise_file: str = "",
        trusted_weight: float = 0.0,
    ) -> None:
        super().__init__(
            context_tables,
            form,
            dim,
            hidden,
            h_init,
            h_prime_init,
            eps_max,
            num_gradual,
            diag_decay,
            device,
            process_group,
            tower_warmup,
            rates_lr_scale,
            noise_file,
            trusted_weight,
        )


class ObservationIdNoise(ObservationModel):
    """The observation model with the user × item noise channels (module docstring, id noise).

    DeCA's MF noise models joined to the context tower: ``p₀₁(u, i)`` (a click whatever the preference: an
    item's clickbait, a random clicker) and ``p₁₀(u, i)`` (a miss) compose after the context's rates.

    Args:
        context_tables: as :class:`ObservationModel` (injected).
        tables: ``{sparse feature: num_embeddings}`` (injected: the channels' table sizes).
        id_noise_dim: width of the channels' MF tables (``id_noise_dim − 1`` factors plus a bias column).
        id_noise_init: ``p₀₁`` and ``p₁₀`` at initialisation, in ``(0, 0.5)``.
        user_feature, item_feature: the id features the channels read.

    The other options are :class:`ObservationModel`'s (``form``, ``tower_warmup``, ``trusted_weight``, ...).
    """

    name = "observation_ids"
    GRID = {"id_noise_dim": [2, 8]}
    NEEDS = DenoiserNeeds(
        injected=("context_tables", "tables", "device"),
        context_tower=True,
        run_length=True,
        shared_tables=("tower",),
    )

    def __init__(
        self,
        context_tables: Mapping[str, int],
        tables: Mapping[str, int],
        form: str = "mixture",
        dim: int = 4,
        hidden: Sequence[int] = (),
        h_init: float = 0.1,
        h_prime_init: float = 0.9,
        eps_max: float = 0.0,
        num_gradual: int = 0,
        diag_decay: float = 0.99,
        device: Optional[torch.device] = None,
        process_group: Optional[ProcessGroup] = None,
        tower_warmup: Any = 0,
        rates_lr_scale: float = 1.0,
        noise_file: str = "",
        trusted_weight: float = 0.0,
        id_noise_dim: int = 8,
        id_noise_init: float = 0.02,
        user_feature: str = "user_id",
        item_feature: str = "item_id",
    ) -> None:
        super().__init__(
            context_tables,
            form,
            dim,
            hidden,
            h_init,
            h_prime_init,
            eps_max,
            num_gradual,
            diag_decay,
            device,
            process_group,
            tower_warmup,
            rates_lr_scale,
            noise_file,
            trusted_weight,
        )
        if not 0.0 < id_noise_init < 0.5:
            raise ValueError(f"{self.name} option id_noise_init={id_noise_init}: must lie in (0, 0.5)")
        if id_noise_dim < 2:
            raise ValueError(f"{self.name} option id_noise_dim={id_noise_dim}: must be >= 2 (a factor plus the bias)")
        for opt, feat in (("user_feature", user_feature), ("item_feature", item_feature)):
            if feat not in tables:
                raise ValueError(
                    f"{self.name} option {opt}={feat!r}: not a sparse feature of the data (have {sorted(tables)})"
                )
        self.id_noise_dim, self.id_noise_init = int(id_noise_dim), float(id_noise_init)
        self.user_feature, self.item_feature = user_feature, item_feature
        self.id_heads = MFHeads(
            ("fp", "fn"),
            user_feature,
            item_feature,
            int(tables[user_feature]),
            int(tables[item_feature]),
            self.id_noise_dim,
            ID_NOISE_PREFIX,
            device,
        )

    def hparams(self) -> Dict[str, Any]:
        """The observation model's options and the channels'."""
        return {
            **super().hparams(),
            "id_noise_dim": self.id_noise_dim,
            "id_noise_init": self.id_noise_init,
            "user_feature": self.user_feature,
            "item_feature": self.item_feature,
        }
