"""The denoiser–trainer seam: what a denoiser declares in ``DenoiserNeeds`` is what the trainer does.

Toy denoisers (registered for the test only) declare one need each; the trainer's functions in
``trainer/denoising/build.py`` must act on the declaration and only on it.
"""

import warnings
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest
import torch
from torch import nn

from denoisrec.denoisers import BCE, DENOISERS, Denoiser, DenoiserNeeds, JobFacts, Pretraining, build_denoiser
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.denoising import build as denoising
from denoisrec.trainer.denoising.feature_views import uses_context_tower


class Holder(nn.Module):
    """What ``denoiser_of`` unwraps: a module with a ``denoiser``."""

    def __init__(self, d: Denoiser) -> None:
        super().__init__()
        self.denoiser = d


class Log:
    def __init__(self) -> None:
        self.lines: List[str] = []

    def print(self, s: str) -> None:
        self.lines.append(s)


class Ramped(BCE):
    name = "toy_ramped"
    NEEDS = DenoiserNeeds(run_length=True)

    def bind_run(self, steps_per_epoch: int, total_steps: int) -> List[str]:
        super().bind_run(steps_per_epoch, total_steps)
        return [f"toy ramp of {total_steps} steps"]


class WithPrior(BCE):
    """Declares a pre-training phase of ``steps`` steps (as DeCA(p) with ``pretrain_steps``)."""

    name = "toy_prior"
    NEEDS = DenoiserNeeds(injected=("tables",), static_graph=False)

    def __init__(self, tables: Dict[str, int], steps: Optional[int] = 7, process_group: Any = None) -> None:
        super().__init__(process_group)
        self.tables, self.steps = dict(tables), steps
        self.register_buffer("pretrained_steps", torch.full((), -1, dtype=torch.int64))

    def pretraining(self) -> Optional[Pretraining]:
        return Pretraining(steps=self.steps, max_epochs=2.0, patience=3)

    def model_parallel_tables(self) -> List[str]:
        return [f"toy_{t}" for t in self.tables]

    def setup_warnings(self, job: JobFacts) -> List[str]:
        return [f"toy: sparse optimizer {job.sparse_optimizer}"]


@pytest.fixture
def toys(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in (Ramped, WithPrior):
        monkeypatch.setitem(DENOISERS, cls.name, cls)


def cfg_for(name: str, **params: Any) -> Config:
    cfg = Config()
    cfg.denoiser.name, cfg.denoiser.params = name, dict(params)
    return cfg


SCHEMA = SimpleNamespace(
    sparse=[
        SimpleNamespace(name="user_id", num_embeddings=5, role=None),
        SimpleNamespace(name="item_id", num_embeddings=9, role=None),
    ]
)


def test_a_declared_pretraining_phase_is_run_with_its_steps(toys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[Dict[str, Any]] = []

    def fake_pretrain(
        model: Any,
        d: Any,
        reader: Any,
        valid: Any,
        opt: Any,
        device: Any,
        log: Any,
        max_epochs: float,
        patience: int,
        log_every: int,
        fixed: Optional[int],
        target: str = "observed",
        words: str = "",
    ) -> Optional[int]:
        calls.append({"d": d, "valid": valid, "max_epochs": max_epochs, "patience": patience, "fixed": fixed})
        return fixed

    monkeypatch.setattr(denoising, "pretrain_prior", fake_pretrain)
    d = build_denoiser("toy_prior", context={"tables": {"user_id": 5}})
    log = Log()
    denoising.prepare_denoiser(Holder(d), cfg_for("toy_prior"), [], None, torch.device("cpu"), log, valid="V")
    assert len(calls) == 1 and calls[0]["d"] is d
    assert (calls[0]["fixed"], calls[0]["max_epochs"], calls[0]["patience"]) == (7, 2.0, 3)
    assert calls[0]["valid"] is None  # fixed steps: no validation
    assert any("for 7 step(s)" in line for line in log.lines)

    d2 = build_denoiser("toy_prior", context={"tables": {"user_id": 5}}, steps=None)  # to early stopping
    denoising.prepare_denoiser(Holder(d2), cfg_for("toy_prior"), [], None, torch.device("cpu"), Log(), valid="V")
    assert calls[1]["fixed"] is None and calls[1]["valid"] == "V"


def test_no_pretraining_declared_means_nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(denoising, "pretrain_prior", lambda *a: pytest.fail("pre-trained a denoiser without a phase"))
    for name in ("bce", "tce", "dart"):
        denoising.prepare_denoiser(Holder(build_denoiser(name)), cfg_for(name), [], None, torch.device("cpu"), Log())


def test_run_length_is_bound_only_when_declared(toys: None) -> None:
    ramped, plain = build_denoiser("toy_ramped"), build_denoiser("bce")
    log = Log()
    with pytest.warns(UserWarning, match="toy ramp of 40 steps"):
        denoising.bind_run_length(Holder(ramped), 10, 40, log)
    assert (ramped.steps_per_epoch, ramped.total_steps) == (10, 40) and log.lines == []  # once: as a warning
    denoising.bind_run_length(Holder(plain), 10, 40, log)
    assert plain.total_steps is None  # BCE declares no run-length binding


def test_graph_tables_injection_and_warnings_follow_the_declaration(toys: None) -> None:
    cfg = cfg_for("toy_prior")
    cfg.optim.sparse = "adagrad"
    with pytest.warns(UserWarning, match="toy: sparse optimizer adagrad"):
        d = denoising.build_denoiser_for(cfg, SCHEMA)  # type: ignore[arg-type]
    assert d.tables == {"user_id": 5, "item_id": 9}  # injected from the schema
    assert d.needs.model_parallel_tables == ("toy_user_id", "toy_item_id")
    assert d.needs.pretraining == Pretraining(steps=7, max_epochs=2.0, patience=3)
    holder = Holder(d)
    assert denoising.static_graph(holder) is False and denoising.static_graph(Holder(BCE())) is True
    constraints = denoising.plan_constraints(holder, cfg)
    assert constraints is not None and sorted(constraints) == ["toy_item_id", "toy_user_id"]
    assert "data_parallel" not in constraints["toy_user_id"].sharding_types
    cfg.sharding.sharding_type = "row_wise"  # one type forced for every table wins
    assert denoising.plan_constraints(holder, cfg) is None
    assert denoising.plan_constraints(Holder(BCE()), cfg_for("bce")) is None


def test_an_injection_the_trainer_cannot_supply_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Odd(BCE):
        name = "toy_odd"
        NEEDS = DenoiserNeeds(injected=("telescope",))

    monkeypatch.setitem(DENOISERS, Odd.name, Odd)
    with pytest.raises(ValueError, match=r"toy_odd: needs \['telescope'\] injected"):
        denoising.build_denoiser_for(cfg_for("toy_odd"), SCHEMA)  # type: ignore[arg-type]


def test_the_shipped_denoisers_declare_what_the_trainer_used_to_probe() -> None:
    assert uses_context_tower("observation") and uses_context_tower("observation_tce")
    assert uses_context_tower("observation_ids")
    assert not uses_context_tower("deca") and not uses_context_tower("nope")
    assert DENOISERS["deca_p"].NEEDS.static_graph is False and DENOISERS["deca"].NEEDS.static_graph is True
    assert {n for n, c in DENOISERS.items() if c.NEEDS.run_length} == {
        "tce",
        "dart",
        "observation",
        "observation_tce",
        "observation_ids",
    }
    assert {n for n, c in DENOISERS.items() if "prior" in c.NEEDS.injected} == {"deca_p"}


def test_deca_warns_about_a_job_that_would_move_its_frozen_noise_model() -> None:
    from denoisrec.denoisers.deca import DeCA

    d = DeCA(tables={"user_id": 3, "item_id": 3}, mf_dim=2)
    assert d.setup_warnings(JobFacts()) == []
    msgs = d.setup_warnings(JobFacts(sparse_optimizer="adam", sharding_type="data_parallel"))
    assert len(msgs) == 2 and "optim.sparse=adam" in msgs[0] and "data_parallel" in msgs[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert BCE().setup_warnings(JobFacts(sparse_optimizer="adam")) == []
