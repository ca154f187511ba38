"""The escalation state machine: its structure, and its behaviour driven by a small ASL walker
(below) that runs the definition against a python fake of the escalate Lambda, recording each
Wait's seconds instead of sleeping. The walker implements only what it meets and fails on any
other field, so the definition cannot lean on something the walker silently skips."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from firepipe.core.agents.analysis import Phase
from firepipe.core.agents.escalation import (
    LAMBDA_INVOKE,
    execution_input,
    execution_name,
    state_machine_definition,
)
from firepipe.core.agents.response import Alert, EscalationPolicy, IncidentChange, open_alert

FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:firepipe-escalate"


def alert_with(levels: tuple[tuple[float, str], ...], ack_timeout_s: float = 300) -> Alert:
    change = IncidentChange(
        device_id="lab-1",
        incident_id="inc-0123456789abcdef01234567",
        phase=Phase.ALARM,
        ts=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        reason="score 0.97 >= 0.8 for 3 readings",
        model_version="firepipe-fire-detector/7",
    )
    return open_alert(change, EscalationPolicy(ack_timeout_s, levels))


# --- the walker -------------------------------------------------------------------------------

_INTRINSIC = re.compile(r"(States\.\w+)\((.*)\)")
_FIELDS = {
    "Pass": {"Type", "Parameters", "Next", "End", "Comment"},
    "Choice": {"Type", "Choices", "Default", "Comment"},
    "Wait": {"Type", "SecondsPath", "Next", "End", "Comment"},
    "Task": {"Type", "Resource", "Parameters", "Retry", "ResultSelector", "ResultPath", "Next"},
    "Succeed": {"Type", "Comment"},
    "Fail": {"Type", "Error", "Cause", "Comment"},
}


def path_get(data: Any, path: str) -> Any:
    assert path == "$" or path.startswith("$."), f"walker: unsupported path {path!r}"
    for part in path[2:].split(".") if path != "$" else []:
        data = data[part]
    return data


def intrinsic(expression: str, data: Any) -> Any:
    match = _INTRINSIC.fullmatch(expression)
    assert match, f"walker: unsupported expression {expression!r}"
    name, raw = match.groups()
    args = [
        path_get(data, a.strip()) if a.strip().startswith("$") else json.loads(a)
        for a in raw.split(",")
    ]
    functions: dict[str, Callable[..., Any]] = {
        "States.ArrayLength": len,
        "States.ArrayGetItem": lambda array, index: array[index],
        "States.MathAdd": lambda a, b: a + b,
    }
    return functions[name](*args)


def parameters(template: Any, data: Any) -> Any:
    if not isinstance(template, dict):
        return template
    out = {}
    for key, value in template.items():
        if key.endswith(".$"):
            out[key[:-2]] = (
                path_get(data, value) if value.startswith("$") else intrinsic(value, data)
            )
        else:
            out[key] = parameters(value, data)
    return out


def choose(rule: dict[str, Any], data: Any) -> bool:
    value = path_get(data, rule["Variable"])
    if "NumericLessThanPath" in rule:
        return bool(value < path_get(data, rule["NumericLessThanPath"]))
    if "StringEquals" in rule:
        return bool(value == rule["StringEquals"])
    raise AssertionError(f"walker: unsupported choice rule {rule}")


@dataclass
class Run:
    waited_s: list[int] = field(default_factory=list)
    outcome: str = ""

    @property
    def elapsed_s(self) -> int:
        return sum(self.waited_s)


def walk(
    definition: dict[str, Any], data: Any, escalate: Callable[[dict[str, Any], int], Any]
) -> Run:
    """Run `definition` on `data`; `escalate(payload, elapsed_s)` is the Lambda's Payload."""
    run, name, states = Run(), definition["StartAt"], definition["States"]
    for _ in range(1000):
        state = states[name]
        assert set(state) <= _FIELDS[state["Type"]], f"walker: unsupported fields in {name}"
        kind = state["Type"]
        if kind in {"Succeed", "Fail"}:
            run.outcome = kind if kind == "Succeed" else state["Error"]
            return run
        if kind == "Choice":
            name = next((r["Next"] for r in state["Choices"] if choose(r, data)), state["Default"])
            continue
        if kind == "Pass":
            data = parameters(state["Parameters"], data)
        elif kind == "Wait":
            seconds = path_get(data, state["SecondsPath"])
            assert isinstance(seconds, int), f"Wait needs whole seconds: {seconds!r}"
            assert seconds >= 0
            run.waited_s.append(seconds)
        elif kind == "Task":
            assert state["Resource"] == LAMBDA_INVOKE
            request = parameters(state["Parameters"], data)
            assert request["FunctionName"] == FUNCTION_ARN
            answer = {"StatusCode": 200, "Payload": escalate(request["Payload"], run.elapsed_s)}
            result = parameters(state["ResultSelector"], answer)
            key = re.fullmatch(r"\$\.(\w+)", state["ResultPath"])
            assert key, f"walker: unsupported ResultPath {state['ResultPath']!r}"
            data = {**data, key.group(1): result}
        name = state["Next"]
    raise AssertionError("walker: the machine did not end in 1000 steps")


@dataclass
class FakeEscalate:
    """The escalate Lambda: records what it escalates, answers the alert's status."""

    acknowledged_after: int | None = None  # the level after which someone acknowledges
    escalated: list[tuple[str, int, int]] = field(default_factory=list)

    def __call__(self, payload: dict[str, Any], elapsed_s: int) -> dict[str, str]:
        assert set(payload) == {"alert_id", "level"}
        self.escalated.append((payload["alert_id"], payload["level"], elapsed_s))
        if self.acknowledged_after is not None and payload["level"] >= self.acknowledged_after:
            return {"status": "acknowledged"}
        return {"status": "open"}


# --- tests ------------------------------------------------------------------------------------


def test_the_definition_has_a_wait_and_choices_and_every_transition_lands() -> None:
    definition = state_machine_definition(FUNCTION_ARN)
    states = definition["States"]
    types = {name: state["Type"] for name, state in states.items()}
    assert {"Wait", "Choice"} <= set(types.values())
    assert definition["StartAt"] in states

    targets: dict[str, set[str]] = {}
    for name, state in states.items():
        nexts = {state[k] for k in ("Next", "Default") if k in state}
        nexts |= {rule["Next"] for rule in state.get("Choices", [])}
        assert nexts <= set(states), f"{name} names a state that does not exist"
        targets[name] = nexts

    seen, frontier = set(), [definition["StartAt"]]
    while frontier:
        name = frontier.pop()
        if name not in seen:
            seen.add(name)
            frontier.extend(targets[name])
    assert seen == set(states)  # nothing unreachable
    assert any(types[name] == "Succeed" for name in seen)
    [task] = [s for s in states.values() if s["Type"] == "Task"]
    assert "Lambda.ServiceException" in task["Retry"][0]["ErrorEquals"]
    assert json.loads(json.dumps(definition)) == definition  # plain JSON, as the CDK app sends it


def test_an_open_alert_is_escalated_at_every_level_at_its_offset() -> None:
    alert = alert_with(((300, "on-call"), (900, "site-manager"), (1800, "fire-service")))
    lambda_ = FakeEscalate()

    run = walk(state_machine_definition(FUNCTION_ARN), execution_input(alert), lambda_)

    assert run.outcome == "Succeed"
    assert lambda_.escalated == [
        (alert.alert_id, 0, 300),
        (alert.alert_id, 1, 900),
        (alert.alert_id, 2, 1800),
    ]
    assert run.waited_s == [300, 600, 900]


def test_fractional_offsets_round_up_per_level_without_drift() -> None:
    # Rounding each gap on its own (11, 1, 2 s) would fire at 11, 12 and 14 s.
    alert = alert_with(((10.2, "a"), (10.4, "b"), (11.6, "c")), ack_timeout_s=10)
    lambda_ = FakeEscalate()

    walk(state_machine_definition(FUNCTION_ARN), execution_input(alert), lambda_)

    assert [elapsed for _, _, elapsed in lambda_.escalated] == [11, 11, 12]


def test_an_acknowledged_alert_stops_after_the_level_that_found_it_so() -> None:
    alert = alert_with(((300, "on-call"), (900, "site-manager"), (1800, "fire-service")))
    lambda_ = FakeEscalate(acknowledged_after=0)

    run = walk(state_machine_definition(FUNCTION_ARN), execution_input(alert), lambda_)

    assert run.outcome == "Succeed"
    assert [level for _, level, _ in lambda_.escalated] == [0]
    assert run.waited_s == [300]


def test_an_alert_without_levels_ends_at_once() -> None:
    lambda_ = FakeEscalate()

    run = walk(state_machine_definition(FUNCTION_ARN), execution_input(alert_with(())), lambda_)

    assert (run.outcome, run.waited_s, lambda_.escalated) == ("Succeed", [], [])


def test_an_answer_without_a_known_status_fails_the_execution() -> None:
    alert = alert_with(((300, "on-call"), (900, "site-manager")))

    run = walk(
        state_machine_definition(FUNCTION_ARN), execution_input(alert), lambda p, t: {"status": "?"}
    )

    assert run.outcome == "Escalation.UnknownStatus"


def test_the_execution_input_is_the_alerts_levels() -> None:
    alert = alert_with(((300.5, "on-call"), (900, "site-manager")))

    assert execution_input(alert) == {
        "alert_id": alert.alert_id,
        "levels": [
            {"level": 0, "after_s": 301, "wait_s": 301, "target": "on-call"},
            {"level": 1, "after_s": 900, "wait_s": 599, "target": "site-manager"},
        ],
    }


def test_an_escalation_beyond_a_standard_workflows_year_is_refused() -> None:
    with pytest.raises(ValueError, match="standard workflow"):
        execution_input(alert_with(((400 * 24 * 3600, "archive"),)))


@pytest.mark.parametrize(
    "alert_id",
    ["inc-0123456789abcdef01234567", "a b/c:d", "é" * 200, "x" * 500, "-"],
)
def test_execution_names_are_valid_and_deterministic(alert_id: str) -> None:
    name = execution_name(alert_id)

    assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", name)
    assert execution_name(alert_id) == name
    assert execution_name(alert_id + "x") != name


def test_execution_names_of_ids_with_the_same_safe_characters_differ() -> None:
    assert execution_name("a b") != execution_name("a/b")
    assert execution_name("inc-1").startswith("inc-1-")  # readable in the console


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="Lambda ARN"):
        state_machine_definition("firepipe-escalate")
    with pytest.raises(ValueError, match="alert id"):
        execution_name("")
