"""The Spark engines of the gold features (FIREPIPE_SPARK_ENGINE picks one; firepipe/resources/
spark*.py): an EMR Serverless application, what a transient EMR-on-EC2 cluster needs
(emr_steps.py; no standing cluster) and a Glue 5.0 job.

Each runs firepipe/services/spark_features.py, which reads silver's Parquet files and writes the
features' Parquet files into the gold table's staging folder (both under the warehouse) and
keeps its Pipes context and messages under `pipes/`. It touches no catalog: the Dagster asset
commits the staged files to Iceberg itself, so no Spark role is granted the Glue Data Catalog.

What the engines run lives under `artifacts/` of the lake bucket, deployed with this stack
(spark_code.py): the entry point (also the Glue job's script), firepipe's wheel (the Glue job
installs it) and EMR's bootstrap script. EMR Serverless runs the entry point on its application
image (docker/emr-serverless.Dockerfile: the release's runtime with Python 3.11 and firepipe at
SPARK_PYTHON), which the registry lets it pull.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_emrserverless as emrs
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.emr_steps import EmrSteps
from firepipe_infra.env_names import env_name
from firepipe_infra.grants import spark_role
from firepipe_infra.lake import Lake
from firepipe_infra.network import Network
from firepipe_infra.registry import Registry
from firepipe_infra.security import Security
from firepipe_infra.spark_code import SparkCode

# EMR 7.x ships Spark 3.5, the oldest the entry point runs on; the release firepipe's EMR steps
# default to (firepipe/resources/spark_emr.py).
EMR_RELEASE = "emr-7.5.0"
# The application's image in the registry (docker/emr-serverless.Dockerfile, built on this
# release's EMR Serverless base).
EMR_SERVERLESS_IMAGE = "emr-serverless"
# Where the application image and the EMR bootstrap script put Python 3.11 with firepipe (EMR 7
# ships Python 3.9); both engines read it from FIREPIPE_EMR_PYTHON.
SPARK_PYTHON = "/usr/local/bin/python3.11"
# The most the EMR Serverless application runs at once (all its job runs together). Chosen,
# not measured: a day of gold features is a few GB of Parquet.
SPARK_MAX_CAPACITY = {"cpu": "64 vCPU", "memory": "256 GB", "disk": "1000 GB"}
SPARK_IDLE_STOP_MINUTES = 15
# Glue: two G.1X workers unless a run asks for more (GlueSparkCompute.worker_type); runs beyond
# the concurrency wait in Glue's queue rather than fail.
GLUE_VERSION = "5.0"
GLUE_WORKER_TYPE = "G.1X"
GLUE_WORKERS = 2
GLUE_MAX_CONCURRENT_RUNS = 4


class SparkEngines(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        security: Security,
        network: Network,
        lake: Lake,
        registry: Registry,
    ) -> None:
        super().__init__(scope, id)
        self._config, self._security = config, security
        self.code = SparkCode(self, "Code", config=config, security=security, lake=lake)
        self.entry_point, self.wheel = self.code.entry_point, self.code.wheel
        self.log_groups: dict[str, logs.LogGroup] = {}

        # EMR Serverless: a Spark application in the private subnets, started by a job run and
        # stopped when idle, logging into an encrypted log group.
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=network.vpc,
            description=f"{config.prefix} EMR Serverless workers: egress only",
            allow_all_outbound=True,
        )
        serverless_logs = self._log_group("emr-serverless", "EmrServerlessLogs")
        self.execution_role = spark_role(
            self,
            "EmrServerlessRole",
            service="emr-serverless.amazonaws.com",
            description="EMR Serverless job runs of the Spark features",
            lake=lake,
            data_key=security.data_key,
            wildcards=[":log-group:*"],
        )
        serverless_logs.grant_write(self.execution_role)
        serverless_logs.grant(self.execution_role, "logs:DescribeLogStreams")
        # EMR Serverless looks its log group up before a run writes to it (an account-wide call).
        iam.Grant.add_to_principal(
            grantee=self.execution_role,
            actions=["logs:DescribeLogGroups"],
            resource_arns=[self._log_group_arn("*")],
        )
        self.application = emrs.CfnApplication(
            self,
            "Application",
            name=f"{config.prefix}-spark",
            release_label=EMR_RELEASE,
            type="SPARK",
            architecture="X86_64",
            # docker/emr-serverless.Dockerfile: the release's runtime with Python 3.11 and
            # firepipe at SPARK_PYTHON (the registry lets EMR Serverless pull it).
            image_configuration=emrs.CfnApplication.ImageConfigurationInputProperty(
                image_uri=registry.image_uri(EMR_SERVERLESS_IMAGE)
            ),
            auto_start_configuration=emrs.CfnApplication.AutoStartConfigurationProperty(
                enabled=True
            ),
            auto_stop_configuration=emrs.CfnApplication.AutoStopConfigurationProperty(
                enabled=True, idle_timeout_minutes=SPARK_IDLE_STOP_MINUTES
            ),
            maximum_capacity=emrs.CfnApplication.MaximumAllowedResourcesProperty(
                **SPARK_MAX_CAPACITY
            ),
            network_configuration=emrs.CfnApplication.NetworkConfigurationProperty(
                subnet_ids=[s.subnet_id for s in network.vpc.private_subnets],
                security_group_ids=[self.security_group.security_group_id],
            ),
            monitoring_configuration=emrs.CfnApplication.MonitoringConfigurationProperty(
                cloud_watch_logging_configuration=emrs.CfnApplication.CloudWatchLoggingConfigurationProperty(
                    enabled=True, log_group_name=serverless_logs.log_group_name
                )
            ),
        )
        self.application.apply_removal_policy(config.removal_policy)

        self.emr_steps = EmrSteps(
            self,
            "EmrSteps",
            config=config,
            security=security,
            network=network,
            lake=lake,
            bootstrap_script=self.code.bootstrap_script,
        )
        self._glue_job(config, security, lake)

        self.environment: dict[str, str] = {
            env_name("EMR_APPLICATION_ID_VAR"): self.application.attr_application_id,
            env_name("EMR_EXECUTION_ROLE_ARN_VAR"): self.execution_role.role_arn,
            env_name("EMR_ENTRY_POINT_VAR"): self.entry_point,
            env_name("EMR_PYTHON_VAR"): SPARK_PYTHON,
            **self.emr_steps.environment,
            env_name("GLUE_JOB_NAME_VAR"): self.glue_job.ref,
        }

    def _log_group(self, name: str, id: str) -> logs.LogGroup:
        group = logs.LogGroup(
            self,
            id,
            log_group_name=f"{self._config.prefix}/{name}",
            encryption_key=self._security.logs_key,
            retention=self._config.log_retention,
            removal_policy=self._config.removal_policy,
        )
        self.log_groups[name] = group
        return group

    def _log_group_arn(self, name: str) -> str:
        return Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name=name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    def _glue_job(self, config: EnvironmentConfig, security: Security, lake: Lake) -> None:
        """A glueetl job on Glue 5.0 (Spark 3.5, Python 3.11) whose script is the entry point,
        with firepipe's wheel as a Python module. Glue 5.0 logs into `<prefix>/output` and
        `<prefix>/error` (--custom-logGroup-prefix): two encrypted log groups of ours."""
        log_prefix = f"{config.prefix}/glue/spark-features"
        for stream in ("output", "error"):
            self._log_group(f"glue/spark-features/{stream}", f"Glue{stream.capitalize()}Logs")
        self.glue_role = spark_role(
            self,
            "GlueRole",
            service="glue.amazonaws.com",
            description="Glue job runs of the Spark features",
            lake=lake,
            data_key=security.data_key,
            wildcards=[f":log-group:{log_prefix}/*"],
        )
        # Glue writes the logs itself and associates the security configuration's key with the
        # groups (already encrypted with it); it encrypts job bookmarks client-side.
        iam.Grant.add_to_principal(
            grantee=self.glue_role,
            actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:AssociateKmsKey"],
            resource_arns=[self._log_group_arn(f"{log_prefix}/*")],
        )
        iam.Grant.add_to_principal(
            grantee=self.glue_role,
            actions=["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
            resource_arns=[security.data_key.key_arn],
        )
        encryption = glue.CfnSecurityConfiguration
        self.glue_security_configuration = encryption(
            self,
            "GlueSecurityConfiguration",
            name=f"{config.prefix}-glue",
            encryption_configuration=encryption.EncryptionConfigurationProperty(
                s3_encryptions=[
                    encryption.S3EncryptionProperty(
                        s3_encryption_mode="SSE-KMS", kms_key_arn=security.data_key.key_arn
                    )
                ],
                # CloudWatch Logs encrypts with a key whose policy admits it: the logs key.
                cloud_watch_encryption=encryption.CloudWatchEncryptionProperty(
                    cloud_watch_encryption_mode="SSE-KMS", kms_key_arn=security.logs_key.key_arn
                ),
                job_bookmarks_encryption=encryption.JobBookmarksEncryptionProperty(
                    job_bookmarks_encryption_mode="CSE-KMS", kms_key_arn=security.data_key.key_arn
                ),
            ),
        )
        self.glue_job = glue.CfnJob(
            self,
            "GlueJob",
            name=f"{config.prefix}-spark-features",
            description="firepipe's gold features on Spark (firepipe.services.spark_features)",
            role=self.glue_role.role_arn,
            command=glue.CfnJob.JobCommandProperty(
                name="glueetl", python_version="3", script_location=self.entry_point
            ),
            glue_version=GLUE_VERSION,
            worker_type=GLUE_WORKER_TYPE,
            number_of_workers=GLUE_WORKERS,
            security_configuration=self.glue_security_configuration.ref,
            execution_property=glue.CfnJob.ExecutionPropertyProperty(
                max_concurrent_runs=GLUE_MAX_CONCURRENT_RUNS
            ),
            job_run_queuing_enabled=True,
            max_retries=0,  # a failed run fails its Dagster step, which Dagster may retry
            default_arguments={
                # Each run computes what its Pipes extras name: nothing to remember between runs.
                "--job-bookmark-option": "job-bookmark-disable",
                "--additional-python-modules": self.wheel,
                "--custom-logGroup-prefix": log_prefix,
            },
        )

    def grant_use(self, grantee: iam.IGrantable) -> None:
        """Start, follow and stop runs of each engine (the calls of dagster-aws's EMR Serverless,
        EMR and Glue Pipes clients as firepipe wraps them), passing exactly the roles they
        name. A Glue run names no role: the job carries its own."""
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["emr-serverless:StartJobRun"],
            resource_arns=[self.application.attr_arn],
        )
        # StartJobRun with tags (the Pipes client tags each run) is also authorised as
        # TagResource on the new run; GetDashboardForJobRun gives the run's Spark UI link.
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[
                "emr-serverless:GetJobRun",
                "emr-serverless:CancelJobRun",
                "emr-serverless:GetDashboardForJobRun",
                "emr-serverless:TagResource",
            ],
            resource_arns=[f"{self.application.attr_arn}/jobruns/*"],
        )
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["iam:PassRole"], resource_arns=[self.execution_role.role_arn]
        )
        self.emr_steps.grant_use(grantee)
        job = Stack.of(self).format_arn(
            service="glue", resource="job", resource_name=self.glue_job.ref
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["glue:StartJobRun", "glue:GetJobRun", "glue:BatchStopJobRun"],
            resource_arns=[job],
        )
