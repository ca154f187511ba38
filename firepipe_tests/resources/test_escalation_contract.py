"""The escalation port: the durable local timer (durability, idempotent scheduling, one claimer
per level, re-delivery after a lease) and the Step Functions scheduler on moto (one execution
per alert, its input, a definition moto's ASL parser accepts)."""

import json
import multiprocessing
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from firepipe.core.agents.analysis import Phase
from firepipe.core.agents.escalation import (
    execution_input,
    execution_name,
    state_machine_definition,
)
from firepipe.core.agents.response import Alert, EscalationPolicy, IncidentChange, open_alert
from firepipe.resources import resource_for
from firepipe.resources.escalation import LocalEscalationTimer, StepFunctionsEscalation
from firepipe.settings import Environment, LocalPaths
from firepipe_tests.resources.conftest import REGION

ROLE_ARN = "arn:aws:iam::123456789012:role/firepipe-escalation"
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:firepipe-escalate"
LEVELS = ((300.0, "on-call"), (900.0, "site-manager"))


def make_alert(alert_id: str = "inc-0123456789abcdef01234567") -> Alert:
    change = IncidentChange(
        device_id="lab-1",
        incident_id=alert_id,
        phase=Phase.ALARM,
        ts=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        reason="score 0.97 >= 0.8 for 3 readings",
        model_version="firepipe-fire-detector/7",
    )
    return open_alert(change, EscalationPolicy(300, LEVELS))


# --- the local timer ---------------------------------------------------------------------------


def test_scheduled_levels_outlive_the_instance_that_scheduled_them(tmp_path: Path) -> None:
    path = str(tmp_path / "escalations.db")
    alert = make_alert()
    before = time.time()

    assert LocalEscalationTimer(path=path).schedule(alert) == alert.alert_id

    pending = LocalEscalationTimer(path=path).pending()
    assert [(p.alert_id, p.level, p.target, p.deliveries) for p in pending] == [
        (alert.alert_id, 0, "on-call", 0),
        (alert.alert_id, 1, "site-manager", 0),
    ]
    for due, (after_s, _) in zip(pending, LEVELS, strict=True):
        assert before + after_s <= due.due_wall <= time.time() + after_s


def test_scheduling_an_alert_again_keeps_its_first_times(tmp_path: Path) -> None:
    path = str(tmp_path / "escalations.db")
    alert = make_alert()
    timer = LocalEscalationTimer(path=path)
    timer.schedule(alert)
    first = timer.pending()
    time.sleep(0.01)

    LocalEscalationTimer(path=path).schedule(alert)  # a redelivered alarm, in another worker

    assert timer.pending() == first
    timer.done(alert.alert_id, 0)
    timer.schedule(alert)  # a handled level is not scheduled anew
    assert [p.level for p in timer.pending()] == [1]


def test_a_due_level_goes_to_one_claimer_until_its_lease_ends(tmp_path: Path) -> None:
    timer = LocalEscalationTimer(path=str(tmp_path / "escalations.db"))
    alert = make_alert()
    timer.schedule(alert)
    [level_0, level_1] = timer.pending()

    assert timer.claim_due(now=level_0.due_wall - 1, lease_s=60) == []  # not due yet
    [claimed] = timer.claim_due(now=level_0.due_wall, lease_s=60)
    assert claimed == replace(level_0, deliveries=1)
    assert timer.claim_due(now=level_0.due_wall + 59, lease_s=60) == []  # leased

    # Its claimer died before done(): after the lease it is handed out again.
    [again] = timer.claim_due(now=level_0.due_wall + 60, lease_s=60)
    assert (again.alert_id, again.level, again.deliveries) == (alert.alert_id, 0, 2)
    timer.done(alert.alert_id, 0)
    timer.done(alert.alert_id, 0)  # twice is harmless

    late = level_1.due_wall + 3600
    assert timer.claim_due(now=late, lease_s=60) == [replace(level_1, deliveries=1)]
    assert timer.claim_due(now=late + 3600, lease_s=60) == [replace(level_1, deliveries=2)]


def test_missed_levels_are_all_due_earliest_first(tmp_path: Path) -> None:
    timer = LocalEscalationTimer(path=str(tmp_path / "escalations.db"))
    timer.schedule(make_alert("inc-b"))
    timer.schedule(make_alert("inc-a"))

    due = timer.claim_due(now=time.time() + 10_000, lease_s=60, limit=3)

    assert len(due) == 3
    assert [d.due_wall for d in due] == sorted(d.due_wall for d in due)
    assert [d.level for d in due] == [0, 0, 1]


def test_bad_calls_are_refused(tmp_path: Path) -> None:
    timer = LocalEscalationTimer(path=str(tmp_path / "escalations.db"))
    with pytest.raises(KeyError, match="no escalation level 0 of alert 'inc-x'"):
        timer.done("inc-x", 0)
    with pytest.raises(ValueError, match="lease_s"):
        timer.claim_due(now=time.time(), lease_s=0)
    with pytest.raises(ValueError, match="limit"):
        timer.claim_due(now=time.time(), lease_s=1, limit=0)


def _claim_all(path: str) -> list[tuple[str, int]]:
    """A worker: claim and mark done until nothing is due; what it claimed."""
    timer = LocalEscalationTimer(path=path)
    got: list[tuple[str, int]] = []
    while due := timer.claim_due(now=time.time() + 10_000, lease_s=3600, limit=7):
        for level in due:
            got.append((level.alert_id, level.level))
            timer.done(level.alert_id, level.level)
    return got


@pytest.mark.slow
def test_two_processes_never_claim_the_same_level(tmp_path: Path) -> None:
    path = str(tmp_path / "escalations.db")
    timer = LocalEscalationTimer(path=path)
    for i in range(150):
        timer.schedule(make_alert(f"inc-{i}"))

    with multiprocessing.get_context("fork").Pool(2) as pool:
        first, second = pool.map(_claim_all, [path, path])

    assert not set(first) & set(second)
    assert sorted(first + second) == sorted((f"inc-{i}", lv) for i in range(150) for lv in (0, 1))
    assert timer.pending() == []


def test_the_local_resource_keeps_its_file_under_the_home(tmp_path: Path) -> None:
    timer = resource_for("escalation", Environment.LOCAL, LocalPaths(home=tmp_path))

    assert isinstance(timer, LocalEscalationTimer)
    assert Path(timer.path) == tmp_path / "escalations.db"
    assert str(tmp_path) in timer.describe()


# --- Step Functions on moto --------------------------------------------------------------------


@pytest.fixture
def sfn(aws_credentials: None) -> Any:
    import boto3
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("stepfunctions", region_name=REGION)


def create_machine(sfn: Any) -> str:
    definition = json.dumps(state_machine_definition(FUNCTION_ARN))
    response = sfn.create_state_machine(
        name="firepipe-escalation", definition=definition, roleArn=ROLE_ARN, type="STANDARD"
    )
    return str(response["stateMachineArn"])


@pytest.mark.aws
def test_scheduling_an_alert_twice_starts_one_execution_with_its_levels(sfn: Any) -> None:
    machine = create_machine(sfn)
    scheduler = StepFunctionsEscalation(state_machine_arn=machine, region=REGION)
    alert = make_alert()

    first = scheduler.schedule(alert)
    second = scheduler.schedule(alert)

    assert first == second
    [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert execution["executionArn"] == first
    assert execution["name"] == execution_name(alert.alert_id)
    described = sfn.describe_execution(executionArn=first)
    assert json.loads(described["input"]) == execution_input(alert)
    assert json.loads(described["input"])["levels"][1] == {
        "level": 1,
        "after_s": 900,
        "wait_s": 600,
        "target": "site-manager",
    }


@pytest.mark.aws
def test_an_alert_whose_execution_ended_is_not_escalated_anew(sfn: Any) -> None:
    machine = create_machine(sfn)
    scheduler = StepFunctionsEscalation(state_machine_arn=machine, region=REGION)
    alert = make_alert()
    arn = scheduler.schedule(alert)
    sfn.stop_execution(executionArn=arn)

    # StartExecution answers ExecutionAlreadyExists for a closed execution's name.
    assert scheduler.schedule(alert) == arn
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
    other = scheduler.schedule(make_alert("inc-other"))
    assert other != arn
    assert other.endswith(":" + execution_name("inc-other"))


@pytest.mark.aws
def test_the_definition_passes_an_asl_parser(aws_credentials: None) -> None:
    import boto3
    from moto import mock_aws

    # This moto mode parses definitions with its Amazon States Language parser (the
    # default mode stores them unread).
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name=REGION)
        assert create_machine(sfn).endswith(":stateMachine:firepipe-escalation")
        broken = state_machine_definition(FUNCTION_ARN)
        broken["States"]["WaitForLevel"]["SecondsPath"] = "not a path"
        with pytest.raises(ClientError, match="ASLParserException"):
            sfn.create_state_machine(name="broken", definition=json.dumps(broken), roleArn=ROLE_ARN)


def test_the_aws_resource_reads_its_machine_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:firepipe-escalation"
    monkeypatch.setenv("FIREPIPE_ESCALATION_STATE_MACHINE_ARN", arn)
    monkeypatch.setenv("AWS_REGION", REGION)

    scheduler = resource_for("escalation", Environment.AWS, LocalPaths(home=tmp_path))

    assert isinstance(scheduler, StepFunctionsEscalation)
    ready = scheduler.process_config_and_initialize()
    assert (ready.state_machine_arn, ready.region) == (arn, REGION)
    assert arn in ready.describe()
