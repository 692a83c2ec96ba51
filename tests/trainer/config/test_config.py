"""Config overrides from the command line."""


def test_numbers_without_a_dot_are_numbers() -> None:
    from denoisrec.trainer.config.tree import Config, apply_overrides, parse_params, parse_value

    cfg = apply_overrides(Config(), ["optim.weight_decay=1e-6", "optim.lr=2E-3", "model.params.mlp=[16, 16]"])
    assert cfg.optim.weight_decay == 1e-6 and cfg.optim.lr == 2e-3 and cfg.model.params["mlp"] == [16, 16]
    assert parse_params(["eps_max=1e-1", "name=dlrm", "k=3"]) == {"eps_max": 0.1, "name": "dlrm", "k": 3}
    assert parse_value("1e5") == 1e5 and parse_value("e5") == "e5" and parse_value("null") is None
