"""The APIs' backends: the inference service and the action API as Fargate services in the
environment's cluster, behind one internal Network Load Balancer (a listener per service),
which API Gateway reaches through a VPC link (api.py)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.env_names import env_name
from firepipe_infra.naming import IN_AWS, pascal
from firepipe_infra.network import Network
from firepipe_infra.registry import Registry
from firepipe_infra.security import Security


@dataclass(frozen=True)
class ServiceSpec:
    """One HTTP service: its image, command, port, health path and size."""

    name: str  # the API's path segment, the container's name, the log stream prefix
    image: str  # an image of registry.IMAGES
    command: tuple[str, ...]
    port: int  # the container's port, also the load balancer listener's
    health_path: str  # answered without an API key
    cpu: int
    memory_mib: int
    # How many tasks: the inference service keeps each device's recent readings in its one
    # process (firepipe/services/inference/server.py), so a second task would split them.
    tasks: int


SERVICES = (
    ServiceSpec(
        name="inference",
        # The platform image (the aws extra): on ECS the service reads its API keys from
        # Secrets Manager and follows the champion on the MLflow tracking server. The slim
        # inference image is the SageMaker endpoints', whose model is a folder.
        image="dagster",
        # --wait-for-model: a new environment has no champion yet; the service runs and
        # answers 503 until training registers one (then it loads it, as it follows it).
        command=("firepipe", "serve", "--host", "0.0.0.0", "--port", "8080", "--wait-for-model"),
        port=8080,
        # The process is up (served without a key, as the action API's). Not /ping: that is
        # 503 until a champion exists, and a fresh environment has none, so the circuit
        # breaker would roll back its first deployment; requests before then get a 503 that
        # says why.
        health_path="/openapi.json",
        cpu=1024,
        memory_mib=4096,
        tasks=1,
    ),
    ServiceSpec(
        name="actions",
        image="dagster",  # the action API submits fire runs to the Dagster instance
        command=("firepipe", "actions", "serve", "--host", "0.0.0.0", "--port", "8090"),
        port=8090,
        health_path="/openapi.json",  # the one path the action API serves without a key
        cpu=1024,
        memory_mib=4096,
        tasks=2,
    ),
)
_ENVIRONMENT_VARIABLES = (
    "Resource names and ARNs, not secrets: the API keys come from Secrets Manager at start "
    "(FIREPIPE_API_KEYS_SECRET names the secret, the task role reads it)."
)


class ApiBackends(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        security: Security,
        network: Network,
        registry: Registry,
    ) -> None:
        super().__init__(scope, id)
        self._config, self._security = config, security
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        # Internal: only API Gateway's VPC link (PrivateLink, whose traffic the group's rules
        # are not applied to) and clients inside the VPC reach it.
        lb_group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=network.vpc,
            description="The APIs load balancer: the service ports from the VPC",
            allow_all_outbound=False,
        )
        self.load_balancer = elbv2.NetworkLoadBalancer(
            self,
            "LoadBalancer",
            load_balancer_name=f"{config.prefix}-api",
            vpc=network.vpc,
            vpc_subnets=private,
            internet_facing=False,
            cross_zone_enabled=True,
            security_groups=[lb_group],
            enforce_security_group_inbound_rules_on_private_link_traffic=False,
        )
        Validations.of(self.load_balancer).acknowledge(
            Acknowledgment(
                id="AwsSolutions-ELB2",
                reason="A Network Load Balancer writes access logs for TLS listeners only; its "
                "listeners are TCP behind API Gateway, whose stage logs every request.",
            )
        )
        self.log_groups: dict[str, logs.LogGroup] = {}
        self.services: dict[str, ecs.FargateService] = {}
        self.containers: dict[str, ecs.ContainerDefinition] = {}
        for spec in SERVICES:
            lb_group.add_ingress_rule(
                ec2.Peer.ipv4(config.vpc_cidr), ec2.Port.tcp(spec.port), f"{spec.name} from the VPC"
            )
            self._service(spec, network, registry, private)

    def _service(
        self,
        spec: ServiceSpec,
        network: Network,
        registry: Registry,
        private: ec2.SubnetSelection,
    ) -> None:
        config, stack = self._config, Stack.of(self)
        task = ecs.FargateTaskDefinition(
            self,
            f"{pascal(spec.name)}Task",
            family=f"{config.prefix}-{spec.name}",
            cpu=spec.cpu,
            memory_limit_mib=spec.memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        Validations.of(task).acknowledge(
            Acknowledgment(id="AwsSolutions-ECS2", reason=_ENVIRONMENT_VARIABLES)
        )
        self.containers[spec.name] = task.add_container(
            spec.name,
            image=registry.image(spec.image),
            command=list(spec.command),
            port_mappings=[ecs.PortMapping(container_port=spec.port)],
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=spec.name, log_group=self._log_group(spec)
            ),
            environment={
                **IN_AWS,
                env_name("AWS_REGION_VAR"): stack.region,
                env_name("API_KEYS_SECRET_VAR"): self._security.api_keys_secret.secret_arn,
            },
        )
        self._security.grant_read_api_keys(task.task_role)
        execution_policy = task.obtain_execution_role().node.find_child("DefaultPolicy")
        Validations.of(execution_policy).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="ecr:GetAuthorizationToken has no resource to name: ECS pulls the image "
                "with it (the pull itself is granted on the one repository).",
            )
        )
        service = ecs.FargateService(
            self,
            f"{pascal(spec.name)}Service",
            service_name=f"{config.prefix}-{spec.name}",
            cluster=network.cluster,
            task_definition=task,
            desired_count=spec.tasks,
            vpc_subnets=private,
            assign_public_ip=False,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=100,
            max_healthy_percent=200,
            # The inference service loads its model before it listens.
            health_check_grace_period=Duration.minutes(5),
        )
        service.connections.allow_from(self.load_balancer, ec2.Port.tcp(spec.port))
        listener = self.load_balancer.add_listener(
            f"{pascal(spec.name)}Listener", port=spec.port, protocol=elbv2.Protocol.TCP
        )
        listener.add_targets(
            pascal(spec.name),
            port=spec.port,
            protocol=elbv2.Protocol.TCP,
            targets=[
                service.load_balancer_target(container_name=spec.name, container_port=spec.port)
            ],
            health_check=elbv2.HealthCheck(
                protocol=elbv2.Protocol.HTTP,
                path=spec.health_path,
                healthy_http_codes="200",
                interval=Duration.seconds(10),
                healthy_threshold_count=2,
                unhealthy_threshold_count=3,
            ),
            deregistration_delay=Duration.seconds(30),
        )
        self.services[spec.name] = service

    def _log_group(self, spec: ServiceSpec) -> logs.LogGroup:
        group = logs.LogGroup(
            self,
            f"{pascal(spec.name)}Logs",
            encryption_key=self._security.logs_key,
            retention=self._config.log_retention,
            removal_policy=self._config.removal_policy,
        )
        self.log_groups[spec.name] = group
        return group
