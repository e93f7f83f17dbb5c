"""Resume a run whose server died: stored config, verified last checkpoint, remaining rounds.

A run is written round by round (:class:`~fedaegis.server.app.RunRecorder`): each round's
metrics and the SHA-256 of its global model are committed in one transaction, the model
having been written beside the current checkpoint as ``<checkpoint>.next`` first and renamed
over it after the commit. So whatever moment the server is killed at, the database's last
round and its recorded hash describe one model on disk: the checkpoint itself, or the
``.next`` file whose rename the crash interrupted (finished here).

Resuming (run config ``resume-run``, or ``fedaegis simulate --resume RUN``) takes the
stored config, loads that model after checking its hash, and runs rounds ``k+1..N`` under
their true numbers (the sites' seeds derive from the round number), appending to the same
run. A completed run, a run that never stored a round (unless interrupted by Ctrl-C), or a
model that does not match its hash are refused with the reason.

Metric DP needs nothing from the server here: every release is charged to the site's own
persistent ledger (:mod:`fedaegis.shared.site.ledger`) as it leaves the site, so the sites of a
resumed run go on from what they have spent (no reset), the stored rounds are not asked for
again (no second charge for them), and what the interrupted round had released before the
crash stays charged; what the sites release again for it is a new release, charged as such.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord

from ..shared.models.checkpoint import MODEL_KEYS, load_checkpoint
from ..shared.run.config import ConfigError, RunConfig
from ..shared.store import RunStore
from ..shared.models.tasks import model_meta

log = logging.getLogger("fedaegis")

PENDING_SUFFIX = ".next"


class ResumeError(ValueError):
    """The run cannot be resumed; the message says why."""


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted run goes on from."""

    run_id: int
    run_uuid: str
    cfg: RunConfig  # the stored config, with this server's db-url and resume-run
    done: int  # rounds 1..done are stored
    arrays: ArrayRecord | None  # the global model after round ``done``; None when done == 0
    checkpoint: Path | None

    @property
    def first_round(self) -> int:
        return self.done + 1


def pending_path(checkpoint: Path) -> Path:
    """Where a round's model waits until its round is committed."""
    return checkpoint.with_name(checkpoint.name + PENDING_SUFFIX)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finish_interrupted_rename(checkpoint: Path, recorded_sha256: str) -> None:
    """Complete the rename a crash interrupted, or drop a model whose round was never committed."""
    pending = pending_path(checkpoint)
    if not pending.is_file():
        return
    if recorded_sha256 and file_sha256(pending) == recorded_sha256:
        log.info("completing the interrupted checkpoint update %s -> %s", pending.name, checkpoint.name)
        os.replace(pending, checkpoint)
    else:
        pending.unlink()


def resume_point(store: RunStore, ref: str, db_url: str = "") -> ResumePoint:
    """Check that run ``ref`` (id or uuid) can be resumed, and load what it resumes from.

    Raises :class:`ResumeError` (or :class:`~fedaegis.shared.store.RunNotFoundError`).
    """
    run = store.get_run(ref)
    label = f"run {run['id']} ({run['uuid']})"
    stored = len(run["rounds"])
    if run["status"] == "completed":
        raise ResumeError(
            f"{label} is already completed ({stored}/{run['num_rounds']} rounds); nothing to resume"
        )
    try:
        cfg = RunConfig.from_flower(
            {**run["config"], "run-uuid": run["uuid"], "db-url": db_url, "resume-run": str(ref)}
        )
    except ConfigError as exc:
        raise ResumeError(f"{label}: its stored configuration is not valid any more: {exc}") from None
    numbers = [r["number"] for r in run["rounds"]]
    if numbers != list(range(1, stored + 1)):
        raise ResumeError(f"{label}: stored rounds {numbers} are not 1..{stored}; cannot tell where to go on")
    if stored > cfg.num_server_rounds:
        raise ResumeError(f"{label}: {stored} rounds stored but num-server-rounds is {cfg.num_server_rounds}")
    if stored == 0:
        if run["status"] != "interrupted":  # it never got going (or died at once): nothing to go on with
            raise ResumeError(f"{label} never stored a round (status {run['status']}"
                              f"{': ' + run['error'] if run['error'] else ''}); start a new run instead")
        return ResumePoint(run["id"], run["uuid"], cfg, 0, None, None)  # Ctrl-C in round 1: the seeded model

    if run["checkpoint_path"]:
        finish_interrupted_rename(Path(run["checkpoint_path"]), run["checkpoint_sha256"])
    try:
        path = store.checkpoint_path(run["id"])
    except FileNotFoundError as exc:
        raise ResumeError(f"{label} cannot be resumed after round {stored}: {exc}") from None
    except ValueError:
        raise ResumeError(
            f"{label}: checkpoint {run['checkpoint_path']} does not match the SHA-256 recorded with "
            f"round {stored} (it was modified or corrupted); refusing to resume from it"
        ) from None
    try:
        model, meta = load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable model is a refusal, with its cause
        raise ResumeError(f"{label}: checkpoint {path} cannot be loaded: {exc}") from None
    expected = model_meta(cfg)
    if any(meta.get(k) != expected[k] for k in (*MODEL_KEYS, "members") if k in expected):
        raise ResumeError(f"{label}: checkpoint {path} holds a {meta} model, the run config a {expected} one")
    if meta.get("round", stored) != stored:
        raise ResumeError(f"{label}: checkpoint {path} is the model of round {meta['round']}, "
                          f"but {stored} rounds are stored")
    log.info("resuming %s after round %d of %d from checkpoint %s (sha256 verified)",
             label, stored, cfg.num_server_rounds, path)
    return ResumePoint(run["id"], run["uuid"], cfg, stored, ArrayRecord(model.state_dict()), path)
