"""The agent port: `ask(request, session_id)` -> the agent's answer, the tool calls it made and
its trace. In AWS the Bedrock agent (bedrock-agent-runtime `invoke_agent`, its answer streamed
in chunks); locally a deterministic planner (firepipe.core.genai.planner, not a language model)
that turns the request into the same tool calls and runs them in process on the action API's
operations.
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import dagster as dg

# Bedrock reads the request into the model's prompt: its documented cap on inputText.
MAX_REQUEST_CHARS = 25_000


class AgentError(RuntimeError):
    """The agent could not answer: a request the planner cannot read, or Bedrock's error."""


@dataclass(frozen=True)
class AgentAnswer:
    """What the agent said, the tool calls it made ({operation, body, status, answer}; from
    the trace in AWS) and, in AWS, the raw trace events."""

    text: str
    session_id: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)


class AgentRuntime(dg.ConfigurableResource, ABC):
    """Where requests in words go."""

    @abstractmethod
    def ask(self, request: str, session_id: str | None = None) -> AgentAnswer:
        """The agent's answer to `request`, in `session_id`'s conversation (a new one when
        None); raises AgentError when it cannot answer."""

    @abstractmethod
    def describe(self) -> str:
        """Who answers, for people."""


def _check(request: str) -> str:
    text = request.strip()
    if not text:
        raise AgentError("the request is empty")
    if len(text) > MAX_REQUEST_CHARS:
        raise AgentError(f"the request has {len(text)} characters, over {MAX_REQUEST_CHARS}")
    return text


class LocalAgent(AgentRuntime):
    """The planner and the action API's operations in this process. Sessions hold nothing:
    each request stands alone, and the session id is only echoed."""

    output_root: str | None = None  # where custom tables go (default $FIREPIPE_HOME/generated)
    # A fire generation whose runs execute in this process (no Dagster daemon) is waited for,
    # at most wait_s, so the answer says how it ended; runs in a daemon's queue are not waited
    # for: the answer says at once how to follow them.
    wait_s: float = 600.0
    poll_s: float = 0.5

    def describe(self) -> str:
        return "firepipe's local planner (deterministic; not a language model)"

    def actions(self) -> Any:
        """The action API's operations, run in this process."""
        from pathlib import Path

        from firepipe.services.actions.operations import Actions

        return Actions.from_environment(Path(self.output_root) if self.output_root else None)

    def ask(self, request: str, session_id: str | None = None) -> AgentAnswer:
        from firepipe.core.genai.planner import PlanError, plan
        from firepipe.services.actions.bedrock_lambda import call_operation

        try:
            planned = plan(_check(request))
        except PlanError as error:
            raise AgentError(str(error)) from None
        actions = self.actions()
        calls: list[dict[str, Any]] = []
        for call in planned.calls:
            status, answer = call_operation(actions, call.operation_id, call.body)
            done: dict[str, Any] = {"operation": call.operation_id, "body": call.body}
            calls.append({**done, "status": status, "answer": answer})
            if status == 200 and answer.get("status") in _UNSETTLED:
                generation_id = answer["generation_id"]
                calls[-1]["follow"] = follow(generation_id)
                if _runs_here(actions.runs):
                    calls[-1]["settled"] = self._settled(actions, generation_id)
        ours = [c["settled"] for c in calls if "settled" in c]
        if ours and all(s.get("status") not in _UNSETTLED for s in ours):
            # Ours are done: leave other requests' queued runs to the service that serves
            # them, and end once the run under way (if any) is.
            actions.runs.close()
        lines = [f"{self.describe()}: I read your request as {len(calls)} call(s)."]
        for number, done in enumerate(calls, start=1):
            lines.append(f"{number}. {done['operation']} {json.dumps(done['body'])}")
            lines.append(f"   -> {done['status']}: {summary(done['operation'], done['answer'])}")
            lines += self._outcome(done)
        lines += [f"Note: {note}" for note in planned.notes]
        return AgentAnswer("\n".join(lines), session_id or uuid.uuid4().hex, calls)

    def _outcome(self, done: dict[str, Any]) -> list[str]:
        """What became of a fire generation's runs: how they ended, or how to follow them."""
        if "follow" not in done:
            return []
        if "settled" not in done:
            return [f"   its runs are in the Dagster daemon's queue; follow them: {done['follow']}"]
        settled = done["settled"]
        lines = [f"   then: {summary('getGeneration', settled)}"]
        if settled.get("status") in _UNSETTLED:
            lines.append(
                f"   still {settled['status']} after {self.wait_s:g} s of waiting: its runs go on "
                f"in this process (the command ends when they do); follow them: {done['follow']}"
            )
        return lines

    def _settled(self, actions: Any, generation_id: str) -> dict[str, Any]:
        """The generation once its runs have ended, or as it stands after wait_s."""
        from firepipe.services.actions.bedrock_lambda import call_operation

        deadline = time.monotonic() + self.wait_s
        while True:
            _, found = call_operation(actions, "getGeneration", {"generation_id": generation_id})
            if found.get("status") not in _UNSETTLED or time.monotonic() >= deadline:
                return found
            time.sleep(self.poll_s)


_UNSETTLED = ("queued", "running")


@runtime_checkable
class _InstanceRuns(Protocol):
    """Runs on a Dagster instance (firepipe.services.actions.runs.DagsterRuns): executed in
    this process when it may (`in_process`) and no daemon serves the instance's run queue."""

    in_process: bool

    def daemon_alive(self) -> bool: ...

    def close(self) -> None: ...


def _runs_here(runs: Any) -> bool:
    """Whether a generation just launched on `runs` executes in this process: the choice its
    launch made a moment ago, asked again. Other runs are not this process's to wait for."""
    return isinstance(runs, _InstanceRuns) and runs.in_process and not runs.daemon_alive()


def follow(generation_id: str) -> str:
    """The command that shows a generation's state."""
    return f'firepipe agent ask "status of generation {generation_id}"'


def summary(operation: str, answer: dict[str, Any]) -> str:
    """One line that says what an operation answered."""
    if "detail" in answer:
        return str(answer["detail"])
    if operation == "generateSyntheticData":
        where = answer.get("output_location") or "inline in the answer"
        warned = len(answer.get("warnings") or [])
        return (
            f"generation {answer['generation_id']} {answer['status']}: "
            f"{answer['records_generated']} rows, {where} (seed {answer['seed']}, "
            f"{warned} warning(s))"
        )
    if operation == "validateSchema":
        errors = [f"{e['field']}: {e['message']}" for e in answer.get("errors", [])]
        issues = len(answer.get("compliance_issues", []))
        verdict = "valid" if answer.get("valid") else "invalid"
        return f"{verdict}; {issues} compliance issue(s)" + "".join(f"; {e}" for e in errors)
    if operation == "searchKnowledgeBase":
        return "; ".join(p["source"] for p in answer.get("passages", [])) or "no passages"
    if operation == "listGenerations":
        listed = answer.get("generations", [])
        return f"{len(listed)} generation(s)" + "".join(
            f"; {g['generation_id']} {g['status']}" for g in listed
        )
    if operation == "getGeneration":
        return f"{answer['generation_id']} {answer['status']}, {answer['records_generated']} rows"
    text = json.dumps(answer)
    return text if len(text) <= 300 else text[:297] + "..."


class BedrockAgent(AgentRuntime):
    """A Bedrock agent's alias; credentials from the default AWS chain."""

    agent_id: str
    agent_alias_id: str
    region: str
    endpoint_url: str | None = None

    def describe(self) -> str:
        return f"Bedrock agent {self.agent_id} (alias {self.agent_alias_id})"

    def _client(self) -> Any:
        import boto3

        return boto3.client(
            "bedrock-agent-runtime", region_name=self.region, endpoint_url=self.endpoint_url
        )

    def ask(self, request: str, session_id: str | None = None) -> AgentAnswer:
        from botocore.exceptions import BotoCoreError, ClientError

        session = session_id or uuid.uuid4().hex
        parts: list[bytes] = []
        trace: list[dict[str, Any]] = []
        try:
            response = self._client().invoke_agent(
                agentId=self.agent_id,
                agentAliasId=self.agent_alias_id,
                sessionId=session,
                inputText=_check(request),
                enableTrace=True,
            )
            # The answer comes in chunks (a sentence may span two); errors can come mid-stream.
            for event in response["completion"]:
                if "chunk" in event:
                    parts.append(event["chunk"].get("bytes", b""))
                elif "trace" in event:
                    trace.append(event["trace"])
        except ClientError as error:
            info = error.response.get("Error", {})
            code, message = info.get("Code", "error"), info.get("Message", "")
            raise AgentError(f"{self.describe()} failed: {code}: {message}") from None
        except BotoCoreError as error:
            raise AgentError(f"{self.describe()} failed: {error}") from None
        text = b"".join(parts).decode("utf-8", errors="replace")
        return AgentAnswer(text, response.get("sessionId", session), _tool_calls(trace), trace)


def _tool_calls(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The action group calls the trace shows, with what each answered."""
    calls: list[dict[str, Any]] = []
    for event in trace:
        orchestration = event.get("trace", {}).get("orchestrationTrace", {})
        invocation = orchestration.get("invocationInput", {}).get("actionGroupInvocationInput")
        if invocation:
            properties = invocation.get("requestBody", {}).get("content", {})
            calls.append(
                {
                    "operation": f"{invocation.get('verb', '').upper()} "
                    f"{invocation.get('apiPath')}",
                    "action_group": invocation.get("actionGroupName"),
                    "parameters": invocation.get("parameters", []),
                    "body": properties,
                }
            )
        output = orchestration.get("observation", {}).get("actionGroupInvocationOutput")
        if output and calls:
            calls[-1]["answer"] = output.get("text")
    return calls
