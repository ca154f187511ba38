"""Machine learning on SageMaker: the bucket of training channels, model artifacts, model
archives, transform files, MLflow artifacts and the feature store's offline store; the roles
SageMaker runs each of them with; the managed MLflow tracking server; and the model package
group its automatic registration fills.

One bucket, a prefix per use: the adapters (firepipe/resources/training.py, endpoint.py) each
write under their own prefix of the bucket they are given, so the training and serving
variables name the same bucket and every role reads and writes its own prefixes only.
Training jobs and models run outside the VPC: the adapters set no VpcConfig (and read no
subnet or security group variable), and the jobs reach only S3, ECR and CloudWatch, which
SageMaker reaches for them.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, ArnFormat, Duration, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig, Stateful
from firepipe_infra.env_names import env_name
from firepipe_infra.grants import allow
from firepipe_infra.lake import Lake
from firepipe_infra.ml_access import (
    ENDPOINT_NAME,
    FEATURE_GROUP_NAME,
    FEATURE_STORE_ACTIONS,
    FEATURE_STORE_DATABASE,
    FEATURE_STORE_PREFIX,
    JOB_NAME_PREFIX,
    MLFLOW_PREFIX,
    MODEL_NAME,
    REGISTRATION_ACTIONS,
    SAGEMAKER,
    SERVING_ACTIONS,
    SERVING_PREFIX,
    TRAINING_ACTIONS,
    TRAINING_PREFIX,
    grant_endpoint_autoscaling,
    model_package_group_name,
)
from firepipe_infra.registry import Registry
from firepipe_infra.security import Security

# Channels, job outputs and transform files are read back once, right after their job (a
# channel expired here is uploaded again when next needed). Model archives, MLflow's
# artifacts and the offline store are kept. (A config field would be `ml_transient_days`.)
TRANSIENT_DAYS = 30
# Managed MLflow's size per environment (a config field would be `mlflow_size`).
TRACKING_SERVER_SIZES = {"dev": "Small", "staging": "Small", "prod": "Medium"}
ACCESS_LOG_PREFIX = "ml/"  # in the lake's access-log bucket

_WILDCARDS = (
    "Object keys under this role's own prefixes of the ML bucket; ecr:GetAuthorizationToken and "
    "cloudwatch:PutMetricData (held to SageMaker's namespaces by a condition) take no resource; "
    "the tables of Feature Store's Glue database and the versions of the one model package "
    "group get their names from SageMaker."
)


# The MLflow REST calls that resolve and download a registered model (by alias or stage).
MODEL_READ_ACTIONS = [
    "sagemaker-mlflow:GetRegisteredModel",
    "sagemaker-mlflow:GetLatestModelVersions",
    "sagemaker-mlflow:GetModelVersion",
    "sagemaker-mlflow:GetModelVersionByAlias",
    "sagemaker-mlflow:GetModelVersionDownloadUri",
    "sagemaker-mlflow:SearchModelVersions",
    "sagemaker-mlflow:SearchRegisteredModels",
    "sagemaker-mlflow:GetRun",
    "sagemaker-mlflow:GetExperiment",
    "sagemaker-mlflow:ListArtifacts",
]


class MachineLearning(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        security: Security,
        lake: Lake,
        registry: Registry,
    ) -> None:
        super().__init__(scope, id)
        self._stack = Stack.of(self)
        self._data_key = security.data_key
        self.bucket = self._bucket(config, security, lake)
        self.log_groups = {
            use: logs.LogGroup(
                self,
                f"{use.capitalize()}Logs",
                # SageMaker's own names: it writes there (and makes the group when missing).
                log_group_name=name,
                encryption_key=security.logs_key,
                retention=config.log_retention,
                removal_policy=config.removal_policy,
            )
            for use, name in (
                ("training", "/aws/sagemaker/TrainingJobs"),
                ("endpoint", f"/aws/sagemaker/Endpoints/{ENDPOINT_NAME}"),
                ("transform", "/aws/sagemaker/TransformJobs"),
            )
        }

        # Training and tuning jobs: the channels in, the model out, the training image.
        self.training_role = self._role("TrainingRole", "SageMaker training and tuning jobs")
        self._grant_objects(self.training_role, f"{TRAINING_PREFIX}/*", write=True)
        registry.repository("training").grant_pull(self.training_role)
        self._grant_logs_and_metrics(self.training_role, ["training"], ["TrainingJobs"])
        self._acknowledge(self.training_role, "*", self._objects(f"{TRAINING_PREFIX}/*"))

        # The models of the endpoint and of batch transform: the archives and the transform
        # input in, the transform output out, the inference image.
        self.serving_role = self._role("ServingRole", "SageMaker models: endpoint, transform")
        self._grant_objects(self.serving_role, f"{SERVING_PREFIX}/*", write=False)
        self._grant_objects(self.serving_role, f"{SERVING_PREFIX}/transform/*", write=True)
        registry.repository("inference").grant_pull(self.serving_role)
        self._grant_logs_and_metrics(
            self.serving_role, ["endpoint", "transform"], ["Endpoints", "TransformJobs"]
        )
        self._acknowledge(
            self.serving_role,
            "*",
            self._objects(f"{SERVING_PREFIX}/*"),
            self._objects(f"{SERVING_PREFIX}/transform/*"),
        )

        # Feature Store writes the offline store (Iceberg data and metadata under the prefix,
        # SSE-KMS by the bucket's default) and keeps its Glue table current: AWS's managed
        # AmazonSageMakerFeatureStoreAccess, scoped to this prefix and Feature Store's database.
        self.feature_store_role = self._role(
            "FeatureStoreRole", "SageMaker Feature Store: the offline store"
        )
        self._grant_objects(self.feature_store_role, f"{FEATURE_STORE_PREFIX}/*", write=True)
        allow(
            self.feature_store_role,
            ["s3:PutObjectAcl"],
            [self.bucket.arn_for_objects(f"{FEATURE_STORE_PREFIX}/*")],
        )
        allow(self.feature_store_role, ["s3:GetBucketAcl"], [self.bucket.bucket_arn])
        tables = self._arn("glue", "table", f"{FEATURE_STORE_DATABASE}/*")
        allow(
            self.feature_store_role,
            ["glue:GetTable", "glue:UpdateTable"],
            [
                self._arn("glue", "catalog"),
                self._arn("glue", "database", FEATURE_STORE_DATABASE),
                tables,
            ],
        )
        self._acknowledge(
            self.feature_store_role, self._objects(f"{FEATURE_STORE_PREFIX}/*"), tables
        )

        # Managed MLflow: artifacts under mlflow/; its automatic registration writes each
        # registered version of MODEL_NAME as a package of the group below.
        tracking_server_name = f"{config.prefix}-mlflow"
        self.model_package_group_name = model_package_group_name(tracking_server_name)
        packages = self._package_arns()
        self.mlflow_role = self._role(
            "MlflowRole", "SageMaker managed MLflow: artifacts, model registration", scoped=False
        )
        self._grant_objects(self.mlflow_role, f"{MLFLOW_PREFIX}/*", write=True)
        allow(self.mlflow_role, REGISTRATION_ACTIONS, packages)
        self._acknowledge(self.mlflow_role, self._objects(f"{MLFLOW_PREFIX}/*"), packages[1])
        self.tracking_server = sagemaker.CfnMlflowTrackingServer(
            self,
            "TrackingServer",
            tracking_server_name=tracking_server_name,
            artifact_store_uri=self.bucket.s3_url_for_object(MLFLOW_PREFIX),
            role_arn=self.mlflow_role.role_arn,
            tracking_server_size=TRACKING_SERVER_SIZES[config.name],
            automatic_model_registration=True,
        )
        # The server checks its role when created: the role's policy must exist by then.
        self.tracking_server.node.add_dependency(self.mlflow_role)
        self.tracking_server.apply_removal_policy(config.removal_policy)
        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=self.model_package_group_name,
            model_package_group_description=(
                f"{MODEL_NAME}: the versions registered in {tracking_server_name}"
            ),
        )
        self.model_package_group.apply_removal_policy(config.removal_policy)

        values = {
            "SAGEMAKER_ROLE_ARN_VAR": self.training_role.role_arn,
            "TRAINING_IMAGE_URI_VAR": registry.image_uri("training"),
            "TRAINING_BUCKET_VAR": self.bucket.bucket_name,
            "MLFLOW_TRACKING_SERVER_ARN_VAR": self.tracking_server.attr_tracking_server_arn,
            "SERVING_IMAGE_URI_VAR": registry.image_uri("inference"),
            "SERVING_ROLE_ARN_VAR": self.serving_role.role_arn,
            "SERVING_BUCKET_VAR": self.bucket.bucket_name,
            "FEATURE_STORE_ROLE_ARN_VAR": self.feature_store_role.role_arn,
            # No trailing slash: Feature Store appends /<account>/sagemaker/<region>/... itself.
            "FEATURE_STORE_OFFLINE_URI_VAR": self.bucket.s3_url_for_object(FEATURE_STORE_PREFIX),
        }
        self.environment: dict[str, str] = {env_name(c): v for c, v in values.items()}

    def _bucket(self, config: EnvironmentConfig, security: Security, lake: Lake) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=security.data_key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                *(
                    s3.LifecycleRule(
                        id=f"expire-{prefix.replace('/', '-')}",
                        prefix=f"{prefix}/",
                        expiration=Duration.days(TRANSIENT_DAYS),
                    )
                    for prefix in (TRAINING_PREFIX, f"{SERVING_PREFIX}/transform")
                ),
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=Duration.days(config.noncurrent_version_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                ),
            ],
            removal_policy=config.removal_policy,
            auto_delete_objects=config.stateful is Stateful.DESTROY,
        )
        lake.log_access(bucket, ACCESS_LOG_PREFIX)
        return bucket

    def _role(self, id: str, what: str, *, scoped: bool = True) -> iam.Role:
        """A role SageMaker assumes; `scoped`: on this account's behalf only (the condition
        SageMaker's own role templates carry; the MLflow documentation's trust has none)."""
        conditions = (
            {"StringEquals": {"aws:SourceAccount": self._stack.account}} if scoped else None
        )
        return iam.Role(
            self,
            id,
            assumed_by=iam.ServicePrincipal(SAGEMAKER, conditions=conditions),
            description=f"{self._stack.stack_name}: {what}",
        )

    def _grant_objects(self, grantee: iam.IGrantable, pattern: str, *, write: bool) -> None:
        """Get (and put) the objects matching `pattern`, list the bucket, and the data key
        through S3 only. Explicit actions: the bucket's L2 grants add action families
        (s3:GetObject*, s3:List*, kms:ReEncrypt*) and delete-adjacent ones no one here needs.
        ListBucket takes no prefix condition: HeadObject on a missing key checks it without
        one (a 404 rather than a 403 is how the adapters tell "not uploaded yet")."""
        writes = ["s3:PutObject", "s3:AbortMultipartUpload"] if write else []
        allow(grantee, ["s3:GetObject", *writes], [self.bucket.arn_for_objects(pattern)])
        allow(grantee, ["s3:ListBucket", "s3:GetBucketLocation"], [self.bucket.bucket_arn])
        iam.Grant.add_to_principal(
            grantee=grantee,
            # Decrypt for reads and for completing a multipart upload.
            actions=["kms:Decrypt", *(["kms:GenerateDataKey"] if write else [])],
            resource_arns=[self._data_key.key_arn],
            conditions={
                "StringEquals": {"kms:ViaService": f"s3.{self._stack.region}.amazonaws.com"}
            },
        )

    def _grant_logs_and_metrics(
        self, role: iam.Role, groups: list[str], namespaces: list[str]
    ) -> None:
        for use in groups:
            self.log_groups[use].grant(
                role,
                "logs:CreateLogGroup",  # in SageMaker's documented execution-role policy
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:DescribeLogStreams",
            )
        iam.Grant.add_to_principal(
            grantee=role,
            actions=["cloudwatch:PutMetricData"],
            resource_arns=["*"],
            conditions={
                "StringEquals": {
                    "cloudwatch:namespace": [f"/aws/sagemaker/{n}" for n in namespaces]
                }
            },
        )

    def _objects(self, pattern: str) -> str:
        """How cdk-nag names this bucket's objects matching `pattern` in a finding."""
        cfn = self.bucket.node.default_child
        assert isinstance(cfn, s3.CfnBucket)
        return f"<{self._stack.get_logical_id(cfn)}.Arn>/{pattern}"

    def _acknowledge(self, role: iam.Role, *resources: str) -> None:
        """cdk-nag 3 reports each wildcard resource of a policy as a finding of its own."""
        Validations.of(role.node.find_child("DefaultPolicy")).acknowledge(
            *(
                Acknowledgment(id=f"AwsSolutions-IAM5[Resource::{r}]", reason=_WILDCARDS)
                for r in resources
            )
        )

    def _arn(self, service: str, resource: str, name: str | None = None) -> str:
        return self._stack.format_arn(
            service=service,
            resource=resource,
            resource_name=name,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )

    def _package_arns(self) -> list[str]:
        """The group and its packages (`model-package/<group>/<version>`)."""
        group = self.model_package_group_name
        return [
            self._arn("sagemaker", "model-package-group", group),
            self._arn("sagemaker", "model-package", f"{group}/*"),
        ]

    def grant_use(self, grantee: iam.IGrantable) -> None:
        """What firepipe's code (the Dagster code location and its runs) needs to start and
        follow training and tuning jobs, deploy the endpoint and its autoscaling, run batch
        transform, use the MLflow server, approve model packages and feed the feature group;
        SageMaker resources by the names the adapters give them. cdk-nag reports the
        grantee's wildcard resources (prefixes and name patterns) as AwsSolutions-IAM5
        findings, to acknowledge on the grantee's policy."""
        for prefix in (TRAINING_PREFIX, SERVING_PREFIX, MLFLOW_PREFIX):
            self._grant_objects(grantee, f"{prefix}/*", write=True)
        allow(
            grantee,
            TRAINING_ACTIONS,
            [
                self._arn("sagemaker", kind, f"{JOB_NAME_PREFIX}*")
                for kind in ("training-job", "hyper-parameter-tuning-job")
            ],
        )
        allow(
            grantee,
            SERVING_ACTIONS,
            [
                self._arn("sagemaker", "endpoint", ENDPOINT_NAME),
                *(
                    self._arn("sagemaker", kind, f"{ENDPOINT_NAME}-*")
                    for kind in ("model", "endpoint-config", "transform-job")
                ),
            ],
        )
        grant_endpoint_autoscaling(self._stack, grantee)
        allow(grantee, ["sagemaker-mlflow:*"], [self.tracking_server.attr_tracking_server_arn])
        # Approval is mirrored onto the packages, found by listing the group's (a List action
        # takes no resource).
        allow(grantee, ["sagemaker:UpdateModelPackage"], self._package_arns()[1:])
        allow(grantee, ["sagemaker:ListModelPackages"], ["*"])
        allow(
            grantee,
            FEATURE_STORE_ACTIONS,
            [self._arn("sagemaker", "feature-group", FEATURE_GROUP_NAME)],
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["iam:PassRole"],
            resource_arns=[
                r.role_arn for r in (self.training_role, self.serving_role, self.feature_store_role)
            ],
            conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER}},
        )

    def grant_read_models(self, grantee: iam.IGrantable) -> None:
        """Load the champion (the inference service, the agents that score): the tracking
        server's read calls of the model registry and the artifacts they point to."""
        self._grant_objects(grantee, f"{MLFLOW_PREFIX}/*", write=False)
        allow(grantee, MODEL_READ_ACTIONS, [self.tracking_server.attr_tracking_server_arn])
