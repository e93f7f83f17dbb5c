"""SSAT in the federation: sites with few labels learn adversarially from their unlabelled images too."""

from __future__ import annotations

import pytest

from fedaegis.client.classification_round import labelled_split
from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.shared.run.config import ConfigError, RunConfig
from fedaegis.shared.data import load_site_data
from fedaegis.shared.store import RunStore


def test_labelled_fraction_is_validated_naming_the_field():
    with pytest.raises(ConfigError, match="labelled-fraction"):
        RunConfig(labelled_fraction=0.0)
    with pytest.raises(ConfigError, match="labelled-fraction"):
        RunConfig(hardening="ssat")  # every image labelled: nothing for SSAT to learn from
    assert RunConfig(hardening="ssat", labelled_fraction=0.1).hardening == "ssat"


def test_labelled_split_is_seeded_and_keeps_every_image():
    cfg = RunConfig(labelled_fraction=0.25)
    data = load_site_data(cfg.dataset, split="train")
    labelled, unlabelled = labelled_split(cfg, data)
    again, _ = labelled_split(cfg, data)
    assert len(labelled) == round(0.25 * len(data)) and len(labelled) + len(unlabelled) == len(data)
    assert (labelled.labels == again.labels).all() and (labelled.images[:] == again.images[:]).all()
    assert labelled_split(RunConfig(), data) == (data, None)


@pytest.mark.slow
def test_federated_ssat_uses_the_unlabelled_images(db_url):
    run_uuid = simulate({"num-server-rounds": 1, "local-epochs": 1, "hardening": "ssat", "labelled-fraction": 0.2,
                         "hardening-eps": 2 / 255, "hardening-steps": 2, "db-url": db_url},
                        num_sites=2, resources=SimulationResources(num_cpus=2))
    run = RunStore(db_url).get_run(run_uuid)
    assert run["status"] == "completed"
    train = run["rounds"][0]["metrics"]
    # 20% of the embedded training split trained with labels; each labelled batch came with an
    # unlabelled batch of the same size from the other 80%
    assert train["train.num-examples"] == pytest.approx(0.2 * 4708, abs=4)
    assert train["train.train-unlabelled-count"] == pytest.approx(train["train.num-examples"], abs=2 * 32)
    assert 0 < run["rounds"][0]["metrics"]["evaluate.accuracy"] <= 1
