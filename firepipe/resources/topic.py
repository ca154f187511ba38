"""The topic port: one publish fans out to every subscribed queue whose filter policy matches
the message's attributes. SNS with SQS subscriptions in AWS (raw delivery: the queue receives
the body and attributes as published); locally the queues of the LocalQueue file, filled in one
transaction, so every matching subscriber gets the message or none does.

Filter policies are SNS's, on message attributes, limited to the subset both sides evaluate
alike (anything else is refused before it reaches SNS):
- `{"kind": ["score", "alarm"]}`: the attribute is one of the strings (a bare string is one);
- `{"prefix": "dev-"}`: it starts with the string;
- `{"anything-but": "x" | ["x", "y"] | {"prefix": "test-"}}`: it is present and none of them;
- `{"exists": true | false}`: it is present / absent.
Alternatives in one list match if any does; every key of the policy must match (at most 5
keys). A message with no such attribute matches only `{"exists": false}`. An empty policy, or
none, matches every message.

The `message_group` attribute (firepipe.resources.queue.MESSAGE_GROUP) reaches every copy, so
the subscribed queues keep the message groups. A FIFO SNS topic (its ARN ends in .fifo, its
queues are FIFO SQS queues) also takes it as the MessageGroupId, and needs it on every message.
"""

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.lib import sqlite_queue
from firepipe.resources.queue import (
    FIFO_SUFFIX,
    QueueError,
    check_message,
    check_queue_name,
    fifo_fields,
)

FilterPolicy = Mapping[str, Any]
MAX_POLICY_KEYS = 5


def normalise_policy(policy: FilterPolicy | None) -> dict[str, list[Any]]:
    """`policy` with every value a list, checked against the supported subset; ValueError
    naming the first rule outside it."""
    if not policy:
        return {}
    if len(policy) > MAX_POLICY_KEYS:
        raise ValueError(f"a filter policy has at most {MAX_POLICY_KEYS} keys")
    normal: dict[str, list[Any]] = {}
    for key, rules in policy.items():
        listed = rules if isinstance(rules, list) else [rules]
        if not listed:
            raise ValueError(f"filter policy key {key!r} has no rules")
        for rule in listed:
            _check_rule(key, rule)
        normal[key] = listed
    return normal


def _check_rule(key: str, rule: Any) -> None:
    if isinstance(rule, str):
        return
    if isinstance(rule, dict) and len(rule) == 1:
        ((op, value),) = rule.items()
        if op == "prefix" and isinstance(value, str) and value:
            return
        if op == "exists" and isinstance(value, bool):
            return
        if op == "anything-but" and _is_anything_but(value):
            return
    raise ValueError(
        f"filter policy rule {rule!r} for {key!r} is not supported: use strings, "
        "prefix, anything-but (strings or a prefix) or exists"
    )


def _is_anything_but(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict) and set(value) == {"prefix"} and isinstance(value["prefix"], str)


def policy_matches(policy: Mapping[str, list[Any]], attributes: Mapping[str, str]) -> bool:
    """Whether a message with `attributes` passes the normalised `policy`."""
    return all(
        any(_rule_matches(rule, attributes.get(key)) for rule in rules)
        for key, rules in policy.items()
    )


def _rule_matches(rule: Any, value: str | None) -> bool:
    if isinstance(rule, str):
        return value == rule
    ((op, operand),) = rule.items()
    if op == "exists":
        return (value is not None) is operand
    if value is None:
        return False
    if op == "prefix":
        return value.startswith(str(operand))
    # anything-but
    if isinstance(operand, dict):
        return not value.startswith(operand["prefix"])
    return value not in ([operand] if isinstance(operand, str) else operand)


class Topic(dg.ConfigurableResource, ABC):
    """A topic whose messages reach the queues subscribed to it."""

    def publish(self, body: str, attributes: Mapping[str, str] | None = None) -> str:
        """Fan `body` with `attributes` out to the matching subscribers; returns its id."""
        attributes = attributes or {}
        check_message(body, attributes)
        return self._publish(body, attributes)

    def subscribe(self, queue: str, filter_policy: FilterPolicy | None = None) -> str:
        """Deliver the messages `filter_policy` lets through to `queue` (a MessageQueue's short
        name); subscribing a queue again replaces its policy (SNS takes up to 15 minutes to
        apply a change). Returns the subscription's id."""
        return self._subscribe(check_queue_name(queue), normalise_policy(filter_policy))

    @abstractmethod
    def _publish(self, body: str, attributes: Mapping[str, str]) -> str: ...

    @abstractmethod
    def _subscribe(self, queue: str, policy: dict[str, list[Any]]) -> str: ...


class LocalTopic(Topic):
    """A topic in the LocalQueue SQLite file; its subscribers are that file's queues."""

    path: str = Field(description="the LocalQueue SQLite file")
    name: str = Field(default="events", description="the topic's name in the file")

    def _subscribe(self, queue: str, policy: dict[str, list[Any]]) -> str:
        with sqlite_queue.write(self.path) as db:
            try:
                sqlite_queue.max_receives(db, queue)
            except KeyError:
                raise QueueError(f"no queue {queue!r} in {self.path} to subscribe") from None
            db.execute(
                "INSERT INTO subscriptions (topic, queue, filter_policy) VALUES (?, ?, ?) "
                "ON CONFLICT (topic, queue) DO UPDATE SET filter_policy = excluded.filter_policy",
                [self.name, queue, json.dumps(policy, sort_keys=True)],
            )
        return f"{self.name}:{queue}"

    def _publish(self, body: str, attributes: Mapping[str, str]) -> str:
        with sqlite_queue.write(self.path) as db:
            subscriptions = db.execute(
                "SELECT queue, filter_policy FROM subscriptions WHERE topic = ?", [self.name]
            ).fetchall()
            for queue, policy in subscriptions:
                if policy_matches(json.loads(policy), attributes):
                    sqlite_queue.insert(db, queue, body, attributes)
        # As SNS: the publish has its own id; each queue's copy has another.
        return str(uuid.uuid4())


class SnsTopic(Topic):
    """An SNS topic with SQS subscriptions (raw delivery, filter policies on message
    attributes); credentials from the default AWS chain."""

    topic_arn: str
    region: str
    queue_prefix: str = Field(description="the SqsQueue prefix of the subscribed queues")
    endpoint_url: str | None = None

    @cached_property
    def _sns(self) -> Any:
        import boto3

        return boto3.client("sns", region_name=self.region, endpoint_url=self.endpoint_url)

    @property
    def _fifo(self) -> bool:
        return self.topic_arn.endswith(FIFO_SUFFIX)

    def _publish(self, body: str, attributes: Mapping[str, str]) -> str:
        fifo = fifo_fields(attributes, "SNS FIFO topics") if self._fifo else {}
        response = self._sns.publish(
            TopicArn=self.topic_arn,
            Message=body,
            MessageAttributes={
                k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
            },
            **fifo,
        )
        return str(response["MessageId"])

    def _subscribe(self, queue: str, policy: dict[str, list[Any]]) -> str:
        """For tests and dev accounts; in AWS the CDK app subscribes the queues."""
        from firepipe.resources.queue import SqsQueue

        queues = SqsQueue(
            prefix=self.queue_prefix,
            region=self.region,
            endpoint_url=self.endpoint_url,
            fifo=self._fifo,  # SNS FIFO delivers to FIFO queues only
        )
        queue_arn = queues.allow_publisher(queue, self.topic_arn)
        # SNS removes a subscription's policy when it is set to {}, but refuses {} on Subscribe.
        attributes = {"RawMessageDelivery": "true", "FilterPolicy": json.dumps(policy)}
        for page in self._sns.get_paginator("list_subscriptions_by_topic").paginate(
            TopicArn=self.topic_arn
        ):
            for subscription in page["Subscriptions"]:
                if subscription["Endpoint"] == queue_arn:
                    arn = subscription["SubscriptionArn"]
                    for name, value in attributes.items():
                        self._sns.set_subscription_attributes(
                            SubscriptionArn=arn, AttributeName=name, AttributeValue=value
                        )
                    return str(arn)
        response = self._sns.subscribe(
            TopicArn=self.topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes=attributes if policy else {"RawMessageDelivery": "true"},
            ReturnSubscriptionArn=True,
        )
        return str(response["SubscriptionArn"])
