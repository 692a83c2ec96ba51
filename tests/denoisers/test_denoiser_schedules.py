"""T-CE / DART schedules in steps, epochs or as a share of the run (``denoisers/span.py``), resolved by the
trainer's ``bind_run``; a step ramp longer than the run is warned about (one process, hand-computed).
"""

import pytest
import torch

from denoisrec.denoisers import build_denoiser
from denoisrec.denoisers.span import Span
from denoisrec.trainer.denoising.build import bind_run_length
from denoisrec.trainer.module import TrainModule


@pytest.mark.parametrize(
    "raw,steps",
    [
        (1000, 1000),
        (1000.0, 1000),
        ("250", 250),
        ("1ep", 98),
        ("0.5ep", 49),
        ("2epochs", 196),
        ("50%", 147),
        ("100%", 294),
        ("0%", 0),
        (0, 0),
    ],
)
def test_span_resolves_against_the_run(raw, steps) -> None:  # type: ignore[no-untyped-def]
    assert Span.parse("opt", raw).steps(steps_per_epoch=98, total_steps=294) == steps


@pytest.mark.parametrize("raw", [-1, 2.5, "1 week", "150%", True])
def test_span_rejects_bad_values_naming_the_option(raw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"^tce option num_gradual="):
        build_denoiser("tce", num_gradual=raw)


def test_tce_default_ramp_is_one_epoch_and_acts_in_a_short_run() -> None:
    d = build_denoiser("tce")  # eps_max = 0.2, num_gradual = "1ep"
    with pytest.raises(ValueError, match="num_gradual='1ep' is relative to the run length"):
        d(torch.zeros(4), torch.ones(4), torch.arange(4))  # unbound: no silent guess
    assert d.bind_run(steps_per_epoch=98, total_steps=294) == []
    # ε(T) = min(T · 0.2 / 98, 0.2): half way at step 49, ε_max from step 98 on.
    assert d.drop_rate(torch.tensor(49)).item() == pytest.approx(0.1)
    assert d.drop_rate(torch.tensor(200)).item() == pytest.approx(0.2)
    assert d.hparams() == {"eps_max": 0.2, "num_gradual": "1ep"}


def test_a_step_ramp_longer_than_the_run_is_warned_about() -> None:
    warned = build_denoiser("tce", num_gradual=30000).bind_run(98, 294)
    assert len(warned) == 1 and "num_gradual=30000 (30000 steps) is longer than the run (294 steps)" in warned[0]
    assert "drop rate reaches only 0.00196 (eps_max=0.2)" in warned[0]  # 0.2 · 294 / 30000
    warned = build_denoiser("dart", t_i=0, t_m=20000).bind_run(98, 294)
    assert len(warned) == 1 and "tau reaches only 0.000588 (tau_m=0.04)" in warned[0]  # 0.04 · 294 / 20000
    warned = build_denoiser("dart", t_i=300, t_m=10).bind_run(98, 294)
    assert "identification never starts" in warned[0]
    assert build_denoiser("dart").bind_run(98, 294) == []


def test_dart_start_and_ramp_as_shares_of_the_run() -> None:
    d = build_denoiser("dart", t_i="10%", t_m="1ep", tau_m=0.04)
    d.bind_run(steps_per_epoch=100, total_steps=300)  # T_i = 30, T_m = 100
    rate = [d.rate(torch.tensor(t)).item() for t in (0, 30, 80, 130, 299)]
    assert rate == pytest.approx([0.0, 0.0, 0.02, 0.04, 0.04])


def test_trainer_prints_the_warning_loudly() -> None:
    lines = []
    log = type("Log", (), {"print": lambda self, s: lines.append(s)})()
    module = TrainModule(torch.nn.Identity(), build_denoiser("tce", num_gradual=30000))
    with pytest.warns(UserWarning, match="tce option num_gradual=30000.*longer than the run"):
        bind_run_length(module, 10, 30, log)
    assert lines == []  # once, as a warning (WarningsToFile prints it as one line on rank 0)
    assert module.denoiser.num_gradual == 30000


@pytest.mark.parametrize("name,params", [("tce", {"num_gradual": 1}), ("dart", {"t_m": 1})])
def test_a_non_finite_loss_is_reported_although_the_select_sums_cap_it(name, params) -> None:  # type: ignore[no-untyped-def]
    # the loss value rides in fixed-point select sums that cap NaN/inf; the trainer's guard reads the value
    d = build_denoiser(name, **params)
    labels = torch.tensor([1.0, 1.0, 0.0, 1.0])
    finite = d(torch.tensor([0.3, -1.0, 0.2, 2.0]), labels, torch.arange(4)).value
    assert torch.isfinite(finite)
    out = d(torch.tensor([0.3, float("nan"), 0.2, 2.0]), labels, torch.arange(4))
    assert torch.isnan(out.value)
