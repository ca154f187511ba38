"""Orchestration: Dagster on ECS Fargate (the webserver, the daemon and the firepipe code location,
each a service of the environment's cluster), the EcsRunLauncher's roles and log group for the
runs (one Fargate task each), RDS PostgreSQL for the instance, the UI's internal load balancer,
the bucket of step logs and the code location's service discovery name.

docker/dagster.yaml reads every deployment-specific value from the environment: this construct
sets each of them on the three tasks (a test holds the two together), and hands firepipe's own
variables and secrets to the runs through the code location's DAGSTER_CONTAINER_CONTEXT
(`add_environment`, `add_secret`).
"""

from __future__ import annotations

from aws_cdk import Duration, Lazy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as sm
from aws_cdk import aws_servicediscovery as servicediscovery
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig, Stateful
from firepipe_infra.dagster_services import (
    CODE_LOCATION,
    DAEMON,
    DATABASE_NAME,
    DATABASE_PORT,
    DATABASE_USER,
    ECS_TASKS,
    PASSWORD_FIELD,
    WEBSERVER,
    DagsterService,
    RunContainerContext,
    TaskSetup,
    code_location_address,
    database,
    grant_launcher,
    granted_policy,
    instance_variables,
    service,
)
from firepipe_infra.env_names import env_name
from firepipe_infra.grants import acknowledge_wildcards, allow, grant_objects
from firepipe_infra.lake import Lake
from firepipe_infra.naming import IN_AWS, pascal
from firepipe_infra.network import Network
from firepipe_infra.registry import Registry
from firepipe_infra.security import Security

COMPUTE_LOGS_PREFIX = "compute-logs"  # DAGSTER_COMPUTE_LOGS_PREFIX: the steps' stdout/stderr
CODE_LOCATION_SERVICE = "code"  # its Cloud Map name: code.<prefix>.local
HEALTH_CHECK_PATH = "/server_info"  # dagster-webserver's status endpoint (no login, no database)

_ECR_TOKEN = (
    "ecr:GetAuthorizationToken has no resource to name: ECS pulls the image with it (the pull "
    "itself is granted on the dagster repository only)."
)
_COMPUTE_LOGS = "Each step's log is an object of its own under the compute-logs prefix."


class Orchestration(Construct):
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
        self._config, self._security, self._network = config, security, network
        stack = Stack.of(self)
        self.log_groups: dict[str, logs.LogGroup] = {}

        # The launcher gives each run the daemon's security groups, so "tasks" holds the
        # daemon, the code location and every run; the webserver has a group of its own (the
        # load balancer reaches it alone).
        self.tasks_security_group = self._group("Tasks", "Dagster: daemon, code location, runs")
        self.webserver_security_group = self._group("Webserver", "Dagster: the webserver")
        self.code_security_group = code_group = self._group(
            "Code", "Dagster code location: gRPC from webserver and daemon"
        )
        for what, peer in self._clients("the daemon").items():
            code_group.add_ingress_rule(
                peer, ec2.Port.tcp(_port(CODE_LOCATION)), f"gRPC from {what}"
            )
        self.database, self.log_groups["database"] = database(
            self,
            config=config,
            security=security,
            network=network,
            clients=self._clients("the daemon, the code location and runs"),
        )

        # The steps' logs: a bucket of this stack, expiring with the logs, logged into the
        # lake's access-log bucket (Lake.log_access: this stack's buckets only, no cycle).
        self.compute_logs_bucket = s3.Bucket(
            self,
            "ComputeLogs",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=security.data_key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-compute-logs",
                    expiration=Duration.days(config.log_retention_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            removal_policy=config.removal_policy,
            auto_delete_objects=config.stateful is Stateful.DESTROY,
        )
        lake.log_access(self.compute_logs_bucket, "dagster-compute-logs/")

        # A run's task runs as run_role (what the assets call: other concerns grant to it) and
        # starts with run_execution_role (the image, the password and firepipe's secrets, its
        # log group). The code location evaluates the same definitions' sensors: it runs as both.
        self.run_role = self._role("RunRole", "Dagster runs and the firepipe code location")
        self.run_execution_role = self._role("RunExecutionRole", "Starts Dagster runs")
        webserver_role = self._role("WebserverRole", "The Dagster webserver")
        daemon_role = self._role("DaemonRole", "The Dagster daemon: launches and watches runs")
        service_execution_role = self._role("ServiceExecutionRole", "Starts Dagster services")
        runs_log_group = self._log_group("runs")

        self.load_balancer, listener = self._load_balancer(lake)
        # The certificate's name, not the load balancer's DNS name (which it does not cover).
        self.ui_url = f"https://{config.ui_domain_name}"
        self.environment: dict[str, str] = {env_name("DAGSTER_UI_URL_VAR"): self.ui_url}
        self.namespace = servicediscovery.PrivateDnsNamespace(
            self,
            "Namespace",
            name=f"{config.prefix}.local",
            vpc=network.vpc,
            description="Service discovery of firepipe services (the Dagster code location)",
        )
        self.code_location_host = f"{CODE_LOCATION_SERVICE}.{config.prefix}.local"

        # Every Dagster process loads the instance (docker/dagster.yaml's variables) and runs
        # firepipe's code; runs get firepipe's variables through the code location's container
        # context and the instance's from the launcher (its env_vars and the password secret).
        firepipe = {
            **IN_AWS,
            env_name("AWS_REGION_VAR"): stack.region,
            **self.environment,
        }
        self._run_context = RunContainerContext(stack)
        self._run_context.environment.update(firepipe)
        instance = {**self._instance_environment(runs_log_group), **firepipe}
        self.instance_environment: dict[str, str] = dict(instance)
        password = {
            "DAGSTER_PG_PASSWORD": self._secret(
                "DatabasePassword", self.database.secret, PASSWORD_FIELD
            )
        }
        for role in (service_execution_role, self.run_execution_role):
            self._grant_decrypt(role, security.data_key.key_arn)
        processes = self._client_environment()
        image = registry.image("dagster")
        self.webserver_service, _ = service(
            self,
            WEBSERVER,
            TaskSetup(
                webserver_role,
                service_execution_role,
                [self.webserver_security_group],
                processes,
                password,
            ),
            config=config,
            network=network,
            image=image,
            log_group=self._log_group(WEBSERVER.name),
            health_check_grace_period=Duration.minutes(2),
        )
        self.daemon_service, _ = service(
            self,
            DAEMON,
            TaskSetup(
                daemon_role,
                service_execution_role,
                [self.tasks_security_group],
                processes,
                password,
            ),
            config=config,
            network=network,
            image=image,
            log_group=self._log_group(DAEMON.name),
        )
        self.code_service, self._code_container = service(
            self,
            CODE_LOCATION,
            TaskSetup(
                self.run_role,
                self.run_execution_role,
                [self.tasks_security_group, code_group],
                {
                    **instance,
                    "DAGSTER_CURRENT_IMAGE": registry.image_uri("dagster"),  # the runs' image
                    "DAGSTER_CONTAINER_CONTEXT": Lazy.string(self._run_context),
                },
                password,
            ),
            config=config,
            network=network,
            image=image,
            log_group=self._log_group(CODE_LOCATION.name),
            cloud_map=ecs.CloudMapOptions(
                cloud_map_namespace=self.namespace,
                name=CODE_LOCATION_SERVICE,
                dns_record_type=servicediscovery.DnsRecordType.A,
                dns_ttl=Duration.seconds(10),
            ),
        )
        listener.add_targets(
            "Webserver",
            port=_port(WEBSERVER),
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[
                self.webserver_service.load_balancer_target(
                    container_name=WEBSERVER.name, container_port=_port(WEBSERVER)
                )
            ],
            health_check=elbv2.HealthCheck(
                path=HEALTH_CHECK_PATH,
                healthy_http_codes="200",
                interval=Duration.seconds(30),
                timeout=Duration.seconds(10),
            ),
            deregistration_delay=Duration.seconds(30),
        )

        runs_log_group.grant_write(self.run_execution_role)
        grant_launcher(
            daemon=daemon_role,
            webserver=webserver_role,
            network=network,
            run_roles=[self.run_role, self.run_execution_role],
            runs_log_group=runs_log_group,
        )
        # The webserver shows step logs; the runs, the daemon and the code location's sensor
        # ticks write them.
        prefix = f"{COMPUTE_LOGS_PREFIX}/"
        bucket, key = self.compute_logs_bucket, security.data_key
        grant_objects(webserver_role, bucket, key, prefix, read=True)
        for role in (daemon_role, self.run_role):
            grant_objects(role, bucket, key, prefix, read=True, write=True)
        for role in (webserver_role, daemon_role, self.run_role):
            acknowledge_wildcards(granted_policy(role), _COMPUTE_LOGS, [f"/{prefix}*"])
        for role in (service_execution_role, self.run_execution_role):
            acknowledge_wildcards(granted_policy(role), _ECR_TOKEN, ["*"])

    def add_environment(self, environment: dict[str, str]) -> None:
        """firepipe variables (another concern's `environment`) for the code location, whose
        sensors use them, and for every run, through the container context it hands on."""
        for name, value in environment.items():
            self._check_new(name)
            self._code_container.add_environment(name, value)
            self._run_context.environment[name] = value

    def add_secret(self, name: str, secret: sm.ISecret, field: str) -> None:
        """The JSON field `field` of `secret` as the variable `name`, in the code location and in
        every run: ECS injects it with the run execution role, which reads the secret."""
        self._check_new(name)
        self._code_container.add_secret(name, self._secret(f"{name}Secret", secret, field))
        self._run_context.secrets[name] = f"{secret.secret_arn}:{field}::"
        if secret.encryption_key is not None:  # the same statement twice is written once
            self._grant_decrypt(self.run_execution_role, secret.encryption_key.key_arn)

    def connect_task(
        self,
        container: ecs.ContainerDefinition,
        execution_role: iam.IRole,
        peer: ec2.IConnectable,
    ) -> None:
        """Let a task outside Dagster's services queue runs (the action API):
        docker/dagster.yaml's variables, the password as a task secret, the code location's
        address (runs are created from it, with its image), and the database's and the code
        location's ports from `peer`."""
        for name, value in self._client_environment().items():
            container.add_environment(name, value)
        container.add_secret(
            "DAGSTER_PG_PASSWORD",
            self._secret(
                f"Password{pascal(container.node.id)}", self.database.secret, PASSWORD_FIELD
            ),
        )
        self._grant_decrypt(execution_role, self._security.data_key.key_arn)
        self._allow_client(peer, container.node.id)

    def connect_function(self, function: lambda_.Function, peer: ec2.IConnectable) -> None:
        """Let a Lambda function queue runs: as connect_task, but the password is read from
        Secrets Manager at its cold start (DAGSTER_PG_PASSWORD_SECRET_ARN; Lambda injects no
        secrets)."""
        region = env_name("AWS_REGION_VAR")  # Lambda's runtime sets it (and refuses it here)
        for name, value in self._client_environment().items():
            if name != region:
                function.add_environment(name, value)
        secret = self.database.secret
        assert secret is not None
        allow(
            function.role,  # type: ignore[arg-type]
            ["secretsmanager:GetSecretValue"],
            [secret.secret_arn],
        )
        self._grant_decrypt(function.role, self._security.data_key.key_arn)  # type: ignore[arg-type]
        self._allow_client(peer, function.node.id)

    def _client_environment(self) -> dict[str, str]:
        host, _ = code_location_address()
        return {**self.instance_environment, host: self.code_location_host}

    def _allow_client(self, peer: ec2.IConnectable, what: str) -> None:
        """The database's and the code location's ports from `peer`'s groups. The rules are
        written in the peer's stack (which depends on this one), so this stack never names
        the peer: a rule here would make the two stacks depend on each other."""
        [database_group] = self.database.connections.security_groups
        _, code_port = code_location_address()
        for group in peer.connections.security_groups:
            for id, target, port, protocol in (
                ("ToDagsterDatabase", database_group, DATABASE_PORT, "PostgreSQL"),
                ("ToDagsterCodeLocation", self.code_security_group, code_port, "gRPC"),
            ):
                ec2.CfnSecurityGroupIngress(
                    group,
                    id,
                    group_id=target.security_group_id,
                    source_security_group_id=group.security_group_id,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    description=f"{protocol} from {what}",
                )

    def _check_new(self, name: str) -> None:
        taken = {*self._run_context.environment, *self._run_context.secrets}
        if name in taken or name.startswith("DAGSTER_"):
            raise ValueError(f"{name} is already set on Dagster's tasks, or is Dagster's own")

    def _instance_environment(self, runs_log_group: logs.LogGroup) -> dict[str, str]:
        """The variables docker/dagster.yaml reads (DAGSTER_PG_PASSWORD is a secret): one it
        starts to read that is not set here fails the synthesis, not a deployed task."""
        secret = self.database.secret
        assert secret is not None  # generated credentials always make a secret
        environment = {
            "DAGSTER_PG_HOST": self.database.db_instance_endpoint_address,
            "DAGSTER_PG_PORT": self.database.db_instance_endpoint_port,
            "DAGSTER_PG_USERNAME": DATABASE_USER,
            "DAGSTER_PG_DB": DATABASE_NAME,
            # ECS's form for one JSON field of a secret: <arn>:<field>:<stage>:<version>.
            "DAGSTER_PG_PASSWORD_SECRET_ARN": f"{secret.secret_arn}:{PASSWORD_FIELD}::",
            "DAGSTER_RUN_TASK_ROLE_ARN": self.run_role.role_arn,
            "DAGSTER_RUN_EXECUTION_ROLE_ARN": self.run_execution_role.role_arn,
            "DAGSTER_RUN_LOG_GROUP": runs_log_group.log_group_name,
            "DAGSTER_COMPUTE_LOGS_BUCKET": self.compute_logs_bucket.bucket_name,
            "DAGSTER_COMPUTE_LOGS_PREFIX": COMPUTE_LOGS_PREFIX,
        }
        missing = instance_variables() - {*environment, "DAGSTER_PG_PASSWORD"}
        if missing:
            raise ValueError(f"docker/dagster.yaml reads {sorted(missing)}, which nothing sets")
        return environment

    def _load_balancer(
        self, lake: Lake
    ) -> tuple[elbv2.ApplicationLoadBalancer, elbv2.ApplicationListener]:
        config = self._config
        group = self._group(
            "LoadBalancer", "Dagster UI: HTTPS from the allowed networks", out=False
        )
        for cidr in config.ui_allowed_cidrs:
            group.add_ingress_rule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), f"HTTPS from {cidr}")
        # Internal: Dagster's UI has no login of its own, so only the VPC and the networks
        # routed into it (VPN, office) reach it. No plain-HTTP listener to redirect from: the
        # group admits 443 alone, and no client inside is sent to http://.
        balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            load_balancer_name=f"{config.prefix}-dagster",
            vpc=self._network.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            internet_facing=False,
            security_group=group,
            deletion_protection=config.deletion_protection,
            drop_invalid_header_fields=True,
        )
        # Into the lake's access-log bucket (SSE-S3, the only encryption ELB delivers to): its
        # policy admits the region's ELB log delivery under this prefix, naming no role here.
        balancer.log_access_logs(lake.access_logs, "dagster-ui")
        listener = balancer.add_listener(
            "Https",
            port=443,
            protocol=elbv2.ApplicationProtocol.HTTPS,
            certificates=[elbv2.ListenerCertificate.from_arn(config.ui_certificate_arn)],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,  # TLS 1.3 and 1.2 only
            open=False,  # the group's rules above, not 0.0.0.0/0
        )
        return balancer, listener

    def _clients(self, tasks: str) -> dict[str, ec2.ISecurityGroup]:
        return {tasks: self.tasks_security_group, "the webserver": self.webserver_security_group}

    def _group(self, id: str, description: str, *, out: bool = True) -> ec2.SecurityGroup:
        """A security group; `out`: any egress (the tasks reach AWS APIs and Snowflake)."""
        return ec2.SecurityGroup(
            self,
            f"{id}SecurityGroup",
            vpc=self._network.vpc,
            description=description,
            allow_all_outbound=out,
        )

    def _role(self, id: str, description: str) -> iam.Role:
        return iam.Role(
            self, id, assumed_by=iam.ServicePrincipal(ECS_TASKS), description=description
        )

    def _log_group(self, name: str) -> logs.LogGroup:
        group = logs.LogGroup(
            self,
            f"{name.capitalize()}Logs",
            log_group_name=f"{self._config.prefix}/dagster/{name}",
            encryption_key=self._security.logs_key,
            retention=self._config.log_retention,
            removal_policy=self._config.removal_policy,
        )
        self.log_groups[name] = group
        return group

    def _secret(self, id: str, secret: sm.ISecret | None, field: str) -> ecs.Secret:
        """One field of `secret` for ECS to inject. Imported by ARN, so the grant ECS makes to
        the execution role names the secret alone: the secret's own grant_read would also
        write the role into its key's policy, in the security stack (a dependency cycle)."""
        assert secret is not None
        imported = sm.Secret.from_secret_complete_arn(self, id, secret.secret_arn)
        return ecs.Secret.from_secrets_manager(imported, field)

    def _grant_decrypt(self, role: iam.IRole, key_arn: str) -> None:
        """Decrypt secrets with the key, through Secrets Manager only."""
        region = Stack.of(self).region
        allow(
            role,
            ["kms:Decrypt"],
            [key_arn],
            {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}},
        )


def _port(spec: DagsterService) -> int:
    if spec.port is None:
        raise ValueError(f"the Dagster {spec.name} listens on no port")
    return spec.port
