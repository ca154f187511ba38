"""Spark features as the one step of a transient EMR-on-EC2 cluster (FIREPIPE_SPARK_ENGINE=emr;
firepipe/resources/spark_emr.py): no cluster stands here, only what each run's RunJobFlow names.

- EMR's service role, on AWS's scoped AmazonEMRServicePolicy_v2, which acts only on subnets and
  VPCs tagged `for-use-with-amazon-emr-managed-policies=true`: the private subnets (where the
  cluster runs) and the VPC (where EMR creates its managed security groups) are tagged from
  here, in the network stack's template.
- The nodes' instance profile (FIREPIPE_EMR_INSTANCE_PROFILE) and its role, of the same name
  (EMR refuses a profile whose role is named otherwise): the warehouse, the Pipes prefix, the
  artifacts, the log URI, and the data key for the local disks.
- The security configuration: at rest, EMRFS writes SSE-KMS with the data key and the local and
  EBS disks are encrypted with it; instance metadata through IMDSv2 only. In transit is off:
  EMR needs a PEM certificate bundle (a zip in S3 or a custom provider) this deployment does
  not have; the cluster's own traffic stays in one private subnet and its S3 and AWS calls use
  TLS regardless.
- The log URI (`logs/emr/` of the lake bucket) and the bootstrap script
  (`artifacts/emr/bootstrap.sh`, deployed with the stack: spark_code.py), which installs Python
  3.11 and the firepipe wheel on every node (EMR 7 ships Python 3.9).
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Tags, Validations
from aws_cdk import aws_emr as emr
from aws_cdk import aws_iam as iam
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.env_names import env_name
from firepipe_infra.grants import grant_objects, spark_role
from firepipe_infra.lake import Lake
from firepipe_infra.network import Network
from firepipe_infra.security import Security

EMR_LOGS_PREFIX = "logs/emr/"
EMR_MANAGED_TAG = ("for-use-with-amazon-emr-managed-policies", "true")
EMR_SERVICE_POLICY = "service-role/AmazonEMRServicePolicy_v2"
_IAM4_ID = f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{EMR_SERVICE_POLICY}]"
_SERVICE_POLICY = (
    "AmazonEMRServicePolicy_v2 is EMR's own scoped service policy: it acts only on resources "
    "tagged for EMR (the private subnets and the VPC, tagged here) and on what EMR itself "
    "creates, and AWS keeps it in step with EMR's calls."
)


class EmrSteps(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        security: Security,
        network: Network,
        lake: Lake,
        bootstrap_script: str,
    ) -> None:
        """`bootstrap_script`: the s3:// URI of the nodes' bootstrap action (SparkCode's)."""
        super().__init__(scope, id)
        data_key = security.data_key
        self.log_uri = lake.lake_bucket.s3_url_for_object(EMR_LOGS_PREFIX)
        self.bootstrap_script = bootstrap_script
        self.subnet_id = network.vpc.private_subnets[0].subnet_id

        # EMR refuses an instance profile named otherwise than its role: both carry this name.
        nodes = f"{config.prefix}-emr-nodes"
        self.instance_role = spark_role(
            self,
            "InstanceRole",
            service="ec2.amazonaws.com",
            description="EMR nodes of the transient Spark clusters",
            lake=lake,
            data_key=data_key,
            wildcards=[f"/{EMR_LOGS_PREFIX}*"],
            name=nodes,
        )
        grant_objects(self.instance_role, lake.lake_bucket, data_key, EMR_LOGS_PREFIX, write=True)
        # Local disks are encrypted (LUKS) with data keys the nodes get from KMS.
        iam.Grant.add_to_principal(
            grantee=self.instance_role,
            actions=["kms:GenerateDataKey", "kms:Decrypt"],
            resource_arns=[data_key.key_arn],
        )
        self.instance_profile = iam.CfnInstanceProfile(
            self,
            "InstanceProfile",
            instance_profile_name=nodes,
            roles=[self.instance_role.role_name],
        )

        self.service_role = iam.Role(
            self,
            "ServiceRole",
            role_name=f"{config.prefix}-emr-service",
            assumed_by=iam.ServicePrincipal("elasticmapreduce.amazonaws.com"),
            description="EMR's service role for the transient Spark clusters",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(EMR_SERVICE_POLICY)],
        )
        Validations.of(self.service_role).acknowledge(
            Acknowledgment(id=_IAM4_ID, reason=_SERVICE_POLICY)
        )
        # The v2 policy passes EMR_EC2_DefaultRole only; the nodes' role is named otherwise.
        self.instance_role.grant_pass_role(self.service_role)
        # The EBS volumes are encrypted with the data key, through grants EMR makes for the
        # instances (for AWS resources only).
        iam.Grant.add_to_principal(
            grantee=self.service_role,
            actions=[
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo",
                "kms:GenerateDataKey",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:DescribeKey",
            ],
            resource_arns=[data_key.key_arn],
        )
        iam.Grant.add_to_principal(
            grantee=self.service_role,
            actions=["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            resource_arns=[data_key.key_arn],
            conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
        )
        vpc_resource = network.vpc.node.default_child
        assert vpc_resource is not None
        Tags.of(vpc_resource).add(*EMR_MANAGED_TAG)
        for subnet in network.vpc.private_subnets:
            Tags.of(subnet).add(*EMR_MANAGED_TAG)

        self.security_configuration = emr.CfnSecurityConfiguration(
            self,
            "SecurityConfiguration",
            name=f"{config.prefix}-emr",
            security_configuration={
                "EncryptionConfiguration": {
                    "EnableInTransitEncryption": False,
                    "EnableAtRestEncryption": True,
                    "AtRestEncryptionConfiguration": {
                        "S3EncryptionConfiguration": {
                            "EncryptionMode": "SSE-KMS",
                            "AwsKmsKey": data_key.key_arn,
                        },
                        "LocalDiskEncryptionConfiguration": {
                            "EncryptionKeyProviderType": "AwsKms",
                            "AwsKmsKey": data_key.key_arn,
                            "EnableEbsEncryption": True,
                        },
                    },
                },
                # Instance metadata through IMDSv2 tokens only.
                "InstanceMetadataServiceConfiguration": {
                    "MinimumInstanceMetadataServiceVersion": 2,
                    "HttpPutResponseHopLimit": 1,
                },
            },
        )
        # EMR's names: RunJobFlow takes the service role and the instance profile by name.
        self.environment: dict[str, str] = {
            env_name("EMR_SERVICE_ROLE_VAR"): self.service_role.role_name,
            env_name("EMR_INSTANCE_PROFILE_VAR"): self.instance_profile.ref,
            env_name("EMR_SUBNET_ID_VAR"): self.subnet_id,
            env_name("EMR_LOG_URI_VAR"): self.log_uri,
            env_name("EMR_SECURITY_CONFIGURATION_VAR"): self.security_configuration.ref,
            env_name("EMR_BOOTSTRAP_SCRIPT_VAR"): self.bootstrap_script,
        }

    def grant_use(self, grantee: iam.IGrantable) -> None:
        """Start a cluster with its one step, follow it and end it (firepipe's wrapping of
        dagster-aws's PipesEMRClient: RunJobFlow, DescribeCluster, ListSteps, and
        TerminateJobFlows on an interrupt), passing the two roles RunJobFlow names. The
        cluster carries the run's tags (AddTags)."""
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["elasticmapreduce:RunJobFlow"], resource_arns=["*"]
        )
        clusters = Stack.of(self).format_arn(
            service="elasticmapreduce", resource="cluster", resource_name="*"
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[
                "elasticmapreduce:DescribeCluster",
                "elasticmapreduce:ListSteps",
                "elasticmapreduce:TerminateJobFlows",
                "elasticmapreduce:AddTags",
            ],
            resource_arns=[clusters],
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["iam:PassRole"],
            resource_arns=[self.service_role.role_arn, self.instance_role.role_arn],
        )
