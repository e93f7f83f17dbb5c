"""Mods take their settings when the app is built (issue 15): the site's ledger, given once to the
guard that checks the lifetime budget and to the DP mod that charges it; the request stays a request."""

from __future__ import annotations

import pytest

from fedaegis.client.app import build_client_app
from fedaegis.client.site import site_ledger
from fedaegis.shared.site.ledger import PrivacyLedger
from fedaegis.shared.reply.protocol import POLICY_REFUSAL
from site_messages import ask


def test_the_ledger_given_when_built_is_charged_and_guards_the_budget(shared_data, tmp_path):
    policy = tmp_path / "site-policy.toml"
    policy.write_text(f"[dp]\nmax-epsilon = 1.0\nlifetime-epsilon = 2.0\n[site]\nstate-dir = '{tmp_path / 'state'}'\n")
    site = {"data-path": str(shared_data / "pneumoniamnist" / "pneumoniamnist.npz"), "policy": str(policy)}
    book = PrivacyLedger(tmp_path / "own-ledger")
    app = build_client_app(ledger=lambda node_config: book)
    for run in (1, 2):
        reply = ask(app, "evaluate", {"metric-dp": "laplace", "metric-epsilon": 1.0}, site, run_id=run)
        assert not reply.has_error() and reply.content["metrics"]["dp.epsilon-sum"] == pytest.approx(1.0)
    assert [r.run for r in book.releases()] == ["1", "2"] and book.spent()[0] == pytest.approx(2.0)
    assert site_ledger(site).releases() == []  # the default ledger was not used
    refused = ask(app, "evaluate", {"metric-dp": "laplace", "metric-epsilon": 1.0}, site, run_id=3)
    assert refused.has_error() and refused.error.code == POLICY_REFUSAL
    assert refused.error.reason == "site policy: dp.lifetime-epsilon"
