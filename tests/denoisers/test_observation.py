"""The observation model: its likelihood and gradients against hand-computed values, evaluation through f
alone, feature roles and their errors, the generator's logging policy, and training / resume on 3 ranks.
"""

import dataclasses
import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import launch
from observation_train import launched
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers import build_denoiser
from denoisrec.denoisers.observation import ObservationIdNoise, ObservationModel, observed_log_likelihood
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.data.checks import schema_problems
from denoisrec.trainer.data.schema import DataSchema, SparseFeature
from denoisrec.trainer.datasets.synthetic import PRESETS, generate, scaled, schema_for
from denoisrec.trainer.denoising.feature_views import feature_views
from denoisrec.trainer.module import TrainModule


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---- the likelihood -------------------------------------------------------------------------------------


def test_mixture_likelihood_and_gradient_match_a_hand_computed_case() -> None:
    # f = σ(0.5), h = σ(−1.3862944) = 0.2, σ(b) = 0.5 so h' = 0.2 + 0.8·0.5 = 0.6.
    z = torch.tensor([0.5, 0.5], dtype=torch.float64, requires_grad=True)
    za = torch.full((2,), math.log(0.2 / 0.8), dtype=torch.float64, requires_grad=True)
    zb = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    log_p, log_q, log_h, log_hp = observed_log_likelihood(z, za, zb)
    f = _sig(0.5)
    p = f * 0.6 + (1 - f) * 0.2  # P(ỹ=1 | x, c)
    assert log_h.exp().tolist() == pytest.approx([0.2, 0.2], abs=1e-12)
    assert log_hp.exp().tolist() == pytest.approx([0.6, 0.6], abs=1e-12)
    assert log_p.exp().tolist() == pytest.approx([p, p], abs=1e-12)
    assert log_q.exp().tolist() == pytest.approx([1 - p, 1 - p], abs=1e-12)
    nll = -(y * log_p + (1 - y) * log_q)
    nll.sum().backward()
    # dP/dz = f(1 − f)(h' − h); dP/da = (1 − f)·h(1 − h) + f·(dh'/da) with dh'/da = h(1 − h)(1 − σ(b));
    # dP/db = f·(1 − h)·σ(b)(1 − σ(b)).
    dp_dz = f * (1 - f) * (0.6 - 0.2)
    dp_da = (1 - f) * 0.2 * 0.8 + f * 0.2 * 0.8 * 0.5
    dp_db = f * 0.8 * 0.25
    for grad, dp in ((z.grad, dp_dz), (za.grad, dp_da), (zb.grad, dp_db)):
        assert grad.tolist() == pytest.approx([-dp / p, dp / (1 - p)], rel=1e-10)


def test_product_form_is_a_times_f() -> None:
    z, zb = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.7], dtype=torch.float64)
    log_p, log_q, log_h, log_hp = observed_log_likelihood(z, torch.zeros(1, dtype=torch.float64), zb, "product")
    assert float(log_p.exp()) == pytest.approx(_sig(0.3) * _sig(-0.7), rel=1e-12)
    assert float(log_q.exp()) == pytest.approx(1 - _sig(0.3) * _sig(-0.7), rel=1e-12)
    assert float(log_h.exp()) == 0.0


def test_examination_form_matches_a_hand_computed_case() -> None:
    # e = σ(a) = 0.75, q₀ = σ(u₀) = 0.4, q₁ = σ(u₁) = 0.3:
    # h = (1 − e)·q₀ = 0.1, h' = 1 − (1 − e)·q₁ = 0.925.
    z = torch.tensor([-0.4, -0.4], dtype=torch.float64, requires_grad=True)
    za = torch.full((2,), math.log(3.0), dtype=torch.float64, requires_grad=True)
    u = torch.tensor([math.log(0.4 / 0.6), math.log(0.3 / 0.7)], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    log_p, log_q, log_h, log_hp = observed_log_likelihood(z, za, torch.zeros(2, dtype=torch.float64), "examination", u)
    f = _sig(-0.4)
    p = f * 0.925 + (1 - f) * 0.1
    assert log_h.exp().tolist() == pytest.approx([0.1, 0.1], abs=1e-12)
    assert log_hp.exp().tolist() == pytest.approx([0.925, 0.925], abs=1e-12)
    assert log_p.exp().tolist() == pytest.approx([p, p], abs=1e-12)
    assert log_q.exp().tolist() == pytest.approx([1 - p, 1 - p], abs=1e-12)
    (-(y * log_p + (1 - y) * log_q)).sum().backward()
    # P = f − f(1 − e)q₁ + (1 − f)(1 − e)q₀: dP/dz = f(1 − f)(h' − h); dP/da = e(1 − e)(f q₁ − (1 − f) q₀).
    dp_dz = f * (1 - f) * (0.925 - 0.1)
    dp_da = 0.75 * 0.25 * (f * 0.3 - (1 - f) * 0.4)
    for grad, dp in ((z.grad, dp_dz), (za.grad, dp_da)):
        assert grad.tolist() == pytest.approx([-dp / p, dp / (1 - p)], rel=1e-10)
    # dP/dq₀ = (1 − f)(1 − e), dP/dq₁ = −f(1 − e); q₀, q₁ are free: dq/du = q(1 − q) each, no cross term.
    dp_du0 = 0.25 * (1 - f) * 0.4 * 0.6
    dp_du1 = 0.25 * (-f) * 0.3 * 0.7
    assert u.grad.tolist() == pytest.approx([-dp_du0 / p + dp_du0 / (1 - p), -dp_du1 / p + dp_du1 / (1 - p)], rel=1e-10)


def test_examination_form_represents_uninformative_inattention() -> None:
    # The generator's q_fp = 0.55, q_fn = 0.5 (q₀ + q₁ > 1: an inattentive label points slightly the wrong way).
    za = torch.linspace(-3, 3, 7, dtype=torch.float64)
    u = torch.tensor([math.log(0.55 / 0.45), 0.0], dtype=torch.float64)
    _, _, log_h, log_hp = observed_log_likelihood(torch.zeros(7, dtype=torch.float64), za, za, "examination", u)
    e = torch.sigmoid(za)
    assert torch.allclose(log_h.exp(), (1 - e) * 0.55, atol=1e-12)
    assert torch.allclose(log_hp.exp(), e + (1 - e) * 0.5, atol=1e-12)
    # h' − h = e + (1 − e)(1 − q₀ − q₁) = 1.05·e − 0.05: positive wherever attention is not negligible.
    assert torch.equal(log_hp > log_h, 1.05 * e > 0.05) and bool((log_hp > log_h)[1:].all())


def test_likelihood_is_finite_at_extreme_logits() -> None:
    big = torch.tensor([60.0, -60.0, 60.0, -60.0], requires_grad=True)
    za = torch.tensor([-40.0, 40.0, 40.0, -40.0], requires_grad=True)
    zb = torch.tensor([40.0, -40.0, -40.0, 40.0], requires_grad=True)
    log_p, log_q, _, _ = observed_log_likelihood(big, za, zb)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    nll = -(y * log_p + (1 - y) * log_q)
    nll.sum().backward()
    for t in (nll, big.grad, za.grad, zb.grad):
        assert torch.isfinite(t).all(), t


def _context_batch(n: int, seed: int = 0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    pos, scene = torch.randint(0, 31, (n,), generator=g), torch.randint(0, 6, (n,), generator=g)
    users = torch.randint(0, 20, (n,), generator=g)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["user_id", "position", "scene"], torch.cat([users, pos, scene]), torch.ones(3 * n, dtype=torch.int32)
    )
    return SimpleNamespace(sparse_features=kjt, dense_features=torch.randn(n, 2, generator=g), is_noisy=None)


def test_denoiser_loss_is_the_mean_nll_and_reaches_f_and_the_tower() -> None:
    torch.manual_seed(0)
    d = ObservationModel({"position": 31, "scene": 6}, device=torch.device("cpu"))
    b = _context_batch(16)
    z = torch.randn(16, requires_grad=True)
    y = (torch.rand(16) < 0.5).float()
    out = d(z, y, torch.arange(16), b)
    za, zb = d.tower(b.sparse_features)
    log_p, log_q, _, _ = observed_log_likelihood(z.detach(), za.detach(), zb.detach())
    assert float(out.value) == pytest.approx(float(-(y * log_p + (1 - y) * log_q).mean()), rel=1e-6)
    out.loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.tower.parameters())
    assert d.model_parallel_tables() == ["obs_position", "obs_scene"]
    assert int(d.step) == 1 and set(out.stats) == {"f_mean", "h_mean", "h_prime_mean"}
    # h' > h everywhere (identifiability), for any tower output.
    with torch.no_grad():
        for p in d.tower.parameters():
            p.normal_(0, 3)
    _, _, log_h, log_hp = observed_log_likelihood(z.detach(), *d.tower(b.sparse_features))
    assert bool((log_hp > log_h).all())


@pytest.mark.parametrize("form", ["mixture", "examination"])
def test_tower_warmup_holds_the_initial_rates_then_releases_the_tower(form: str) -> None:
    torch.manual_seed(0)
    d = ObservationModel(
        {"position": 31, "scene": 6},
        form=form,
        h_init=0.15,
        h_prime_init=0.8,
        tower_warmup="50%",
        device=torch.device("cpu"),
    )
    assert d.bind_run(steps_per_epoch=5, total_steps=5) == [] and d.warmup_steps == 2  # ⌊0.5·5⌋ frozen steps
    params = list(d.tower.parameters()) + ([d.u] if d.u is not None else [])
    assert (d.u is not None) == (form == "examination")
    b, y = _context_batch(16), (torch.rand(16) < 0.5).float()
    for step in range(4):
        for p in params:
            p.grad = None
        z = torch.randn(16, requires_grad=True)
        out = d(z, y, torch.arange(16), b)
        out.loss.backward()
        assert z.grad.abs().sum() > 0
        frozen = step < 2
        assert float(out.stats["tower_frozen"]) == float(frozen)
        grads = [float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in params]
        if frozen:  # the initial rates, whatever the tables hold; no gradient reaches the tower
            assert float(out.stats["h_mean"]) == pytest.approx(0.15, rel=1e-5)
            assert float(out.stats["h_prime_mean"]) == pytest.approx(0.8, rel=1e-5)
            assert grads == [0.0] * len(params)
        else:
            assert all(x > 0 for x in grads), grads
        with torch.no_grad():  # a moved tower must not show while frozen
            for p in d.tower.ebc.parameters():
                p.add_(0.5)
    d.eval()
    assert not d.tower_frozen()  # evaluation never sees the warm-up


def test_rates_lr_scale_keeps_the_model_and_scales_the_rates_gradient() -> None:
    b, y = _context_batch(16), (torch.rand(16, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    z = torch.randn(16, generator=torch.Generator().manual_seed(4))
    outs, grads = [], []
    for scale in (1.0, 50.0):
        torch.manual_seed(0)
        d = ObservationModel(
            {"position": 31, "scene": 6}, form="examination", rates_lr_scale=scale, device=torch.device("cpu")
        )
        out = d(z, y, torch.arange(16), b)
        out.loss.backward()
        outs.append(float(out.value))
        grads.append(d.u.grad.clone())
    assert outs[0] == pytest.approx(outs[1], rel=1e-6)  # same u = scale·v at initialisation
    assert torch.allclose(grads[1], 50.0 * grads[0], rtol=1e-4)  # d/dv = scale · d/du
    assert grads[0].abs().min() > 0


def test_options_are_checked() -> None:
    ctx = {"context_tables": {"position": 31}, "device": torch.device("cpu")}
    with pytest.raises(ValueError, match="form='sum'"):
        build_denoiser("observation", context=ctx, form="sum")
    with pytest.raises(ValueError, match="h_init=0.5, h_prime_init=0.4"):
        build_denoiser("observation", context=ctx, h_init=0.5, h_prime_init=0.4)
    with pytest.raises(ValueError, match="no context features .* degrades to BCE"):
        build_denoiser("observation", context={**ctx, "context_tables": {}})
    with pytest.raises(ValueError, match="rates_lr_scale=0"):
        build_denoiser("observation", context=ctx, form="examination", rates_lr_scale=0)
    with pytest.raises(ValueError, match="tower_warmup='100%'"):
        build_denoiser("observation", context=ctx, tower_warmup="100%")
    with pytest.raises(ValueError, match="tower_warmup=0.25"):
        build_denoiser("observation", context=ctx, tower_warmup=0.25)  # a share is written "25%"
    d = build_denoiser("observation", context=ctx, tower_warmup="1ep")
    assert "never trains" in d.bind_run(steps_per_epoch=10, total_steps=10)[0] and d.warmup_steps == 10
    assert build_denoiser("observation", context=ctx, tower_warmup=7).warmup_steps == 7
    with pytest.raises(ValueError, match="form=examination needs"):
        build_denoiser("observation", context=ctx, form="examination", h_init=0.92, h_prime_init=0.95)
    d = build_denoiser("observation", context=ctx, form="examination", h_init=0.5, h_prime_init=0.55)
    u = torch.sigmoid(d.u.detach())  # q₀ + q₁ may exceed 1 now: e = 1 − 0.5/0.9 at initialisation
    assert float(u[0]) == pytest.approx(0.9, rel=1e-6) and float(u[1]) == pytest.approx(0.81, rel=1e-6)
    with pytest.raises(ValueError, match="noise_file='x.json': needs form=examination"):
        build_denoiser("observation", context=ctx, noise_file="x.json")


def test_evaluation_and_export_use_f_alone() -> None:
    torch.manual_seed(0)
    from denoisrec.models import ModelSpec

    spec = ModelSpec("dlrm", features=[("user_id", 20)], dense_in_features=2, embedding_dim=8)
    model = spec.build(torch.device("cpu"))
    module = TrainModule(model, ObservationModel({"position": 31, "scene": 6}, device=torch.device("cpu")))
    b = _context_batch(12)
    b.labels = (torch.rand(12) < 0.5).float()
    b.sample_ids = torch.arange(12)
    module.eval()
    _, (loss0, logits0, out0) = module(b)
    with torch.no_grad():
        for p in module.denoiser.tower.parameters():
            p.add_(5.0)
    _, (loss1, logits1, out1) = module(b)
    assert out0 is None and out1 is None  # the denoiser is not called in evaluation
    assert torch.equal(logits0, logits1) and torch.equal(loss0, loss1)
    assert torch.equal(logits0, model(b.dense_features, b.sparse_features).squeeze(-1))
    assert not any(k.startswith("denoiser") for k in model.state_dict())


# ---- feature roles --------------------------------------------------------------------------------------


def _schema() -> DataSchema:
    return DataSchema(
        sparse=[
            SparseFeature("user_id", 10),
            SparseFeature("item_id", 5),
            SparseFeature("position", 31, role="context"),
        ]
    )


def test_roles_round_trip_and_default_to_preference() -> None:
    s = DataSchema.from_dict(_schema().to_dict())
    assert s.context_names == ["position"]
    assert s.preference_only().sparse_names == ["user_id", "item_id"]
    legacy = DataSchema.from_dict({"sparse": [{"name": "user_id", "num_embeddings": 3}]})
    assert legacy.sparse[0].role == "preference" and legacy.context_names == []
    with pytest.raises(ValueError, match="sparse feature 'hour' has role='contxt'; expected one of"):
        DataSchema.from_dict({"sparse": [{"name": "hour", "num_embeddings": 24, "role": "contxt"}]})


def test_missing_context_column_is_named() -> None:
    problems = schema_problems(
        pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("label", pa.int8()), ("row_id", pa.int64())]),
        _schema(),
        with_ground_truth=False,
    )
    assert problems == ["missing column 'position' (expected integer (sparse id, context feature))"]


def _cfg(denoiser: str, context: str = "auto", **params) -> Config:
    cfg = Config()
    cfg.denoiser.name, cfg.denoiser.params, cfg.model.context = denoiser, params, context
    return cfg


def test_feature_views_for_the_three_ways_and_their_errors() -> None:
    s = _schema()
    data, model = feature_views(_cfg("bce"), s)
    assert data.sparse_names == model.sparse_names == ["user_id", "item_id", "position"]
    data, model = feature_views(_cfg("bce", "withhold"), s)
    assert data.sparse_names == model.sparse_names == ["user_id", "item_id"]
    data, model = feature_views(_cfg("observation"), s)
    assert (data.sparse_names, model.sparse_names) == (["user_id", "item_id", "position"], ["user_id", "item_id"])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        feature_views(_cfg("observation", "features"), s)
    assert any("also reads the context" in str(x.message) for x in w)
    with pytest.raises(ValueError, match="model.context='hide'"):
        feature_views(_cfg("bce", "hide"), s)
    with pytest.raises(ValueError, match="observation: the schema has no context features .* degrades to BCE"):
        feature_views(_cfg("observation"), s.preference_only())
    with pytest.raises(ValueError, match="deca option item_feature='position': a context feature"):
        feature_views(_cfg("deca", item_feature="position"), s)


# ---- the generator --------------------------------------------------------------------------------------


def test_generator_marks_roles_truthfully() -> None:
    s = schema_for(PRESETS["product"])
    ctx = set(s.context_names)
    assert {"position", "scene", "device", "hour", "weekday", "ctx_cat_0", "list_cat_0"} <= ctx
    assert not ctx & {"user_id", "item_id", "item_genre", "user_cat_0", "item_cat_0", "item_tags"}


@pytest.mark.parametrize("logging", ["ranker", "independent"])
def test_logging_policy(logging: str, tmp_path: Path) -> None:
    p = dataclasses.replace(scaled(PRESETS["tiny"], 12_000), logging=logging)
    stats = generate(str(tmp_path), p, seed=0)
    import pyarrow.dataset as ds

    t = ds.dataset(str(tmp_path / "train"), format="parquet").to_table(columns=["position", "clean_label"])
    pos, clean = t.column("position").to_numpy(), t.column("clean_label").to_numpy()
    corr = np.corrcoef(pos, clean)[0, 1]
    assert corr == pytest.approx(stats["train"]["position_clean_corr"], abs=1e-9)
    if logging == "ranker":  # the previous ranker put the liked items on top
        assert corr < -0.2 and clean[pos <= 5].mean() > 2 * clean[pos >= 26].mean()
    else:  # placement independent of preference: only sampling noise
        assert abs(corr) < 0.05
    truth = stats["observation_truth"]["position"]
    assert truth["values"] == list(range(1, 31))
    h, hp = np.array(truth["h"], dtype=float), np.array(truth["h_prime"], dtype=float)
    # Attention decays down the list: more false positives and more false negatives at the bottom.
    assert h[-5:].mean() > h[:5].mean() + 0.05 and hp[-5:].mean() < hp[:5].mean() - 0.05
    assert stats["logging"]["logging"] == logging
    assert json.loads((tmp_path / "stats.json").read_text())["logging"] == stats["logging"]


# ---- training on 3 ranks, checkpoint / resume, diagnostics, export ---------------------------------------


@pytest.mark.dist
def test_trains_and_resumes_on_three_ranks_with_diagnostics(tiny_data: Path, tmp_path: Path) -> None:
    r = launch(launched, 3, str(tiny_data), str(tmp_path))[0]
    assert r["world"] == 3 and r["steps"] == [16, 7, 16] and r["resumed_from"] == 7
    # Resumed == uninterrupted up to the summation order of 3-rank all-reduces (DDP rebuilds its buckets after
    # the first step of a session); a tower or optimizer state not restored would differ by orders more.
    assert r["diff_resumed"] < 1e-5
    for a, b in zip(r["metrics"][0].values(), r["metrics"][1].values()):
        assert a["auc"] == pytest.approx(b["auc"], abs=1e-4)
    context = {"hour", "weekday", "device", "scene", "position"}
    # The exported model is f alone: no context feature, no tower, and predict reads no context column.
    assert not context & set(r["spec_features"]) and not context & set(r["schema_features"])
    assert not any("obs_" in k or "tower" in k for k in r["state_keys"])
    assert set(r["diag_features"]) == context and r["png"]
    assert all(0.0 <= e[k]["mean_abs"] <= 1.0 for e in r["diag_errors"].values() for k in ("h", "h_prime"))
    tower = {k: v for k, v in r["plan"].items() if ".obs_" in k}
    assert len(tower) == 5  # the tower's tables: model-parallel, trained by the fused sparse optimizer
    assert all(v["sharding_type"] != "data_parallel" for v in tower.values())


# ---- trusted labels in the objective, and the user × item noise channels ---------------------------------


def _fixed_noise_model(tmp_path: Path, **kw) -> ObservationModel:
    doc = {"bias": 1.0, "q0": 0.55, "q1": 0.5, "attention": {"position": [0.0] + [-0.1 * k for k in range(30)]}}
    (tmp_path / "noise.json").write_text(json.dumps(doc))
    return kw.pop("cls", ObservationModel)(
        {"position": 31, "scene": 6},
        form="examination",
        noise_file=str(tmp_path / "noise.json"),
        device=torch.device("cpu"),
        **kw,
    )


def _exam_rates(pos: int) -> "tuple[float, float]":
    e = _sig(1.0 - 0.1 * (pos - 1))  # a = 1 + A[pos], A[pos] = −0.1·(pos − 1)
    return (1 - e) * 0.55, 1 - (1 - e) * 0.5


def _pos_batch(pos: list, trusted: list, users: list = (), items: list = ()) -> SimpleNamespace:
    keys, vals = ["position", "scene"], list(pos) + [0] * len(pos)
    if users:
        keys, vals = keys + ["user_id", "item_id"], vals + list(users) + list(items)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys, torch.tensor(vals), torch.ones(len(vals), dtype=torch.int32))
    t = torch.tensor(trusted, dtype=torch.float32)
    return SimpleNamespace(sparse_features=kjt, is_noisy=None, trusted_labels=t)


def test_trusted_rows_add_their_cross_entropy_on_f_to_the_hand_computed_loss(tmp_path: Path) -> None:
    # Three rows at positions 1, 11, 21; the first and last carry trusted labels 1 and 0, the middle none.
    d = _fixed_noise_model(tmp_path, trusted_weight=4.0)
    nan = float("nan")
    b = _pos_batch([1, 11, 21], [1.0, nan, 0.0])
    z = torch.tensor([0.3, -0.2, 0.8], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0])
    out = d(z, y, torch.arange(3), b)
    want = 0.0
    for zi, yi, pos in ((0.3, 1, 1), (-0.2, 0, 11), (0.8, 1, 21)):
        h, hp = _exam_rates(pos)
        f = _sig(zi)
        p1 = f * hp + (1 - f) * h
        want -= math.log(p1 if yi else 1 - p1)
    want += 4.0 * (-math.log(_sig(0.3)) - math.log(1 - _sig(0.8)))  # −log f (t = 1), −log(1 − f) (t = 0)
    assert float(out.value) == pytest.approx(want / 3, rel=1e-5)
    assert float(out.stats["trusted_rows"]) == 2.0
    assert float(out.stats["f_mean_trusted"]) == pytest.approx((_sig(0.3) + _sig(0.8)) / 2, rel=1e-5)
    out.loss.backward()
    # The middle row's gradient is the mixture's alone; the trusted rows' adds w·(f − t)/B.
    z2 = z.detach().clone().requires_grad_(True)
    base = _fixed_noise_model(tmp_path)(z2, y, torch.arange(3), b)
    base.loss.backward()
    extra = (z.grad - z2.grad).tolist()
    assert extra == pytest.approx([4.0 * (_sig(0.3) - 1) / 3, 0.0, 4.0 * _sig(0.8) / 3], abs=1e-6)
    assert set(base.stats) == {"f_mean", "h_mean", "h_prime_mean"}  # off by default: the loss as before


def test_id_noise_channels_compose_after_the_context_rates_as_hand_computed(tmp_path: Path) -> None:
    tables = {"position": 31, "scene": 6, "user_id": 4, "item_id": 3}
    d = _fixed_noise_model(tmp_path, cls=ObservationIdNoise, tables=tables, id_noise_dim=2, id_noise_init=0.1)
    with torch.no_grad():  # zero factors; item 2's click logit +2 (bias column of the fp item table), user 1's miss +1
        for p in d.id_heads.parameters():
            p.zero_()
        d.id_heads.ebc.embedding_bags["obs_id_fp_item_id"].weight[2, -1] = 2.0
        d.id_heads.ebc.embedding_bags["obs_id_fn_user_id"].weight[1, -1] = 1.0
    b = _pos_batch([1, 11, 21], [float("nan")] * 3, users=[0, 1, 0], items=[0, 0, 2])
    z = torch.tensor([0.3, -0.2, 0.8], requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0])
    out = d(z, y, torch.arange(3), b)
    k0 = math.log(0.1 / 0.9)
    want = 0.0
    for zi, yi, pos, kk, mm in ((0.3, 1, 1, k0, k0), (-0.2, 0, 11, k0, k0 + 1.0), (0.8, 1, 21, k0 + 2.0, k0)):
        h, hp = _exam_rates(pos)
        f = _sig(zi)
        p1 = f * hp + (1 - f) * h  # the context's P(ỹ=1), then P₁·(1 − p₁₀) + P₀·p₀₁
        p1 = p1 * (1 - _sig(mm)) + (1 - p1) * _sig(kk)
        want -= math.log(p1 if yi else 1 - p1)
    assert float(out.value) == pytest.approx(want / 3, rel=1e-5)
    out.loss.backward()
    fp_item = d.id_heads.ebc.embedding_bags["obs_id_fp_item_id"].weight.grad
    assert fp_item is not None and float(fp_item[2, -1]) != 0.0 and float(fp_item[1].abs().sum()) == 0.0
    assert d.needs.shared_tables == ("tower", "id_heads")
    assert d.model_parallel_tables()[-4:] == [
        "obs_id_fp_user_id",
        "obs_id_fp_item_id",
        "obs_id_fn_user_id",
        "obs_id_fn_item_id",
    ]
    assert ObservationModel({"position": 31}).needs.shared_tables == ("tower",)


def test_new_options_are_checked() -> None:
    ctx = {"context_tables": {"position": 31}, "device": torch.device("cpu")}
    with pytest.raises(ValueError, match="trusted_weight=-1"):
        build_denoiser("observation", context=ctx, trusted_weight=-1)
    ids = {**ctx, "tables": {"position": 31, "user_id": 5, "item_id": 5}}
    with pytest.raises(ValueError, match="item_feature='song'.*not a sparse feature"):
        build_denoiser("observation_ids", context=ids, item_feature="song")
    with pytest.raises(ValueError, match="id_noise_init=0.5"):
        build_denoiser("observation_ids", context=ids, id_noise_init=0.5)


def test_trusted_train_rows_reach_the_objective_through_the_trainer(tmp_path: Path, capsys) -> None:
    """gen-data's trusted train rows arrive as ``Batch.trusted_labels``: every one counted once per epoch."""
    from denoisrec.trainer.cli import main
    from denoisrec.trainer.datasets.synthetic import with_trusted

    data = tmp_path / "data"
    generate(str(data), with_trusted(PRESETS["tiny"], None, 1500, 0), seed=0)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "1000"]
    args += ["--denoiser", "observation", "-p", "trusted_weight=5", "form=examination"]
    assert main([*args, "--set", "run.log_every=1", "run.export=false"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("kind") == "train"]
    assert len(train) == 6 and sum(r["trusted_rows"] for r in train) == 1500
    assert all(0 < r["f_mean_trusted"] < 1 for r in train)
    # Data without trusted labels: one line naming the option and the fix.
    bare = tmp_path / "bare"
    generate(str(bare), with_trusted(PRESETS["tiny"], 0, 0, 0), seed=0)
    args[2], args[4] = str(bare), str(tmp_path / "run2")
    assert main([*args, "--set", "run.export=false"]) != 0
    assert "trusted_weight=5.0: the batch has no trusted labels" in capsys.readouterr().err
