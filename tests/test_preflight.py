"""Every mistake caught before anything starts: one line naming the option or file, exit code 2,
no run row, no checkpoint, no Ray; secrets never printed (the real ``fedaegis`` entry point).

Broken datasets are real MedMNIST files (BreastMNIST) with one realistic defect each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedaegis.orchestration.cli import app
from fedaegis.shared.store import RunStore

PASSWORD = "hunter2-s3cret"
runner = CliRunner()


@pytest.fixture(scope="module")
def broken(shared_data: Path, tmp_path_factory) -> dict[str, Path]:
    """Copies of BreastMNIST, each with one defect."""
    root = tmp_path_factory.mktemp("broken")
    src = dict(np.load(shared_data / "breastmnist" / "breastmnist.npz"))

    def save(name: str, **changes) -> Path:
        arrays = {k: v for k, v in {**src, **changes}.items() if v is not None}
        np.savez(root / f"{name}.npz", **arrays)
        return root / f"{name}.npz"

    nan = src["test_images"].astype(np.float32) / 255
    nan[3, 4, 5] = np.nan
    stray = src["train_labels"].copy()
    stray[0] = 255  # a common "unknown" marker
    test_only = src["test_labels"].copy()
    test_only[0] = 20
    (root / "text.npz").write_text("patient,label\n1,0\n")
    return {
        "nan": save("nan", test_images=nan),
        "no-test": save("no-test", test_images=None),
        "tiny": save("tiny", train_images=src["train_images"][:12], train_labels=src["train_labels"][:12]),
        "stray": save("stray", train_labels=stray),
        "test-label": save("test-label", test_labels=test_only),
        "text": root / "text.npz",
    }


CASES = [
    # (arguments, text the one line must hold)
    (["--dataset", "{nan}"], "{nan}: test_images contains NaN"),
    (["--dataset", "{no-test}"], "{no-test}: missing key 'test_images'"),
    (["--dataset", "{tiny}", "--sites", "20"], "--sites = 20: the train split of {tiny} holds only 12 images"),
    (["--dataset", "{stray}"], "label 255 implies 256 classes but only 3 occur"),
    (["--dataset", "{stray}", "-c", "num-classes=11"], "train_labels: label 255 is out of range for num_classes=11 (-c num-classes = 11)"),
    (["--dataset", "{test-label}"], "test_labels: label 20 is out of range for num_classes=2 (num-classes is inferred as 1 + the largest train label"),
    (["--dataset", "{text}"], "--dataset {text}: not a MedMNIST .npz (not a zip archive"),
    (["--dataset", "{tiny}", "-c", "spatial-dims=3"], "-c spatial-dims = 3 but --dataset {tiny} holds 2D images"),
    (["--dataset", "{tiny}", "--model", "foo"], "--model = 'foo': unknown model 'foo'"),
    (["--dataset", "{tiny}", "--sites", "0"], "--sites: need at least 1 site, got 0"),
    (["--dataset", "{tiny}", "--rounds", "3", "-c", "num-server-rounds=1"], "--rounds and -c num-server-rounds both set"),
    (["--dataset", "{tiny}", "--partitioning", "random"], "--partitioning = 'random'"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_simulate_refuses_before_anything_starts(broken, tmp_path, args, message):
    import ray

    home, db = tmp_path / "home", f"sqlite:///{tmp_path / 'runs.db'}"
    paths = {k: str(v) for k, v in broken.items()}
    args = [a.format(**paths) for a in args]
    res = runner.invoke(app, ["simulate", "--db-url", db, *args],
                        env={"FEDAEGIS_HOME": str(home), "RAY_TMPDIR": str(tmp_path / "ray")})
    assert res.exit_code == 2, res.output
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message.format(**paths) in errors[0], res.stderr
    assert res.stdout == ""
    assert RunStore(db).list_runs() == []  # no run row
    assert not (home / "checkpoints").exists() or not any((home / "checkpoints").iterdir())  # no checkpoint
    assert not ray.is_initialized() and not (tmp_path / "ray").exists()  # Ray never started


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEDAEGIS_HOME": str(tmp_path / "home"), "RAY_TMPDIR": str(tmp_path / "ray")}
    return subprocess.run([sys.executable, "-c", "from fedaegis.orchestration.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://nobody:{PASSWORD}@127.0.0.1:1/x",
    f"postgresql+psycopg://nobody:{PASSWORD}@127.0.0.1:notaport/x",
])
def test_a_bad_database_url_is_one_masked_line(tmp_path, url):
    outputs = []
    for args in (["runs"], ["simulate", "--sites", "2"], ["--debug", "runs"],  # the real entry point
                 ["show", "1"], ["privacy"], ["evaluate", "1"], ["report", "1", "--json"]):  # in-process
        if args[0] in ("runs", "simulate", "--debug"):
            res = _cli(*args, "--db-url", url, tmp_path=tmp_path)
            outputs.append(res.stdout + res.stderr)
            assert res.returncode == 2, args
        else:
            inproc = runner.invoke(app, [*args, "--db-url", url])
            outputs.append(inproc.output)
            assert inproc.exit_code == 2, args
        assert "--db-url postgresql+psycopg://nobody:***@127.0.0.1" in " ".join(outputs[-1].split()) or \
            "nobody:***@" in outputs[-1], (args, outputs[-1])
        assert len(outputs[-1].strip().splitlines()) <= 40, (args, outputs[-1])  # no 900-line traceback
    assert PASSWORD not in "".join(outputs)
    assert "port is not a number" in outputs[0] or "Connection refused" in outputs[0]
    assert not (tmp_path / "ray").exists()


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    import sqlite3

    db = tmp_path / "foreign.db"  # a database another tool made: a 'runs' table of other columns
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, label TEXT)")
    plain = _cli("runs", "--db-url", f"sqlite:///{db}", tmp_path=tmp_path)
    debug = _cli("--debug", "runs", "--db-url", f"sqlite:///{db}", tmp_path=tmp_path)
    assert plain.returncode == debug.returncode == 1
    assert len(plain.stderr.strip().splitlines()) == 1 and "--debug shows the traceback" in plain.stderr
    assert "Traceback" in debug.stderr and "no such column" in debug.stderr


def test_tracebacks_are_masked(tmp_path):
    import traceback

    from fedaegis.shared.run.redact import known_secrets, mask_secrets

    url = f"postgresql+psycopg://nobody:{PASSWORD}@127.0.0.1:1/x"
    try:
        RunStore(url)
    except Exception:  # noqa: BLE001 - the real error psycopg raises for a refused connection
        text = traceback.format_exc()
    masked = mask_secrets(text + f" {url} {PASSWORD}", known_secrets(url))
    assert PASSWORD not in masked and "***" in masked


def test_version_and_fast_start(tmp_path):
    res = _cli("--version", tmp_path=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("fedaegis ")
    # the CLI imports no torch, Opacus or MONAI to print its help or list runs (they cost seconds)
    code = ("import sys; from fedaegis.orchestration import cli; "
            "print(sorted(m for m in ('torch', 'opacus', 'monai', 'ray', 'flwr') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


def _stored_breast_run(tmp_path, shared_data):
    """A run on the real BreastMNIST file with a stored final model: (database URL, run id, its config)."""
    from fedaegis.server.app import RunRecorder
    from fedaegis.server.recording import RoundOutcome
    from fedaegis.shared.run.config import RunConfig
    from fedaegis.shared.models.tasks import build_task_model, model_meta
    from flwr.app import ArrayRecord, MetricRecord

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    cfg = RunConfig(dataset=str(shared_data / "breastmnist" / "breastmnist.npz"), db_url=db, run_uuid="u1")
    store = RunStore(db)
    run_id = store.create_run(uuid="u1", name="breast", config=cfg.to_flower(), num_rounds=1)
    recorder = RunRecorder(store, run_id, "u1", cfg)
    recorder(RoundOutcome(1, started_at=None, arrays=ArrayRecord(build_task_model(model_meta(cfg)).state_dict()),
                          evaluate_metrics=MetricRecord({"accuracy": 0.5}), train_replies=2, evaluate_replies=2))
    return db, run_id, cfg


def test_evaluate_refuses_data_that_does_not_fit_the_model(tmp_path, shared_data):
    db, run_id, cfg = _stored_breast_run(tmp_path, shared_data)
    blood = str(shared_data / "bloodmnist" / "bloodmnist.npz")
    res = runner.invoke(app, ["evaluate", str(run_id), "--db-url", db, "--dataset", blood, "--samples", "8",
                              "--attacks", "fgsm", "--epsilons", "8/255"])
    assert res.exit_code == 2
    line = " ".join(res.output.split())
    assert f"--dataset {blood} does not match run {run_id}'s model: classes 8 (the model's: 2), channels 3 (the model's: 1)" in line
    # without --dataset: the run's own data (BreastMNIST), not the embedded PneumoniaMNIST
    res = runner.invoke(app, ["evaluate", str(run_id), "--db-url", db, "--samples", "8", "--attacks", "fgsm",
                              "--epsilons", "8/255", "--json"])
    assert res.exit_code == 0, res.output
    import json

    shown = json.loads(res.stdout)
    assert shown["schema"] == 1 and shown["dataset"] == cfg.dataset and shown["samples"] == 8


def test_evaluate_attacks_on_the_chosen_device_with_the_same_counts(tmp_path, shared_data, device):
    """``--device`` moves the model and images, as a site's node config does; the counts are the CPU's."""
    import json

    db, run_id, _ = _stored_breast_run(tmp_path, shared_data)
    args = ["evaluate", str(run_id), "--db-url", db, "--samples", "16", "--attacks", "fgsm,pgd",
            "--epsilons", "8/255", "--json"]
    cells = {}
    for on in ("cpu", device):
        res = runner.invoke(app, [*args, "--device", on])
        assert res.exit_code == 0, res.output
        cells[on] = {(c["attack"], round(c["epsilon"] * 255)): c for c in json.loads(res.stdout)["results"]}
    assert cells["cpu"].keys() == cells[device].keys() == {("fgsm", 8), ("pgd", 8)}
    for key, cell in cells["cpu"].items():  # the same images: the same clean count on any device
        assert cells[device][key]["n_count"] == cell["n_count"] == 16
        assert cells[device][key]["clean_correct"] == cell["clean_correct"]
    res = runner.invoke(app, [*args, "--device", "cuda:99"])
    assert res.exit_code == 2 and "device: 'cuda:99' is not available here" in " ".join(res.output.split())


def test_privacy_without_audited_runs_says_so(tmp_path):
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    res = runner.invoke(app, ["privacy", "--db-url", db])
    assert res.exit_code == 0 and "no run with an inversion audit" in res.output


def test_class_gaps_warn_and_3d_data_fits_its_sites(broken, shared_data, tmp_path):
    from fedaegis.client.site import site_data
    from fedaegis.orchestration.preflight import preflight
    from fedaegis.shared.run.preflight import check_config, dataset_facts

    src = dict(np.load(broken["tiny"]))
    labels = src["train_labels"].copy()
    labels[0] = 3  # classes 0, 1, 3: class 2 has no training image
    np.savez(tmp_path / "gap.npz", **{**src, "train_labels": labels})
    facts = dataset_facts(str(tmp_path / "gap.npz"))
    assert facts.num_classes == 4 and len(facts.warnings) == 1 and "no training image of class 2" in facts.warnings[0]

    volumes = str(shared_data / "adrenalmnist3d" / "adrenalmnist3d.npz")
    facts = dataset_facts(volumes)
    assert (facts.spatial_dims, facts.image_size, facts.num_classes) == (3, 28, 2)
    cfg = check_config({"dataset": volumes, **facts.run_config(), "db-url": f"sqlite:///{tmp_path / 'r.db'}"})
    preflight(cfg, 3)
    assert site_data(cfg, {"partition-id": 2, "num-partitions": 3}).train.images.shape[1:] == (1, 28, 28, 28)
