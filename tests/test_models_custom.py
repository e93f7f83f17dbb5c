"""Your own model by import path and weights from a file, checked before a run (shared/models/custom.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fedaegis.orchestration.cli import app
from fedaegis.shared.run.config import RunConfig
from fedaegis.shared.models import build_model
from fedaegis.shared.models.custom import load_weights
from fedaegis.shared.site.policy import Refusal, SitePolicy, check_request

runner = CliRunner()


def test_own_model_is_built_with_the_keywords_it_takes():
    model = build_model("byo_models:tiny", in_channels=3, num_classes=5, spatial_dims=3)
    assert model(torch.rand(2, 3, 8, 8, 8)).shape == (2, 5)


def _simulate(tmp_path: Path, *args: str):
    return runner.invoke(app, ["simulate", "--sites", "2", "--rounds", "1", "--attacks", "", "--db-url",
                               f"sqlite:///{tmp_path / 'r.db'}", *args])


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "byo_models:wrong_outputs"], "--model = 'byo_models:wrong_outputs': gives (2, 7)"),
    (["--model", "byo_models:not_a_module"], "returned int, not a torch.nn.Module"),
    (["--model", "no_such_package.models:net"], "cannot import 'no_such_package.models'"),
    (["--model", "byo_models"], "unknown model 'byo_models'"),
    (["-c", "weights=/nowhere/model.pt"], "-c weights = '/nowhere/model.pt': /nowhere/model.pt not found"),
])
def test_mistakes_are_one_line_before_anything_starts(tmp_path, args, message):
    res = _simulate(tmp_path, *args)
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()) and "Traceback" not in res.output


def test_weights_from_a_state_dict_and_a_monai_bundle(tmp_path):
    source = build_model("cnn", in_channels=1, num_classes=2, norm="group")
    torch.save({"state_dict": source.state_dict()}, tmp_path / "trained.pt")
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, bundle / "models" / "model.pt")
    for path in (tmp_path / "trained.pt", bundle):
        target = build_model("cnn", in_channels=1, num_classes=2, norm="group")
        load_weights(target, path)
        assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    other = build_model("cnn", in_channels=1, num_classes=3, norm="group")
    with pytest.raises(ValueError, match=r"weights: .*head.weight has shape \(2, 64\), the model's is \(3, 64\)"):
        load_weights(other, tmp_path / "trained.pt")
    res = _simulate(tmp_path, "-c", f"weights={tmp_path / 'trained.pt'}", "-c", "num-classes=3")
    assert res.exit_code == 2 and "-c weights" in res.output and "head.weight" in " ".join(res.output.split())


def test_a_real_site_imports_only_models_its_policy_lists():
    cfg = RunConfig(model="byo_models:tiny")
    real, simulated = {"data-path": "/data/xray"}, {"partition-id": 0, "num-partitions": 2}
    with pytest.raises(Refusal) as refused:
        check_request(cfg, SitePolicy(), is_train=True, node_config=real)  # "*" never covers code to import
    assert refused.value.field == "allow.models"
    check_request(cfg, SitePolicy(allow_models=("byo_models:tiny",)), is_train=True, node_config=real)
    check_request(cfg, SitePolicy(), is_train=True, node_config=simulated)
    with pytest.raises(Refusal):
        check_request(RunConfig(model="resnet18"), SitePolicy(allow_models=("cnn",)), is_train=True, node_config=real)


def test_resnet_stem_suits_the_size():
    small = build_model("resnet10", in_channels=1, num_classes=2, image_size=28)
    large = build_model("resnet10", in_channels=1, num_classes=2, image_size=64)
    assert small.conv1.stride == (1, 1) and small.conv1.kernel_size == (3, 3)
    assert large.conv1.stride == (2, 2) and large.conv1.kernel_size == (7, 7)
    assert large(torch.rand(2, 1, 64, 64)).shape == (2, 2)
