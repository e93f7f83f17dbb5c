"""``fedaegis report``: a self-contained HTML/JSON report of a stored run, checked in a real browser.

The run is written with :class:`RunStore` the way the server writes it (attack cells go
through the server's own ``metric_rows``), with hardening, backdoor, inversion and privacy
rows following the conventions of :mod:`fedaegis.orchestration.report`. The HTML is opened
in headless Chromium (Debian's ``chromium``): a screenshot must show the plots, and the DOM
must hold the tables and the embedded images.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedaegis.orchestration import report as report_mod
from fedaegis.orchestration.cli import app
from fedaegis.shared.results import robustness
from fedaegis.shared.store import MetricValue, RoundRecord, RunStore

pytest.importorskip("matplotlib", reason="the HTML report needs matplotlib")

CHROMIUM = Path("/usr/bin/chromium")
ATTACKS = {"fgsm": 0.55, "pgd": 0.75}  # how hard each attack bites
EPSILONS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
SITES = ("1101", "2202", "3303")
NASTY = '<script>alert("x")</script> & <b>bold</b>'

report_mod.register(app)  # cli.py may already do this; register is idempotent


def metric_rows(phase: str, metrics: dict) -> list[MetricValue]:
    """What the server stores for one phase (``fedaegis.server.app.metric_rows``, without importing
    torch and Flower here): plain metrics, and attack cells decoded from the wire with their ratios."""
    rows = [MetricValue(phase, k, float(v)) for k, v in metrics.items() if not k.startswith("attack.")]
    for (attack, eps), totals in robustness.decode(metrics).items():
        rows += [MetricValue("attack", name, value, attack=attack, epsilon=eps)
                 for name, value in {**totals, **robustness.derive(totals)}.items()]
    return rows


def _round(number: int, *, sites: bool = True) -> RoundRecord:
    acc = 0.70 + 0.06 * number
    n, n_train = 624, 4708
    train = {"num-examples": n_train, "train-correct": round(n_train * (acc - 0.03)),
             "train-loss-sum": n_train * (0.75 - 0.12 * number)}
    train |= {"train-accuracy": train["train-correct"] / n_train, "train-loss": train["train-loss-sum"] / n_train}
    counts = {}
    for attack, strength in ATTACKS.items():
        for eps in EPSILONS:
            clean = round(96 * acc)
            robust = max(0, round(clean * (1 - strength * min(1.0, eps * 255 / 6))) - number)
            counts[(attack, eps)] = {"n": 96, "clean_correct": clean, "robust_correct": robust,
                                     "successes": clean - robust, "linf_sum": (clean - robust) * eps,
                                     "l2_sum": (clean - robust) * eps * 20}
    evaluate = {"num-examples": n, "correct": round(n * acc), "loss-sum": n * (0.7 - 0.1 * number),
                "skipped": 0, **robustness.encode(counts, targeted=())}
    evaluate |= {"accuracy": evaluate["correct"] / n, "loss": evaluate["loss-sum"] / n}
    rows = metric_rows("train", train) + metric_rows("evaluate", evaluate)

    for method, clean, robust_at in (("none", 0.02, (0.45, 0.12)), ("pgd-at", -0.04, (0.70, 0.52)),
                                     ("trades", -0.07, (0.72, 0.58))):
        rows.append(MetricValue("hardening", "clean-accuracy", acc + clean, attack=method))
        for eps, r in zip((2 / 255, 8 / 255), robust_at):
            rows.append(MetricValue("hardening", "robust-accuracy", r + 0.01 * number, attack=method, epsilon=eps))
    rows += [MetricValue("backdoor", "attack-success-rate", min(0.97, 0.35 * number), attack="badnets"),
             MetricValue("backdoor", "main-accuracy", acc - 0.01, attack="badnets")]
    for defence, psnr, ssim in (("none", 31.0, 0.86), ("prune-0.9", 19.5, 0.41), ("dp-sgd", 9.8, 0.06)):
        rows += [MetricValue("inversion", "psnr-sum", 8 * (psnr - number), attack=defence),
                 MetricValue("inversion", "ssim-sum", 8 * (ssim - 0.01 * number), attack=defence),
                 MetricValue("inversion", "images-count", 8, attack=defence)]
    spent = [0.9 * number * f for f in (1.0, 1.2, 0.8)]
    rows += [MetricValue("privacy", "epsilon-spent", max(spent)), MetricValue("privacy", "delta", 1e-5),
             MetricValue("privacy", "epsilon-budget", 4.0)]
    site_rows = {}
    if sites:
        site_rows = {
            node: [MetricValue("evaluate", "num-examples", 208), MetricValue("evaluate", "correct", round(208 * acc)),
                   MetricValue("privacy", "epsilon-spent", s)]
            for node, s in zip(SITES, spent)
        }
    return RoundRecord(number=number, train_replies=3, evaluate_replies=3, metrics=rows, site_metrics=site_rows)


def _config(**extra) -> dict:
    return {"num-server-rounds": 3, "dataset": "embedded:pneumoniamnist", "model": "cnn", "local-epochs": 1,
            "attacks": "fgsm,pgd", "epsilons": "1/255,2/255,4/255,8/255", "attack-samples": 32,
            "metric-dp": "none", "note": NASTY, **extra}


@pytest.fixture
def stored(db_url):
    """A full run (all sections), one with secure aggregation, and an empty one."""
    store = RunStore(db_url)
    full = store.create_run(uuid="a" * 32, name=NASTY, config=_config(), num_rounds=3)
    secagg = store.create_run(uuid="b" * 32, name="secagg", config=_config(**{"secure-aggregation": True}),
                              num_rounds=3)
    for n in (1, 2, 3):
        store.record_round(full, _round(n))
        store.record_round(secagg, _round(n))
    store.finish_run(full)
    store.finish_run(secagg)
    bare = store.create_run(uuid="c" * 32, name="bare", config={"num-server-rounds": 1}, num_rounds=1)
    store.record_round(bare, RoundRecord(1, train_replies=2, evaluate_replies=2, metrics=[
        MetricValue("evaluate", "num-examples", 624), MetricValue("evaluate", "accuracy", 0.81),
        MetricValue("evaluate", "loss", 0.44)]))
    store.finish_run(bare)
    return store, full, secagg, bare


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.imgs: list[dict[str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self.tables.append(a.get("class", ""))
        if tag == "img":
            self.imgs.append(a)


def _dom(text: str) -> _Dom:
    d = _Dom()
    d.feed(text)
    return d


def test_build_report_sections(stored):
    store, full, secagg, bare = stored
    rep = report_mod.build_report(store.get_run(full))
    assert [r["round"] for r in rep["rounds"]["per_round"]] == [1, 2, 3]
    rob = rep["robustness"]
    assert rob["measured"] and rob["final_round"] == 3 and rob["attacks"] == ["fgsm", "pgd"]
    assert len(rob["final"]) == 8 and len(rob["per_round"]) == 24
    for cell in rob["final"]:
        assert cell["robust_accuracy"] <= cell["clean_accuracy"] and cell["n_count"] == 96
    hard = {(r["method"], round(r["epsilon"] * 255)): r for r in rep["hardening"]["final"]}
    assert set(hard) == {(m, e) for m in ("none", "pgd-at", "trades") for e in (2, 8)}
    assert hard[("none", 8)]["clean_accuracy_cost"] == pytest.approx(0)
    assert hard[("trades", 8)]["clean_accuracy_cost"] == pytest.approx(0.09)
    assert [r["attack_success_rate"] for r in rep["backdoor"]["per_round"]] == pytest.approx([0.35, 0.70, 0.97])
    inv = {r["defence"]: r for r in rep["inversion"]["final"]}
    assert inv["none"]["psnr"] == pytest.approx(28.0) and inv["dp-sgd"]["ssim"] == pytest.approx(0.03)
    priv = rep["privacy"]
    assert priv["measured"] and not priv["secure_aggregation"]
    assert priv["epsilon_spent_total"] == pytest.approx(3 * 0.9 * 1.2) and priv["epsilon_budget"] == 4.0
    assert {s["site"] for s in priv["per_site"]} == set(SITES)

    sec = report_mod.build_report(store.get_run(secagg))["privacy"]
    assert sec["secure_aggregation"] and sec["per_site"] is None and "by design" in sec["per_site_note"]

    empty = report_mod.build_report(store.get_run(bare))
    for name in ("robustness", "hardening", "backdoor", "inversion", "privacy"):
        assert empty[name]["measured"] is False and "did not" in empty[name]["note"]
    assert empty["rounds"]["per_round"][0]["accuracy"] == 0.81


def test_html_is_self_contained_and_escaped(stored):
    store, full, _, bare = stored
    page = report_mod.report_html(store.get_run(full))
    assert "<script" not in page and NASTY not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    # nothing is fetched: no URL other than in-page anchors and data: images
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:image/png;base64,|#)""", page)
    assert "http://" not in page and "https://" not in page and "@import" not in page
    dom = _dom(page)
    assert len(dom.imgs) == 6 and all(i["src"].startswith("data:image/png;base64,") for i in dom.imgs)
    bare_page = report_mod.report_html(store.get_run(bare))
    for text in ("did not measure adversarial robustness", "did not measure a hardening trade-off",
                 "did not measure backdoor", "did not run a gradient-inversion audit",
                 "did not account a differential-privacy budget"):
        assert text in bare_page
    assert len(_dom(bare_page).imgs) == 1  # only the per-round curves


def test_report_command_json(stored, db_url, tmp_path):
    store, full, secagg, _ = stored
    res = CliRunner().invoke(app, ["report", str(full), "--db-url", db_url, "--format", "json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["format"] == "fedaegis-run-report" and rep["run"]["name"] == NASTY
    assert rep["config"]["attacks"] == "fgsm,pgd" and len(rep["robustness"]["final"]) == 8
    assert "data:image" not in res.stdout
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["report", "b" * 32, "--db-url", db_url, "--format", "json", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["privacy"]["secure_aggregation"] is True
    res = CliRunner().invoke(app, ["report", "999", "--db-url", db_url])
    assert res.exit_code == 2 and "no run" in res.output


def test_report_command_default_html_path(stored, db_url, tmp_path, monkeypatch):
    _, full, _, _ = stored
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["report", str(full), "--db-url", db_url])
    assert res.exit_code == 0, res.output
    page = (tmp_path / f"fedaegis-run-{full}.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 6


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars"]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install -y chromium)")
def test_report_renders_in_chromium(stored, tmp_path):
    import numpy as np
    from PIL import Image

    store, full, _, _ = stored
    page = tmp_path / "report.html"
    page.write_text(report_mod.report_html(store.get_run(full)), encoding="utf-8")
    shot = tmp_path / "report.png"

    res = _chromium([f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri()], tmp_path / "profile1")
    assert shot.is_file(), f"no screenshot (rc {res.returncode}): {res.stderr[-2000:]}"
    if os.environ.get("FEDAEGIS_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["FEDAEGIS_KEEP_SCREENSHOT"])
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 4000)
    px = np.asarray(img).astype(int)
    non_white = (px.min(axis=2) < 235).mean()
    assert non_white > 0.03, f"screenshot is (nearly) blank: {non_white:.1%} non-white pixels"
    assert len(img.getcolors(maxcolors=1 << 20) or ()) > 500  # antialiased plots and text
    # The plots really rendered (not broken-image icons): matplotlib's line colours are on screen.
    for rgb in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        hits = int((np.abs(px - np.array(rgb)).max(axis=2) < 12).sum())
        assert hits > 200, f"matplotlib colour {rgb} hardly appears in the screenshot ({hits} px)"

    res = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile2")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = _dom(res.stdout)
    for cls in ("run", "config", "rounds", "robustness-final", "robustness-rounds", "hardening-final",
                "hardening-rounds", "backdoor", "inversion", "privacy-rounds", "privacy-sites"):
        assert cls in dom.tables, f"table {cls!r} missing from the rendered DOM"
    assert len(dom.imgs) == 6
    assert all(i["src"].startswith("data:image/png;base64,") and i.get("alt") for i in dom.imgs)
    assert "script" not in dom.tags


# -- comparisons: several runs, or a sweep -----------------------------------------------------------
SWEEP = "study"


def _scaled_round(number: int, factor: float) -> RoundRecord:
    """A round whose attack cells are ``factor`` times as robust (capped by the clean count)."""
    rec = _round(number, sites=False)
    rows = []
    for row in rec.metrics:
        if row.phase == "attack" and row.name == "robust-correct":
            row = MetricValue("attack", row.name, float(min(round(row.value * factor), 96)), attack=row.attack,
                              epsilon=row.epsilon)
        rows.append(row)
    counts = {(r.attack, r.epsilon): {} for r in rows if r.phase == "attack"}
    for r in rows:
        if r.phase == "attack" and r.name in ("n-count", "clean-correct", "robust-correct"):
            counts[(r.attack, r.epsilon)][r.name] = r.value
    rows = [r for r in rows if not (r.phase == "attack" and r.name in ("robust-accuracy", "success-rate"))]
    for (attack, eps), c in counts.items():
        rows += [MetricValue("attack", "robust-accuracy", c["robust-correct"] / c["n-count"], attack=attack, epsilon=eps),
                 MetricValue("attack", "success-rate", 1 - c["robust-correct"] / c["clean-correct"], attack=attack,
                             epsilon=eps)]
    return RoundRecord(number=number, train_replies=3, evaluate_replies=3, metrics=rows, site_metrics={})


@pytest.fixture
def swept(db_url):
    """Four runs of one sweep (two models x two seeds; the first two give identical results) and one other run."""
    store = RunStore(db_url)
    ids = []
    for i, (model, seed, factor) in enumerate((("cnn", 0, 1.0), ("cnn", 1, 1.0), ("resnet10", 0, 1.3),
                                               ("resnet10", 1, 1.5))):
        rid = store.create_run(uuid=f"{i + 1}" * 32, name=f"{SWEEP}:{i:08x}",
                               config=_config(model=model, seed=seed), num_rounds=2)
        for n in (1, 2):
            rec = _scaled_round(n, factor)
            if i == 3:  # one run also segments, and routes through a detector
                rec.metrics.extend([
                    MetricValue("segmentation", "seg.clean.dice", 0.81),
                    MetricValue("segmentation", "seg.clean.dice.class=1", 0.78),
                    MetricValue("segmentation", "seg.attack.pgd.linf.eps=0.01569.dice", 0.42),
                    MetricValue("detection", "auc", 0.93, attack="mahalanobis", epsilon=8 / 255),
                    MetricValue("defence-adaptive", "robust-accuracy", 0.61, attack="routed", epsilon=8 / 255)])
            store.record_round(rid, rec)
        store.finish_run(rid)
        ids.append(rid)
    other = store.create_run(uuid="9" * 32, name="other", config=_config(), num_rounds=1)
    store.record_round(other, _round(1, sites=False))
    store.finish_run(other)
    return store, ids, other


def test_wilson_interval():
    from fedaegis.orchestration.report_compare import wilson

    lo, hi = wilson(64, 128)
    assert lo == pytest.approx(0.4142, abs=1e-3) and hi == pytest.approx(0.5858, abs=1e-3)  # about +-0.08
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0 and wilson(5, 0) is None


def test_comparison_content(swept):
    from fedaegis.orchestration.report_compare import build_comparison

    store, ids, _ = swept
    rep = build_comparison([store.get_run(i) for i in ids], "t")
    assert [r["id"] for r in rep["runs"]] == ids
    assert rep["config_differs"] == {"model": ["cnn", "cnn", "resnet10", "resnet10"], "seed": [0, 1, 0, 1]}
    for run in rep["runs"]:
        assert run["final_round"] == 2 and len(run["final"]) == 8 and len(run["per_round"]) == 16
        lo, hi = run["clean"]["ci"]
        assert lo < run["clean"]["accuracy"] < hi
        for c in run["final"]:
            lo, hi = c["robust_ci"]
            assert lo <= c["robust_accuracy"] <= hi and hi - lo < 0.25  # n = 96 attacked images
    pgd8 = [next(c["robust_accuracy"] for c in r["final"] if c["attack"] == "pgd" and round(c["epsilon"] * 255) == 8)
            for r in rep["runs"]]
    assert pgd8[0] == pgd8[1] < pgd8[2] < pgd8[3]
    assert set(rep["attack_parameters"]) == {"fgsm", "pgd"} and rep["attack_parameters"]["pgd"]["steps"] == 10
    assert rep["runs"][3]["segmentation"]["seg.attack.pgd.linf.eps=0.01569.dice"] == pytest.approx(0.42)
    kinds = {d["kind"]: d for d in rep["runs"][3]["detection"]}
    assert kinds["detector"]["auc"] == pytest.approx(0.93) and kinds["routed"]["robust_accuracy"] == pytest.approx(0.61)
    assert not rep["runs"][0]["segmentation"] and not rep["runs"][0]["detection"]
    prov = rep["provenance"]
    assert prov["versions"]["flwr"] and prov["versions"]["torch"]
    assert len(prov["data_sha256"]["embedded:pneumoniamnist"]) == 64


def test_report_compares_runs_and_sweeps(swept, db_url, tmp_path, monkeypatch):
    store, ids, other = swept
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["report", str(ids[0]), str(other), "--db-url", db_url])
    assert res.exit_code == 0, res.output
    page = (tmp_path / f"fedaegis-compare-{ids[0]}-{other}.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    res = CliRunner().invoke(app, ["report", "--sweep", SWEEP, "--db-url", db_url, "--format", "json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["format"] == "fedaegis-comparison-report" and [r["id"] for r in rep["runs"]] == ids
    res = CliRunner().invoke(app, ["report", "--sweep", "nope", "--db-url", db_url])
    assert res.exit_code == 2 and "--sweep nope" in res.output
    res = CliRunner().invoke(app, ["report", "--db-url", db_url])
    assert res.exit_code == 2 and "--sweep NAME" in res.output


def test_single_report_puts_results_before_configuration(stored):
    store, full, _, _ = stored
    page = report_mod.report_html(store.get_run(full))
    assert page.index('id="rounds"') < page.index('id="robustness"') < page.index('id="configuration"')


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install -y chromium)")
def test_sweep_comparison_renders_in_chromium(swept, tmp_path):
    import numpy as np
    from PIL import Image

    from fedaegis.orchestration.report_compare import comparison_html

    store, ids, _ = swept
    page = tmp_path / "compare.html"
    html_text = comparison_html([store.get_run(i) for i in ids], f"fedaegis sweep {SWEEP}")
    page.write_text(html_text, encoding="utf-8")
    assert html_text.index('id="robustness"') < html_text.index('id="config"')  # results first
    shot = tmp_path / "compare.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,3000", page.as_uri()], tmp_path / "profile1")
    assert shot.is_file(), f"no screenshot (rc {res.returncode}): {res.stderr[-2000:]}"
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert (px.min(axis=2) < 235).mean() > 0.03
    for rgb in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C), (0xD6, 0x27, 0x28)):  # 4 runs, 4 colours
        hits = int((np.abs(px - np.array(rgb)).max(axis=2) < 12).sum())
        assert hits > 100, f"run colour {rgb} hardly appears in the screenshot ({hits} px)"
    res = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile2")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = _dom(res.stdout)
    for cls in ("summary", "robustness", "tradeoff", "segmentation", "detection", "attack-parameters",
                "config-differs", "provenance"):
        assert cls in dom.tables, f"table {cls!r} missing from the rendered DOM"
    assert len(dom.imgs) == 3 and all(i["src"].startswith("data:image/png;base64,") for i in dom.imgs)
    assert "script" not in dom.tags
