"""The agent port: BedrockAgent on real event-stream frames (botocore's Stubber cannot stub
invoke_agent's stream, so a before-send handler answers with encoded frames), and LocalAgent
running the planner's calls on the action API's operations."""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from firepipe.resources import AWS, LOCAL, resource_for
from firepipe.resources.agent_runtime import AgentError, BedrockAgent, LocalAgent
from firepipe.settings import local_paths


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total and headers length, CRC32), string headers
    (type 7), payload, message CRC32."""
    encoded = b"".join(
        bytes([len(name)])
        + name.encode()
        + b"\x07"
        + struct.pack(">H", len(value))
        + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(kind: str, body: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, json.dumps(body).encode())


def chunk(text: bytes) -> bytes:
    return event("chunk", {"bytes": base64.b64encode(text).decode()})


def exception(kind: str, message: str) -> bytes:
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, json.dumps({"message": message}).encode())


TRACE = {
    "agentId": "AGENT12345",
    "sessionId": "s-1",
    "trace": {
        "orchestrationTrace": {
            "invocationInput": {
                "invocationType": "ACTION_GROUP",
                "actionGroupInvocationInput": {
                    "actionGroupName": "firepipe-actions",
                    "apiPath": "/generate-synthetic-data",
                    "verb": "post",
                    "requestBody": {
                        "content": {
                            "application/json": [
                                {"name": "data_type", "type": "string", "value": "fire_scenarios"}
                            ]
                        }
                    },
                },
            }
        }
    },
}
OBSERVATION = {
    "agentId": "AGENT12345",
    "trace": {
        "orchestrationTrace": {
            "observation": {
                "type": "ACTION_GROUP",
                "actionGroupInvocationOutput": {"text": '{"generation_id": "g1"}'},
            }
        }
    },
}


class Raw:
    """An HTTP body that arrives in small pieces, as a network would deliver it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        for at in range(0, len(self.data), 7):
            yield self.data[at : at + 7]

    def close(self) -> None:
        pass


@pytest.fixture
def agent(
    aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> Callable[[bytes], tuple[BedrockAgent, list[Any]]]:
    def make(body: bytes) -> tuple[BedrockAgent, list[Any]]:
        client = boto3.client("bedrock-agent-runtime", region_name="eu-west-1")
        sent: list[Any] = []

        def answer(request: Any, **_: Any) -> AWSResponse:
            sent.append(request)
            headers = {
                "content-type": "application/vnd.amazon.eventstream",
                "x-amz-bedrock-agent-session-id": "s-1",
                "x-amzn-bedrock-agent-content-type": "application/json",
            }
            return AWSResponse(request.url, 200, headers, Raw(body))

        client.meta.events.register("before-send.bedrock-agent-runtime.InvokeAgent", answer)
        monkeypatch.setattr(BedrockAgent, "_client", lambda self: client)
        return BedrockAgent(
            agent_id="AGENT12345", agent_alias_id="ALIAS1", region="eu-west-1"
        ), sent

    return make


def test_bedrock_agent_joins_chunks_and_keeps_the_trace(agent: Any) -> None:
    # "é" is two bytes split over two chunks: joined as bytes before decoding.
    text = "Generation g1 started: 200 kitchens, café-style.".encode()
    cut = text.index("é".encode()) + 1
    body = event("trace", TRACE) + chunk(text[:cut]) + event("trace", OBSERVATION)
    bedrock, sent = agent(body + chunk(text[cut:]))
    answer = bedrock.ask("two hundred kitchens", session_id="s-1")
    assert answer.text == "Generation g1 started: 200 kitchens, café-style."
    assert answer.session_id == "s-1"
    assert [t["trace"]["orchestrationTrace"] for t in answer.trace] == [
        TRACE["trace"]["orchestrationTrace"],
        OBSERVATION["trace"]["orchestrationTrace"],
    ]
    assert answer.tool_calls == [
        {
            "operation": "POST /generate-synthetic-data",
            "action_group": "firepipe-actions",
            "parameters": [],
            "body": {
                "application/json": [
                    {"name": "data_type", "type": "string", "value": "fire_scenarios"}
                ]
            },
            "answer": '{"generation_id": "g1"}',
        }
    ]
    (request,) = sent
    assert "/agents/AGENT12345/agentAliases/ALIAS1/sessions/s-1/text" in request.url
    assert json.loads(request.body) == {"inputText": "two hundred kitchens", "enableTrace": True}


def test_bedrock_agent_error_event_is_a_clear_error(agent: Any) -> None:
    bedrock, _ = agent(chunk(b"Partial ") + exception("throttlingException", "Rate exceeded"))
    with pytest.raises(AgentError) as caught:
        bedrock.ask("two hundred kitchens")
    assert str(caught.value) == (
        "Bedrock agent AGENT12345 (alias ALIAS1) failed: throttlingException: Rate exceeded"
    )


def test_bedrock_agent_new_session_when_none_given(agent: Any) -> None:
    bedrock, sent = agent(chunk(b"ok"))
    answer = bedrock.ask("hello")
    assert answer.text == "ok"
    assert answer.session_id == "s-1"  # the service's header
    assert "/sessions/" in sent[0].url
    assert "/sessions/s-1/" not in sent[0].url  # a fresh id was sent


def test_local_agent_runs_the_planned_calls(firepipe_home: Path) -> None:
    local = LocalAgent(output_root=str(firepipe_home / "generated"))
    answer = local.ask(
        "generate 30 rows with columns id:uuid unique, age:integer(18..90) as csv to a file, "
        "seed 5",
        session_id="abc",
    )
    assert answer.session_id == "abc"
    (call,) = answer.tool_calls
    assert call["operation"] == "generateSyntheticData"
    assert call["status"] == 200
    assert call["answer"]["records_generated"] == 30
    written = Path(call["answer"]["output_location"])
    assert written.parent == (firepipe_home / "generated").resolve()
    assert written.read_text().splitlines()[0] == "id,age"
    assert len(written.read_text().splitlines()) == 31
    assert answer.text.splitlines()[0] == (
        "firepipe's local planner (deterministic; not a language model): I read your request "
        "as 1 call(s)."
    )
    assert f"30 rows, {written} (seed 5, 0 warning(s))" in answer.text


def test_local_agent_reports_an_operation_refusal_in_its_answer(firepipe_home: Path) -> None:
    answer = LocalAgent().ask('validate {"fields": [{"name": "a", "type": "text"}]}')
    (call,) = answer.tool_calls
    assert (call["operation"], call["status"], call["answer"]["valid"]) == (
        "validateSchema",
        200,
        False,
    )
    assert "-> 200: invalid; 0 compliance issue(s); a: unknown type 'text'" in answer.text


def test_local_agent_says_what_it_cannot_read(firepipe_home: Path) -> None:
    with pytest.raises(AgentError, match="cannot read: 'sandwich'"):
        LocalAgent().ask("make me a sandwich")
    with pytest.raises(AgentError, match="the request is empty"):
        LocalAgent().ask("  ")


def test_environment_table_has_both_agents(firepipe_home: Path) -> None:
    local = resource_for("agent_runtime", LOCAL, local_paths())
    assert isinstance(local, LocalAgent)
    assert local.output_root == str(firepipe_home / "generated")
    assert isinstance(resource_for("agent_runtime", AWS, local_paths()), BedrockAgent)


def test_every_planned_body_is_a_valid_request_of_its_operation() -> None:
    """The planner writes what the action API reads: each body validates with the model of the
    operation it names (the fire mix adds up to 1 exactly, the action API's own check)."""
    from firepipe.core.genai.fire_request import shares_of
    from firepipe.core.genai.planner import plan
    from firepipe.services.actions.bedrock_lambda import ROUTES

    models = {route.operation_id: route.model() for route in ROUTES}
    requests = [
        "two hundred kitchens with frying and a few slow smouldering fires, ten minutes each, "
        "five percent faulty sensors",
        "500 rooms: 30% flaming, 20% smouldering and the rest cooking, 90 s, seed 7, on a GPU",
        "flaming and smouldering fires for 1 h, no faults, batch 2",
        "generate 50 rows with columns id:uuid, age:integer(1..9) as parquet to a file",
        "validate columns id:uuid, age:integr under HIPAA",
        "what does a smouldering fire look like?",
        "list the last 3 generations",
        "status of generation 0123abcd",
        "quality of generation 0123abcd",
    ]
    for request in requests:
        (call,) = plan(request).calls
        values = models[call.operation_id].model_validate(call.body)
        if call.body.get("data_type") == "fire_scenarios":
            shares = shares_of(values.families, values.mix)  # type: ignore[attr-defined]
            assert set(shares) <= {"baseline", "flaming", "smouldering", "nuisance"}


class _Runs:
    """Fire runs on an instance, queued when launched, that succeed on look `ends_at` (never
    when None); with `daemon` a daemon serves the queue, else they execute in this process."""

    in_process = True

    def __init__(self, *, daemon: bool = False, ends_at: int | None = 2) -> None:
        self.looks, self.daemon, self.ends_at = 0, daemon, ends_at
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def daemon_alive(self) -> bool:
        return self.daemon

    def occupied(self) -> dict[str, set[str]]:
        return {}

    def launch(self, generation_id: str, make_plan: Any) -> tuple[Any, list[Any]]:
        plan = self.plan = make_plan(self.occupied())
        return plan, [self._state(run.partition_key, "QUEUED") for run in plan.runs]

    def runs_of(self, generation_id: str) -> list[Any]:
        self.looks += 1
        ended = self.ends_at is not None and self.looks >= self.ends_at
        status = "SUCCESS" if ended else "STARTED"
        return [self._state(run.partition_key, status) for run in self.plan.runs]

    def generations(self, limit: int) -> list[Any]:
        return []

    def _state(self, partition: str, status: str) -> Any:
        from datetime import UTC, datetime

        from firepipe.services.actions.runs import RunState

        return RunState(f"run-{partition}", partition, status, datetime(2026, 1, 1, tzinfo=UTC))


def test_local_agent_waits_for_a_fire_generation_in_process(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from firepipe.services.actions.operations import Actions

    runs = _Runs()
    monkeypatch.setattr(LocalAgent, "actions", lambda self: Actions(runs=runs))
    answer = LocalAgent(poll_s=0.0).ask("3 flaming and 1 cooking, 20 s each, seed 4")
    (call,) = answer.tool_calls
    assert call["answer"]["status"] == "queued"
    assert call["settled"]["status"] == "succeeded"
    assert runs.looks == 2  # polled until the runs ended
    assert runs.closed  # ours are done: no other request's queued run is started here
    assert sorted(r.family for r in runs.plan.runs) == ["flaming", "nuisance"]
    assert {r.family: r.settings.devices for r in runs.plan.runs} == {"flaming": 3, "nuisance": 1}
    assert "   then: " in answer.text
    assert " succeeded, " in answer.text.splitlines()[3]


def test_local_agent_does_not_wait_for_runs_in_a_daemon_s_queue(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from firepipe.services.actions.operations import Actions

    runs = _Runs(daemon=True)
    monkeypatch.setattr(LocalAgent, "actions", lambda self: Actions(runs=runs))
    answer = LocalAgent(wait_s=5.0, poll_s=0.0).ask("3 flaming, 20 s each, seed 4")
    (call,) = answer.tool_calls
    assert call["answer"]["status"] == "queued"
    assert runs.looks == 0  # answered at once: never polled
    assert "settled" not in call
    generation_id = call["answer"]["generation_id"]
    command = f'firepipe agent ask "status of generation {generation_id}"'
    assert call["follow"] == command
    assert answer.text.splitlines()[3] == (
        f"   its runs are in the Dagster daemon's queue; follow them: {command}"
    )


def test_local_agent_does_not_wait_for_runs_it_cannot_see_execute(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of a recorder that says nothing of where they execute are not waited for."""
    from firepipe.services.actions.operations import Actions

    class _Elsewhere(_Runs):
        in_process = False

    runs = _Elsewhere()
    monkeypatch.setattr(LocalAgent, "actions", lambda self: Actions(runs=runs))
    (call,) = LocalAgent(wait_s=5.0, poll_s=0.0).ask("3 flaming").tool_calls
    assert (runs.looks, "settled" in call) == (0, False)


def test_local_agent_wait_is_bounded_and_says_so(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from firepipe.services.actions.operations import Actions

    runs = _Runs(ends_at=None)
    monkeypatch.setattr(LocalAgent, "actions", lambda self: Actions(runs=runs))
    answer = LocalAgent(wait_s=0.05, poll_s=0.01).ask("3 flaming, 20 s each")
    (call,) = answer.tool_calls
    assert call["settled"]["status"] == "running"
    assert runs.looks >= 2  # it polled, then gave up
    assert not runs.closed  # its runs go on in this process
    generation_id = call["answer"]["generation_id"]
    assert answer.text.splitlines()[4] == (
        "   still running after 0.05 s of waiting: its runs go on in this process (the command "
        "ends when they do); follow them: "
        f'firepipe agent ask "status of generation {generation_id}"'
    )
