"""`firepipe alerts list|ack`, `agents status` and `replay`'s refusals, on a home whose agents
raised an alert (driven in process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from firepipe.cli.app import main
from firepipe.core.agents import messages
from firepipe_tests.services.agents.chain import HOT, QUIET, local_agents, pump, send, timeline
from firepipe_tests.services.agents.chain import workers as agent_workers
from firepipe_tests.services.inference.serving_sample import saved_detector


@pytest.fixture
def alerted_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FIREPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FIREPIPE_ENV", "local")
    saved_detector(tmp_path / "detector")
    agents = local_agents(tmp_path / "detector")
    send(agents.ports, timeline("porch", [(40, QUIET), (20, HOT)]), "b")
    pump(agent_workers(agents))
    agents.ports.queues.send(messages.READINGS_QUEUE, "not json")
    pump(agent_workers(agents))
    (record,) = json.loads("[" + run("alerts", "list", "--json").output.strip() + "]")
    return str(record["alert_id"])


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args))


def test_alerts_list_and_ack(alerted_home: str) -> None:
    listed = run("alerts", "list")
    assert listed.exit_code == 0
    assert alerted_home in listed.output
    assert "open" in listed.output
    acked = run("alerts", "ack", alerted_home, "--by", "ana")
    assert acked.exit_code == 0
    assert f"alert {alerted_home} acknowledged by ana" in acked.output
    (record,) = [json.loads(line) for line in run("alerts", "list", "--json").output.splitlines()]
    assert record["status"] == "acknowledged"
    assert record["acknowledged_by"] == "ana"
    assert run("alerts", "list", "--status", "open").output.strip() == "no alerts"


def test_ack_of_an_unknown_alert_is_one_error_line(alerted_home: str) -> None:
    result = run("alerts", "ack", "inc-nope")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: no alert 'inc-nope': `firepipe alerts list` shows the alerts"
    )


def test_agents_status_shows_depths_and_dead_letters(alerted_home: str) -> None:
    status = json.loads(run("agents", "status", "--json").output)
    assert status["supervisor"] is None
    readings = status["queues"]["readings"]
    assert readings["dead"] == 1
    assert "not JSON" in readings["dead_letters"][0]["reason"]
    assert all(q["visible"] == 0 for q in status["queues"].values())


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ([], "name one of --test SDCxx or --family FAMILY"),
        (["--test", "SDC02", "--family", "flaming"], "name one of --test"),
        (["--test", "SDC99"], "no test 'SDC99'"),
    ],
)
def test_replay_refuses_what_it_cannot_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], why: str
) -> None:
    monkeypatch.setenv("FIREPIPE_HOME", str(tmp_path / "home"))
    result = run("replay", *args)
    assert result.exit_code == 2
    assert why in result.output
