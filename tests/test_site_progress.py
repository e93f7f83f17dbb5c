"""What a site writes to its own log (how far its training and attacks are, each file it skipped and
why) and, simulated under the live display, the progress it sends to it."""

from __future__ import annotations

import logging

import torch

from fedaegis.client.site_log import progress
from fedaegis.shared.attacks import evaluate_attacks
from fedaegis.shared.data import load_medmnist
from fedaegis.shared.data.sources import embedded_path
from fedaegis.shared.models import build_model
from fedaegis.shared.training import train_classifier


def _data(n: int):
    path = embedded_path("pneumoniamnist")
    return (load_medmnist(path, split).subset(torch.arange(n)) for split in ("train", "test"))


def test_training_and_attacks_log_their_progress_at_the_site(caplog):
    train, test = _data(64)
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=2)
    with caplog.at_level(logging.INFO, logger="fedaegis.site"):
        train_classifier(model, train, epochs=3, batch_size=32, lr=1e-3, progress=progress("training", every_s=0))
        evaluate_attacks(model, (test.images, test.labels), ["fgsm"], [4 / 255, 8 / 255],
                         progress=progress("attacks", every_s=0))
    lines = [r.getMessage() for r in caplog.records if r.name == "fedaegis.site"]
    training = [ln for ln in lines if ln.startswith("training: ")]
    assert [ln.split(",")[0] for ln in training] == [f"training: {k} of 3 (epoch)" for k in (1, 2, 3)]
    assert "s left" in training[0] and training[-1].endswith(", done")
    attacks = [ln for ln in lines if ln.startswith("attacks: ")]
    assert attacks[-1].startswith("attacks: 128 of 128 (fgsm)") and attacks[-1].endswith(", done")


def test_progress_is_throttled():
    seen = []
    report = progress("training", every_s=3600)
    logger = logging.getLogger("fedaegis.site")
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for k in range(1, 11):
            report(k, 10, "epoch")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(seen) == 1 and seen[0].startswith("training: 10 of 10 (epoch)")


def test_a_simulated_site_sends_its_work_to_the_display_and_a_real_site_does_not(capfd, monkeypatch):
    """Work events go to the log stream ``fedaegis simulate`` relays, once a second at most and at the end."""
    import json

    from fedaegis.client import site_log
    from fedaegis.shared.reply.protocol import EVENT_LEVEL, LOG_PREFIX, PROGRESS_ENV

    def lines() -> list[dict]:
        err = capfd.readouterr().err.splitlines()
        return [json.loads(ln.split(EVENT_LEVEL, 1)[1]) for ln in err if ln.startswith(LOG_PREFIX + EVENT_LEVEL)]

    saved = (list(site_log.log.handlers), site_log.log.level, list(site_log.work_log.handlers))
    site_log.log.handlers, site_log.work_log.handlers = [], []  # as in a fresh site process
    try:
        site_log.relay_simulated_site_log({"data-path": "/data/cxr"}, 4242)  # a real site
        real = progress("training")
        for k in range(1, 4):
            real(k, 3, "epoch")
        assert lines() == []  # its own log only
        site_log.relay_simulated_site_log({"partition-id": 1, "num-partitions": 2}, 4242)
        progress("training")(1, 1, "epoch")
        assert lines() == []  # no live display asked for them (flwr run, or simulate off a terminal)
        monkeypatch.setenv(PROGRESS_ENV, "1")  # as fedaegis simulate sets it for its display
        site_log.relay_simulated_site_log({"partition-id": 1, "num-partitions": 2}, 4242)
        report = progress("training")
        for k in range(1, 4):  # within a second: the first and the last
            report(k, 3, "epoch")
        events = lines()
        # the site's own config decides, not the environment: a real site under the same
        # variable, after a simulated one in this process, still keeps its progress to itself
        site_log.relay_simulated_site_log({"data-path": "/data/cxr"}, 4242)
        progress("training")(1, 1, "epoch")
        assert lines() == []
    finally:
        for handler in {*site_log.log.handlers, *site_log.work_log.handlers} - {*saved[0], *saved[2]}:
            handler.close()
        site_log.log.handlers, site_log.log.level, site_log.work_log.handlers = saved[0], saved[1], saved[2]
        site_log._NODE.set(None)
    assert [(e["event"], e["site"], e["task"], e["done"], e["total"], e["unit"]) for e in events] == [
        ("work", 4242, "training", 1, 3, "epoch"), ("work", 4242, "training", 3, 3, "epoch")]


def test_a_real_site_names_every_file_it_skips_and_why_in_its_own_log(tmp_path, caplog, shared_data):
    """A SuperNode with ``modality='DX'``: a CT file and a text file among real chest X-rays are skipped,
    each named with its reason in the site's log (``fedaegis.site``); the reply carries only the count."""
    import numpy as np
    import pydicom
    from PIL import Image

    from fedaegis.client.site import site_data
    from fedaegis.shared.run.config import RunConfig

    root = tmp_path / "site"
    data = np.load(embedded_path("pneumoniamnist"))
    images, labels = data["train_images"], data["train_labels"].ravel()
    for cls in (0, 1):
        (root / str(cls)).mkdir(parents=True)
        for i in np.flatnonzero(labels == cls)[:30]:
            Image.fromarray(images[i]).save(root / str(cls) / f"{i}.png")
    xray = shared_data / "dicom" / "nih_cxr" / "test1.dcm"  # Modality DX
    (root / "0" / "test1.dcm").write_bytes(xray.read_bytes())
    ct = pydicom.dcmread(xray)
    ct.Modality = "CT"
    ct.save_as(root / "1" / "ct.dcm")
    (root / "1" / "notes.txt").write_text("not an image")
    cfg = RunConfig(dataset=str(root), image_size=28, num_classes=2)
    with caplog.at_level(logging.WARNING, logger="fedaegis.site"):
        site = site_data(cfg, {"data-path": str(root), "modality": "DX"})
    named = sorted(r.getMessage() for r in caplog.records if r.name == "fedaegis.site")
    assert named == [f"site data {root}: skipped 1/ct.dcm: Modality (0008,0060) is 'CT'; expected one of ['DX']",
                     f"site data {root}: skipped 1/notes.txt: not a supported image file (.txt)"]
    assert len(site.train) + len(site.test) == 61  # 60 PNGs and the DX file
