"""A MONAI bundle's own network, read without ConfigParser and built the same restricted way at the sites.

The coordinator is honest-but-curious: whatever it puts in a bundle or a run config, a site builds
only a class of monai.networks.nets with plain arguments (shared/models/bundle.py), and a real
site only one its policy lists.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord
from typer.testing import CliRunner

from fedaegis.client.app import app as client_app
from fedaegis.orchestration.cli import app
from fedaegis.shared.models.bundle import BUNDLE_CONFIGS
from fedaegis.shared.models.custom import load_weights
from fedaegis.shared.models.tasks import build_task_model, model_meta
from fedaegis.shared.reply.protocol import POLICY_REFUSAL, SITE_ERROR
from fedaegis.shared.run.config import SERVER_ONLY_KEYS, ConfigError, RunConfig
from fedaegis.shared.run.preflight import PreflightError, check_config, preflight
from fedaegis.shared.site.policy import Refusal, SitePolicy, check_request
from fedaegis.tests.site_messages import ask

#: A tiny DenseNet121 (3.8 k parameters): MONAI's class, small blocks so a test builds it in milliseconds.
NETWORK_DEF = {"_target_": "monai.networks.nets.DenseNet121", "spatial_dims": 2, "in_channels": 1,
               "out_channels": 2, "init_features": 8, "growth_rate": 4, "block_config": [2, 2]}
OWN_ARGS = {"init_features": 8, "growth_rate": 4, "block_config": [2, 2]}  # all but the run's shape


def _bundle(folder: Path, network_def: dict, *, weights: dict[str, torch.Tensor] | None = None,
            config: str = "configs/inference.json") -> Path:
    """A bundle folder as MONAI writes one: configs/*.json with network_def (and the usual
    ``$`` line that uses it) and models/model.pt."""
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    (folder / config).write_text(json.dumps({"device": "$torch.device('cpu')", "network_def": network_def,
                                             "network": "$@network_def.to(@device)"}))
    torch.save(weights or {}, folder / "models" / "model.pt")
    return folder


@pytest.fixture
def bundle(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A real bundle of a DenseNet121 and that very network's trained-looking weights."""
    from monai.networks import nets

    torch.manual_seed(7)
    net = nets.DenseNet121(**{k: v for k, v in NETWORK_DEF.items() if k != "_target_"})
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))  # not the initialisation any seed gives a site
    state = {k: v.clone() for k, v in net.state_dict().items()}
    return _bundle(tmp_path / "bundle", NETWORK_DEF, weights=state), state


def test_the_bundles_network_travels_as_run_config_and_a_site_builds_it_with_the_bundles_weights(bundle):
    folder, state = bundle
    cfg = check_config({"weights": str(folder)})
    assert cfg.model == "monai:DenseNet121" and json.loads(cfg.model_args) == OWN_ARGS
    preflight(cfg, 2, database=False)
    # the coordinator's first global model, as server/app.py's run_federation builds it
    torch.manual_seed(cfg.seed)
    first = load_weights(build_task_model(model_meta(cfg)), cfg.weights)
    sent = ArrayRecord(first.state_dict())
    # a site knows only the request (client_config; 'weights' is a path it never opens) and the arrays
    request = {k: v for k, v in cfg.to_flower().items() if k not in SERVER_ONLY_KEYS}
    site_cfg = RunConfig.from_flower(request)
    torch.manual_seed(123)
    site_model = build_task_model(model_meta(site_cfg))
    assert type(site_model).__name__ == "DenseNet121"
    site_model.load_state_dict(sent.to_torch_state_dict())
    assert site_model.state_dict().keys() == state.keys()
    assert all(torch.equal(site_model.state_dict()[k], v) for k, v in state.items())
    assert site_model(torch.rand(3, 1, 28, 28)).shape == (3, 2)
    assert check_config(cfg.to_flower()) == cfg  # idempotent: a resumed or re-checked run keeps it


def test_a_yaml_train_config_is_read_when_there_is_no_inference_config(tmp_path):
    import yaml

    folder = tmp_path / "bundle"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "train.yaml").write_text(yaml.safe_dump({"network_def": {**NETWORK_DEF,
                                                                                  "_target_": "DenseNet121"}}))
    assert BUNDLE_CONFIGS.index("configs/inference.json") < BUNDLE_CONFIGS.index("configs/train.yaml")
    cfg = check_config({"weights": str(folder)})
    assert cfg.model == "monai:DenseNet121" and json.loads(cfg.model_args) == OWN_ARGS


@pytest.mark.parametrize(("change", "key", "why"), [
    ({"_target_": "os.system", "command": "touch {canary}"}, "network_def._target_",
     "'os.system' is not a MONAI network (monai.networks.nets)"),
    ({"_target_": "monai.networks.nets.densenet.torch.load"}, "network_def._target_", "is not a MONAI network"),
    ({"init_features": "$__import__('pathlib').Path('{canary}').touch() or 8"}, "network_def.init_features",
     "is a '$' expression"),
    ({"growth_rate": "@growth"}, "network_def.growth_rate", "is an '@' reference"),
    ({"block_config": "%configs/train.json#blocks"}, "network_def.block_config", "is a '%' macro"),
    ({"act": ["relu", {"_target_": "os.system", "command": "touch {canary}"}]}, "network_def.act[1]._target_",
     "a nested _target_ is refused"),
    ({"_requires_": "$print('hi')"}, "network_def._requires_", "is refused"),
    ({"_mode_": "callable"}, "network_def._mode_", "is refused"),
    ({"_disabled_": False}, "network_def._disabled_", "is refused"),
    ({"pretrained": True}, "network_def.pretrained", "never from a download at a site"),
    ({"in_channels": 3}, "network_def.in_channels", "= 3 does not fit the data: run config 'in-channels' = 1"),
])
def test_anything_but_a_plain_monai_network_is_refused_naming_the_file_and_key(tmp_path, change, key, why):
    canary = tmp_path / "ran"
    network_def = {**NETWORK_DEF, **{k: json.loads(json.dumps(v).replace("{canary}", str(canary)))
                                     for k, v in change.items()}}
    folder = _bundle(tmp_path / "bundle", network_def)
    with pytest.raises(PreflightError) as refused:
        check_config({"weights": str(folder)})
    message = str(refused.value)
    assert "\n" not in message and f"{folder / 'configs' / 'inference.json'}: {key}" in message and why in message
    assert not canary.exists()  # nothing in the bundle ran


def test_model_and_model_args_must_agree_with_the_bundle(bundle):
    folder, _ = bundle
    with pytest.raises(PreflightError, match=r"'model' = 'resnet18' but .* is a MONAI bundle of monai:DenseNet121"):
        check_config({"weights": str(folder), "model": "resnet18"})
    with pytest.raises(PreflightError, match="'model-args' .* differs from"):
        check_config({"weights": str(folder), "model": "monai:DenseNet121", "model-args": '{"init_features": 16}'})
    same = check_config({"weights": str(folder), "model": "monai:DenseNet121", "model-args": json.dumps(OWN_ARGS)})
    assert same == check_config({"weights": str(folder)})


def test_a_batchnorm_network_is_refused_for_dp_sgd_and_clip_norm_before_the_run(bundle):
    folder, _ = bundle
    for key, value in (("dp-epsilon", 4.0), ("clip-norm", 1.0)):
        cfg = check_config({"weights": str(folder), key: value})  # norm 'group' (the default) is not the network's
        with pytest.raises(PreflightError, match=f"'model' = 'monai:DenseNet121' has BatchNorm layers, which "
                                                 f"run config '{key}' cannot train"):
            preflight(cfg, 2, database=False)
    group = RunConfig(model="monai:DenseNet121", model_args=json.dumps({**OWN_ARGS, "norm": ["group", {"num_groups": 4}]}),
                      dp_epsilon=4.0)
    preflight(group, 2, database=False)  # GroupNorm through the network's own argument: accepted


def test_model_args_written_by_hand_are_read_the_same_restricted_way():
    cfg = RunConfig(model="monai:DenseNet121", model_args=json.dumps(OWN_ARGS), in_channels=3, num_classes=4)
    model = build_task_model(model_meta(cfg))
    assert model.features.conv0.in_channels == 3 and model(torch.rand(2, 3, 28, 28)).shape == (2, 4)
    for args, why in [('{"init_features": "$8"}', "is a '$' expression"),
                      ('{"act": {"_target_": "os.system"}}', "nested _target_"),
                      ('{"in_channels": 3}', "is the run's in-channels"),
                      ('{"pretrained": "/etc/shadow"}', "never from a download"),
                      ('[1, 2]', "must be an object of arguments"),
                      ('{"init_features": 8', "is not JSON")]:
        with pytest.raises(ConfigError, match=r"run config 'model-args' = .*" + why.replace("$", r"\$")):
            RunConfig(model="monai:DenseNet121", model_args=args)
    with pytest.raises(ConfigError, match="needs model 'monai:<Name>'"):
        RunConfig(model="cnn", model_args='{"init_features": 8}')


def test_a_class_that_downloads_weights_by_default_is_built_without_downloading():
    """EfficientNetBN defaults to pretrained=True (a download at the site); the weights come from the federation."""
    from fedaegis.shared.models.bundle import network_spec

    spec = network_spec("monai:EfficientNetBN", {"model_name": "efficientnet-b0"}, target_key="model", args_key="a")
    assert spec.args == {"model_name": "efficientnet-b0", "pretrained": False}
    cfg = RunConfig(model="monai:EfficientNetBN", model_args='{"model_name": "efficientnet-b0"}', image_size=32)
    assert build_task_model(model_meta(cfg))(torch.rand(2, 1, 32, 32)).shape == (2, 2)


@pytest.mark.parametrize("model", ["monai:os.system", "monai:../x", "monai:nets.DenseNet121", "monai:densenet",
                                   "monai:_DenseLayer"])
def test_a_name_outside_monai_networks_is_never_built(model):
    with pytest.raises(ValueError, match=r"is not a MONAI network \(monai.networks.nets\)"):
        build_task_model(model_meta(RunConfig(model=model)))


def test_a_real_site_builds_a_monai_network_only_when_its_policy_lists_it():
    cfg = RunConfig(model="monai:DenseNet121", model_args=json.dumps(OWN_ARGS))
    real, simulated = {"data-path": "/data/xray"}, {"partition-id": 0, "num-partitions": 2}
    with pytest.raises(Refusal) as refused:
        check_request(cfg, SitePolicy(), is_train=True, node_config=real)  # "*" never covers it
    assert refused.value.field == "allow.models"
    with pytest.raises(Refusal):
        check_request(cfg, SitePolicy(allow_models=("monai:DenseNet169", "densenet121")), is_train=True,
                      node_config=real)
    check_request(cfg, SitePolicy(allow_models=("monai:DenseNet121",)), is_train=True, node_config=real)
    check_request(cfg, SitePolicy(), is_train=True, node_config=simulated)


@pytest.fixture
def site_env(monkeypatch, tmp_path):
    """The site names its own policy file (none: the built-in defaults); state in a fresh folder."""
    monkeypatch.delenv("FEDAEGIS_SITE_POLICY", raising=False)
    monkeypatch.setenv("FEDAEGIS_HOME", str(tmp_path / "home"))

    def policy(text: str) -> str:
        path = tmp_path / "site-policy.toml"
        path.write_text(text)
        return str(path)

    return policy


def test_a_hand_written_request_for_code_is_refused_at_the_site(site_env, shared_data, caplog):
    """The real ClientApp at a real PneumoniaMNIST site: the request never gets a network outside nets."""
    from fedaegis.client.site_log import relay_simulated_site_log

    real = {"data-path": str(shared_data / "pneumoniamnist" / "pneumoniamnist.npz")}
    state = {"w": torch.zeros(1)}  # the coordinator's arrays: never reached
    for model in ("monai:os.system", "monai:../x"):
        reply = ask(client_app, "train", {"model": model, "local-epochs": 1}, real, state)
        assert reply.error.code == POLICY_REFUSAL and reply.error.reason == "site policy: allow.models"
        # a site that listed the name by mistake (or a simulated site) still builds nothing
        listed = {**real, "policy": site_env(f'[allow]\nmodels = ["{model}"]\n')}
        simulated = {"partition-id": 0, "num-partitions": 2}
        # caplog's handler on the site's own logger, after the simulated site's log is routed (which
        # sets that logger's handlers once per process; the CLI's console may stop its propagation)
        relay_simulated_site_log(simulated)
        site_log = logging.getLogger("fedaegis.site")
        for node_config in (listed, simulated):
            caplog.clear()
            site_log.addHandler(caplog.handler)
            try:
                with caplog.at_level(logging.ERROR, logger="fedaegis.site"):
                    reply = ask(client_app, "train", {"model": model, "local-epochs": 1}, node_config, state)
            finally:
                site_log.removeHandler(caplog.handler)
            assert reply.error.code == SITE_ERROR and reply.error.reason == "site error"
            assert "is not a MONAI network" in caplog.text


def test_a_listed_network_is_built_from_the_request_at_a_real_site(site_env, shared_data, bundle):
    folder, state = bundle
    cfg = check_config({"weights": str(folder), "attacks": ""})
    request = {k: v for k, v in cfg.to_flower().items() if k not in SERVER_ONLY_KEYS}  # client_config
    real = {"data-path": str(shared_data / "pneumoniamnist" / "pneumoniamnist.npz"),
            "policy": site_env('[allow]\nmodels = ["monai:DenseNet121"]\n')}
    reply = ask(client_app, "evaluate", request, real, state)
    assert not reply.has_error(), reply.error
    assert reply.content["metrics"]["num-examples"] == 624  # the site's whole test split, through the network


def test_simulate_refuses_a_bundle_with_code_in_one_line(tmp_path):
    canary = tmp_path / "ran"
    folder = _bundle(tmp_path / "bundle", {**NETWORK_DEF, "_target_": "os.system", "command": f"touch {canary}"})
    res = CliRunner().invoke(app, ["simulate", "--sites", "2", "--rounds", "1", "--attacks", "", "--db-url",
                                   f"sqlite:///{tmp_path / 'r.db'}", "-c", f"weights={folder}"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert (f"-c weights = '{folder}': {folder}/configs/inference.json: network_def._target_ 'os.system' is not a "
            "MONAI network (monai.networks.nets)") in text and "Traceback" not in res.output
    assert not canary.exists()
