"""``fedaegis reproduce survey``: its table and page on given rows, its federation's request and
stored figures (a tiny real simulation), and the command's wiring.

The reproduction itself takes tens of minutes (README: "Transfer attacks and the survey's
findings"); here its pieces are checked one by one.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from fedaegis.orchestration import survey
from fedaegis.orchestration.survey import Finding

ROWS = [
    Finding("Hirano et al.: UAPs fool most inputs (BloodMNIST)", "non-targeted > 80%", "4/255 0.20, 8/255 0.50, "
            "15/255 0.90", True, "central: why", {"fooling@4": 0.2, "fooling@8": 0.5, "fooling@15": 0.9}),
    Finding("Paul et al.: <ensemble> & more", "ensemble >= one hardened model", "0.40 < 0.50", False,
            "federated: 3 sites"),
]


def test_markdown_has_every_row_and_counts_what_holds():
    text = survey.markdown(ROWS)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(ROWS)  # header and one line per finding
    assert lines[1].endswith("| central: why | non-targeted > 80% | 4/255 0.20, 8/255 0.50, 15/255 0.90 | yes |")
    assert lines[2].endswith("| no |")
    assert "1/2 directions hold." in text


def test_html_page_is_self_contained_escaped_and_plots_the_uap_rates():
    page = survey.survey_html(ROWS, {"command": "fedaegis reproduce survey", "wall seconds": 12})
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and not re.search(r"(src|href)=\"https?:", page)
    assert "Paul et al.: &lt;ensemble&gt; &amp; more" in page and "<ensemble>" not in page
    assert page.count("data:image/png;base64,") == 1  # the fooling-rate plot, from the row's figures
    assert ">yes<" in page and ">no<" in page and "1 of 2 directions hold." in page
    assert "wall seconds" in page and ">12<" in page
    # without UAP figures there is nothing to plot
    assert "data:image/png" not in survey.survey_html(ROWS[1:], {})


def test_the_federation_is_a_valid_request_its_sites_policy_allows():
    from fedaegis.shared.run.config import RunConfig
    from fedaegis.shared.site.policy import SitePolicy, check_request

    policy = SitePolicy.from_mapping(__import__("tomllib").loads(survey.SITE_POLICY), "survey")
    assert not policy.dp_required and policy.release_max_histogram_bins >= 200
    for plan in (survey.QUICK, survey.FULL):
        cfg = RunConfig.from_flower({**survey.federated_config(plan), "num-sites": plan.sites})
        assert cfg.attack_samples in policy.release_eval_sizes
        for is_train in (True, False):
            check_request(cfg, policy, is_train=is_train, node_config={"partition-id": 0, "num-partitions": plan.sites})
        # the default policy refuses the detector's histograms: the reason SITE_POLICY exists
        with pytest.raises(Exception, match="max-histogram-bins"):
            check_request(cfg, SitePolicy(), is_train=False, node_config={"partition-id": 0,
                                                                           "num-partitions": plan.sites})


def test_reproduce_is_a_command(tmp_path):
    from typer.testing import CliRunner

    from fedaegis.orchestration.cli import app

    res = CliRunner().invoke(app, ["reproduce", "--help"])
    assert res.exit_code == 0 and "survey" in res.stdout
    res = CliRunner().invoke(app, ["reproduce", "survey", "--data", str(tmp_path), "--central-only"])
    assert res.exit_code == 2 and "bloodmnist.npz not found" in res.output


@pytest.mark.slow
def test_federated_findings_are_the_stored_figures(tmp_path):
    """A tiny federation (2 sites, 1 round, 32 attacked images each) read back through the query layer."""
    from fedaegis.shared.results import query
    from fedaegis.shared.store import RunStore

    full = np.load(survey.PNEUMONIA)
    rng = np.random.default_rng(0)
    subset = {}
    for split, n in (("train", 400), ("val", 32), ("test", 128)):
        idx = np.sort(rng.permutation(len(full[f"{split}_labels"]))[:n])
        subset[f"{split}_images"], subset[f"{split}_labels"] = full[f"{split}_images"][idx], full[f"{split}_labels"][idx]
    np.savez(tmp_path / "pneumonia.npz", **subset)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    plan = replace(survey.QUICK, sites=2, attack_samples=32)  # QUICK's 2 rounds: 1 left the model at the majority class
    uuid = survey.run_federation(plan, db, dataset=str(tmp_path / "pneumonia.npz"))
    run = RunStore(db).get_run(uuid)
    assert run["status"] == "completed"
    findings = {f.finding.split(" (")[0]: f for f in survey.federated_findings(run)}
    assert all(f.setting.startswith(f"federated: 2 sites, run {uuid[:8]}") for f in findings.values())
    rnd = run["rounds"][-1]
    (fgsm,) = [c for c in query.cells(rnd, "attacks") if c["attack"] == "fgsm" and c["epsilon"] == pytest.approx(8 / 255, rel=1e-4)]
    assert fgsm["n_count"] == 2 * 32
    drop = findings["Paul et al.: FGSM collapses a standard model"]
    assert drop.figures == {"clean": fgsm["clean_accuracy"], "fgsm": fgsm["robust_accuracy"]}
    assert drop.holds == (fgsm["clean_accuracy"] - fgsm["robust_accuracy"] > 0.3)
    uap = [c for c in query.cells(rnd, "attacks") if c["attack"] == "universal"]
    assert findings["Hirano et al.: UAPs fool most inputs"].figures == {
        f"fooling@{e}": next(c["fooled_count"] / c["n_count"] for c in uap if c["epsilon"] == pytest.approx(e / 255, rel=1e-4))
        for e in survey.UAP_EPS}
    rates = list(findings["Hirano et al.: UAPs fool most inputs"].figures.values())
    assert rates == sorted(rates)  # a suite fits budgets smallest first, from the last: never falling
    det = [next(c for c in query.cells(rnd, "detection") if c["epsilon"] == pytest.approx(e / 255, rel=1e-4))
           for e in survey.FEDERATED_DETECTOR_EPS]
    assert det[-1]["adv_count"] > 0  # 8/255 fools the briefly trained model somewhere
    # an AUC only where some attacked input fooled the model (Lee et al.'s protocol)
    assert findings["Mahalanobis detects adversarial inputs"].figures == {
        f"auc@{e}": c["roc_auc"] for e, c in zip(survey.FEDERATED_DETECTOR_EPS, det) if c["adv_count"] > 0}
    defences = query.cells(rnd, "hardening") + query.cells(rnd, "defences")
    hardened = survey.FEDERATED_HARDENING
    hard = next(c for c in defences if c["system"] == hardened and c["threat"] == "white-box"
                and c["epsilon"] == pytest.approx(8 / 255, rel=1e-4))
    assert findings["Paul et al.: adversarial training recovers"].figures[hardened] == hard["robust_accuracy"]
    assert findings["Paul et al.: an ensemble recovers at least as much"].figures[hardened] == hard["robust_accuracy"]
