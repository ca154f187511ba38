"""The agents' logs, metrics and traces (Powertools for AWS Lambda): JSON log lines with the
service and, in Lambda, the request; CloudWatch embedded-metric-format (EMF) lines that
CloudWatch turns into metrics (in Lambda from the function's log; on ECS from the awslogs
stream); X-Ray segments around each handler in Lambda (the tracer is off outside Lambda unless
POWERTOOLS_TRACE_DISABLED=false and an X-Ray daemon listens)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "firepipe-agents"
NAMESPACE = "firepipe/agents"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)


def count(name: str, value: float = 1.0) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def milliseconds(name: str, value: float) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)
