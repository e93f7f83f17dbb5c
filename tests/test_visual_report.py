"""Issue 19 item 4: the site-local visual report is written at the site and appears in no reply.

The real ClientApp answers the same final-round evaluation request at a real PneumoniaMNIST
site twice, under a policy with the report off and on: the replies are identical (every key
and value), and only the second leaves a page in the site's own folder, with its four parts.
"""

from __future__ import annotations

import pytest
import torch

from fedaegis.client.app import app
from fedaegis.client.visual_report import last_conv
from fedaegis.shared.run.config import RunConfig
from fedaegis.shared.models.tasks import build_task_model, model_meta

from fedaegis.tests.site_messages import ask

PERMISSIVE = """
[release]
min-cell-size = 0
min-eval-samples = 1
eval-sizes = []
[dp]
required = false
[site]
state-dir = "{state}"
visual-report = {on}
"""


def _reply_content(reply) -> dict:
    assert not reply.has_error(), reply.error
    return {name: dict(record) for name, record in reply.content.items()}


@pytest.mark.slow
def test_report_is_written_at_the_site_and_never_sent(shared_data, tmp_path, monkeypatch):
    monkeypatch.delenv("FEDAEGIS_SITE_POLICY", raising=False)
    torch.set_num_threads(1)
    npz = shared_data / "pneumoniamnist" / "pneumoniamnist.npz"
    cfg = {"num-server-rounds": 1, "attacks": "fgsm", "epsilons": "8/255", "attack-samples": 32}
    torch.manual_seed(0)
    state = build_task_model(model_meta(RunConfig.from_flower(cfg))).state_dict()
    replies = {}
    folder = tmp_path / "site"  # one site: the same secret, so the same evaluation set both times
    for on in ("false", "true"):
        policy = tmp_path / f"policy-{on}.toml"
        policy.write_text(PERMISSIVE.format(state=folder, on=on))
        reply = ask(app, "evaluate", cfg, {"data-path": str(npz), "policy": str(policy)}, state)
        replies[on] = _reply_content(reply)
        assert (folder / "reports").exists() == (on == "true")
    assert replies["true"] == replies["false"]  # the report changes nothing that leaves
    pages = list((folder / "reports").glob("run-*/index.html"))
    assert len(pages) == 1
    page = pages[0].read_text()
    for part in ("Clean against adversarial, with Grad-CAM", "Confusion matrices", "Detector scores (mahalanobis)"):
        assert f"<h2>{part}</h2>" in page, part
    assert page.count("<img src='data:image/png;base64,") == 3
    assert pages[0].stat().st_mode & 0o077 == 0  # owner-only, like the rest of the site's state
    sent = repr(replies["true"])
    assert "Grad-CAM" not in sent and "base64" not in sent


def test_grad_cam_layer_is_the_last_convolution():
    model = build_task_model(model_meta(RunConfig()))
    name = last_conv(model)
    assert isinstance(dict(model.named_modules())[name], torch.nn.Conv2d)
