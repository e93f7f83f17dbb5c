"""End to end: each site audits its own first update for gradient inversion; DP-SGD stops it.

The sites train the DLG paper's LeNet (``model = "lenet"``), the reference model of
the gradient-leakage literature, and reconstruct their own first training image from
the very update they are about to send (iDLG). Only PSNR/SSIM sums and counts leave
a site; the server stores the mean per run and ``fedaegis show`` prints it.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedaegis.orchestration.cli import app as cli
from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow

# One image's PSNR is a group of one: it leaves only where the site's policy allows cell size 1
# (the suite's sites run under tests/policies/permissive.toml; the built-in defaults refuse it).
AUDIT = {"num-server-rounds": 1, "local-epochs": 1, "model": "lenet", "norm": "none",
         "inversion-audit": "idlg", "inversion-images": 1, "inversion-iterations": 200, "min-cell-size": 1}


def _inversion(db_url: str, run_uuid: str) -> dict[str, float]:
    rnd = RunStore(db_url).get_run(run_uuid)["rounds"][0]
    return {r["name"]: r["value"] for r in rnd["metric_rows"] if r["phase"] == "inversion"}


def test_inversion_audit_reconstructs_undefended_and_dp_sgd_stops_it(db_url, small_pneumonia):
    # the audit inverts one image's gradient on the initial model: the training set's size does not enter it
    plain = simulate({**AUDIT, "db-url": db_url, "dataset": small_pneumonia}, num_sites=2,
                     resources=SimulationResources(num_cpus=2))
    dp = simulate({**AUDIT, "db-url": db_url, "dataset": small_pneumonia, "dp-epsilon": 8.0}, num_sites=2,
                  resources=SimulationResources(num_cpus=2))
    undefended, defended = _inversion(db_url, plain), _inversion(db_url, dp)
    assert undefended["psnr"] > 20, undefended
    assert defended["psnr"] < 12, defended
    assert undefended["ssim"] > defended["ssim"]
    # the accountant's epsilon is stored with the run, and both numbers are shown by the CLI
    rows = RunStore(db_url).get_run(dp)["rounds"][0]["metric_rows"]
    epsilon = next(r["value"] for r in rows if r["phase"] == "privacy" and r["name"] == "dp-sgd-epsilon")
    assert 0 < epsilon <= 8.0 + 1e-6
    shown = CliRunner().invoke(cli, ["show", dp, "--db-url", db_url])
    assert shown.exit_code == 0, shown.output
    assert "inversion" in shown.output and "psnr" in shown.output
    as_json = json.loads(CliRunner().invoke(cli, ["show", plain, "--db-url", db_url, "--json"]).output)
    assert as_json["rounds"][0]["metrics"]["train.inversion-psnr"] > 20
    # the privacy/utility table: one row per run, defence, epsilon, accuracy, PSNR, SSIM
    table = json.loads(CliRunner().invoke(cli, ["privacy", "--db-url", db_url, "--json"]).output)
    assert table["schema"] == 1
    by_defence = {row["defence"]: row for row in table["runs"]}
    assert by_defence["none"]["epsilon"] is None and by_defence["none"]["psnr"] > 20
    assert 0 < by_defence["dp-sgd"]["epsilon"] <= 8.0 + 1e-6 and by_defence["dp-sgd"]["psnr"] < 12
    assert 0 <= by_defence["dp-sgd"]["accuracy"] <= 1
