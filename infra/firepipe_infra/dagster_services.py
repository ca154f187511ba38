"""The Dagster parts of the orchestration construct: what it reads from docker/ (the variables the
instance config reads, the code location's host variable), the three services (commands, sizes,
task definitions), the instance's PostgreSQL, the run launcher's permissions and the container
context the code location hands on to its runs.

docker/dagster.yaml and docker/workspace.yaml are the image's own files; the CDK app reads them as
text (the infra project has no PyYAML), so a variable they start to read fails the synthesis's
tests instead of a deployed task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jsii
from aws_cdk import Acknowledgment, ArnFormat, Duration, IStableStringProducer, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from constructs import Construct, IConstruct

from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.grants import acknowledge_wildcards, allow, default_policy
from firepipe_infra.network import Network
from firepipe_infra.security import Security

DOCKER = Path(__file__).resolve().parents[2] / "docker"
DAGSTER_YAML = DOCKER / "dagster.yaml"  # the ECS instance's dagster.yaml (DAGSTER_HOME)
WORKSPACE_YAML = DOCKER / "workspace.yaml"  # the image's workspace: where the code location is
_ENV_REFERENCE = re.compile(r"^\s*(?:-\s*)?env:\s*([A-Z][A-Z0-9_]*)\s*$", re.MULTILINE)


@cache
def instance_variables() -> frozenset[str]:
    """Every variable dagster.yaml reads through an `env:` reference (storage, launcher, compute
    logs) or hands on to runs by bare name (the launcher's `env_vars`)."""
    text = DAGSTER_YAML.read_text()
    names = set(_ENV_REFERENCE.findall(text))
    env_vars = re.search(r"^(\s*)env_vars:\n((?:\1\s+-\s*\S+\n)+)", text, re.MULTILINE)
    if env_vars:
        names |= set(re.findall(r"-\s*([A-Z][A-Z0-9_]*)", env_vars.group(2)))
    if not names:
        raise ValueError(f"{DAGSTER_YAML} reads no variable: is it the ECS instance config?")
    return frozenset(names)


def launcher_setting(key: str) -> str:
    """A scalar of dagster.yaml's run launcher config, such as `task_definition_prefix`."""
    match = re.search(rf"^\s+{key}:\s*([\w.-]+)\s*$", DAGSTER_YAML.read_text(), re.MULTILINE)
    if not match:
        raise ValueError(f"{DAGSTER_YAML} sets no {key}")
    return match.group(1)


def code_location_address() -> tuple[str, int]:
    """The variable workspace.yaml takes the code location's gRPC host from (`host: {env: X}`),
    and the port it dials."""
    text = WORKSPACE_YAML.read_text()
    host = re.search(r"host:\s*\n\s+env:\s*([A-Z][A-Z0-9_]*)", text)
    port = re.search(r"^\s+port:\s*(\d+)\s*$", text, re.MULTILINE)
    if not (host and port):
        raise ValueError(f"{WORKSPACE_YAML} takes no gRPC host from the environment, or no port")
    return host.group(1), int(port.group(1))


@dataclass(frozen=True)
class DagsterService:
    """One long-running Dagster process of the image (docker/dagster.Dockerfile's header)."""

    name: str  # the container's name, the log stream prefix, the service name's end
    command: tuple[str, ...] | None  # None: the image's CMD
    port: int | None
    cpu: int
    memory_mib: int
    # The daemon must run alone (two would launch each queued run twice): its deployments stop
    # the old task before starting the new one. The others start the new task first.
    min_healthy_percent: int
    max_healthy_percent: int
    health_check: tuple[str, ...] | None  # a container health check, as ECS's CMD form


_CODE_PORT = code_location_address()[1]
WEBSERVER = DagsterService(
    name="webserver",
    command=("dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"),
    port=3000,
    cpu=1024,
    memory_mib=3072,  # the asset graph of every layer, held per UI session's queries
    min_healthy_percent=100,
    max_healthy_percent=200,
    health_check=None,  # the load balancer's health check on /server_info replaces bad tasks
)
DAEMON = DagsterService(
    name="daemon",
    command=("dagster-daemon", "run", "-w", "workspace.yaml"),
    port=None,
    cpu=1024,
    memory_mib=2048,
    min_healthy_percent=0,
    max_healthy_percent=100,
    # Fails once a daemon of the instance has not written a heartbeat for 30 minutes (Dagster's
    # tolerance): a hung daemon is replaced instead of leaving runs queued.
    health_check=("CMD", "dagster-daemon", "liveness-check"),
)
CODE_LOCATION = DagsterService(
    name="code",
    command=None,  # dagster code-server start -h 0.0.0.0 -p 4000 -m firepipe.definitions
    port=_CODE_PORT,
    cpu=1024,
    memory_mib=4096,  # firepipe's definitions (dbt manifest, polars, LightGBM) and sensor ticks
    min_healthy_percent=100,
    max_healthy_percent=200,
    health_check=("CMD", "dagster", "api", "grpc-health-check", "-p", str(_CODE_PORT)),
)


@jsii.implements(IStableStringProducer)
class RunContainerContext:
    """DAGSTER_CONTAINER_CONTEXT of the code location: what the EcsRunLauncher adds to each run's
    task definition (dagster_aws.ecs.container_context: `env_vars` as NAME=value, `secrets` as
    ECS secrets). Rendered at synthesis, so variables added after the construct was made (other
    concerns' `environment`) reach the runs too."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.environment: dict[str, str] = {}
        self.secrets: dict[str, str] = {}  # variable -> ECS valueFrom (<secret arn>:<field>::)

    def produce(self) -> str:
        return self._stack.to_json_string(
            {
                "ecs": {
                    "env_vars": [f"{k}={v}" for k, v in sorted(self.environment.items())],
                    "secrets": [
                        {"name": k, "valueFrom": v} for k, v in sorted(self.secrets.items())
                    ],
                }
            }
        )


DATABASE_NAME = "dagster"
DATABASE_USER = "dagster"
DATABASE_PORT = 5432
PASSWORD_FIELD = "password"  # the field of RDS's generated secret that holds the password
# Dagster's runs, event logs and schedules: small rows, grown by storage autoscaling.
DATABASE_STORAGE_GIB = 20
DATABASE_MAX_STORAGE_GIB = 200
DATABASE_LOG_EXPORTS = ("postgresql", "upgrade")
ECS_TASKS = "ecs-tasks.amazonaws.com"
_PRIVATE = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)

_NO_ROTATION = (
    "ECS injects the password when a task starts: a rotation would lock the running webserver, "
    "daemon and runs out of their database until redeployed. Rotating it is a runbook step that "
    "redeploys the services."
)
_DEFAULT_PORT = (
    "The database is in private subnets and admits Dagster's task security groups alone: a "
    "non-default port would hide nothing from a client already inside them."
)
_SINGLE_AZ = "A single-AZ database is the cost this environment takes: prod's is multi-AZ."
_NO_DELETION_PROTECTION = (
    "This environment's stacks are torn down with their data (config.deletion_protection "
    "off); prod keeps deletion protection on."
)
_ENVIRONMENT_VARIABLES = (
    "Host names, ports, ARNs and bucket names, not secrets: the database password and "
    "firepipe's credentials reach the containers as ECS secrets from Secrets Manager."
)
_LAUNCHER = (
    "The EcsRunLauncher's calls: ecs:RegisterTaskDefinition, ecs:DescribeTaskDefinition and "
    "ec2:DescribeNetworkInterfaces have no resource-level permissions; DescribeTasks and "
    "StopTask are held to this cluster (ecs:cluster), TagResource to RunTask's own tags; RunTask "
    "names the runs' task definition family, GetLogEvents the runs' log group's streams."
)


def database(
    scope: Construct,
    *,
    config: EnvironmentConfig,
    security: Security,
    network: Network,
    clients: dict[str, ec2.ISecurityGroup],
) -> tuple[rds.DatabaseInstance, logs.LogGroup]:
    """PostgreSQL 17 for the Dagster instance, reached on 5432 from the `clients` groups only
    ({what: group}), and its exported PostgreSQL log group."""
    identifier = f"{config.prefix}-dagster"
    group = ec2.SecurityGroup(
        scope,
        "DatabaseSecurityGroup",
        vpc=network.vpc,
        description="Dagster PostgreSQL: from the Dagster tasks only",
        allow_all_outbound=False,
    )
    for what, peer in clients.items():
        group.add_ingress_rule(peer, ec2.Port.tcp(DATABASE_PORT), f"PostgreSQL from {what}")
    # RDS writes its exported logs into these groups when they exist: made here, they are
    # encrypted and expire like every other log group (RDS's own would keep them forever).
    exported = [
        logs.LogGroup(
            scope,
            f"Database{export.capitalize()}Logs",
            log_group_name=f"/aws/rds/instance/{identifier}/{export}",
            encryption_key=security.logs_key,
            retention=config.log_retention,
            removal_policy=config.removal_policy,
        )
        for export in DATABASE_LOG_EXPORTS
    ]
    instance = rds.DatabaseInstance(
        scope,
        "Database",
        instance_identifier=identifier,
        engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17),
        instance_type=ec2.InstanceType(config.database_instance_type),
        vpc=network.vpc,
        vpc_subnets=_PRIVATE,
        security_groups=[group],
        port=DATABASE_PORT,
        database_name=DATABASE_NAME,
        credentials=rds.Credentials.from_generated_secret(
            DATABASE_USER,
            encryption_key=security.data_key,
            secret_name=f"{config.prefix}/dagster-database",
        ),
        storage_encryption_key=security.data_key,
        storage_type=rds.StorageType.GP3,
        allocated_storage=DATABASE_STORAGE_GIB,
        max_allocated_storage=DATABASE_MAX_STORAGE_GIB,
        multi_az=config.database_multi_az,
        backup_retention=Duration.days(config.database_backup_days),
        copy_tags_to_snapshot=True,
        deletion_protection=config.deletion_protection,
        removal_policy=config.removal_policy,
        iam_authentication=True,
        cloudwatch_logs_exports=list(DATABASE_LOG_EXPORTS),
        # Query-level load (7 days, the free tier), encrypted like the data.
        enable_performance_insights=True,
        performance_insight_encryption_key=security.data_key,
        ca_certificate=rds.CaCertificate.RDS_CA_RSA2048_G1,
        auto_minor_version_upgrade=True,
        publicly_accessible=False,
    )
    for log_group in exported:
        instance.node.add_dependency(log_group)
    Validations.of(instance.node.find_child("Secret")).acknowledge(
        Acknowledgment(id="AwsSolutions-SMG4", reason=_NO_ROTATION)
    )
    acknowledgements = [Acknowledgment(id="AwsSolutions-RDS11", reason=_DEFAULT_PORT)]
    if not config.database_multi_az:
        acknowledgements.append(Acknowledgment(id="AwsSolutions-RDS3", reason=_SINGLE_AZ))
    if not config.deletion_protection:
        acknowledgements.append(
            Acknowledgment(id="AwsSolutions-RDS10", reason=_NO_DELETION_PROTECTION)
        )
    Validations.of(instance).acknowledge(*acknowledgements)
    return instance, exported[0]


@dataclass(frozen=True)
class TaskSetup:
    """What one Dagster service's task runs with: roles, groups, variables, secrets."""

    role: iam.IRole
    execution_role: iam.IRole
    security_groups: list[ec2.ISecurityGroup]
    environment: dict[str, str]
    secrets: dict[str, ecs.Secret]


def service(
    scope: Construct,
    spec: DagsterService,
    setup: TaskSetup,
    *,
    config: EnvironmentConfig,
    network: Network,
    image: ecs.ContainerImage,
    log_group: logs.ILogGroup,
    health_check_grace_period: Duration | None = None,
    cloud_map: ecs.CloudMapOptions | None = None,
) -> tuple[ecs.FargateService, ecs.ContainerDefinition]:
    """One Dagster process as a Fargate service of the cluster: private subnets, no ECS Exec,
    deployments rolled back by the circuit breaker."""
    pascal = spec.name.capitalize()
    task = ecs.FargateTaskDefinition(
        scope,
        f"{pascal}Task",
        family=f"{config.prefix}-dagster-{spec.name}",
        cpu=spec.cpu,
        memory_limit_mib=spec.memory_mib,
        task_role=setup.role,
        execution_role=setup.execution_role,
        # As the runs' task definitions (docker/dagster.yaml's runtime_platform).
        runtime_platform=ecs.RuntimePlatform(
            cpu_architecture=ecs.CpuArchitecture.X86_64,
            operating_system_family=ecs.OperatingSystemFamily.LINUX,
        ),
    )
    Validations.of(task).acknowledge(
        Acknowledgment(id="AwsSolutions-ECS2", reason=_ENVIRONMENT_VARIABLES)
    )
    container = task.add_container(
        spec.name,
        image=image,
        command=list(spec.command) if spec.command else None,
        port_mappings=[ecs.PortMapping(container_port=spec.port)] if spec.port else None,
        logging=ecs.LogDrivers.aws_logs(stream_prefix=spec.name, log_group=log_group),
        environment=setup.environment,
        secrets=setup.secrets,
        health_check=ecs.HealthCheck(
            command=list(spec.health_check),
            interval=Duration.seconds(60),
            timeout=Duration.seconds(30),
            retries=3,
            start_period=Duration.seconds(300),  # loading the definitions; ECS's maximum
        )
        if spec.health_check
        else None,
    )
    fargate = ecs.FargateService(
        scope,
        f"{pascal}Service",
        service_name=f"{config.prefix}-dagster-{spec.name}",
        cluster=network.cluster,
        task_definition=task,
        desired_count=1,
        security_groups=setup.security_groups,
        vpc_subnets=_PRIVATE,
        assign_public_ip=False,
        min_healthy_percent=spec.min_healthy_percent,
        max_healthy_percent=spec.max_healthy_percent,
        circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
        enable_execute_command=False,
        platform_version=ecs.FargatePlatformVersion.LATEST,
        propagate_tags=ecs.PropagatedTagSource.SERVICE,
        health_check_grace_period=health_check_grace_period,
        cloud_map_options=cloud_map,
    )
    return fargate, container


def grant_launcher(
    *,
    daemon: iam.Role,
    webserver: iam.Role,
    network: Network,
    run_roles: list[iam.IRole],
    runs_log_group: logs.LogGroup,
) -> None:
    """What dagster_aws.ecs.EcsRunLauncher calls (dagster_aws/ecs/launcher.py): the daemon
    launches runs (registers or reuses their task definition, reads its own task's network
    interfaces for their subnets and groups, starts and tags the task, passes it the run roles)
    and watches them (their tasks; their last log lines when one fails); the webserver stops a
    run's task when a person cancels it. Nothing lists tasks or reads secrets: the password's
    ARN is in the launcher's config (secrets_tag off)."""
    stack, cluster = Stack.of(daemon), network.cluster.cluster_arn
    in_cluster = {"ArnEquals": {"ecs:cluster": cluster}}
    for grantee in (daemon, webserver):
        allow(grantee, ["ecs:DescribeTasks", "ecs:StopTask"], ["*"], in_cluster)
    family = launcher_setting("task_definition_prefix")  # the launcher appends _<hashes>
    task_definitions = stack.format_arn(
        service="ecs", resource="task-definition", resource_name=f"{family}_*"
    )
    allow(daemon, ["ecs:RunTask"], [task_definitions], in_cluster)
    allow(daemon, ["ecs:TagResource"], ["*"], {"StringEquals": {"ecs:CreateAction": "RunTask"}})
    allow(
        daemon,
        [
            "ecs:RegisterTaskDefinition",
            "ecs:DescribeTaskDefinition",
            "ec2:DescribeNetworkInterfaces",
        ],
        ["*"],
    )
    allow(
        daemon,
        ["iam:PassRole"],
        [role.role_arn for role in run_roles],
        {"StringEquals": {"iam:PassedToService": ECS_TASKS}},
    )
    streams = stack.format_arn(
        service="logs",
        resource="log-group",
        resource_name=f"{runs_log_group.log_group_name}:log-stream:*",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    allow(daemon, ["logs:GetLogEvents"], [streams])
    for grantee, suffixes in (
        (daemon, ["*", f"task-definition/{family}_*", ":log-stream:*"]),
        (webserver, ["*"]),
    ):
        acknowledge_wildcards(granted_policy(grantee), _LAUNCHER, suffixes)


def granted_policy(role: iam.Role) -> IConstruct:
    """The policy this app's grants to `role` were written into (made by the first grant)."""
    policy = default_policy(role)
    if policy is None:
        raise ValueError(f"{role.node.path} has been granted nothing yet")
    return policy
