"""LCD, LCD-Re, Bootstrap, DART and DeCA against hand-computed batches (one process).

Every expected value is written out from the papers' formulas here; the code under test only produces the
values being checked. Gradient tests check what the papers treat as constants (weights, corrected targets)
and which models each DeCA sub-task trains.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers import DENOISERS, build_denoiser, options
from denoisrec.denoisers.beta_cdf import BetaCDF


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def bce(z: float, y: float) -> float:
    """BCE of logit z against a (soft) target y, by hand."""
    return y * sp(-z) + (1 - y) * sp(z)


Z = [2.0, -1.0, 0.5, -2.0, 1.0, 0.0]
Y = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
IDS = torch.arange(100, 106)
L = [bce(z, y) for z, y in zip(Z, Y)]


def run(d, z=Z, y=Y, ids=IDS, batch=None):  # type: ignore[no-untyped-def]
    zt = torch.tensor(z, requires_grad=True)
    out = d(zt, torch.tensor(y), ids[: len(z)], batch)
    out.loss.backward()
    return out, zt.grad


# ---- Beta CDF ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a,b", [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0), (0.3, 3.0), (5.0, 0.7)])
def test_beta_cdf_on_device_matches_scipy_to_1e6(a: float, b: float) -> None:
    t = np.concatenate([np.linspace(0, 1, 20_001), [1e-12, 1e-8, 1e-5, 1 - 1e-12, 1 - 1e-8, 1 - 1e-5]])
    got = BetaCDF(a, b)(torch.from_numpy(t)).numpy()
    assert np.abs(got - sps.beta.cdf(t, a, b)).max() < 1e-6


def test_beta_cdf_closed_forms() -> None:
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    torch.testing.assert_close(BetaCDF(1, 1)(t), t, atol=1e-7, rtol=0)
    torch.testing.assert_close(BetaCDF(2, 2)(t), 3 * t**2 - 2 * t**3, atol=1e-7, rtol=0)
    torch.testing.assert_close(BetaCDF(0.5, 0.5)(t), 2 / math.pi * torch.asin(t.sqrt()), atol=1e-7, rtol=0)


# ---- LCD / LCD-Re --------------------------------------------------------------------------------------------


def lcd_by_hand(z: list, y: list, omega_of, reverse: bool) -> tuple:  # type: ignore[no-untyped-def]
    ell = [bce(a, b) for a, b in zip(z, y)]
    lo, hi = min(ell), max(ell)
    t = [(e - lo) / (hi - lo) if hi > lo else 0.0 for e in ell]
    w = [omega_of(x) for x in t]
    p = [sig(a) for a in z]
    ys = [(1 - wi) * yi + wi * pi if reverse else wi * yi + (1 - wi) * pi for wi, yi, pi in zip(w, y, p)]
    value = sum(bce(a, b) for a, b in zip(z, ys)) / len(z)
    grad = [(pi - yi) / len(z) for pi, yi in zip(p, ys)]  # y* is a constant
    return ys, value, grad


@pytest.mark.parametrize("name,reverse", [("lcd", False), ("lcd_re", True)])
@pytest.mark.parametrize("ab,omega_of", [((1.0, 1.0), lambda t: t), ((2.0, 2.0), lambda t: 3 * t**2 - 2 * t**3)])
def test_lcd_corrects_targets_by_the_beta_weight_of_the_normalised_loss(  # type: ignore[no-untyped-def]
    name, reverse, ab, omega_of
) -> None:
    d = build_denoiser(name, alpha_b=ab[0], beta_b=ab[1], start_step=0)
    out, grad = run(d)
    ys, value, g = lcd_by_hand(Z, Y, omega_of, reverse)
    assert out.target.tolist() == pytest.approx(ys, abs=1e-6)
    assert out.value.item() == pytest.approx(value, rel=1e-6)
    assert grad.tolist() == pytest.approx(g, abs=1e-7)  # the corrected target is detached
    assert out.stats["omega_mean"].item() == pytest.approx(
        sum(omega_of((e - min(L)) / (max(L) - min(L))) for e in L) / 6, rel=1e-6
    )
    assert out.relabelled.tolist() == [abs(a - b) > 0.5 for a, b in zip(ys, Y)]


def test_lcd_all_equal_losses_give_t_zero() -> None:
    z, y = [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]  # ℓ_max = ℓ_min exactly
    out, grad = run(build_denoiser("lcd", alpha_b=2.0, beta_b=2.0), z, y)
    assert out.target.tolist() == pytest.approx([sig(v) for v in z], abs=1e-6)  # ω = F(0) = 0: y* = p
    assert grad.abs().max().item() < 1e-7
    out, _ = run(build_denoiser("lcd_re", alpha_b=2.0, beta_b=2.0), z, y)
    assert out.target.tolist() == pytest.approx(y, abs=1e-6)  # LCD-Re keeps the label


def test_lcd_is_bce_before_its_start_step_and_corrects_from_it() -> None:
    d = build_denoiser("lcd", alpha_b=1.0, beta_b=1.0, start_step=2)
    for step in range(3):
        out, grad = run(d)
        if step < 2:
            assert out.value.item() == pytest.approx(sum(L) / 6, rel=1e-6), step
            assert out.target.tolist() == Y and out.stats["active"].item() == 0.0
            assert grad.tolist() == pytest.approx([(sig(a) - b) / 6 for a, b in zip(Z, Y)], abs=1e-7)
        else:
            ys, value, _ = lcd_by_hand(Z, Y, lambda t: t, False)
            assert out.value.item() == pytest.approx(value, rel=1e-6)
            assert out.stats["active"].item() == 1.0
    assert d.step.item() == 3


@pytest.mark.parametrize("name", ["lcd", "lcd_re"])
def test_lcd_largest_loss_gets_exactly_omega_one_where_the_cdf_is_steep(name: str) -> None:
    # α_B = β_B = 0.5: F'(t) → ∞ at t = 1, so a float32 span (t = 1 − 1e-7) gave ω ≈ 0.9999029.
    z, y = [0.3, -2.75803], [1.0, 1.0]
    out, _ = run(build_denoiser(name, alpha_b=0.5, beta_b=0.5), z, y)
    p = [sig(v) for v in z]
    if name == "lcd":  # ω = 1 on the largest loss keeps its label, ω = 0 on the smallest gives y* = p
        assert out.target.tolist() == [pytest.approx(p[0], abs=1e-6), 1.0]
    else:  # LCD-Re: the reverse
        assert out.target.tolist() == [1.0, pytest.approx(p[1], abs=1e-6)]


def test_lcd_all_negative_batch() -> None:
    z, y = [0.5, -1.5, 2.0], [0.0, 0.0, 0.0]
    out, _ = run(build_denoiser("lcd", alpha_b=1.0, beta_b=1.0), z, y)
    ys, value, _ = lcd_by_hand(z, y, lambda t: t, False)
    assert out.value.item() == pytest.approx(value, rel=1e-6)


# ---- Bootstrap -------------------------------------------------------------------------------------------------


def test_soft_bootstrap_mixes_label_and_prediction_with_a_detached_target() -> None:
    lam = 0.95
    out, grad = run(build_denoiser("bootstrap_soft"))
    ys = [lam * y + (1 - lam) * sig(z) for z, y in zip(Z, Y)]
    assert out.target.tolist() == pytest.approx(ys, abs=1e-6)
    assert out.value.item() == pytest.approx(sum(bce(z, t) for z, t in zip(Z, ys)) / 6, rel=1e-6)
    assert grad.tolist() == pytest.approx([(sig(z) - t) / 6 for z, t in zip(Z, ys)], abs=1e-7)


def test_soft_bootstrap_attached_target_follows_reed() -> None:
    lam = 0.6
    out, grad = run(build_denoiser("bootstrap_soft", lam=lam, attach_target=True))
    # d/dz [softplus(z) − y*(z)·z] with y* = λy + (1 − λ)σ(z): σ − y* − (1 − λ)σ(1 − σ)z
    expect = [
        (sig(z) - (lam * y + (1 - lam) * sig(z)) - (1 - lam) * sig(z) * (1 - sig(z)) * z) / 6 for z, y in zip(Z, Y)
    ]
    assert grad.tolist() == pytest.approx(expect, abs=1e-7)


def test_hard_bootstrap_uses_the_arg_max_belief() -> None:
    lam = 0.8
    out, grad = run(build_denoiser("bootstrap_hard"))
    ys = [lam * y + (1 - lam) * (1.0 if z > 0 else 0.0) for z, y in zip(Z, Y)]
    assert out.target.tolist() == pytest.approx(ys, abs=1e-6)
    assert out.value.item() == pytest.approx(sum(bce(z, t) for z, t in zip(Z, ys)) / 6, rel=1e-6)
    assert grad.tolist() == pytest.approx([(sig(z) - t) / 6 for z, t in zip(Z, ys)], abs=1e-7)


# ---- DART ------------------------------------------------------------------------------------------------------

# Eight positives with distinct losses (ids 0-7) and two negatives.
DZ = [-3.0, -2.5, -2.0, -1.5, -1.0, 0.0, 1.0, 2.0, 1.5, -0.5]
DY = [1.0] * 8 + [0.0, 0.0]
DIDS = torch.arange(10)


def dart_by_hand(tau: float, r: float) -> tuple:
    pos = sorted(range(8), key=lambda i: -bce(DZ[i], 1.0))  # largest loss first
    k = math.floor(tau * 8 + 1e-9)
    k_rel = math.floor(r * k + 1e-9)
    rel, disc = set(pos[:k_rel]), set(pos[k_rel:k])
    target = [0.0 if i in rel else DY[i] for i in range(10)]
    kept = [i for i in range(10) if i not in disc]
    value = sum(bce(DZ[i], target[i]) for i in kept) / len(kept)
    grad = [0.0 if i in disc else (sig(DZ[i]) - target[i]) / len(kept) for i in range(10)]
    return rel, disc, target, value, grad


@pytest.mark.parametrize(
    "step,tau",
    [
        (0, 0.0),
        (3, 0.0),  # before and at T_i = 3: τ = 0
        (4, 0.125),
        (5, 0.25),  # on the ramp: (T − T_i)/T_m · τ_m with T_m = 4, τ_m = 0.5
        (7, 0.5),
        (20, 0.5),  # at T_i + T_m and after: τ_m
    ],
)
def test_dart_tau_schedule_and_identification(step: int, tau: float) -> None:
    d = build_denoiser("dart", t_i=3, t_m=4, tau_m=0.5, r=0.5)
    d.step.fill_(step)
    out, grad = run(d, DZ, DY, DIDS)
    assert out.stats["tau"].item() == pytest.approx(tau)
    rel, disc, target, value, g = dart_by_hand(tau, 0.5)
    assert set(torch.nonzero(out.relabelled).flatten().tolist()) == rel
    assert set(torch.nonzero(out.dropped).flatten().tolist()) == disc
    assert out.target.tolist() == target
    assert out.value.item() == pytest.approx(value, rel=1e-6)
    assert grad.tolist() == pytest.approx(g, abs=1e-7)


@pytest.mark.parametrize("r", [0.0, 0.25, 1.0])
def test_dart_relabel_share(r: float) -> None:
    d = build_denoiser("dart", t_i=0, t_m=0, tau_m=0.5, r=r)  # ⌊0.5·8⌋ = 4 identified from step 0
    out, _ = run(d, DZ, DY, DIDS)
    rel, disc, _, value, _ = dart_by_hand(0.5, r)
    assert len(rel) == math.floor(4 * r) and len(rel) + len(disc) == 4
    assert set(torch.nonzero(out.relabelled).flatten().tolist()) == rel
    assert set(torch.nonzero(out.dropped).flatten().tolist()) == disc
    assert out.value.item() == pytest.approx(value, rel=1e-6)
    assert out.stats["drop_share"].item() == pytest.approx(len(disc) / 10)


def test_dart_tau_times_positives_below_one_and_all_negative_batch() -> None:
    d = build_denoiser("dart", t_i=0, t_m=0, tau_m=0.1, r=0.5)  # ⌊0.1·8⌋ = 0
    out, _ = run(d, DZ, DY, DIDS)
    assert not out.dropped.any() and not out.relabelled.any()
    out, _ = run(build_denoiser("dart", t_i=0, t_m=0, tau_m=1.0, r=0.5), [0.5, -1.0], [0.0, 0.0])
    assert not out.dropped.any() and out.value.item() == pytest.approx((sp(0.5) + sp(-1.0)) / 2, rel=1e-6)


# ---- ground-truth diagnostics ------------------------------------------------------------------------------------


def test_report_precision_recall_and_noisy_vs_clean_loss() -> None:
    d = build_denoiser("tce", eps_max=0.5, num_gradual=0)  # drops ⌊0.5·6⌋ = 3 positives: ids 1, 5, 2
    noisy = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])  # one dropped sample is noisy, plus a negative
    run(d, batch=SimpleNamespace(is_noisy=noisy))
    rep = {k: v.item() for k, v in d.report().items()}
    assert rep["precision"] == pytest.approx(1 / 3)  # noisy among dropped
    assert rep["recall"] == pytest.approx(1.0)  # T-CE handles positives: 1 noisy positive, dropped
    assert rep["random_precision"] == pytest.approx(1 / 4)
    assert rep["loss_noisy_pos"] == pytest.approx(L[1], rel=1e-6)
    assert rep["loss_clean_pos"] == pytest.approx((L[0] + L[2] + L[5]) / 3, rel=1e-6)
    assert d.report() == {}  # reset after reporting; nothing accumulated since


# ---- DeCA ------------------------------------------------------------------------------------------------------

NU, NI = 5, 4
USERS, ITEMS = [0, 1, 2, 3, 4, 1], [0, 1, 2, 3, 0, 2]


def deca_batch() -> SimpleNamespace:
    n = len(USERS)
    kjt = KeyedJaggedTensor(
        keys=["user_id", "item_id"],
        values=torch.tensor(USERS + ITEMS),
        lengths=torch.ones(2 * n, dtype=torch.int32),
        stride=n,
    )
    return SimpleNamespace(
        sparse_features=kjt, dense_features=torch.zeros(n, 1), is_noisy=torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    )


def mf_by_hand(d, head: str) -> list:  # type: ignore[no-untyped-def]
    """⟨u[:-1], i[:-1]⟩ + u[-1] + i[-1] from the head's tables deca_<head>_user_id / deca_<head>_item_id."""
    ut = d.mf.ebc.embedding_bags[f"deca_{head}_user_id"].weight.detach()
    it = d.mf.ebc.embedding_bags[f"deca_{head}_item_id"].weight.detach()
    return [float((ut[u, :-1] * it[i, :-1]).sum() + ut[u, -1] + it[i, -1]) for u, i in zip(USERS, ITEMS)]


def kl(a: float, b: float) -> float:
    return a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))


def make_deca(name: str = "deca", **params):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    ctx = {"tables": {"user_id": NU, "item_id": NI}, "device": torch.device("cpu")}
    if name == "deca_p":
        ctx["prior"] = PriorStub()
    d = build_denoiser(name, context=ctx, mf_dim=3, **params)
    with torch.no_grad():  # larger weights than the default init, so every term matters
        for p in d.parameters():
            p.uniform_(-1.5, 1.5)
    return d


class PriorStub(torch.nn.Module):
    """f' for the tests: a linear model of the dense features."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(1, 1)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.w(dense)


def deca_value_by_hand(
    z: list, y: list, zr: list, zh: list, zhp: list, task: int, C1: float, C2: float, alpha: float, prior: bool
) -> float:
    pos, neg = [], []
    for zi, yi, ri, hi, hpi in zip(z, y, zr, zh, zhp):
        f, g, h, hp = sig(zi), sig(ri), sig(hi), sig(hpi)
        if task == 0:
            term = -(1 - f) * math.log(h) if yi else -(1 - f) * math.log(1 - h) + C1 * f
        else:
            term = -f * math.log(hp) + C2 * (1 - f) if yi else -f * math.log(1 - hp)
        agree = alpha * kl(f, g) + (1 - alpha) * kl(g, f) if prior else alpha * kl(g, f) + (1 - alpha) * kl(f, g)
        (pos if yi else neg).append(term + agree)
    return sum(pos) / len(pos) + sum(neg) / len(neg)


def grads_of(module) -> dict:  # type: ignore[no-untyped-def]
    """``{model: received a non-zero gradient}`` with model g, h, hp (DeCA's tables) or prior."""
    out: dict = {}
    for n, p in module.named_parameters():
        key = n.split(".")[0] if not n.startswith("mf.") else n.split(".")[3].split("_")[1]
        out[key] = out.get(key, False) or (p.grad is not None and p.grad.abs().sum().item() > 0)
    return out


def test_deca_alternates_dp_and_dn_with_the_papers_terms_and_trains_only_that_noise_model() -> None:
    C1, C2, alpha = 3.0, 2.0, 0.5
    d = make_deca(C1=C1, C2=C2, alpha=alpha, objective="paper")
    b = deca_batch()
    zg, zh, zhp = mf_by_hand(d, "g"), mf_by_hand(d, "h"), mf_by_hand(d, "hp")
    for step in range(4):
        d.zero_grad(set_to_none=True)
        out, zgrad = run(d, batch=b)
        task = step % 2
        assert out.stats["subtask"].item() == task
        assert out.value.item() == pytest.approx(
            deca_value_by_hand(Z, Y, zg, zh, zhp, task, C1, C2, alpha, prior=False), rel=1e-5
        )
        got = grads_of(d)
        assert got == {"g": True, "h": task == 0, "hp": task == 1}, (step, got)  # g co-trained every step
        assert zgrad.abs().sum() > 0
    # P(y=1 | ỹ=1) = h'f / (h'f + h(1 − f)), averaged over the observed positives.
    post = [sig(hp) * sig(z) / (sig(hp) * sig(z) + sig(h) * (1 - sig(z))) for z, h, hp in zip(Z, zh, zhp)]
    assert out.stats["post_pos_mean"].item() == pytest.approx(sum(p for p, y in zip(post, Y) if y) / sum(Y), rel=1e-5)
    rep = {k: v.item() for k, v in d.report().items()}
    noisy_pos = [p for p, y, n in zip(post, Y, deca_batch().is_noisy.tolist()) if y and n]
    assert rep["post_noisy_pos"] == pytest.approx(sum(noisy_pos) / len(noisy_pos), rel=1e-5)


def test_deca_target_gradient_is_the_papers() -> None:
    C1, C2, alpha = 3.0, 2.0, 0.25
    d = make_deca(C1=C1, C2=C2, alpha=alpha, objective="paper")
    b = deca_batch()
    zg, zh, zhp = mf_by_hand(d, "g"), mf_by_hand(d, "h"), mf_by_hand(d, "hp")
    for task in (0, 1):
        _, zgrad = run(d, batch=b)
        # The hand formula again, in torch only to differentiate it with respect to z.
        z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
        y = torch.tensor(Y, dtype=torch.float64)
        f, g = torch.sigmoid(z), torch.sigmoid(torch.tensor(zg, dtype=torch.float64))
        h = torch.sigmoid(torch.tensor(zh, dtype=torch.float64))
        hp = torch.sigmoid(torch.tensor(zhp, dtype=torch.float64))
        if task == 0:
            term = torch.where(y > 0, -(1 - f) * h.log(), -(1 - f) * (1 - h).log() + C1 * f)
        else:
            term = torch.where(y > 0, -f * hp.log() + C2 * (1 - f), -f * (1 - hp).log())
        kl_gf = g * (g / f).log() + (1 - g) * ((1 - g) / (1 - f)).log()
        kl_fg = f * (f / g).log() + (1 - f) * ((1 - f) / (1 - g)).log()
        per = term + alpha * kl_gf + (1 - alpha) * kl_fg
        ((per * y).sum() / y.sum() + (per * (1 - y)).sum() / (1 - y).sum()).backward()
        assert zgrad.tolist() == pytest.approx(z.grad.tolist(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name,alpha", [("deca", 0.25), ("deca_p", 0.5)])
def test_deca_marginal_likelihood_by_hand_trains_both_noise_models_every_step(name: str, alpha: float) -> None:
    d = make_deca(name, alpha=alpha, **({"pretrain_steps": 0} if name == "deca_p" else {}))
    assert d.objective == "marginal"
    b = deca_batch()
    zh, zhp = mf_by_hand(d, "h"), mf_by_hand(d, "hp")
    zr = mf_by_hand(d, "g") if name == "deca" else [float(d.prior.w.bias[0])] * 6
    per, post = [], []
    for zi, yi, ri, a, c in zip(Z, Y, zr, zh, zhp):
        f, r, h = sig(zi), sig(ri), sig(a)
        hp = h + (1 - h) * sig(c)  # h' > h
        p1 = f * hp + (1 - f) * h  # P(ỹ=1 | x) = f·h' + (1 − f)·h
        nll = -math.log(p1) if yi else -math.log(1 - p1)
        agree = (
            alpha * kl(r, f) + (1 - alpha) * kl(f, r) if name == "deca" else alpha * kl(f, r) + (1 - alpha) * kl(r, f)
        )
        per.append(nll + agree)
        post.append(f * hp / p1)
    for step in range(2):
        d.zero_grad(set_to_none=True)
        out, zgrad = run(d, batch=b)
        assert out.value.item() == pytest.approx(sum(per) / 6, rel=1e-5)  # mean over the whole batch
        assert out.stats["post_pos_mean"].item() == pytest.approx(sum(p for p, y in zip(post, Y) if y) / 4, rel=1e-5)
        assert out.stats["f_mean"].item() == pytest.approx(sum(sig(v) for v in Z) / 6, rel=1e-5)
        got = grads_of(d)
        assert got["h"] and got["hp"] and zgrad.abs().sum() > 0, (step, got)  # no DP/DN alternation
        assert got.get("g", True) and not got.get("prior", False)
    # d/dz of −log P(ỹ|x): f(1 − f)(h − h')/P(ỹ=1) for ỹ=1 (the agreement's part checked through the value).
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    f = torch.sigmoid(z)
    h = torch.sigmoid(torch.tensor(zh, dtype=torch.float64))
    hp = h + (1 - h) * torch.sigmoid(torch.tensor(zhp, dtype=torch.float64))
    r = torch.sigmoid(torch.tensor(zr, dtype=torch.float64))
    p1 = f * hp + (1 - f) * h
    y = torch.tensor(Y, dtype=torch.float64)
    kl_rf = r * (r / f).log() + (1 - r) * ((1 - r) / (1 - f)).log()
    kl_fr = f * (f / r).log() + (1 - f) * ((1 - f) / (1 - r)).log()
    agree = alpha * kl_rf + (1 - alpha) * kl_fr if name == "deca" else alpha * kl_fr + (1 - alpha) * kl_rf
    (torch.where(y > 0, -p1.log(), -(1 - p1).log()) + agree).mean().backward()
    assert zgrad.tolist() == pytest.approx(z.grad.tolist(), rel=1e-4, abs=1e-6)


def test_deca_paper_objective_collapse_stops_the_run_with_the_reason() -> None:
    d = make_deca(objective="paper")
    healthy = {"f_mean": 0.3, "pos_share": 0.4}
    collapsed = {"f_mean": 1e-4, "pos_share": 0.4}
    d.check_stats(collapsed)  # within the grace steps: f may start anywhere
    d.step.fill_(DENOISERS["deca"].COLLAPSE_GRACE_STEPS)
    d.check_stats(healthy)
    with pytest.raises(RuntimeError, match=r"f collapsed to 0 at step 50 .* C1/C2 = 100 .* objective=marginal"):
        d.check_stats(collapsed)
    make_deca().check_stats(collapsed)  # the marginal likelihood has no threshold to collapse on
    with pytest.raises(ValueError, match="objective='em'"):
        make_deca(objective="em")
    with pytest.raises(ValueError, match="C1=10, C2=None: used only by objective=paper"):
        make_deca(C1=10)


def test_deca_p_pretrains_the_prior_then_freezes_it() -> None:
    d = make_deca("deca_p", pretrain_steps=2, alpha=1.0, C1=3.0, C2=2.0, objective="paper")
    b = deca_batch()
    zp = [float(d.prior.w.bias[0])] * 6  # the dense features are 0: f' = its bias
    zh, zhp = mf_by_hand(d, "h"), mf_by_hand(d, "hp")
    for step in range(4):
        d.zero_grad(set_to_none=True)
        out, zgrad = run(d, batch=b)
        got = grads_of(d)
        if step < 2:  # phase 1: BCE on f' alone
            assert zgrad is None and out.stats["pretraining"].item() == 1.0
            assert out.value.item() == pytest.approx(sum(bce(zp[0], y) for y in Y) / 6, rel=1e-6)
            assert got == {"prior": True, "h": False, "hp": False}, got
        else:  # phase 2: DP at its first step (Alg. 2 restarts the count), f' frozen
            task = (step - 2) % 2
            assert out.stats["subtask"].item() == task and zgrad is not None
            assert got == {"prior": False, "h": task == 0, "hp": task == 1}, got
            assert out.value.item() == pytest.approx(
                deca_value_by_hand(Z, Y, zp, zh, zhp, task, 3.0, 2.0, 1.0, prior=True), rel=1e-5
            )


def test_deca_p_frozen_prior_runs_in_eval_mode_so_its_reference_is_one_function() -> None:
    # A DeepFM prior with dropout 0.5: in training mode two forwards of one batch differ.
    from denoisrec.models import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(
        "deepfm",
        [("user_id", NU), ("item_id", NI)],
        dense_in_features=1,
        embedding_dim=4,
        params={"mlp": [16], "dropout": 0.5},
        embedding_init=0.5,
    )
    prior = spec.build(device=torch.device("cpu"))
    d = build_denoiser(
        "deca_p",
        context={"tables": {"user_id": NU, "item_id": NI}, "device": torch.device("cpu"), "prior": prior},
        mf_dim=3,
        pretrain_steps=1,
    )
    seen = []
    prior.register_forward_hook(lambda m, i, o: seen.append(o.detach().reshape(-1).clone()))
    b = deca_batch()
    b.dense_features = torch.randn(6, 1)
    d.train()
    run(d, batch=b)  # phase 1: f' trains, dropout on
    assert prior.training
    run(d, batch=b)  # phase 2 (the trainer's model.train() again in between)
    d.train()
    run(d, batch=b)
    assert not prior.training and d.training
    assert not torch.equal(
        prior.train()(b.dense_features, b.sparse_features), prior(b.dense_features, b.sparse_features)
    )
    assert torch.equal(seen[1], seen[2])  # the two phase-2 reference calls agree exactly


def test_host_step_mirror_follows_checkpoints() -> None:
    d = make_deca(objective="paper")
    run(d, batch=deca_batch())
    assert d.subtask() == 1
    d.load_state_dict({**d.state_dict(), "step": torch.tensor(6)})
    assert d.subtask() == 0 and d.host_step == 6
    d.step.fill_(9)
    assert d.subtask() == 1


def test_deca_checks_its_features() -> None:
    with pytest.raises(ValueError, match="user_feature='uid'"):
        build_denoiser(
            "deca", context={"tables": {"user_id": 3, "item_id": 3}, "device": torch.device("cpu")}, user_feature="uid"
        )


# ---- registry ----------------------------------------------------------------------------------------------------


def test_registry_names_grids_and_injected_arguments() -> None:
    assert sorted(DENOISERS) == sorted(
        [
            "bce",
            "tce",
            "rce",
            "lcd",
            "lcd_re",
            "bootstrap_soft",
            "bootstrap_hard",
            "dart",
            "deca",
            "deca_p",
            "observation",
            "observation_tce",
            "observation_ids",
        ]
    )
    for name, cls in DENOISERS.items():
        assert set(cls.GRID) <= set(options(name)), name
        assert not set(cls.NEEDS.injected) & set(options(name)), name
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['tables'\]"):
        build_denoiser("lcd", tables={})
    with pytest.raises(ValueError, match=r"needs \['tables', 'device'\] from the trainer"):
        build_denoiser("deca")
    with pytest.raises(ValueError, match="must lie in"):
        build_denoiser("dart", r=1.5)
