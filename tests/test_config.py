import tomllib
from pathlib import Path

import pytest

from fedaegis.shared.run.config import ConfigError, RunConfig

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


# -- sections, dotted keys and pyproject (issue 15, item 3) ----------------------------------------
from dataclasses import fields  # noqa: E402

import torch  # noqa: E402
from flwr.common.config import flatten_dict  # noqa: E402
from torch import nn  # noqa: E402

from fedaegis.shared.run import config as config_module  # noqa: E402
from fedaegis.shared.run.config import (
    ATTRS,
    SECTIONS,
    AttackSection,
    DataShape,
    TrainingSection,
    pyproject_table,
    write_pyproject,
)


def test_pyproject_table_is_generated_from_the_sections(tmp_path):
    """pyproject's table is exactly what the sections generate; Flower reads it as the same flat dict."""
    text = (ROOT / "pyproject.toml").read_text()
    assert "[tool.flwr.app.config]\n" + pyproject_table() in text, \
        "pyproject.toml is stale: run `python -m fedaegis.shared.run.config pyproject.toml`"
    table = tomllib.loads(text)["tool"]["flwr"]["app"]["config"]
    assert flatten_dict(table) == RunConfig().to_flower()  # as Flower flattens it, dotted keys included
    copy = tmp_path / "pyproject.toml"
    copy.write_text(text.replace("local-epochs = 5", "local-epochs = 7"))
    assert write_pyproject(copy) and copy.read_text() == text and not write_pyproject(copy)


def test_every_key_has_one_section_and_reads_flat_or_by_section():
    cfg = RunConfig.from_flower({"local-epochs": 2, "attack.pgd.steps": 3, "hardening": "trades",
                                 "hardening.trades.beta": 2.5})
    owners = [key for section in SECTIONS for key in section.keys()]
    assert len(owners) == len(set(owners))
    for section in SECTIONS:
        view = getattr(cfg, section.view)
        assert type(view) is section
        for f in fields(section):
            assert getattr(view, f.name) == getattr(cfg, f.name)
    assert cfg.training.local_epochs == cfg.local_epochs == 2
    assert cfg.attack.attack_pgd_steps == 3 and cfg.defence.hardening_trades_beta == 2.5
    assert set(ATTRS) == set(cfg.to_flower()) and "attack.square.queries" in ATTRS


def test_a_section_built_alone_checks_itself():
    with pytest.raises(ConfigError, match="'local-epochs'"):
        TrainingSection(local_epochs=0)
    with pytest.raises(ConfigError, match="'attack.pgd.restarts'"):
        AttackSection(attack_pgd_restarts=0)


def test_data_shape_is_one_value():
    cfg = RunConfig(in_channels=3, spatial_dims=3, image_size=32, num_classes=4)
    assert cfg.shape == cfg.data.shape == DataShape(channels=3, spatial_dims=3, size=32, classes=4)
    assert cfg.shape.image_size == (32, 32, 32)


def test_3d_medmnist_sites_load_volumes(shared_data):
    """The 3D MedMNIST file loads at a simulated site as 28^3 volumes (the size comes from the shape)."""
    from fedaegis.client.site import site_data

    path = shared_data / "adrenalmnist3d" / "adrenalmnist3d.npz"
    cfg = RunConfig(dataset=str(path), spatial_dims=3, num_sites=3)
    data = site_data(cfg, {"partition-id": 0, "num-partitions": 3})
    assert tuple(data.train.images.shape[1:]) == (1, 28, 28, 28)


def test_method_parameter_defaults_are_the_registries():
    """Each dotted key's default is its attack's or hardening method's own constructor default."""
    from fedaegis.shared.attacks import attack_params
    from fedaegis.shared.hardening import hardening_params

    lookup = {"attack": attack_params, "hardening": hardening_params}
    for section in SECTIONS:
        for f in fields(section):
            if "method" in f.metadata:
                registry = f.metadata["key"].split(".")[0]
                assert lookup[registry](f.metadata["method"])[f.metadata["arg"]] == f.default, f.metadata["key"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"attack.pgd.step": 3}, "attack.pgd.step"),  # unknown dotted key
        ({"attack.pgd.steps": 0}, "attack.pgd.steps"),
        ({"attack.square.queries": "many"}, "attack.square.queries"),
        ({"hardening.trades.beta": -1.0}, "hardening.trades.beta"),
        ({"hardening": "adversarial"}, "hardening"),  # the registry's names, not a copy
        ({"attacks": "pgd,nonexistent"}, "attacks"),
        ({"detector": "lid"}, "detector"),
        ({"defence-models": "none,fgsm-at"}, "defence-models"),
        ({"seg-attacks": "pgd,fgsm"}, "seg-attacks"),
        ({"seg-attacks": "pgd,pgd"}, "seg-attacks"),
        ({"seg-target": "move:3"}, "seg-target"),
        ({"seg-target": "shift:x"}, "seg-target"),
        ({"aggregation": "krum", "num-malicious": 1}, "num-malicious"),  # krum: min-sites >= 2f + 3
        ({"clip-norm": 1.0, "norm": "batch"}, "clip-norm"),
    ],
)
def test_bad_choice_or_unknown_key_is_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'") as err:
        RunConfig.from_flower(override)
    assert "\n" not in str(err.value)


def test_unknown_key_suggests_the_near_one():
    with pytest.raises(ConfigError, match="did you mean attack.pgd.steps"):
        RunConfig.from_flower({"attack.pgd.step": 3})


def test_a_site_key_in_the_run_config_says_where_it_belongs():
    """``-c device=cuda`` was an unknown key with no hint: the device is the site's choice."""
    with pytest.raises(ConfigError, match=r"^run config 'device': unknown key; a site chooses its own device in "
                                          r"its node config .* fedaegis simulate --client-gpus$"):
        RunConfig.from_flower({"device": "cuda"})
    with pytest.raises(ConfigError, match="names its own data in its node config"):
        RunConfig.from_flower({"data-path": "/data"})


def test_registries_lists_are_read_not_copied():
    from fedaegis.shared.run.aggregations import AGGREGATIONS
    from fedaegis.shared.hardening import HARDENINGS

    assert config_module.HARDENINGS == ("none", *HARDENINGS)
    assert config_module.AGGREGATIONS is AGGREGATIONS


class _Sin(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(300 * x)


def test_attack_steps_reach_the_attack():
    """attack.pgd.steps = 1 is a weaker attack than 10 at the site's evaluation (client/robustness.py)."""
    from fedaegis.client.robustness import evaluate_robustness
    from fedaegis.shared.attacks import build_attack
    from fedaegis.shared.data import ImageSet

    cfg = RunConfig.from_flower({"attacks": "pgd,square", "attack.pgd.steps": 1, "attack.square.queries": 7})
    pgd, square = cfg.attack_suite
    assert build_attack(**pgd).steps == 1 and build_attack(**square).n_queries == 7
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), _Sin(), nn.Linear(64, 2))
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        data = ImageSet(x, model(x).argmax(1), 2, "tiny")
    robust = {}
    for steps in (1, 10):
        run = RunConfig.from_flower({"attacks": "pgd", "epsilons": "4/255", "attack.pgd.steps": steps})
        metrics = evaluate_robustness(model, data, run, seed=0)
        robust[steps] = next(v for k, v in metrics.items() if k.endswith("robust-correct"))
    assert robust[1] > robust[10]


def test_hardening_parameters_reach_the_method():
    from fedaegis.client.classification_round import build_objective as hardening_method

    cfg = RunConfig.from_flower({"hardening": "trades", "hardening.trades.beta": 2.5})
    assert hardening_method("trades", cfg).beta == 2.5
    assert hardening_method("mart", cfg).beta == 6.0


def test_a_hardening_parameter_for_an_unused_method_is_refused():
    """Flower's --run-config given `hardening=...` and an unquoted `hardening.trades.beta=...` in two
    options drops `hardening`; the orphaned parameter is then refused instead of silently ignored."""
    from flwr.common.config import parse_config_args

    flat = parse_config_args(['hardening="trades"', "hardening.trades.beta=3.0"])
    with pytest.raises(ConfigError, match="'hardening.trades.beta'"):
        RunConfig.from_flower(flat)
    quoted = parse_config_args(['hardening="trades"', '"hardening.trades.beta"=3.0'])
    assert RunConfig.from_flower(quoted).hardening_params("trades") == {"beta": 3.0}
    assert RunConfig(defence_models="none,mart", hardening_mart_beta=3.0).hardening_params("mart") == {"beta": 3.0}


def test_the_preflight_reads_the_same_shape(shared_data):
    from fedaegis.shared.run.preflight import check_config, dataset_facts

    facts = dataset_facts(str(shared_data / "adrenalmnist3d" / "adrenalmnist3d.npz"))
    cfg = check_config({"dataset": "x.npz", **facts.run_config()})
    assert cfg.shape == facts.shape == DataShape(channels=1, spatial_dims=3, size=28, classes=2)


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
