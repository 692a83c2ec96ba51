"""DeCA(p)'s phase 1 (``trainer/denoising/prior.py``): early stopping on the run's selection signal, bounded by
``pretrain_max_epochs``, the best epoch restored, the length kept for a resumed run (one process; the
sharded restore is checked under DMP in ``tests/dist/train_methods.py``).
"""

from types import SimpleNamespace

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers import build_denoiser
from denoisrec.trainer.denoising import prior as prior_mod
from denoisrec.trainer.denoising.build import prepare_denoiser
from denoisrec.trainer.module import TrainModule


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(2, 1)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.w(dense)


class Reader(list):
    """Four fixed batches per epoch."""

    def set_epoch(self, epoch: int) -> None:
        pass


def batch(seed: int) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    kjt = KeyedJaggedTensor(
        keys=["user_id", "item_id"],
        values=torch.tensor([0, 1, 1, 0, 2, 2, 0, 1]),
        lengths=torch.ones(8, dtype=torch.int32),
        stride=4,
    )
    b = SimpleNamespace(
        sparse_features=kjt,
        dense_features=torch.randn(4, 2, generator=g),
        labels=torch.tensor([1.0, 0.0, 1.0, 0.0]),
        sample_ids=torch.arange(4) + 4 * seed,
        is_noisy=None,
    )
    b.to = lambda device, non_blocking=False: b
    return b


def setup(**params):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    d = build_denoiser(
        "deca_p",
        context={"tables": {"user_id": 3, "item_id": 3}, "device": torch.device("cpu"), "prior": Linear()},
        mf_dim=2,
        **params,
    )
    model = TrainModule(Linear(), d)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    cfg = SimpleNamespace(run=SimpleNamespace(log_every=1000))
    return d, model, opt, cfg, Reader(batch(i) for i in range(4))


class Log:
    def __init__(self) -> None:
        self.lines: list = []

    def print(self, s: str) -> None:
        self.lines.append(s)


def test_phase_one_stops_at_the_first_worse_epoch_and_restores_the_best(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    d, model, opt, cfg, reader = setup(pretrain_max_epochs=10, pretrain_patience=1)
    aucs = iter([0.60, 0.70, 0.65, 0.99])  # epoch 3 is worse: stop there, keep epoch 2's weights
    weights = []

    def scripted(den, valid, device, target="observed"):  # type: ignore[no-untyped-def]
        weights.append(den.prior.w.weight.detach().clone())
        return next(aucs)

    monkeypatch.setattr(prior_mod, "prior_valid_auc", scripted)
    log = Log()
    prepare_denoiser(model, cfg, reader, opt, torch.device("cpu"), log, valid=reader)
    assert len(weights) == 3 and not torch.equal(weights[1], weights[2])
    assert torch.equal(d.prior.w.weight, weights[1])  # the best epoch's f'
    assert d.pretrain_steps == 12 and d.pretrained_steps.item() == 12 and d.host_step == 12  # 3 epochs × 4
    assert not d.in_pretraining() and d.subtask() == 0  # phase 2 starts with DP
    assert any("restored the best epoch (valid AUC (observed) 0.7000)" in s for s in log.lines)


def test_phase_one_is_bounded_by_max_epochs(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    d, model, opt, cfg, reader = setup(pretrain_max_epochs=1.5, pretrain_patience=1)
    monkeypatch.setattr(
        prior_mod, "prior_valid_auc", lambda den, valid, device, target="observed": 0.5 + den.host_step / 100
    )
    prepare_denoiser(model, cfg, reader, opt, torch.device("cpu"), Log(), valid=reader)
    assert d.pretrain_steps == 6  # ⌈1.5 × 4⌉ steps, always improving


def test_fixed_pretrain_steps_skip_validation_and_a_resumed_run_skips_phase_one(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def never(*a):  # type: ignore[no-untyped-def]
        raise AssertionError("validated")

    monkeypatch.setattr(prior_mod, "prior_valid_auc", never)
    d, model, opt, cfg, reader = setup(pretrain_steps=5)
    prepare_denoiser(model, cfg, reader, opt, torch.device("cpu"), Log(), valid=reader)
    assert d.host_step == 5 and d.pretrained_steps.item() == 5
    state = model.state_dict()
    d2, model2, opt2, _, _ = setup()  # default: early stopping, but the checkpoint says phase 1 is done
    model2.load_state_dict(state)
    prepare_denoiser(model2, cfg, Reader(), opt2, torch.device("cpu"), Log(), valid=reader)
    assert d2.pretrain_steps == 5 and not d2.in_pretraining()


def test_bad_phase_one_options_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="pretrain_patience=0"):
        setup(pretrain_patience=0)


def test_cached_prior_scores_are_the_frozen_forward_and_unknown_ids_fail(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(prior_mod, "prior_valid_auc", lambda den, valid, device, target="observed": 0.5)
    outs = {}
    for cache in (False, True):
        d, model, opt, cfg, reader = setup(pretrain_steps=3, prior_cache=cache, alpha=0.5)
        prepare_denoiser(model, cfg, reader, opt, torch.device("cpu"), Log(), valid=reader)
        assert (d._cache is not None) == cache
        torch.manual_seed(1)
        outs[cache] = [model(b)[1][2] for b in reader]  # phase 2 steps (DP/DN or marginal)
    for a, b in zip(outs[False], outs[True]):
        assert torch.equal(a.value, b.value) and torch.equal(a.stats["post_pos_mean"], b.stats["post_pos_mean"])
    stranger = batch(0)
    stranger.sample_ids = torch.tensor([0, 1, 2, 99])
    with pytest.raises(RuntimeError, match="without a cached f' score"):
        model(stranger)


@pytest.mark.parametrize(
    "select_on, split, target, words",
    [
        ("trusted", "valid", "trusted", "valid AUC (trusted)"),
        ("random", "valid_random", "observed", "valid_random AUC"),
    ],
)
def test_phase_one_early_stops_on_the_resolved_selection_signal(monkeypatch, select_on, split, target, words) -> None:  # type: ignore[no-untyped-def]
    d, model, opt, cfg, reader = setup(pretrain_max_epochs=3, pretrain_patience=1)
    readers = {"valid": Reader([batch(10)]), "valid_random": Reader([batch(11)])}
    seen = []

    def scripted(den, valid, device, target="observed"):  # type: ignore[no-untyped-def]
        seen.append((valid, target))
        return 0.5 + den.host_step / 100

    monkeypatch.setattr(prior_mod, "prior_valid_auc", scripted)
    log = Log()
    prepare_denoiser(model, cfg, reader, opt, torch.device("cpu"), log, valid=readers, select_on=select_on)
    assert seen and all(v is readers[split] and t == target for v, t in seen)
    assert any(f"prior  epoch 1: {words} 0.5400" in s for s in log.lines)
    assert any(f"eval.select_on={select_on}" in s for s in log.lines)


def test_prior_valid_auc_on_trusted_labels_scores_only_the_labelled_rows() -> None:
    d, _, _, _, _ = setup()
    b = batch(3)
    # trusted labels on rows 0, 1, 3 (NaN on row 2): the AUC of those three rows against them, by hand
    b.trusted_labels = torch.tensor([1.0, 0.0, float("nan"), 1.0])
    with torch.no_grad():
        z = d.prior_logits(b).reshape(-1)
    pos, neg = [z[0], z[3]], [z[1]]
    by_hand = sum(float(p > n) + 0.5 * float(p == n) for p in pos for n in neg) / 2
    got = prior_mod.prior_valid_auc(d, Reader([b]), torch.device("cpu"), "trusted")
    assert got == pytest.approx(by_hand)
    b.trusted_labels = torch.tensor([0.0, 1.0, float("nan"), 0.0])  # flipped labels: the complement
    assert prior_mod.prior_valid_auc(d, Reader([b]), torch.device("cpu"), "trusted") == pytest.approx(1 - by_hand)
