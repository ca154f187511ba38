"""The agents' messaging and state: the SQS queues with their dead-letter queues, the SNS topics
(agent events, notifications), the DynamoDB tables (state, state history, idempotency,
generation history), and the grants firepipe's code needs to use them.

Names are firepipe's: queue `<prefix><name>` and its dead-letter queue `<prefix><name>-dlq`
(`.fifo` after both when FIFO), as firepipe.resources.queue.SqsQueue builds them; the tables'
keys are the ones firepipe's adapters create locally and in the moto tests.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from firepipe_infra.agents_source import AgentsSource
from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.grants import allow

# FIFO queues and topic (docs/agents.md, failure semantics): a worker killed with a batch in
# flight cannot let a device's later readings overtake it. Throughput and deduplication per
# message group (SQS's and SNS's high-throughput FIFO): the devices are independent groups.
FIFO = True
# Receives before a message is dead-lettered: the handlers dead-letter it themselves at this
# count with the last error as the reason (FIREPIPE_MAX_RECEIVES, delivery.py); SQS's redrive
# at the same count is the backstop for a consumer that dies before it can.
MAX_RECEIVES = 5
DLQ_RETENTION = Duration.days(14)
# The generation history's indexes (history.py), which its queries name.
GENERATION_INDEXES = ("by_started_at", "all_by_started_at")


class Messaging(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        data_key: kms.IKey,
        source: AgentsSource,
        visibility_timeout: Duration,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self._region = stack.region
        self.data_key = data_key
        # SNS delivers to an SSE-KMS queue only if the queue's key policy lets sns.amazonaws.com
        # use the key. The data key's policy is the security stack's, and a statement there
        # naming this stack's topic would make the stacks depend on each other: messaging has
        # a rotating key of its own, for the queues and the topics.
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{config.prefix}-messaging",
            description=f"{config.prefix}: the agents' queues and topics",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
        )
        self.queue_prefix = f"{config.prefix}-"
        fifo = ".fifo" if FIFO else ""
        self.queues: dict[str, sqs.Queue] = {}  # by agent
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        for agent, name in source.queue_of.items():
            dlq = self._queue(
                f"{name.capitalize()}DeadLetters",
                f"{self.queue_prefix}{name}-dlq{fifo}",
                config,
                retention_period=DLQ_RETENTION,
            )
            self.dead_letter_queues[agent] = dlq
            self.queues[agent] = self._queue(
                f"{name.capitalize()}Queue",
                f"{self.queue_prefix}{name}{fifo}",
                config,
                # A Lambda consumer's batch stays hidden this long (6x its timeout, AWS's rule).
                visibility_timeout=visibility_timeout,
                dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=MAX_RECEIVES),
            )
        events_topic_name = f"{config.prefix}-agent-events{fifo}"
        self.events_topic = sns.Topic(
            self,
            "EventsTopic",
            topic_name=events_topic_name,
            display_name=f"{config.prefix} agent events",
            master_key=self.key,
            enforce_ssl=True,
            fifo=FIFO or None,
            fifo_throughput_scope=sns.FifoThroughputScope.MESSAGE_GROUP if FIFO else None,
        )
        self.subscriptions = self._subscribe(source, stack, events_topic_name)
        # Alerts and failed runs, for people: a standard topic, because e-mail, SMS, HTTPS and
        # chat subscriptions take standard topics only (a FIFO topic delivers to SQS alone). A
        # notification repeated by a crash's redelivery reaches them twice, with the same
        # dedup_key attribute (notifier.py). Subscribers are the operator's to add.
        self.notifications_topic = sns.Topic(
            self,
            "NotificationsTopic",
            topic_name=f"{config.prefix}-notifications",
            display_name=f"{config.prefix} notifications",
            master_key=self.key,
            enforce_ssl=True,
        )
        self.tables = self._tables(config)

    def _queue(
        self,
        id: str,
        name: str,
        config: EnvironmentConfig,
        *,
        retention_period: Duration | None = None,
        visibility_timeout: Duration | None = None,
        dead_letter_queue: sqs.DeadLetterQueue | None = None,
    ) -> sqs.Queue:
        return sqs.Queue(
            self,
            id,
            queue_name=name,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            removal_policy=config.removal_policy,
            retention_period=retention_period,
            visibility_timeout=visibility_timeout,
            dead_letter_queue=dead_letter_queue,
            fifo=FIFO or None,
            # firepipe sends its own deduplication ids (queue.py's fifo_fields).
            content_based_deduplication=False if FIFO else None,
            deduplication_scope=sqs.DeduplicationScope.MESSAGE_GROUP if FIFO else None,
            fifo_throughput_limit=sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID if FIFO else None,
        )

    def _subscribe(
        self, source: AgentsSource, stack: Stack, topic_name: str
    ) -> dict[str, sns.Subscription]:
        """The queues runtime.py's `wire` subscribes locally, with its filter policies, raw
        delivery (the queue receives the body and attributes as published, as the local topic
        delivers them). SNS sends as itself: the queue's policy and the key's let it, for this
        topic only. The key's statement names the topic by its formatted ARN: a reference would
        make the key depend on the topic, which depends on the key (the cycle SqsSubscription,
        which writes it with a reference, makes when topic and queues share a key)."""
        sns_principal = iam.ServicePrincipal("sns.amazonaws.com")
        topic_arn = stack.format_arn(
            service="sns", resource=topic_name, arn_format=ArnFormat.NO_RESOURCE_NAME
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[sns_principal],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"ArnEquals": {"aws:SourceArn": topic_arn}},
            )
        )
        by_name = {source.queue_of[agent]: queue for agent, queue in self.queues.items()}
        subscriptions = {}
        for name, policy in source.subscriptions.items():
            queue = by_name[name]
            allowed = queue.add_to_resource_policy(
                iam.PolicyStatement(
                    principals=[sns_principal],
                    actions=["sqs:SendMessage"],
                    resources=[queue.queue_arn],
                    conditions={"ArnEquals": {"aws:SourceArn": self.events_topic.topic_arn}},
                )
            )
            subscription = sns.Subscription(
                self,
                f"{name.capitalize()}Subscription",
                topic=self.events_topic,
                endpoint=queue.queue_arn,
                protocol=sns.SubscriptionProtocol.SQS,
                raw_message_delivery=True,
                filter_policy={
                    attribute: sns.SubscriptionFilter.string_filter(allowlist=values)
                    for attribute, values in policy.items()
                },
            )
            # A subscription made before the queue admits SNS loses what is published meanwhile.
            if allowed.policy_dependable is not None:
                subscription.node.add_dependency(allowed.policy_dependable)
            subscriptions[name] = subscription
        return subscriptions

    def _tables(self, config: EnvironmentConfig) -> dict[str, ddb.Table]:
        """The tables with the keys firepipe's adapters create locally (state_store.py's
        `table_definitions`, history.py's `table_definition`, Powertools' idempotency layer)."""
        text, number = ddb.AttributeType.STRING, ddb.AttributeType.NUMBER

        def table(
            id: str,
            name: str,
            partition: str,
            sort: tuple[str, ddb.AttributeType] | None = None,
            ttl: str | None = None,
        ) -> ddb.Table:
            return ddb.Table(
                self,
                id,
                table_name=f"{config.prefix}-{name}",
                partition_key=ddb.Attribute(name=partition, type=text),
                sort_key=ddb.Attribute(name=sort[0], type=sort[1]) if sort else None,
                time_to_live_attribute=ttl,
                billing_mode=ddb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=ddb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=ddb.TableEncryption.CUSTOMER_MANAGED,
                encryption_key=self.data_key,
                deletion_protection=config.deletion_protection,
                removal_policy=config.removal_policy,
            )

        generation = table(
            "GenerationHistory", "generation-history", "asset_key", ("record_id", text)
        )
        by_asset, everything = GENERATION_INDEXES
        generation.add_local_secondary_index(
            index_name=by_asset, sort_key=ddb.Attribute(name="started_at", type=text)
        )
        generation.add_global_secondary_index(
            index_name=everything,
            partition_key=ddb.Attribute(name="entity", type=text),
            sort_key=ddb.Attribute(name="started_at", type=text),
        )
        return {
            "state": table("State", "agent-state", "key"),
            "state_history": table("StateHistory", "agent-history", "key", ("version", number)),
            # Powertools' DynamoDBPersistenceLayer: key `id`, expiry (epoch s) `expiration`.
            "idempotency": table("Idempotency", "agent-idempotency", "id", ttl="expiration"),
            "generation_history": generation,
        }

    # --- grants (each in the grantee's own policy) -------------------------------------------

    def _grant_key(self, grantee: iam.IGrantable) -> None:
        """SQS and SNS use the messaging key as the caller, for the caller's requests only."""
        services = [f"{s}.{self._region}.amazonaws.com" for s in ("sqs", "sns")]
        allow(
            grantee,
            ["kms:Decrypt", "kms:GenerateDataKey"],
            [self.key.key_arn],
            {"StringEquals": {"kms:ViaService": services}},
        )

    def grant_consume(self, grantee: iam.IGrantable, agents: list[str]) -> None:
        """Receive, delete and hide the agents' messages; dead-letter one with its reason (the
        handler sends it to the dead-letter queue itself, delivery.py) and read the DLQ."""
        allow(
            grantee,
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueUrl",
                "sqs:GetQueueAttributes",
            ],
            [self.queues[a].queue_arn for a in agents],
        )
        allow(
            grantee,
            ["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
            [self.dead_letter_queues[a].queue_arn for a in agents],
        )
        self._grant_key(grantee)

    def grant_send(self, grantee: iam.IGrantable, agents: list[str]) -> None:
        """Send to the agents' queues (feeding readings, a redrive moving dead letters back)."""
        allow(
            grantee,
            ["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"],
            [self.queues[a].queue_arn for a in agents],
        )
        self._grant_key(grantee)

    def grant_publish(self, grantee: iam.IGrantable, topics: list[sns.ITopic]) -> None:
        allow(grantee, ["sns:Publish"], [t.topic_arn for t in topics])
        self._grant_key(grantee)

    def grant_tables(self, grantee: iam.IGrantable, names: list[str]) -> None:
        """Items and queries of the tables `names` (a TransactWriteItems is authorised as the
        PutItem of each of its items), and the data key through DynamoDB only."""
        arns = []
        for name in names:
            arn = self.tables[name].table_arn
            arns.append(arn)
            if name == "generation_history":
                arns += [f"{arn}/index/{index}" for index in GENERATION_INDEXES]
        allow(
            grantee,
            [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:ConditionCheckItem",
                "dynamodb:Query",
                "dynamodb:Scan",
            ],
            arns,
        )
        allow(
            grantee,
            ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
            [self.data_key.key_arn],
            {"StringEquals": {"kms:ViaService": f"dynamodb.{self._region}.amazonaws.com"}},
        )
