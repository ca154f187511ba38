"""The agents as Lambda functions: an SQS event source per agent, the same handlers as the
worker processes, with Powertools' batch processor reporting partial batch failures (only the
failed records come back; the event source mapping needs ReportBatchItemFailures), idempotency
keyed on the message id (DynamoDB in AWS), JSON logs, EMF metrics and X-Ray traces.

Handlers (the image's CMD names one): `firepipe.services.agents.lambdas.monitoring`,
`.analysis`, `.response`, and `.escalate`, the escalation state machine's task.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from firepipe.resources.queue import Message
from firepipe.services.agents import observability as obs
from firepipe.services.agents.delivery import Outcome, deliver
from firepipe.services.agents.runtime import QUEUE_OF, Agents, idempotent, ports

LambdaHandler = Callable[[dict[str, Any], Any], Any]
# An SQS-triggered function's messages stay hidden for the queue's visibility timeout, which
# AWS asks to be at least 6x the function's timeout; this bounds IN_PROGRESS records when no
# context tells the time left.
_HOLD_S = 60


class RetryLaterError(RuntimeError):
    """A record to report as failed: SQS delivers it again after its visibility timeout."""


@cache
def _agents() -> Agents:
    """Built once per execution environment (cold start), reused by its invocations."""
    return Agents(ports())


def _message(record: SQSRecord) -> Message:
    sent_ms = int(record.attributes.sent_timestamp)
    return Message(
        id=record.message_id,
        body=record.body,
        attributes={
            name: value.string_value or ""
            for name, value in (record.message_attributes or {}).items()
        },
        receipt=record.receipt_handle,
        receive_count=int(record.attributes.approximate_receive_count),
        sent_at=datetime.fromtimestamp(sent_ms / 1000, UTC),
    )


def _sqs_handler(agent: str) -> LambdaHandler:
    processor = BatchProcessor(event_type=EventType.SQS)
    # A FIFO queue's batch stops at its first failure: the records after it come back with it,
    # in order (one group's readings must not overtake each other).
    fifo_processor = SqsFifoPartialProcessor()
    queue = QUEUE_OF[agent]

    def handler(event: dict[str, Any], context: Any) -> Any:
        agents = _agents()
        queues = agents.ports.queues
        handle = idempotent(
            agents.handler(agent), agents.ports.idempotency, agent, context, _HOLD_S
        )

        def record_handler(record: SQSRecord) -> None:
            outcome = deliver(queues, queue, _message(record), handle, queues.max_receives)
            obs.count(f"messages_{outcome.value}")
            if outcome is Outcome.RETRY:
                raise RetryLaterError(f"{queue} message {record.message_id}: retry later")

        records = event.get("Records") or [{}]
        fifo = str(records[0].get("eventSourceARN", "")).endswith(".fifo")
        try:
            return process_partial_response(
                event=event,
                record_handler=record_handler,
                processor=fifo_processor if fifo else processor,
                context=context,
            )
        finally:
            if agent == "response":
                for latency in agents.response.alarm_latencies_s:
                    obs.milliseconds("alarm_latency", latency * 1000)
                agents.response.alarm_latencies_s.clear()

    # Named before it is wrapped: the tracer names the handler's X-Ray subsegment when it wraps.
    handler.__name__ = agent
    traced = obs.tracer.capture_lambda_handler(obs.metrics.log_metrics(handler))
    wrapped: LambdaHandler = obs.logger.inject_lambda_context(traced)
    return wrapped


monitoring = _sqs_handler("monitoring")
analysis = _sqs_handler("analysis")
response = _sqs_handler("response")


@obs.logger.inject_lambda_context
@obs.tracer.capture_lambda_handler
def escalate(event: dict[str, Any], context: Any) -> dict[str, str]:
    """The escalation state machine's task: {"alert_id", "level"} -> {"status"}."""
    try:
        alert_id, level = str(event["alert_id"]), int(event["level"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"an escalate event is {{alert_id, level}}, got {event!r}") from None
    status = _agents().response.escalate(alert_id, level)
    # not `level=`: the log line's own "level" key (INFO) would silently drop it
    obs.logger.info("escalation", alert_id=alert_id, escalation_level=level, status=status)
    return {"status": status}
