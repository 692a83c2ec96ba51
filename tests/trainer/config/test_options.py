"""The torch-free options catalog agrees with the registries, and its checks accept and reject as documented."""

from __future__ import annotations

import inspect

import pytest

from denoisrec.denoisers import DENOISERS, options
from denoisrec.models import MODELS, model_options
from denoisrec.trainer.config.check import check_config
from denoisrec.trainer.config.options import (
    DENOISER_OPTIONS,
    MODEL_OPTIONS,
    SHARDING_TYPES,
    UsageError,
    check_denoiser_params,
)
from denoisrec.trainer.config.tree import Config
from denoisrec.trainer.distributed.sharding import SHARDING_TYPES as PLANNER_TYPES


def test_catalog_lists_every_denoiser_option_with_its_default() -> None:
    assert set(DENOISER_OPTIONS) == set(DENOISERS), "add the new denoiser to trainer/config/options.py"
    for name, cls in DENOISERS.items():
        assert sorted(DENOISER_OPTIONS[name]) == options(name), name
        sig = inspect.signature(cls.__init__).parameters
        for k, o in DENOISER_OPTIONS[name].items():
            assert o.default == sig[k].default, (name, k)
            if o.default is not None:
                assert check_denoiser_params(name, {k: o.default}) == {k: o.default}  # defaults pass


def test_catalog_lists_every_model_option_and_sharding_type() -> None:
    assert set(MODEL_OPTIONS) == set(MODELS)
    for name in MODELS:
        assert sorted(MODEL_OPTIONS[name]) == sorted(model_options(name)), name
    assert SHARDING_TYPES == PLANNER_TYPES


def test_checks_convert_and_bound() -> None:
    assert check_denoiser_params("rce", {"beta": 1}) == {"beta": 1.0}
    assert check_denoiser_params("dart", {"t_m": 98.0}) == {"t_m": 98}
    assert check_denoiser_params("tce", {"num_gradual": "0.5ep"}) == {"num_gradual": "0.5ep"}  # a span
    assert check_denoiser_params("dart", {"t_m": "30%"}) == {"t_m": "30%"}
    assert check_denoiser_params("tce", {"eps_max": 0.0}) == {"eps_max": 0.0}
    assert check_denoiser_params("future_denoiser", {"x": 3}) == {"x": 3}  # not in the catalog: the registry decides
    for name, params, words in [
        ("tce", {"eps_max": 1.0}, "[0, 1)"),
        ("rce", {"beta": -0.1}, "[0, inf)"),
        ("lcd", {"alpha_b": 0}, "(0, inf)"),
        ("deca", {"C1": "x"}, "a number"),
        ("dart", {"t_m": 1.5}, "steps (1000), epochs ('1ep')"),
        ("tce", {"num_gradual": -3}, "out of range"),
        ("tce", {"num_gradual": "2 weeks"}, "'30%'"),
        ("bootstrap_soft", {"attach_target": 1}, "true or false"),
        ("tce", {"beta": 0.2}, "tce has no option 'beta'"),
        ("observation", {"form": "examinaton"}, "one of mixture, examination, product"),
        ("deca", {"objective": "papr"}, "one of marginal, paper"),
    ]:
        with pytest.raises(UsageError, match=r".*") as e:
            check_denoiser_params(name, params)
        assert words in str(e.value) and next(iter(params)) in str(e.value)


def test_check_config_types_every_field_and_normalises() -> None:
    cfg = Config()
    cfg.optim.lr, cfg.run.epochs, cfg.data.shuffle = 1, 2.0, True
    check_config(cfg)
    assert isinstance(cfg.optim.lr, float) and cfg.run.epochs == 2 and isinstance(cfg.run.epochs, int)
    for section, key, value, words in [
        ("data", "shuffle", "yes", "true or false"),
        ("run", "eval_during", "valid", "a list"),
        ("run", "eval_during", ["train"], "unknown split"),
        ("optim", "min_lr_ratio", 1.5, "[0, 1]"),
        ("run", "keep_checkpoints", 0, "[1, inf)"),
        ("model", "params", [1], "a mapping"),
    ]:
        cfg = Config()
        setattr(getattr(cfg, section), key, value)
        with pytest.raises(UsageError) as e:
            check_config(cfg)
        assert f"{section}.{key}" in str(e.value) and words in str(e.value), str(e.value)


def test_catalog_choices_and_needs_agree_with_the_constructors() -> None:
    """Every choice the catalog lists is one its constructor accepts (FORMS, OBJECTIVES, STRUCTURES, LAYOUTS),
    and the context-tower denoisers are those whose class declares ``NEEDS.context_tower``.
    """
    from denoisrec.denoisers.deca import DeCA
    from denoisrec.denoisers.observation import FORMS
    from denoisrec.models.dcnv2 import STRUCTURES
    from denoisrec.models.first_order import LAYOUTS
    from denoisrec.trainer.config.options import CONTEXT_TOWER_DENOISERS

    assert set(DENOISER_OPTIONS["observation"]["form"].choices) == set(FORMS)
    assert set(DENOISER_OPTIONS["deca"]["objective"].choices) == set(DeCA.OBJECTIVES)
    assert set(MODEL_OPTIONS["dcnv2"]["structure"].choices) == set(STRUCTURES)
    assert set(MODEL_OPTIONS["fm"]["first_order"].choices) == set(LAYOUTS)
    assert set(CONTEXT_TOWER_DENOISERS) == {n for n, c in DENOISERS.items() if c.NEEDS.context_tower}


def test_yaml_on_off_reach_string_choice_fields_as_the_documented_words() -> None:
    """``--set run.pipeline=off`` arrives from YAML as ``False``: the check gives the field its word back."""
    from denoisrec.trainer.config.tree import apply_overrides

    cfg = check_config(apply_overrides(Config(), ["run.pipeline=off", "run.nonfinite=off"]))
    assert (cfg.run.pipeline, cfg.run.nonfinite) == ("off", "off")
    assert check_config(apply_overrides(Config(), ["run.pipeline=on"])).run.pipeline == "on"
    with pytest.raises(UsageError, match="run.nonfinite=True"):  # no "on" among nonfinite's choices
        check_config(apply_overrides(Config(), ["run.nonfinite=on"]))


def test_the_checks_say_the_nearest_name_themselves() -> None:
    """Each refusal of a mistyped name carries its own "did you mean" (nothing parses the message later)."""
    from denoisrec.trainer.config.options import check_choice
    from denoisrec.trainer.config.tree import apply_overrides

    for call, words in [
        (lambda: check_choice("optim.decay", "cosin", ("none", "linear", "cosine")), "did you mean 'cosine'?"),
        (lambda: check_denoiser_params("observation", {"form": "examinaton"}), "did you mean 'examination'?"),
        (lambda: check_denoiser_params("rce", {"bta": 0.2}), "did you mean 'beta'?"),
        (lambda: apply_overrides(Config(), ["run.epoch=2"]), "did you mean 'epochs'?"),
        (lambda: apply_overrides(Config(), ["optm.lr=2"]), "did you mean 'optim'?"),
        (lambda: Config.from_dict({"data": {"batchsize": 2}}), "did you mean 'batch_size' or 'eval_batch_size'?"),
    ]:
        with pytest.raises(UsageError) as e:
            call()
        assert str(e.value).endswith(words) and str(e.value).count("did you mean") == 1, str(e.value)
    with pytest.raises(UsageError) as e:
        check_choice("run.device", "tpu", ("auto", "cuda"))
    assert "did you mean" not in str(e.value)  # nothing close: no guess
