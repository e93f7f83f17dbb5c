"""A curious coordinator against the two releases added last: transfer counts and loss-landscape sums.

The coordinator writes the request; the site answers through the real ClientApp (Flower's Message
API). It tries what worked against evaluation before the site policy existed: one patient per
cell (``attack-samples = 1`` with ``min-cell-size = 0``), and differencing by sample count (two
requests that differ by one sample). The site's own policy refuses the first before it touches
data, and the site's fixed evaluation set makes the second return the same release twice.
"""

from __future__ import annotations

import pytest
import torch
from flwr.app import Context, RecordDict

from fedaegis.client.app import app
from fedaegis.shared.reply.protocol import POLICY_REFUSAL
from site_messages import request

SITE = {"partition-id": 0, "num-partitions": 3}
ASKS = {
    "transfer": {"transfer": True, "epsilons": "8/255", "num-server-rounds": 1, "local-epochs": 1},
    "landscape": {"landscape": True, "landscape-points": 2, "epsilons": "8/255", "num-server-rounds": 1,
                  "local-epochs": 1},
}


def _context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def _round(ask: dict, context: Context) -> dict:
    """The coordinator's round: train (the site keeps what it sent), then evaluate the model it sent back."""
    trained = app(request("train", ask), context)
    assert not trained.has_error(), trained.error
    reply = app(request("evaluate", ask, trained.content["arrays"].to_torch_state_dict()), context)
    assert not reply.has_error(), reply.error
    return dict(reply.content["metrics"])


@pytest.mark.parametrize("release", sorted(ASKS))
def test_one_patient_cells_are_refused_by_the_built_in_policy(release, monkeypatch):
    monkeypatch.delenv("FEDAEGIS_SITE_POLICY")  # the site runs the built-in policy, not the tests' permissive one
    context = _context(dict(SITE))
    for extra, field in (({"min-cell-size": 0}, "release.min-cell-size"), ({}, "release.min-eval-samples")):
        reply = app(request("evaluate", {**ASKS[release], "attack-samples": 1, **extra}), context)
        assert reply.has_error() and reply.error.code == POLICY_REFUSAL
        assert reply.error.reason == f"site policy: {field}"  # a fixed code and a policy field, nothing of the data


@pytest.mark.parametrize("release", sorted(ASKS))
def test_differencing_by_one_sample_gets_the_same_release(release, tmp_path, monkeypatch):
    # the built-in release rules (fixed evaluation sizes from the site's own secret), noise off so that
    # any difference between the two replies would show exactly
    policy = tmp_path / "site-policy.toml"
    policy.write_text("[dp]\nrequired = false\n")
    monkeypatch.delenv("FEDAEGIS_SITE_POLICY")
    node = {**SITE, "policy": str(policy)}
    torch.manual_seed(0)
    replies = [_round({**ASKS[release], "attack-samples": k}, _context(node)) for k in (32, 33)]
    prefix = f"{release}."
    released = [{k: v for k, v in r.items() if k.startswith(prefix)} for r in replies]
    assert released[0], f"no {release} keys in the reply"
    assert released[0] == released[1]  # 33 asked, the site's fixed set of 32 used: nothing to subtract
    sizes = {v for k, v in released[0].items() if k.endswith("n-count")}
    assert sizes == {32}
