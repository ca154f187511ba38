"""The escalation state machine the CDK app deploys (infra/firepipe_infra/escalation.asl.json,
committed, read by the infra app, which cannot import firepipe) is this core's definition: with
its `${EscalateFunctionArn}` substitution replaced by an ARN, the file equals
`state_machine_definition(that ARN)`, so the behaviour test_escalation.py walks is what deploys.
Regenerate the file as its infra module (escalation.py) says when the definition changes."""

from __future__ import annotations

import json
from pathlib import Path

from firepipe.core.agents.escalation import state_machine_definition

ASL_FILE = Path(__file__).resolve().parents[3] / "infra" / "firepipe_infra" / "escalation.asl.json"
SUBSTITUTION = "${EscalateFunctionArn}"
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:firepipe-dev-agents-escalate"


def test_the_committed_definition_is_the_cores() -> None:
    text = ASL_FILE.read_text()
    assert json.loads(text.replace(SUBSTITUTION, FUNCTION_ARN)) == state_machine_definition(
        FUNCTION_ARN
    )


def test_the_function_is_the_only_substitution() -> None:
    text = ASL_FILE.read_text()
    assert text.count(SUBSTITUTION) == 1
    assert text.count("${") == 1
    assert "arn:aws:lambda" not in text
