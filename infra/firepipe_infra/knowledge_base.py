"""The Bedrock knowledge base over firepipe's documents: the documents bucket (its S3 data
source), the knowledge base's role, its vectors in OpenSearch Serverless (vector_store.py).

firepipe's `BedrockKnowledgeBase` (firepipe/resources/knowledge_base.py) reads `environment`:
`sync` uploads the documents under KB_PREFIX and starts an ingestion job, `search` retrieves.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnResource, Duration, Stack, Validations
from aws_cdk import aws_bedrock as bedrock
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig, Stateful
from firepipe_infra.env_names import env_name
from firepipe_infra.security import Security
from firepipe_infra.vector_store import (
    EMBEDDING_DIMENSIONS,
    INDEX_NAME,
    METADATA_FIELD,
    TEXT_FIELD,
    VECTOR_FIELD,
    VectorStore,
)

EMBEDDING_MODEL = "amazon.titan-embed-text-v2:0"
# The data source reads the documents under this prefix; BedrockKnowledgeBase.sync writes them
# there and records the corpus it ingested in a marker beside the folder (the prefix without
# its slash + ".firepipe-ingested"), outside what the data source reads.
KB_PREFIX = "kb/"
KB_MARKER = KB_PREFIX.rstrip("/") + ".firepipe-ingested"

_kb = bedrock.CfnKnowledgeBase


class KnowledgeBase(Construct):
    def __init__(
        self, scope: Construct, id: str, *, config: EnvironmentConfig, security: Security
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self._data_key = security.data_key
        self.documents_bucket = self._documents_bucket(config, security)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=bedrock_principal(stack, "knowledge-base"),
            description=f"{config.prefix}: the knowledge base embeds the documents",
        )
        self.vector_store = VectorStore(
            self, "VectorStore", config=config, data_key=security.data_key, reader=self.role
        )
        self._grant_role(stack, security)
        self.knowledge_base = _kb(
            self,
            "Resource",
            name=f"{config.prefix}-docs",
            description="firepipe's documents: README, docs, the scenario catalog, NIST notes",
            role_arn=self.role.role_arn,
            knowledge_base_configuration=_kb.KnowledgeBaseConfigurationProperty(
                type="VECTOR",
                vector_knowledge_base_configuration=_kb.VectorKnowledgeBaseConfigurationProperty(
                    embedding_model_arn=foundation_model_arn(stack, EMBEDDING_MODEL),
                    embedding_model_configuration=_kb.EmbeddingModelConfigurationProperty(
                        bedrock_embedding_model_configuration=_kb.BedrockEmbeddingModelConfigurationProperty(
                            dimensions=EMBEDDING_DIMENSIONS, embedding_data_type="FLOAT32"
                        )
                    ),
                ),
            ),
            storage_configuration=_kb.StorageConfigurationProperty(
                type="OPENSEARCH_SERVERLESS",
                opensearch_serverless_configuration=_kb.OpenSearchServerlessConfigurationProperty(
                    collection_arn=self.vector_store.collection.attr_arn,
                    vector_index_name=INDEX_NAME,
                    field_mapping=_kb.OpenSearchServerlessFieldMappingProperty(
                        vector_field=VECTOR_FIELD,
                        text_field=TEXT_FIELD,
                        metadata_field=METADATA_FIELD,
                    ),
                ),
            ),
        )
        # Bedrock checks the index (with the role's access) when the knowledge base is made.
        self.knowledge_base.node.add_dependency(self.vector_store.index, self.role)
        self.data_source = bedrock.CfnDataSource(
            self,
            "DataSource",
            name=f"{config.prefix}-docs",
            knowledge_base_id=self.knowledge_base.attr_knowledge_base_id,
            description=f"The documents `firepipe kb build` uploads under {KB_PREFIX}",
            data_source_configuration=bedrock.CfnDataSource.DataSourceConfigurationProperty(
                type="S3",
                s3_configuration=bedrock.CfnDataSource.S3DataSourceConfigurationProperty(
                    bucket_arn=self.documents_bucket.bucket_arn,
                    bucket_owner_account_id=stack.account,
                    inclusion_prefixes=[KB_PREFIX],
                ),
            ),
            # Ingestion's transient data.
            server_side_encryption_configuration=bedrock.CfnDataSource.ServerSideEncryptionConfigurationProperty(
                kms_key_arn=security.data_key.key_arn
            ),
            data_deletion_policy="RETAIN" if config.stateful is Stateful.RETAIN else "DELETE",
        )
        for resource in (self.knowledge_base, self.data_source):
            resource.apply_removal_policy(config.removal_policy)
        self.environment: dict[str, str] = {
            env_name("KB_ID_VAR"): self.knowledge_base.attr_knowledge_base_id,
            env_name("KB_DATA_SOURCE_ID_VAR"): self.data_source.attr_data_source_id,
            env_name("KB_BUCKET_VAR"): self.documents_bucket.bucket_name,
            env_name("KB_PREFIX_VAR"): KB_PREFIX,
        }

    def grant_retrieve(self, grantee: iam.IGrantable) -> iam.Grant:
        """Search (bedrock-agent-runtime Retrieve)."""
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["bedrock:Retrieve"],
            resource_arns=[self.knowledge_base.attr_knowledge_base_arn],
        )

    def grant_sync(self, grantee: iam.IGrantable) -> None:
        """`sync`: the documents under the prefix (read, put, delete), the marker beside it
        (read, put), and the ingestion jobs."""
        bucket = self.documents_bucket
        # Explicit actions: the bucket's L2 grants add action families (s3:GetObject*,
        # kms:ReEncrypt*) that `sync` never calls.
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:GetObject", "s3:PutObject"],
            resource_arns=[
                bucket.arn_for_objects(f"{KB_PREFIX}*"),
                bucket.arn_for_objects(KB_MARKER),
            ],
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:DeleteObject"],
            resource_arns=[bucket.arn_for_objects(f"{KB_PREFIX}*")],
        )
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["s3:ListBucket"], resource_arns=[bucket.bucket_arn]
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resource_arns=[self._data_key.key_arn],
            conditions={
                "StringEquals": {"kms:ViaService": f"s3.{Stack.of(self).region}.amazonaws.com"}
            },
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["bedrock:StartIngestionJob", "bedrock:GetIngestionJob"],
            resource_arns=[self.knowledge_base.attr_knowledge_base_arn],
        )

    def _documents_bucket(self, config: EnvironmentConfig, security: Security) -> s3.Bucket:
        """The documents, SSE-KMS with the data key, access-logged into a bucket of their own
        (S3 delivers access logs to SSE-S3 buckets only, as in lake.py)."""
        auto_delete = config.stateful is Stateful.DESTROY  # as lake.py's _auto_delete
        access_logs = s3.Bucket(
            self,
            "DocumentsAccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(config.access_log_days),
                    noncurrent_version_expiration=Duration.days(1),
                )
            ],
            removal_policy=config.removal_policy,
            auto_delete_objects=auto_delete,
        )
        return s3.Bucket(
            self,
            "Documents",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=security.data_key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="documents/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    noncurrent_version_expiration=Duration.days(config.noncurrent_version_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            removal_policy=config.removal_policy,
            auto_delete_objects=auto_delete,
        )

    def _grant_role(self, stack: Stack, security: Security) -> None:
        role, bucket = self.role, self.documents_bucket
        self.vector_store.grant_api_access(role)
        iam.Grant.add_to_principal(
            grantee=role,
            actions=["bedrock:InvokeModel"],
            resource_arns=[foundation_model_arn(stack, EMBEDDING_MODEL)],
        )
        # The documents under the prefix, decrypted through S3 with the data key.
        iam.Grant.add_to_principal(
            grantee=role, actions=["s3:ListBucket"], resource_arns=[bucket.bucket_arn]
        )
        iam.Grant.add_to_principal(
            grantee=role,
            actions=["s3:GetObject"],
            resource_arns=[bucket.arn_for_objects(f"{KB_PREFIX}*")],
        )
        bucket_id = stack.get_logical_id(_cfn(bucket))
        Validations.of(role.node.find_child("DefaultPolicy")).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{KB_PREFIX}*]",
                reason="The documents the data source reads: every object under its prefix, "
                "which only a pattern names.",
            )
        )
        key = security.data_key.key_arn
        for actions, service, extra in (
            (["kms:Decrypt"], "s3", {}),
            # The data source's transient ingestion data.
            (["kms:GenerateDataKey", "kms:Decrypt"], "bedrock", {}),
            # OpenSearch Serverless encrypts the collection through grants made as its caller.
            (
                ["kms:DescribeKey", "kms:CreateGrant"],
                "aoss",
                {"Bool": {"kms:GrantIsForAWSResource": "true"}},
            ),
        ):
            via = {"StringEquals": {"kms:ViaService": f"{service}.{stack.region}.amazonaws.com"}}
            iam.Grant.add_to_principal(
                grantee=role, actions=actions, resource_arns=[key], conditions={**via, **extra}
            )


def bedrock_principal(stack: Stack, resource: str) -> iam.ServicePrincipal:
    """Bedrock, acting for a `resource` (agent, knowledge-base) of this account only."""
    return iam.ServicePrincipal(
        "bedrock.amazonaws.com",
        conditions={
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {
                "aws:SourceArn": (
                    f"arn:{stack.partition}:bedrock:{stack.region}:{stack.account}:{resource}/*"
                )
            },
        },
    )


def foundation_model_arn(stack: Stack, model: str, region: str | None = None) -> str:
    return f"arn:{stack.partition}:bedrock:{region or stack.region}::foundation-model/{model}"


def _cfn(construct: Construct) -> CfnResource:
    resource = construct.node.default_child
    assert isinstance(resource, CfnResource)
    return resource
