"""The progress display, fed events in the form the server emits them (no terminal, no run).

The events a real simulation emits are checked in tests/test_simulation.py; here the
renderer's state, estimate of the time left and text, and the relay that picks events out of
the run's log stream.
"""

from __future__ import annotations

import io
import json
import logging

from rich.console import Console

from fedaegis.orchestration.progress import RunProgress, duration, live
from fedaegis.orchestration.simulation import _relay

SITES = [7301, 42, 999]  # Flower node ids, in the order the server sent the requests


def _round(r: int, t0: float, train: list[float], evaluate: list[tuple[float, bool]]) -> list[dict]:
    events = [{"event": "sent", "t": t0, "phase": "train", "round": r, "rounds": 3, "sites": sorted(SITES)}]
    events += [{"event": "reply", "t": t, "phase": "train", "round": r, "site": s, "ok": True}
               for s, t in zip(SITES, train)]
    events.append({"event": "done", "t": train[-1], "phase": "train", "round": r, "rounds": 3, "replies": 3, "sent": 3})
    t1 = train[-1]
    events.append({"event": "sent", "t": t1, "phase": "evaluate", "round": r, "rounds": 3, "sites": sorted(SITES)})
    events += [{"event": "reply", "t": t, "phase": "evaluate", "round": r, "site": s, "ok": ok}
               for s, (t, ok) in zip(SITES, evaluate)]
    if len(evaluate) == 3:
        events.append({"event": "done", "t": evaluate[-1][0], "phase": "evaluate", "round": r, "rounds": 3,
                       "replies": 3, "sent": 3})
    return events


def _text(state: RunProgress, now: float) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(state.render(now))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_display_shows_round_sites_elapsed_and_time_left():
    state = RunProgress()
    events = _round(1, 100.0, [110.0, 112.0, 114.0], [(115.0, True), (116.0, False), (117.0, True)])
    events += [{"event": "sent", "t": 117.0, "phase": "train", "round": 2, "rounds": 3, "sites": sorted(SITES)},
               {"event": "reply", "t": 125.0, "phase": "train", "round": 2, "site": 42, "ok": True}]
    for event in events:
        state.update(event)
    # round 1 took 17 s: 10 s into round 2, 7 s of it and one more round are left
    assert state.remaining(127.0) == 24.0
    text = _text(state, 127.0)
    assert "round 2/3" in text and "train" in text and "elapsed 27s" in text and "left ~24s" in text
    assert "1/3 sites answered the train request" in text
    # sites are numbered in the order the server lists them (node 42 first), not by their Flower ids
    assert "site 1 ✓" in text and "site 2 …" in text and "site 3 …" in text and "7301" not in text


def test_a_simulated_sites_work_is_shown_until_it_answers():
    state = RunProgress()
    events = [{"event": "sent", "t": 0.0, "phase": "train", "round": 1, "rounds": 3, "sites": sorted(SITES)},
              {"event": "work", "t": 1.0, "site": 7301, "task": "training", "done": 2, "total": 5, "unit": "epoch"},
              {"event": "work", "t": 2.0, "site": 42, "task": "training", "done": 1, "total": 5, "unit": "epoch"},
              {"event": "work", "t": 3.0, "site": 42, "task": "training", "done": 3, "total": 5, "unit": "epoch"},
              {"event": "reply", "t": 4.0, "phase": "train", "round": 1, "site": 999, "ok": True},
              {"event": "work", "t": 4.5, "site": 5, "task": "training", "done": 1, "total": 5, "unit": "epoch"}]
    for event in events:
        state.update(event)
    text = _text(state, 5.0)
    # sites 1, 2, 3 are nodes 42, 999, 7301 (the order the server listed them); 42 at its latest report
    assert "site 1 … training 3/5 epoch" in text and "site 3 … training 2/5 epoch" in text
    assert "site 2 ✓" in text and "1/3 sites answered" in text and "site 4" not in text  # node 5 was not asked
    state.update({"event": "reply", "t": 6.0, "phase": "train", "round": 1, "site": 42, "ok": True})
    state.update({"event": "sent", "t": 7.0, "phase": "evaluate", "round": 1, "rounds": 3, "sites": sorted(SITES)})
    assert "training" not in _text(state, 8.0)  # a new step starts with no site's work


def test_failed_replies_and_no_estimate_before_a_round_has_ended():
    state = RunProgress()
    for event in _round(1, 0.0, [10.0, 20.0, 30.0], [(35.0, True), (40.0, False)]):
        state.update(event)
    assert state.remaining(40.0) is None  # training and evaluation differ too much to extrapolate
    text = _text(state, 40.0)
    assert "2/3 sites answered the evaluate request (1 failed)" in text and "site 1 ✗" in text
    assert "left: known after round 1" in text


def test_a_finished_run_has_nothing_left():
    state = RunProgress()
    for r in (1, 2, 3):
        for event in _round(r, 20.0 * (r - 1), [20.0 * r - 15, 20.0 * r - 12, 20.0 * r - 10],
                            [(20.0 * r - 5, True), (20.0 * r - 3, True), (20.0 * r, True)]):
            state.update(event)
    assert state.finished and state.remaining(60.0) == 0.0
    assert "round 3/3  done" in _text(state, 60.0)


def test_no_display_off_a_terminal_or_when_quiet():
    plain = Console(file=io.StringIO())
    with live(plain, enabled=True) as sink:
        assert sink is None  # CI and pipes keep the plain log lines
    terminal = Console(file=io.StringIO(), force_terminal=True)
    with live(terminal, enabled=False) as sink:
        assert sink is None
    with live(terminal, enabled=True) as sink:
        sink({"event": "sent", "t": 0.0, "phase": "train", "round": 1, "rounds": 2, "sites": [1, 2]})
    assert duration(3725) == "1h02m" and duration(185) == "3m05s" and duration(None) == "?"


def test_the_relay_hands_events_over_and_logs_the_rest(caplog):
    events: list[dict] = []
    on_line = _relay(False, events.append)
    event = {"event": "reply", "t": 1.5, "phase": "train", "round": 1, "site": 42, "ok": True}
    with caplog.at_level(logging.INFO, logger="fedaegis"):
        on_line("[fedaegis] EVENT " + json.dumps(event))
        on_line("[fedaegis] EVENT not json")  # dropped, never shown as a log line
        on_line("[fedaegis] INFO round 1/2: accuracy 0.8")
    assert events == [event]
    assert [r.getMessage() for r in caplog.records] == ["round 1/2: accuracy 0.8"]


def test_attack_progress_counts_every_sample_of_every_attack_run():
    import torch

    from fedaegis.shared.attacks import evaluate_attacks
    from fedaegis.shared.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=2).eval()
    x, y = torch.rand(10, 1, 28, 28), torch.randint(0, 2, (10,))
    calls: list[tuple[int, int, str]] = []
    seen = evaluate_attacks(model, (x, y), ["fgsm", "fmn"], [2 / 255, 8 / 255], batch_size=4,
                            progress=lambda *a: calls.append(a))
    # 3 batches; fgsm runs once per epsilon, one FMN run gives every epsilon
    assert [c[0] for c in calls] == [4, 8, 12, 16, 20, 24, 26, 28, 30] and {c[1] for c in calls} == {30}
    assert [c[2] for c in calls[:3]] == ["fgsm", "fgsm", "fmn"]
    assert seen == evaluate_attacks(model, (x, y), ["fgsm", "fmn"], [2 / 255, 8 / 255], batch_size=4)


def test_verbose_and_quiet_together_are_refused_before_anything_starts(tmp_path):
    from typer.testing import CliRunner

    from fedaegis.orchestration.cli import app

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    res = CliRunner().invoke(app, ["simulate", "--verbose", "--quiet", "--db-url", db])
    assert res.exit_code == 2 and "--verbose and --quiet both set" in res.output
    assert not (tmp_path / "runs.db").exists()
