"""Compute: AWS Batch for the generator (CPU and GPU queues on Spot), and the three Spark engines
of the gold features (spark.py: EMR Serverless, EMR steps on a transient cluster, a Glue job).

What firepipe submits (firepipe/resources/compute.py, `BatchCompute`): one job per partition of
a run, `python -m firepipe.services.generate`, on the CPU or the GPU queue, naming one job
definition (FIREPIPE_BATCH_JOB_DEFINITION); a GPU job adds a GPU to the container's resources.
The Pipes context and messages travel through `FIREPIPE_PIPES_BUCKET` under `pipes/`, and the
job writes its Parquet files into the run's staging folder under the warehouse.

A job definition cannot swap its image per job, and the CUDA build of the generator is an image
of its own (docker/generator-cuda.Dockerfile): so there are two definitions, the CPU one
(FIREPIPE_BATCH_JOB_DEFINITION) and the GPU one (`gpu_job_definition`, the CUDA image and one
GPU: FIREPIPE_BATCH_GPU_JOB_DEFINITION), which firepipe's BatchCompute submits GPU runs to.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Size, Stack, Validations
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.env_names import env_name
from firepipe_infra.grants import (
    PIPES_PREFIX,
    acknowledge_wildcards,
    default_policy,
    grant_objects,
)
from firepipe_infra.lake import WAREHOUSE_PREFIX, Lake
from firepipe_infra.naming import pascal
from firepipe_infra.network import Network
from firepipe_infra.registry import Registry
from firepipe_infra.security import Security
from firepipe_infra.spark import SparkEngines

# firepipe.resources.compute.GENERATOR_COMMAND: also the images' CMD, said again here so a job
# definition run by hand (the console, the CLI) runs the generator too.
GENERATOR_COMMAND = ["python", "-m", "firepipe.services.generate"]
# What one generator job reserves. Chosen, not measured: four generator threads, and memory that
# fits an xlarge of every family below once ECS has taken its share (a g5.xlarge has 16 GiB).
GENERATOR_VCPUS = 4
GENERATOR_MEMORY = Size.gibibytes(14)
# Spot capacity is found in more pools the more families a compute environment may choose:
# current Intel and AMD general-purpose and compute families; g5 (A10G) and g6 (L4) for CUDA.
CPU_INSTANCE_CLASSES = [
    ec2.InstanceClass.M6I,
    ec2.InstanceClass.M7I,
    ec2.InstanceClass.M6A,
    ec2.InstanceClass.C6I,
    ec2.InstanceClass.C7I,
    ec2.InstanceClass.C6A,
]
GPU_INSTANCE_CLASSES = [ec2.InstanceClass.G5, ec2.InstanceClass.G6]
# A reclaimed Spot instance fails its job with a status reason starting "Host EC2": such a job is
# retried (up to this many attempts in all); any other failure is the generator's and ends it.
GENERATOR_ATTEMPTS = 3

_ECS_FOR_EC2 = (
    "arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
)
_INSTANCE_POLICY = (
    "The ECS container agent's instance role (AmazonEC2ContainerServiceforEC2Role): AWS keeps "
    "it in step with the agent's calls (registering the instance, polling for tasks, the awslogs "
    "driver) and grants nothing of firepipe's data, which the generator reaches through its "
    "job role."
)
_ECR_TOKEN = (
    "ecr:GetAuthorizationToken has no resource-level permissions (it must be '*'); the pulls "
    "themselves are granted on the generator's repository only."
)
_STAGING_WRITES = (
    "Object patterns under two prefixes of the lake bucket: the generator writes a run's "
    "staging files under warehouse/ (firepipe names each path at run time) and its Pipes "
    "messages under pipes/."
)


# The wildcards grant_use writes into the grantee's policy, acknowledged there: the Pipes
# objects, any job of the account's Batch queues (a job's id is known once submitted), every
# revision of the two job definitions, the application's job runs and the transient clusters
# (ids known once started), and the calls that take no resource (DescribeJobs, RunJobFlow).
USE_WILDCARD_SUFFIXES = (f"/{PIPES_PREFIX}*", ":job/*", "/jobruns/*", ":cluster/*", "*")
_USE_WILDCARDS = (
    "Pipes objects under pipes/ of the lake bucket; Batch jobs, EMR Serverless job runs and EMR "
    "clusters are named by ids that exist once submitted (job/*, jobruns/*, cluster/*); each "
    "job definition is granted with its revisions (name:*); batch:DescribeJobs and "
    "elasticmapreduce:RunJobFlow take no resource ('*')."
)


class Compute(Construct):
    """The generator's Batch environments, queues and job definitions, and the Spark engines."""

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
        self._lake, self._data_key = lake, security.data_key
        # Egress only: nothing calls into a job; jobs reach S3, ECR and logs through the VPC's
        # endpoints and ECS's own API through the NAT.
        self.batch_security_group = ec2.SecurityGroup(
            self,
            "BatchSecurityGroup",
            vpc=network.vpc,
            description=f"{config.prefix} Batch instances: egress only",
            allow_all_outbound=True,
        )
        # Instance metadata through IMDSv2 tokens only (no IMDSv1 reads forged by a request to
        # a confused service). Batch runs ECS jobs in host network mode, so a job could still
        # reach the instance role: that role holds only the ECS agent's calls, and the SDK in
        # the job takes the job role's credentials first (the container credentials endpoint).
        self.launch_template = ec2.LaunchTemplate(
            self,
            "BatchLaunchTemplate",
            launch_template_name=f"{config.prefix}-batch",
            require_imdsv2=True,
            http_put_response_hop_limit=1,
        )
        self.cpu_environment = self._environment(
            config, network, "cpu", CPU_INSTANCE_CLASSES, config.batch_cpu_max_vcpus, gpu=False
        )
        self.gpu_environment = self._environment(
            config, network, "gpu", GPU_INSTANCE_CLASSES, config.batch_gpu_max_vcpus, gpu=True
        )
        self.cpu_queue = self._queue(config, "cpu", self.cpu_environment)
        self.gpu_queue = self._queue(config, "gpu", self.gpu_environment)

        self.batch_log_group = logs.LogGroup(
            self,
            "BatchLogs",
            log_group_name=f"{config.prefix}/batch/generator",
            encryption_key=security.logs_key,
            retention=config.log_retention,
            removal_policy=config.removal_policy,
        )
        self.job_role = iam.Role(
            self,
            "GeneratorJobRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="The generator's Batch jobs: Pipes messages and staged Parquet files",
        )
        # The generator reads its Pipes context and writes its messages, and writes Parquet
        # into the run's staging folder under the warehouse; it reads nothing of the lake.
        bucket, key = lake.lake_bucket, security.data_key
        grant_objects(self.job_role, bucket, key, PIPES_PREFIX, read=True, write=True)
        grant_objects(self.job_role, bucket, key, f"{WAREHOUSE_PREFIX}/", write=True)
        acknowledge_wildcards(
            self.job_role.node.find_child("DefaultPolicy"),
            _STAGING_WRITES,
            [f"/{PIPES_PREFIX}*", f"/{WAREHOUSE_PREFIX}/*"],
        )
        self.job_definition_names = [
            f"{config.prefix}-{i}" for i in ("generator", "generator-cuda")
        ]
        self.job_definition = self._job_definition(config, registry, "generator", gpu=False)
        self.gpu_job_definition = self._job_definition(config, registry, "generator-cuda", gpu=True)

        self.spark = SparkEngines(
            self,
            "Spark",
            config=config,
            security=security,
            network=network,
            lake=lake,
            registry=registry,
        )
        self.emr_application = self.spark.application
        self.emr_steps = self.spark.emr_steps
        self.glue_job = self.spark.glue_job
        self.log_groups: dict[str, logs.LogGroup] = {
            "batch": self.batch_log_group,
            **self.spark.log_groups,
        }
        self.environment: dict[str, str] = {
            # By name, not by the definition's Ref: that is the ARN of one revision, and a new
            # image makes a new revision, which CloudFormation cannot change under the export
            # the orchestration stack imports. A name submits the latest active revision.
            env_name("BATCH_JOB_DEFINITION_VAR"): self.job_definition_names[0],
            env_name("BATCH_GPU_JOB_DEFINITION_VAR"): self.job_definition_names[1],
            env_name("BATCH_CPU_QUEUE_VAR"): self.cpu_queue.job_queue_name,
            env_name("BATCH_GPU_QUEUE_VAR"): self.gpu_queue.job_queue_name,
            env_name("PIPES_BUCKET_VAR"): lake.lake_bucket.bucket_name,
            **self.spark.environment,
        }

    def _environment(
        self,
        config: EnvironmentConfig,
        network: Network,
        kind: str,
        classes: list[ec2.InstanceClass],
        max_vcpus: int,
        *,
        gpu: bool,
    ) -> batch.ManagedEc2EcsComputeEnvironment:
        """A Spot environment in the private subnets that scales from nothing to `max_vcpus`,
        on the ECS-optimised Amazon Linux 2023 AMI (its NVIDIA variant, with the driver the
        CUDA image needs, for GPU instances)."""
        image = (
            batch.EcsMachineImageType.ECS_AL2023_NVIDIA
            if gpu
            else batch.EcsMachineImageType.ECS_AL2023
        )
        environment = batch.ManagedEc2EcsComputeEnvironment(
            self,
            f"{kind.capitalize()}Environment",
            compute_environment_name=f"{config.prefix}-{kind}",
            vpc=network.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[self.batch_security_group],
            spot=True,
            allocation_strategy=batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED,
            instance_classes=classes,
            use_optimal_instance_classes=False,
            images=[batch.EcsMachineImage(image_type=image)],
            minv_cpus=0,
            maxv_cpus=max_vcpus,
            launch_template=self.launch_template,
        )
        assert environment.instance_role is not None  # made by the L2 when none is given
        Validations.of(environment.instance_role).acknowledge(
            Acknowledgment(id=f"AwsSolutions-IAM4[Policy::{_ECS_FOR_EC2}]", reason=_INSTANCE_POLICY)
        )
        return environment

    def _queue(
        self, config: EnvironmentConfig, kind: str, environment: batch.IComputeEnvironment
    ) -> batch.JobQueue:
        return batch.JobQueue(
            self,
            f"{kind.capitalize()}Queue",
            job_queue_name=f"{config.prefix}-{kind}",
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=environment, order=1)
            ],
        )

    def _job_definition(
        self, config: EnvironmentConfig, registry: Registry, image: str, *, gpu: bool
    ) -> batch.EcsJobDefinition:
        """The generator in `image`; the image pull is granted to the definition's execution
        role, the lake to the shared job role."""
        container = batch.EcsEc2ContainerDefinition(
            self,
            f"{pascal(image)}Container",
            image=registry.image(image),
            command=GENERATOR_COMMAND,
            cpu=GENERATOR_VCPUS,
            memory=GENERATOR_MEMORY,
            gpu=1 if gpu else None,
            # The Pipes S3 client in the job (firepipe.services.pipes_io) takes the region from
            # the environment: said here, the bucket's regional endpoint (and the VPC's S3
            # gateway endpoint) is used.
            environment={env_name("AWS_REGION_VAR"): Stack.of(self).region},
            job_role=self.job_role,
            logging=ecs.LogDrivers.aws_logs(stream_prefix=image, log_group=self.batch_log_group),
        )
        Validations.of(container.execution_role.node.find_child("DefaultPolicy")).acknowledge(
            Acknowledgment(id="AwsSolutions-IAM5[Resource::*]", reason=_ECR_TOKEN)
        )
        return batch.EcsJobDefinition(
            self,
            f"{pascal(image)}JobDefinition",
            job_definition_name=f"{config.prefix}-{image}",
            container=container,
            propagate_tags=True,
            retry_attempts=GENERATOR_ATTEMPTS,
            retry_strategies=[
                batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
                batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_reason="*")),
            ],
        )

    def grant_use(self, grantee: iam.IGrantable) -> None:
        """What firepipe's code that submits work needs (the Dagster code location and its
        runs): Batch jobs on both queues, the Spark engines, and the Pipes prefix."""
        stack = Stack.of(self)
        # A definition named without its revision is its latest active one.
        definitions = [
            stack.format_arn(service="batch", resource="job-definition", resource_name=name)
            for d in self.job_definition_names
            for name in (d, f"{d}:*")
        ]
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["batch:SubmitJob"],
            resource_arns=[
                self.cpu_queue.job_queue_arn,
                self.gpu_queue.job_queue_arn,
                *definitions,
            ],
        )
        # SubmitJob with tags (PipesBatchClient tags each job with its Dagster run) is also
        # authorised as TagResource on the new job; TerminateJob stops a run's jobs.
        jobs = stack.format_arn(service="batch", resource="job", resource_name="*")
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["batch:TerminateJob", "batch:TagResource"],
            resource_arns=[jobs],
        )
        # DescribeJobs has no resource-level permissions.
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["batch:DescribeJobs"], resource_arns=["*"]
        )
        # The Pipes context it writes and deletes, the messages it reads (and deletes).
        grant_objects(
            grantee,
            self._lake.lake_bucket,
            self._data_key,
            PIPES_PREFIX,
            read=True,
            write=True,
            delete=True,
        )
        self.spark.grant_use(grantee)
        policy = default_policy(grantee)
        if policy is not None:
            revisions = [f"job-definition/{d}:*" for d in self.job_definition_names]
            acknowledge_wildcards(policy, _USE_WILDCARDS, [*USE_WILDCARD_SUFFIXES, *revisions])
