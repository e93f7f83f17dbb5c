import pytest
import sqlalchemy as sa
import torch

from fedaegis.shared.models.checkpoint import load_checkpoint, save_checkpoint
from fedaegis.shared.models import build_model
from fedaegis.shared.store import MetricValue, RoundRecord, RunNotFoundError, RunStore
from fedaegis.shared.store.schema import Metric


def _round(n: int, acc: float) -> RoundRecord:
    return RoundRecord(
        number=n, train_replies=3, evaluate_replies=3,
        metrics=[MetricValue("evaluate", "accuracy", acc), MetricValue("evaluate", "num-examples", 90)],
        site_metrics={"11": [MetricValue("evaluate", "correct", 25)], "12": [MetricValue("evaluate", "correct", 27)]},
    )


def test_run_roundtrip(db_url):
    store = RunStore(db_url)
    run_id = store.create_run(uuid="u1", name="t", config={"model": "cnn", "seed": 3}, num_rounds=2)
    store.record_round(run_id, _round(1, 0.7))
    store.record_round(run_id, _round(2, 0.8))
    store.finish_run(run_id)

    again = RunStore(db_url)  # a new engine reads what the first wrote
    run = again.get_run(run_id)
    assert run == again.get_run("u1")
    assert run["status"] == "completed" and run["config"] == {"model": "cnn", "seed": 3}
    assert [r["metrics"]["evaluate.accuracy"] for r in run["rounds"]] == [0.7, 0.8]
    assert set(run["rounds"][0]["sites"]) == {"11", "12"}
    assert [s["id"] for s in again.list_runs()] == [run_id]


def test_failed_round_write_leaves_earlier_rounds_intact(db_url):
    store = RunStore(db_url)
    run_id = store.create_run(uuid="u2", name="", config={}, num_rounds=3)
    store.record_round(run_id, _round(1, 0.7))
    with pytest.raises(sa.exc.IntegrityError):
        store.record_round(run_id, _round(1, 0.9))  # the same round twice: the transaction rolls back
    run = store.get_run(run_id)
    assert [r["number"] for r in run["rounds"]] == [1]
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Metric)).scalar() == 4


def test_unknown_run(db_url):
    with pytest.raises(RunNotFoundError):
        RunStore(db_url).get_run(99)


def test_checkpoint_is_referenced_and_verified(db_url, tmp_path):
    store = RunStore(db_url)
    run_id = store.create_run(uuid="u3", name="", config={}, num_rounds=1)
    model = build_model("cnn", in_channels=1, num_classes=2)
    meta = {"model": "cnn", "norm": "batch", "in_channels": 1, "num_classes": 2, "spatial_dims": 2}
    path = save_checkpoint(tmp_path / "ck.pt", model.state_dict(), meta)
    store.set_checkpoint(run_id, path)
    loaded, loaded_meta = load_checkpoint(store.checkpoint_path(run_id))
    assert loaded_meta == meta
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(loaded(x), model.eval()(x))
    path.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        store.checkpoint_path(run_id)


def test_new_database_opened_concurrently(tmp_path):
    """A server and a CLI may open a fresh database at the same moment: neither fails."""
    import threading

    for attempt in range(10):
        url, errors = f"sqlite:///{tmp_path / f'race-{attempt}.db'}", []

        def open_store() -> None:
            try:
                RunStore(url)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors


def migrated_families(url: str) -> dict[tuple[str, str], str]:
    """A database as the code before metric families wrote it (no ``metrics.family``), reopened: each row's family."""
    store = RunStore(url)
    run_id = store.create_run(uuid="old", name="", config={}, num_rounds=1)
    store.record_round(run_id, RoundRecord(1, metrics=[
        MetricValue("evaluate", "accuracy", 0.8), MetricValue("attack", "robust-accuracy", 0.4, "pgd", 8 / 255),
        MetricValue("hardening", "clean-accuracy", 0.7, "pgd-at"), MetricValue("detection", "roc-auc", 0.9, "kd-bu", 0.03),
        MetricValue("defence-adaptive", "robust-accuracy", 0.5, "routed", 0.03)],
        site_metrics={"11": [MetricValue("refusal", "release.min-cell-size", 1.0, "evaluate")]}))
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE metrics DROP COLUMN family"))
    store.engine.dispose()
    rnd = RunStore(url).get_run("old")["rounds"][0]  # opening it adds the column and derives it
    with RunStore(url).engine.connect() as conn:
        stored = dict(conn.execute(sa.text(
            "SELECT m.phase || '.' || m.name, m.family FROM metrics m JOIN rounds r ON m.round_id = r.id "
            "JOIN runs u ON r.run_id = u.id WHERE u.uuid = 'old'")).all())
    assert {r["family"] for r in rnd["metric_rows"]} == set(stored.values()) - {"refusals"}
    return {tuple(k.split(".", 1)): v for k, v in stored.items()}  # type: ignore[misc]


def test_old_database_gains_the_family_column(db_url):
    assert migrated_families(db_url) == {
        ("evaluate", "accuracy"): "basics", ("attack", "robust-accuracy"): "attacks",
        ("hardening", "clean-accuracy"): "hardening", ("detection", "roc-auc"): "detection",
        ("defence-adaptive", "robust-accuracy"): "defences", ("refusal", "release.min-cell-size"): "refusals"}
