import tomllib
from pathlib import Path

import pytest

from fedaegis.shared.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_defaults_match_runconfig():
    flwr_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert RunConfig.from_flower(flwr_cfg) == RunConfig()
    assert set(flwr_cfg) == set(RunConfig().to_flower())


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"num-server-rounds": 0}, "num-server-rounds"),
        ({"partitioning": "random"}, "partitioning"),
        ({"dirichlet-alpha": 0.0}, "dirichlet-alpha"),
        ({"batch-size": "big"}, "batch-size"),
        ({"fraction-train": 1.5}, "fraction-train"),
        ({"norm": "layer"}, "norm"),
        ({"learnig-rate": 0.1}, "learnig-rate"),
        ({"spatial-dims": 4}, "spatial-dims"),
    ],
)
def test_bad_config_names_the_field(override, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        RunConfig.from_flower(override)


def test_roundtrip_and_coercion():
    cfg = RunConfig.from_flower({"learning-rate": 1, "num-server-rounds": 4.0})
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.num_server_rounds == 4
    assert RunConfig.from_flower(cfg.to_flower()) == cfg


@pytest.mark.parametrize(
    ("rule", "attacked"),
    [("final", [5]), ("all", [1, 2, 3, 4, 5]), ("every:2", [2, 4, 5]), ("every:1", [1, 2, 3, 4, 5]),
     ("EVERY:3", [3, 5])],
)
def test_attack_rounds_pick_the_rounds_that_run_attacks(rule, attacked):
    cfg = RunConfig.from_flower({"num-server-rounds": 5, "attacks": "fgsm", "attack-rounds": rule})
    assert [r for r in range(1, 6) if cfg.attacks_in_round(r)] == attacked
    assert RunConfig().attack_rounds == "final"  # by default a run pays for attacks once


@pytest.mark.parametrize("rule", ["every:0", "every", "every:x", "first", "2", ""])
def test_a_bad_attack_rounds_names_the_key(rule):
    with pytest.raises(ConfigError, match="'attack-rounds'"):
        RunConfig.from_flower({"attack-rounds": rule})
