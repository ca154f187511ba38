"""`firepipe agent ask`: locally the planner runs the action API's operations end to end; what
it cannot read is one `Error:` line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from firepipe.cli import main

TABLE_REQUEST = (
    "generate 12 rows with columns id:uuid unique, age:integer(18..90), email:email "
    "as json, seed 3, GDPR"
)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["agent", "ask", *args])


def test_custom_table_end_to_end(firepipe_home: Path) -> None:
    result = invoke(TABLE_REQUEST, "--session", "s-7")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("firepipe's local planner (deterministic; not a language model)")
    assert lines[1].startswith('1. generateSyntheticData {"data_type": "custom", "volume": 12')
    assert lines[2].startswith("   -> 200: generation ")
    assert "12 rows, inline in the answer (seed 3, " in lines[2]
    assert lines[-1] == "(session s-7)"


def test_json_answer_holds_the_rows_and_the_call(firepipe_home: Path) -> None:
    result = invoke(TABLE_REQUEST, "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    (call,) = answer["tool_calls"]
    assert call["operation"] == "generateSyntheticData"
    assert call["body"]["compliance_requirements"] == ["GDPR"]
    rows = call["answer"]["data"]
    assert len(rows) == 12
    assert all(18 <= row["age"] <= 90 for row in rows)
    assert len({row["id"] for row in rows}) == 12
    assert any("email: GDPR" in w for w in call["answer"]["warnings"])
    again = json.loads(invoke(TABLE_REQUEST, "--json").output)
    assert again["tool_calls"][0]["answer"]["data"] == rows  # seed 3: the same rows
    assert again["session_id"] != answer["session_id"]  # a new session each time


def test_unreadable_request_is_one_error_line(firepipe_home: Path) -> None:
    result = invoke("two hundred kitchens and a walrus, ten minutes each")
    assert result.exit_code == 1
    assert result.output == "Error: cannot read: 'walrus'\n"


def test_refused_mix_is_one_error_line(firepipe_home: Path) -> None:
    result = invoke("60% flaming and 50% cooking")
    assert result.exit_code == 1
    assert result.output == "Error: cannot read the mix: its shares add up to 110%\n"
