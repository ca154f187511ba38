"""The escalation of an unacknowledged alert in AWS: an Amazon States Language state machine (a
standard workflow) that waits for each escalation level and invokes the escalate Lambda.

Execution input (`execution_input`), deterministic from the alert, so a redelivered alert starts
the same execution (StartExecution with the same name and input is idempotent):

    {"alert_id": "inc-...",
     "levels": [{"level": 0, "after_s": 300, "wait_s": 300, "target": "on-call"},
                {"level": 1, "after_s": 900, "wait_s": 600, "target": "site-manager"}]}

`after_s` is the level's offset from the execution's start (when the alert was raised), rounded
up to whole seconds (a Wait takes integers; up, so a level never fires before it is due);
`wait_s` is its difference to the previous level's offset. Waits are differences of rounded
offsets, so rounding never accumulates: level i fires after_s[i] seconds after the start, plus
only the escalate calls' own latency.

The escalate Lambda gets {"alert_id", "level"}, escalates that level if the alert is still open
(the response agent's `due_escalations` guards it, so a retried call never escalates twice) and
answers {"status": "open" | "acknowledged" | "resolved"}. The machine stops at the first answer
that is not "open", or after the last level.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from firepipe.core.agents.response import Alert

# A standard workflow runs at most a year; the last level must fire inside it.
MAX_AFTER_S = 365 * 24 * 3600 - 3600
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
# The errors AWS recommends retrying on a Lambda invoke: the service's, not the function's.
LAMBDA_SERVICE_ERRORS = [
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def state_machine_definition(escalate_function_arn: str) -> dict[str, Any]:
    """The escalation state machine, invoking the escalate Lambda `escalate_function_arn`."""
    if not escalate_function_arn.startswith("arn:"):
        raise ValueError(
            f"the escalate function must be a Lambda ARN, got {escalate_function_arn!r}"
        )
    kept = {"alert_id.$": "$.alert_id", "levels.$": "$.levels", "count.$": "$.count"}
    return {
        "Comment": "Escalate an unacknowledged alert level by level (firepipe).",
        "StartAt": "Prepare",
        "States": {
            "Prepare": {
                "Type": "Pass",
                "Parameters": {
                    "alert_id.$": "$.alert_id",
                    "levels.$": "$.levels",
                    "count.$": "States.ArrayLength($.levels)",
                    "next": 0,
                },
                "Next": "LevelsLeft",
            },
            "LevelsLeft": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.next", "NumericLessThanPath": "$.count", "Next": "TakeLevel"}
                ],
                "Default": "Done",
            },
            "TakeLevel": {
                "Type": "Pass",
                "Parameters": {
                    **kept,
                    "current.$": "States.ArrayGetItem($.levels, $.next)",
                    "next.$": "States.MathAdd($.next, 1)",
                },
                "Next": "WaitForLevel",
            },
            "WaitForLevel": {"Type": "Wait", "SecondsPath": "$.current.wait_s", "Next": "Escalate"},
            "Escalate": {
                "Type": "Task",
                "Resource": LAMBDA_INVOKE,
                "Parameters": {
                    "FunctionName": escalate_function_arn,
                    "Payload": {"alert_id.$": "$.alert_id", "level.$": "$.current.level"},
                },
                "Retry": [
                    {
                        "ErrorEquals": LAMBDA_SERVICE_ERRORS,
                        "IntervalSeconds": 2,
                        "MaxAttempts": 6,
                        "BackoffRate": 2,
                    },
                    # The handler is idempotent, so a failed one (its store briefly away) is
                    # retried too rather than dropping the rest of the escalation.
                    {
                        "ErrorEquals": ["States.TaskFailed"],
                        "IntervalSeconds": 10,
                        "MaxAttempts": 3,
                        "BackoffRate": 2,
                    },
                ],
                "ResultSelector": {"status.$": "$.Payload.status"},
                "ResultPath": "$.answer",
                "Next": "StillOpen",
            },
            "StillOpen": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.answer.status", "StringEquals": "open", "Next": "LevelsLeft"},
                    {"Variable": "$.answer.status", "StringEquals": "acknowledged", "Next": "Done"},
                    {"Variable": "$.answer.status", "StringEquals": "resolved", "Next": "Done"},
                ],
                "Default": "UnknownStatus",
            },
            "UnknownStatus": {
                "Type": "Fail",
                "Error": "Escalation.UnknownStatus",
                "Cause": 'the escalate function must answer a status: "open", '
                '"acknowledged" or "resolved"',
            },
            "Done": {"Type": "Succeed"},
        },
    }


def execution_input(alert: Alert) -> dict[str, Any]:
    """The escalation machine's input for `alert` (the shape is in the module's docstring)."""
    levels, previous = [], 0
    for level, (after_s, target) in enumerate(alert.escalation):
        offset = math.ceil(after_s)
        if not 0 <= offset <= MAX_AFTER_S:
            raise ValueError(
                f"alert {alert.alert_id}: escalation after {after_s:g} s does not fit a "
                f"standard workflow (0 to {MAX_AFTER_S} s)"
            )
        levels.append(
            {"level": level, "after_s": offset, "wait_s": offset - previous, "target": target}
        )
        previous = offset
    return {"alert_id": alert.alert_id, "levels": levels}


def execution_name(alert_id: str) -> str:
    """The execution's name for `alert_id`: the id's safe characters (for people reading the
    console) and a hash of the whole id (so two ids never share a name); 1-80 of [A-Za-z0-9_-]."""
    if not alert_id:
        raise ValueError("an escalation needs an alert id")
    digest = hashlib.sha256(alert_id.encode()).hexdigest()[:16]
    readable = _NAME_CHARS.sub("_", alert_id)[:63]
    return f"{readable}-{digest}"
