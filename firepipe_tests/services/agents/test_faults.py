"""The agents under faults, as real worker processes on a temporary FIREPIPE_HOME: kill -9 of any
worker at random moments loses and repeats no alert; a poison message ends in the dead-letter
queue with its reason; two analysis workers on one device never move it twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from firepipe.core.agents import messages
from firepipe.services.agents.analysis import device_key
from firepipe.services.agents.response import alert_records
from firepipe.services.agents.runtime import MAX_RECEIVES_VAR, QUEUE_OF, ports
from firepipe.services.agents.supervisor import Supervisor
from firepipe.services.agents.worker import VISIBILITY_VAR, Worker
from firepipe_tests.services.agents.chain import HOT, QUIET, local_agents, send, timeline
from firepipe_tests.services.agents.processes import (
    STARTED,
    Chaos,
    phases,
    register_champion,
    settle,
)
from firepipe_tests.services.inference.serving_sample import saved_detector

pytestmark = pytest.mark.slow

FIRES, CALM = 4, 4  # devices with a fire, devices without
KILL_PHASE_S = 240  # of readings sent while workers are killed
# then quiet, sent once the kills are over: long enough for a warm clear (the monitoring worker
# restarted last relearns each device) and the resolution
TAIL_S = 150
SLICE_S = 5  # seconds of every device's readings per message
# 20 kills in all; a monitoring worker, the slowest to restart (it loads the model), fewer
KILLS = {"monitoring": 6, "analysis": 7, "response": 7}


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("detector")
    saved_detector(folder)
    return folder


def fleet() -> dict[str, list[dict[str, Any]]]:
    """Each device's readings at 1 Hz: a fire of 90 s, starting 40-100 s in, or none. A fire
    outlasts the 50 s of readings a monitoring worker takes in one receive: the messages of a
    worker killed come back after later ones, whose events make theirs stale to the analysis
    agent, so a fire held whole by a killed worker would go unalarmed."""
    total = KILL_PHASE_S + TAIL_S
    devices = {}
    for i in range(FIRES):
        before = 40 + 20 * i
        pattern = [(before, QUIET), (90, HOT), (total - before - 90, QUIET)]
        devices[f"fire-{i}"] = timeline(f"fire-{i}", pattern)
    for i in range(CALM):
        devices[f"calm-{i}"] = timeline(f"calm-{i}", [(total, QUIET)])
    return devices


def bodies(devices: dict[str, list[dict[str, Any]]], start: int, stop: int) -> list[str]:
    """Readings messages of every device, SLICE_S seconds each, from second `start` to `stop`."""
    return [
        messages.encode_readings(
            f"fleet-{at}", [row for rows in devices.values() for row in rows[at : at + SLICE_S]]
        )
        for at in range(start, stop, SLICE_S)
    ]


def test_kill_9_of_any_worker_loses_and_repeats_no_alert(
    firepipe_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VISIBILITY_VAR, "3")  # a killed worker's messages come back in 3 s
    # Each kill counts a receive of the messages its victim held: a message held through
    # several kills is no poison.
    monkeypatch.setenv(MAX_RECEIVES_VAR, "10")
    register_champion(tmp_path / "detector")
    p = ports()
    p.wire()
    devices = fleet()
    phase = bodies(devices, 0, KILL_PHASE_S)
    tail = bodies(devices, KILL_PHASE_S, KILL_PHASE_S + TAIL_S)
    wanted = sum(KILLS.values())

    supervisor = Supervisor(firepipe_home)
    supervisor.start()
    try:
        chaos = Chaos(supervisor, p.queues, seed=19)
        sent, deadline = 0, time.monotonic() + 240
        while sum(chaos.kills.values()) < wanted:
            assert time.monotonic() < deadline, f"only {dict(chaos.kills)} kills in time"
            chaos.check()
            # The readings go out as the kills go on: each kill falls among messages in flight.
            due = len(phase) * (sum(chaos.kills.values()) + 1) // (wanted + 1)
            for body in phase[sent:due]:
                p.queues.send(messages.READINGS_QUEUE, body)
            sent = max(sent, due)
            chaos.kill_due(KILLS)
            time.sleep(0.05)
        for body in phase[sent:] + tail:
            p.queues.send(messages.READINGS_QUEUE, body)
        settle(chaos, timeout_s=120)
    finally:
        supervisor.stop()

    assert chaos.kills == KILLS
    assert chaos.holding["monitoring"] > 0, chaos.holding  # readings were redelivered
    assert supervisor.restarts >= wanted
    assert all(p.queues.depth(q).dead == 0 for q in QUEUE_OF.values())
    # Every fire has exactly one alert, resolved once the fire was out; no calm device has one.
    alerts = list(alert_records(p.store))
    assert sorted(a.alert.device_id for a in alerts) == [f"fire-{i}" for i in range(FIRES)]
    assert {a.status for a in alerts} == {"resolved"}
    # The outbox holds one alarm and one resolution per alert, nothing else.
    sent_kinds = Counter(
        (r.notification.attributes["alert_id"], r.notification.attributes["kind"])
        for r in p.notifier.recent(1000)
    )
    ids = {a.alert.alert_id for a in alerts}
    assert sent_kinds == {(i, kind): 1 for i in ids for kind in ("alarm", "resolved")}
    # No redelivered or rescored reading moved a device twice.
    for device in devices:
        moved = phases(p.store.history(device_key(device)))
        if device.startswith("fire"):
            assert moved.count("ALARM") == 1, (device, moved)
            assert "RESOLVED" in moved, (device, moved)
        else:
            assert moved == ["NORMAL"], (device, moved)


def test_poison_messages_are_dead_lettered_with_their_reason(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VISIBILITY_VAR, "1")
    monkeypatch.setenv(MAX_RECEIVES_VAR, "3")
    p = ports()
    p.wire()
    # A resolution of an alert never opened fails every time it is handled.
    never_opened = (
        '{"device_id":"d","incident_id":"inc-x","phase":"RESOLVED",'
        '"ts":"2026-03-01T12:00:00.000000Z","reason":"quiet","model_version":"m/1",'
        '"event_id":"b:1","sent_at":null}'
    )
    p.queues.send(messages.INCIDENTS_QUEUE, never_opened)
    listed = '["not", "an", "incident"]'
    p.queues.send(messages.INCIDENTS_QUEUE, listed)
    p.queues.send(messages.INCIDENTS_QUEUE, "{not json")
    supervisor = Supervisor(firepipe_home, ("response",))
    supervisor.start()
    try:
        settle(Chaos(supervisor, p.queues, seed=0), timeout_s=90)
    finally:
        supervisor.stop()

    # The unreadable ones at once, on their first receive; the failing one after 3.
    reasons = {d.body: d.reason for d in p.queues.dead_letters(messages.INCIDENTS_QUEUE)}
    assert reasons.keys() == {never_opened, listed, "{not json"}
    assert reasons[listed].startswith("unreadable: ")
    assert 'must be a JSON object, got \'["not"' in reasons[listed]
    assert reasons["{not json"].startswith("unreadable: the incident message is not JSON")
    assert reasons[never_opened] == (
        "failed 3 times: IncidentNotOpenError: alert inc-x is not open yet: retrying"
    )
    assert p.notifier.recent() == []


def test_two_analysis_workers_on_one_device_never_move_it_twice(
    firepipe_home: Path, tmp_path: Path, detector_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VISIBILITY_VAR, "2")
    agents = local_agents(detector_dir)
    queues = agents.ports.queues
    # One device's fire scored in process, two readings per message: 150 score messages.
    send(agents.ports, timeline("solo", [(60, QUIET), (60, HOT), (180, QUIET)]), "solo", size=2)
    monitoring = Worker("monitoring", agents)
    while monitoring.poll(wait_s=0):
        pass
    scored = []
    while taken := queues.receive(messages.SCORES_QUEUE, 10, 0, 600):
        scored += [m.body for m in taken]
        queues.delete_batch(messages.SCORES_QUEUE, [m.receipt for m in taken])
    assert len(scored) == 150
    # Each message twice, its copy 5 messages on: of two receives of 10 taken at once, the
    # second holds the first's events again, so the workers race on the same events.
    order = []
    for k in range(len(scored) + 5):
        order += scored[k : k + 1] + (scored[k - 5 : k - 4] if k >= 5 else [])

    logs = [tmp_path / f"analysis-{n}.log" for n in range(2)]
    workers = []
    for log in logs:
        with log.open("wb") as out:
            command = [sys.executable, "-m", "firepipe.services.agents.worker", "analysis"]
            workers.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 90
        while not all(STARTED in log.read_text() for log in logs):
            assert time.monotonic() < deadline
            assert all(w.poll() is None for w in workers)
            time.sleep(0.1)
        for at in range(0, len(order), 10):
            queues.send_batch(messages.SCORES_QUEUE, [(b, {}) for b in order[at : at + 10]])
        while (depth := queues.depth(messages.SCORES_QUEUE)).visible or depth.in_flight:
            assert time.monotonic() < deadline + 60, depth
            time.sleep(0.1)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(30)

    assert [w.returncode for w in workers] == [0, 0]
    assert queues.depth(messages.SCORES_QUEUE).dead == 0
    handled = [_metric(log, "messages_done") for log in logs]
    assert sum(handled) >= len(order), handled
    assert min(handled) > 0, handled  # both took their share
    moved = phases(agents.ports.store.history(device_key("solo")))
    assert moved == ["NORMAL", "ALARM", "RESOLVED", "NORMAL"]
    # One incident opened and closed (a redelivery may publish it again, with the same id).
    incidents = set()
    while taken := queues.receive(messages.INCIDENTS_QUEUE, 10, 0, 600):
        incidents |= {messages.decode_incident(m.body).change for m in taken}
    assert [c.phase for c in sorted(incidents, key=lambda c: c.ts)] == ["ALARM", "RESOLVED"]
    assert len({c.incident_id for c in incidents}) == 1


def _metric(log: Path, name: str) -> float:
    """The sum of `name` in the EMF lines a worker printed."""
    total = 0.0
    for line in log.read_text().splitlines():
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(document, dict) and "_aws" in document and name in document:
            value = document[name]
            total += sum(value) if isinstance(value, list) else value
    return total
