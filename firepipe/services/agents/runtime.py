"""The agents assembled from the environment's ports: the same for `firepipe agents run`, the ECS
workers and the Lambda functions (FIREPIPE_ENV picks local or AWS, as for every command).

Policies come from the environment:
- FIREPIPE_ACK_TIMEOUT_S: seconds an alert waits for an ack before it escalates (300);
- FIREPIPE_ESCALATION_LEVELS: `after_s:target` pairs, comma-separated (`300:on-call,900:site`);
- FIREPIPE_MAX_RECEIVES: receives of a failing message before it is dead-lettered (5).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

from firepipe import settings
from firepipe.core.agents import messages
from firepipe.core.agents.analysis import AnalysisPolicy
from firepipe.core.agents.response import EscalationPolicy
from firepipe.lib import aws_env
from firepipe.lib.idempotency import persistence_layer
from firepipe.lib.plain_resources import resolved
from firepipe.names import MODEL_NAME
from firepipe.resources.escalation import EscalationScheduler
from firepipe.resources.notifier import Notifier
from firepipe.resources.queue import Message, MessageQueue
from firepipe.resources.state_store import StateStore
from firepipe.resources.topic import Topic
from firepipe.services.agents.analysis import AnalysisAgent
from firepipe.services.agents.delivery import Handler
from firepipe.services.agents.monitoring import MonitoringAgent
from firepipe.services.agents.response import ResponseAgent
from firepipe.services.inference import server
from firepipe.services.inference.source import ModelHolder, ModelSource, RegistrySource

ACK_TIMEOUT_VAR = "FIREPIPE_ACK_TIMEOUT_S"
ESCALATION_LEVELS_VAR = "FIREPIPE_ESCALATION_LEVELS"
MAX_RECEIVES_VAR = "FIREPIPE_MAX_RECEIVES"
DEFAULT_ACK_TIMEOUT_S = 300.0
DEFAULT_LEVELS = ((300.0, "on-call"), (900.0, "site-manager"))
# An idempotency record outlives any redelivery: SQS keeps a message 4 days at most, but a
# message is retried within minutes (max_receives x visibility timeout).
IDEMPOTENCY_EXPIRY_S = 24 * 3600
AGENTS = ("monitoring", "analysis", "response")
QUEUE_OF = {
    "monitoring": messages.READINGS_QUEUE,
    "analysis": messages.SCORES_QUEUE,
    "response": messages.INCIDENTS_QUEUE,
}


class SettingsError(ValueError):
    """A policy variable that cannot be read."""


def escalation_policy(environ: Mapping[str, str] = os.environ) -> EscalationPolicy:
    timeout = _seconds(environ, ACK_TIMEOUT_VAR, DEFAULT_ACK_TIMEOUT_S)
    raw = environ.get(ESCALATION_LEVELS_VAR)
    levels: tuple[tuple[float, str], ...] = DEFAULT_LEVELS
    if raw is not None:
        try:
            pairs = [part.split(":", 1) for part in raw.split(",") if part.strip()]
            levels = tuple((float(after), target.strip()) for after, target in pairs)
        except ValueError:
            raise SettingsError(
                f"{ESCALATION_LEVELS_VAR}={raw!r}: expected after_s:target pairs, "
                "comma-separated, such as 300:on-call,900:site-manager"
            ) from None
    try:
        return EscalationPolicy(ack_timeout_s=timeout, levels=levels)
    except ValueError as error:
        raise SettingsError(f"{ESCALATION_LEVELS_VAR}/{ACK_TIMEOUT_VAR}: {error}") from None


def max_receives(environ: Mapping[str, str] = os.environ) -> int:
    value = _seconds(environ, MAX_RECEIVES_VAR, 5)
    if value != int(value) or not 1 <= value <= 1000:
        raise SettingsError(f"{MAX_RECEIVES_VAR} must be a whole number 1-1000, got {value:g}")
    return int(value)


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


@dataclass
class Ports:
    queues: MessageQueue
    topic: Topic
    store: StateStore
    notifier: Notifier
    escalation: EscalationScheduler
    idempotency: BasePersistenceLayer
    local: bool

    def wire(self) -> None:
        """Locally: the queues and the topic's subscriptions (in AWS the CDK app makes them)."""
        if self.local:
            wire(self.queues, self.topic)


def wire(queues: MessageQueue, topic: Topic) -> None:
    """The agent queues and the topic's subscriptions to them, made if missing (locally; in
    AWS the CDK app makes them)."""
    for queue in QUEUE_OF.values():
        queues.ensure_queue(queue)
    topic.subscribe(messages.SCORES_QUEUE, {messages.KIND: [messages.SCORES]})
    topic.subscribe(messages.INCIDENTS_QUEUE, {messages.KIND: [messages.INCIDENT]})


def ports(environ: Mapping[str, str] = os.environ) -> Ports:
    """The current environment's ports, their variables read now."""
    from firepipe.resources import resource_for

    env, paths = settings.environment(), settings.local_paths()

    def port(key: str) -> Any:
        return resolved(resource_for(key, env, paths))

    local = env == settings.Environment.LOCAL
    if local:
        paths.home.mkdir(parents=True, exist_ok=True)
        idempotency = persistence_layer(sqlite_path=str(paths.home / "idempotency.db"))
    else:
        table = environ.get(aws_env.IDEMPOTENCY_TABLE_VAR)
        if not table:
            raise SettingsError(f"{aws_env.IDEMPOTENCY_TABLE_VAR} is not set")
        idempotency = persistence_layer(
            dynamodb_table=table, region=environ.get(aws_env.AWS_REGION_VAR)
        )
    queues = port("queues").model_copy(update={"max_receives": max_receives(environ)})
    return Ports(
        queues=queues,
        topic=port("events_topic"),
        store=port("state_store"),
        notifier=port("notifier"),
        escalation=port("escalation"),
        idempotency=idempotency,
        local=local,
    )


class _Deadline:
    """What Powertools reads of a Lambda context: the time left, which bounds how long a
    message's idempotency record stays IN_PROGRESS (a worker killed mid-message frees it)."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def idempotent(
    handle: Handler, layer: BasePersistenceLayer, name: str, context: Any | None, hold_s: int
) -> Handler:
    """`handle` run at most once per message id (a redelivery of a handled message is done at
    once): Powertools' idempotency on `layer`. `context`: the Lambda context, or None in a
    worker process, where a message is held IN_PROGRESS for `hold_s` (its visibility timeout)."""
    config = IdempotencyConfig(
        event_key_jmespath="id",
        expires_after_seconds=IDEMPOTENCY_EXPIRY_S,
        raise_on_no_idempotency_key=True,
    )
    config.register_lambda_context(cast(Any, context or _Deadline(hold_s * 1000)))

    @idempotent_function(  # type: ignore[untyped-decorator]
        data_keyword_argument="message", config=config, persistence_store=layer
    )
    def once(message: dict[str, Any]) -> dict[str, bool]:
        handle(messages_by_id.pop(message["id"]))
        return {"handled": True}

    # The decorator hashes a JSON-able argument; the message itself travels beside it. The
    # key names the agent: one message id seen by two agents is two keys.
    messages_by_id: dict[str, Message] = {}

    def run(message: Message) -> object:
        key = f"{name}:{message.id}"
        messages_by_id[key] = message
        try:
            return once(message={"id": key})
        finally:
            messages_by_id.pop(key, None)

    return run


class Agents:
    """The three agents over `ports`, each built when first used. The monitoring agent scores
    with `model_source`'s model, by default the registry's champion, followed as the
    inference service follows it."""

    def __init__(
        self,
        ports: Ports,
        environ: Mapping[str, str] = os.environ,
        model_source: ModelSource | None = None,
    ) -> None:
        self.ports, self.environ, self.model_source = ports, environ, model_source

    @cached_property
    def holder(self) -> ModelHolder:
        source = self.model_source
        if source is None:
            from firepipe.resources import resource_for
            from firepipe.resources.registry import CHAMPION_ALIAS

            env, paths = settings.environment(), settings.local_paths()
            registry = resolved(resource_for("model_registry", env, paths))
            source = RegistrySource(registry, f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}")
        holder = ModelHolder(source, poll_s=server.poll_s(self.environ))
        holder.load_now()
        holder.start()
        return holder

    @cached_property
    def monitoring(self) -> MonitoringAgent:
        return MonitoringAgent(self.holder, self.ports.topic)

    @cached_property
    def analysis(self) -> AnalysisAgent:
        return AnalysisAgent(self.ports.store, self.ports.topic, AnalysisPolicy())

    @cached_property
    def response(self) -> ResponseAgent:
        p = self.ports
        return ResponseAgent(p.store, p.notifier, p.escalation, escalation_policy(self.environ))

    def handler(self, agent: str) -> Handler:
        """The plain handler of `agent` for one received message."""
        if agent == "monitoring":
            return lambda m: self.monitoring.handle(m.body, m.attributes.get(messages.GROUP))
        if agent == "analysis":
            return lambda m: self.analysis.handle(m.body, redelivered=m.receive_count > 1)
        if agent == "response":
            return lambda m: self.response.handle(m.body)
        raise ValueError(f"no agent {agent!r}: one of {', '.join(AGENTS)}")
