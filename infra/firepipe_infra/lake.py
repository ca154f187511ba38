"""The lake: the bucket of Iceberg tables and the landing zone, its access-log bucket, the Glue
databases of the Iceberg namespaces, and the Athena workgroup with its encrypted results."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from firepipe_infra.config import LAKE_NAMESPACES, EnvironmentConfig, Stateful
from firepipe_infra.env_names import env_name

WAREHOUSE_PREFIX = "warehouse"  # the Iceberg warehouse: s3://<lake>/warehouse/<namespace>.db/
LANDING_PREFIX = "landing"  # the landing zone (firepipe.resources.landing.S3LandingZone)
ATHENA_RESULTS_PREFIX = "athena"


class Lake(Construct):
    def __init__(
        self, scope: Construct, id: str, *, config: EnvironmentConfig, data_key: kms.IKey
    ) -> None:
        super().__init__(scope, id)
        self._data_key = data_key
        removal = config.removal_policy
        # S3 server access logging delivers to SSE-S3 buckets only (SSE-KMS targets are not
        # supported), so this bucket alone is encrypted with S3's key. The logging service
        # writes through the bucket policy (cdk.json's serverAccessLogsUseBucketPolicy flag),
        # not an ACL, so ACLs stay disabled here as on the data buckets. It has no access log
        # of its own (logging into itself would loop): cdk-nag's AwsSolutions-S1 passes a
        # bucket that another bucket of its stack logs into, so nothing is acknowledged.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs",
                    expiration=Duration.days(config.access_log_days),
                    noncurrent_version_expiration=Duration.days(1),
                )
            ],
            removal_policy=removal,
            auto_delete_objects=_auto_delete(config),
        )
        self.lake_bucket = self._data_bucket(
            "LakeBucket",
            config,
            data_key,
            log_prefix="lake/",
            rules=[
                # Ingested files stay in incoming/ as the raw archive until this expires them.
                s3.LifecycleRule(
                    id="expire-ingested-landing-files",
                    prefix=f"{LANDING_PREFIX}/incoming/",
                    expiration=Duration.days(config.landing_retention_days),
                ),
                s3.LifecycleRule(
                    id="tier-warehouse",
                    prefix=f"{WAREHOUSE_PREFIX}/",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INTELLIGENT_TIERING,
                            transition_after=Duration.days(0),
                        )
                    ],
                ),
            ],
        )
        self.results_bucket = self._data_bucket(
            "ResultsBucket",
            config,
            data_key,
            log_prefix="results/",
            rules=[s3.LifecycleRule(expiration=Duration.days(config.athena_results_days))],
        )
        self.databases = {
            namespace: glue.CfnDatabase(
                self,
                f"Database{namespace.capitalize()}",
                catalog_id=self.lake_bucket.env.account,
                database_input=glue.CfnDatabase.DatabaseInputProperty(
                    name=namespace,
                    description=f"firepipe's {namespace} Iceberg tables ({config.name})",
                    location_uri=self.lake_bucket.s3_url_for_object(
                        f"{WAREHOUSE_PREFIX}/{namespace}.db"
                    ),
                ),
            )
            for namespace in LAKE_NAMESPACES
        }
        for database in self.databases.values():
            database.apply_removal_policy(removal)
        self.workgroup = athena.CfnWorkGroup(
            self,
            "Workgroup",
            name=config.prefix,
            description="firepipe's queries over the lake; results encrypted with the data key",
            state="ENABLED",
            recursive_delete_option=config.stateful is Stateful.DESTROY,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                # Clients cannot override the location or the encryption below.
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=config.athena_scan_limit_bytes,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version="Athena engine version 3"
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=self.results_location,
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=data_key.key_arn
                    ),
                ),
            ),
        )
        self.workgroup.apply_removal_policy(removal)
        # The field extraction's watermarks and leases (firepipe.resources.watermarks,
        # DynamoWatermarkStore.table_definition): what has been extracted is lake state.
        self.watermarks_table = dynamodb.TableV2(
            self,
            "Watermarks",
            table_name=f"{config.prefix}-watermarks",
            partition_key=dynamodb.Attribute(name="name", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            encryption=dynamodb.TableEncryptionV2.customer_managed_key(data_key),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=config.deletion_protection,
            removal_policy=removal,
        )

    def _data_bucket(
        self,
        id: str,
        config: EnvironmentConfig,
        data_key: kms.IKey,
        *,
        log_prefix: str,
        rules: list[s3.LifecycleRule],
    ) -> s3.Bucket:
        return s3.Bucket(
            self,
            id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=data_key,
            bucket_key_enabled=True,  # one data key per bucket, not one KMS call per object
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=log_prefix,
            lifecycle_rules=[
                *rules,
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=Duration.days(config.noncurrent_version_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                ),
            ],
            removal_policy=config.removal_policy,
            auto_delete_objects=_auto_delete(config),
        )

    @property
    def warehouse(self) -> str:
        """FIREPIPE_LAKE_WAREHOUSE: the Iceberg warehouse's s3:// location."""
        return self.lake_bucket.s3_url_for_object(WAREHOUSE_PREFIX)

    @property
    def results_location(self) -> str:
        """FIREPIPE_ATHENA_OUTPUT_LOCATION: where the workgroup writes query results."""
        return self.results_bucket.s3_url_for_object(f"{ATHENA_RESULTS_PREFIX}/")

    def grant_read(self, grantee: iam.IGrantable) -> iam.Grant:
        """Read the lake (tables and landing zone); the bucket's grant includes the key."""
        return self.lake_bucket.grant_read(grantee)

    def grant_read_write(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.lake_bucket.grant_read_write(grantee)

    def grant_query_results(self, grantee: iam.IGrantable) -> iam.Grant:
        """Write and read Athena's results (the workgroup runs queries as the caller)."""
        return self.results_bucket.grant_read_write(grantee)

    def log_access(self, bucket: s3.Bucket, prefix: str) -> None:
        """Server access logs of `bucket`, a bucket of another stack, under `prefix` of the
        access-log bucket. The L2 bucket's own option, for a target in another stack, lets
        the logging service write there for any bucket of any account; this statement admits
        that stack's buckets in this account, without naming the bucket (this stack would
        then depend on that one: a cycle)."""
        cfn = bucket.node.default_child
        assert isinstance(cfn, s3.CfnBucket)
        cfn.logging_configuration = s3.CfnBucket.LoggingConfigurationProperty(
            destination_bucket_name=self.access_logs.bucket_name, log_file_prefix=prefix
        )
        stack = Stack.of(bucket)
        self.access_logs.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("logging.s3.amazonaws.com")],
                actions=["s3:PutObject"],
                resources=[self.access_logs.arn_for_objects(f"{prefix}*")],
                conditions={
                    # CloudFormation names a bucket `<stack name>-<logical id>-<suffix>`.
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{stack.partition}:s3:::{stack.stack_name.lower()}-*"
                    },
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            )
        )

    @property
    def environment(self) -> dict[str, str]:
        """The variables firepipe's lakehouse, landing zone and Athena resources read."""
        return {
            env_name("LAKE_WAREHOUSE_VAR"): self.warehouse,
            env_name("LANDING_BUCKET_VAR"): self.lake_bucket.bucket_name,
            env_name("LANDING_PREFIX_VAR"): LANDING_PREFIX,
            env_name("ATHENA_WORKGROUP_VAR"): self.workgroup.ref,
            env_name("ATHENA_OUTPUT_LOCATION_VAR"): self.results_location,
            env_name("WATERMARKS_TABLE_VAR"): self.watermarks_table.table_name,
        }

    def grant_use(self, grantee: iam.IGrantable) -> None:
        """What firepipe's assets do with the lake: read and write the bucket (tables and the
        landing zone), the Iceberg tables of the Glue catalog in its namespaces (PyIceberg's
        Glue catalog), the extraction's watermarks, and queries in the workgroup with their
        results."""
        stack = Stack.of(self)
        for bucket in (self.lake_bucket, self.results_bucket):
            iam.Grant.add_to_principal(
                grantee=grantee,
                actions=[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                resource_arns=[bucket.arn_for_objects("*")],
            )
            iam.Grant.add_to_principal(
                grantee=grantee,
                actions=["s3:ListBucket", "s3:GetBucketLocation"],
                resource_arns=[bucket.bucket_arn],
            )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resource_arns=[self._data_key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"}},
        )
        catalog = f"arn:{stack.partition}:glue:{stack.region}:{stack.account}"
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[
                "glue:GetDatabase",
                "glue:GetDatabases",
                "glue:GetTable",
                "glue:GetTables",
                "glue:CreateTable",
                "glue:UpdateTable",
                "glue:DeleteTable",
            ],
            resource_arns=[
                f"{catalog}:catalog",
                *(f"{catalog}:database/{n}" for n in LAKE_NAMESPACES),
                *(f"{catalog}:table/{n}/*" for n in LAKE_NAMESPACES),
            ],
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem"],
            resource_arns=[self.watermarks_table.table_arn],
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
            resource_arns=[self._data_key.key_arn],
            conditions={
                "StringEquals": {"kms:ViaService": f"dynamodb.{stack.region}.amazonaws.com"}
            },
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[
                "athena:StartQueryExecution",
                "athena:GetQueryExecution",
                "athena:GetQueryResults",
                "athena:StopQueryExecution",
                "athena:GetWorkGroup",
            ],
            resource_arns=[
                f"arn:{stack.partition}:athena:{stack.region}:{stack.account}:workgroup/"
                f"{self.workgroup.ref}"
            ],
        )


def _auto_delete(config: EnvironmentConfig) -> bool:
    """CloudFormation deletes only an empty bucket (no object, no old version): a stack whose
    buckets go with it (DESTROY) empties them first through CDK's auto-delete custom resource.
    RETAIN keeps the buckets, so nothing empties them. The resource's provider (a Lambda
    function and its role, which the CDK writes as plain CfnResources) raises no cdk-nag 3
    finding: the AwsSolutions rules inspect CfnFunction and CfnRole. Should a later cdk-nag
    flag it, synthesis fails, and the acknowledgement belongs on the stack's
    `Custom::S3AutoDeleteObjectsCustomResourceProvider` alone."""
    return config.stateful is Stateful.DESTROY
