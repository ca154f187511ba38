"""The stacks of one environment, one per concern, and the app that holds every environment.

A stack per concern rather than one per environment: the keys and the lake hold data and are
deployed rarely, with termination protection; the network (and, later, compute and services)
changes often and can be replaced without touching them. Stacks pass constructs to each other
by keyword argument; CloudFormation exports carry the references.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import App, CfnOutput, Environment, Stack, Tags, Validations
from aws_cdk import aws_iam as iam
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from firepipe_infra.agents import Agents
from firepipe_infra.api import Apis
from firepipe_infra.compute import Compute
from firepipe_infra.config import ENVIRONMENTS, EnvironmentConfig, check_environments
from firepipe_infra.delivery import DELIVERY
from firepipe_infra.env_names import env_name
from firepipe_infra.genai import GenerativeAi
from firepipe_infra.grants import acknowledge_role_wildcards
from firepipe_infra.knowledge_base import KnowledgeBase
from firepipe_infra.lake import LANDING_PREFIX, Lake
from firepipe_infra.ml import MachineLearning
from firepipe_infra.network import Network
from firepipe_infra.orchestration import Orchestration
from firepipe_infra.registry import Registry
from firepipe_infra.security import SNOWFLAKE_FIELDS, SNOWFLAKE_PASSWORD_FIELD, Security
from firepipe_infra.watch import watch_environment

# cdk.json holds the feature flags (aws-cdk-lib's recommended ones for the pinned version). The
# CDK CLI passes its context to the app, but `app.py` and the tests build the App themselves:
# new_app reads the same file, so every way of synthesising sees the same flags.
CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"


class _EnvironmentStack(Stack):
    """A stack of one environment: its account and region, tags and termination protection."""

    def __init__(self, scope: Construct, concern: str, config: EnvironmentConfig) -> None:
        super().__init__(
            scope,
            f"{config.prefix}-{concern}",
            # The same name in a pipeline's Stage as in the app (a Stage would prefix it), so
            # the workflow and the pipeline deploy the same stacks.
            stack_name=f"{config.prefix}-{concern}",
            env=Environment(account=config.account, region=config.region),
            description=f"firepipe {config.name}: {concern}",
            termination_protection=config.deletion_protection,
        )
        Tags.of(self).add("project", "firepipe")
        Tags.of(self).add("environment", config.name)
        Tags.of(self).add("concern", concern)

    def environment_outputs(self, environment: dict[str, str], what: str) -> None:
        """An output per variable of a concern's `environment`, named as env_output's."""
        for name, value in environment.items():
            CfnOutput(self, name.replace("_", ""), value=value, description=f"{name}: {what}")

    def env_output(self, constant: str, value: str, description: str) -> CfnOutput:
        """An output named after the variable firepipe reads it from (aws_env.py's `constant`).
        CloudFormation's keys are alphanumeric: FIREPIPE_LANDING_BUCKET's is FIREPIPELANDINGBUCKET,
        and the description starts with the variable's own name."""
        name = env_name(constant)
        return CfnOutput(self, name, value=value, description=f"{name}: {description}")


class SecurityStack(_EnvironmentStack):
    def __init__(self, scope: Construct, config: EnvironmentConfig) -> None:
        super().__init__(scope, "security", config)
        self.security = Security(self, "Security", config=config)
        self.env_output(
            "API_KEYS_SECRET_VAR",
            self.security.api_keys_secret.secret_arn,
            "the inference service's API keys secret",
        )
        CfnOutput(
            self,
            "SnowflakeSecretArn",
            value=self.security.snowflake_secret.secret_arn,
            description="The Snowflake credentials to fill in (one field per SNOWFLAKE_ variable)",
        )


class NetworkStack(_EnvironmentStack):
    def __init__(self, scope: Construct, config: EnvironmentConfig, security: Security) -> None:
        super().__init__(scope, "network", config)
        self.network = Network(self, "Network", config=config, logs_key=security.logs_key)


class LakeStack(_EnvironmentStack):
    def __init__(self, scope: Construct, config: EnvironmentConfig, security: Security) -> None:
        super().__init__(scope, "lake", config)
        self.lake = lake = Lake(self, "Lake", config=config, data_key=security.data_key)
        self.env_output("LAKE_WAREHOUSE_VAR", lake.warehouse, "the Iceberg warehouse")
        self.env_output("LANDING_BUCKET_VAR", lake.lake_bucket.bucket_name, "the landing bucket")
        self.env_output("LANDING_PREFIX_VAR", LANDING_PREFIX, "the landing zone's prefix")
        self.env_output("ATHENA_WORKGROUP_VAR", lake.workgroup.ref, "the Athena workgroup")
        self.env_output(
            "ATHENA_OUTPUT_LOCATION_VAR", lake.results_location, "Athena's result location"
        )
        self.env_output(
            "WATERMARKS_TABLE_VAR",
            lake.watermarks_table.table_name,
            "the field extraction's watermarks table",
        )


class RegistryStack(_EnvironmentStack):
    """The ECR repositories: deployed before the images are promoted into them, and before
    every stack that runs them. The delivery pipeline's account pushes into them."""

    def __init__(self, scope: Construct, config: EnvironmentConfig) -> None:
        super().__init__(scope, "registry", config)
        self.registry = Registry(self, "Registry", config=config, push_account=DELIVERY.account)


@dataclass(frozen=True)
class Base:
    """The constructs every service stack builds on."""

    security: Security
    network: Network
    lake: Lake
    registry: Registry


class ComputeStack(_EnvironmentStack):
    def __init__(self, scope: Construct, config: EnvironmentConfig, base: Base) -> None:
        super().__init__(scope, "compute", config)
        self.compute = Compute(
            self,
            "Compute",
            config=config,
            security=base.security,
            network=base.network,
            lake=base.lake,
            registry=base.registry,
        )
        self.environment_outputs(self.compute.environment, "generation and Spark compute")


class MlStack(_EnvironmentStack):
    def __init__(self, scope: Construct, config: EnvironmentConfig, base: Base) -> None:
        super().__init__(scope, "ml", config)
        self.ml = MachineLearning(
            self,
            "MachineLearning",
            config=config,
            security=base.security,
            lake=base.lake,
            registry=base.registry,
        )
        self.environment_outputs(self.ml.environment, "training, registry and serving")


class AgentsStack(_EnvironmentStack):
    def __init__(
        self, scope: Construct, config: EnvironmentConfig, base: Base, ml: MachineLearning
    ) -> None:
        super().__init__(scope, "agents", config)
        self.agents = agents = Agents(
            self,
            "Agents",
            config=config,
            security=base.security,
            network=base.network,
            registry=base.registry,
        )
        # The agents score with the champion: they read it from the model registry.
        _follow_champion(
            ml,
            agents.add_environment,
            [*agents.function_roles.values(), *agents.task_roles.values()],
        )
        self.environment_outputs(agents.environment, "the agents' messaging and state")


class KnowledgeBaseStack(_EnvironmentStack):
    def __init__(self, scope: Construct, config: EnvironmentConfig, base: Base) -> None:
        super().__init__(scope, "knowledge-base", config)
        self.knowledge_base = KnowledgeBase(
            self, "KnowledgeBase", config=config, security=base.security
        )
        self.environment_outputs(self.knowledge_base.environment, "the knowledge base")


class OrchestrationStack(_EnvironmentStack):
    """Dagster, whose code location and runs use every concern before it: each hands its
    variables to them and grants their role what firepipe's code calls."""

    def __init__(
        self,
        scope: Construct,
        config: EnvironmentConfig,
        base: Base,
        *,
        compute: Compute,
        ml: MachineLearning,
        agents: Agents,
        knowledge_base: KnowledgeBase,
    ) -> None:
        super().__init__(scope, "orchestration", config)
        self.orchestration = o = Orchestration(
            self,
            "Orchestration",
            config=config,
            security=base.security,
            network=base.network,
            lake=base.lake,
            registry=base.registry,
        )
        run_role = o.run_role
        for environment in (
            base.lake.environment,
            compute.environment,
            ml.environment,
            agents.environment,
            knowledge_base.environment,
        ):
            o.add_environment(environment)
        base.lake.grant_use(run_role)
        compute.grant_use(run_role)
        ml.grant_use(run_role)
        agents.grant_use(run_role)
        knowledge_base.grant_retrieve(run_role)
        knowledge_base.grant_sync(run_role)
        for field in (*SNOWFLAKE_FIELDS, SNOWFLAKE_PASSWORD_FIELD):
            o.add_secret(field, base.security.snowflake_secret, field)
        # The field extraction's configuration (config.py), an output as every variable is.
        field = {
            env_name("FIELD_TABLE_VAR"): config.field_table,
            env_name("SNOWFLAKE_AUTH_VAR"): config.snowflake_auth,
        }
        o.add_environment(field)
        self.environment_outputs(field, "the field extraction's configuration")
        _acknowledge_granted(
            run_role,
            "firepipe's assets: objects under the prefixes each concern gives them (lake, "
            "pipes, ML, knowledge base), jobs, runs and models named by the prefixes the "
            "adapters give them at run time, and calls that take no resource; the MLflow "
            "client's calls of the tracking server (logging runs, registering models)",
            ("sagemaker-mlflow:*",),
        )
        self.environment_outputs(o.environment, "the Dagster UI")


class ApiStack(_EnvironmentStack):
    """API Gateway in front of the inference service and the action API."""

    def __init__(
        self,
        scope: Construct,
        config: EnvironmentConfig,
        base: Base,
        *,
        orchestration: Orchestration,
        ml: MachineLearning,
        agents: Agents,
        knowledge_base: KnowledgeBase,
    ) -> None:
        super().__init__(scope, "api", config)
        self.apis = apis = Apis(
            self,
            "Apis",
            config=config,
            security=base.security,
            network=base.network,
            registry=base.registry,
        )
        _follow_champion(
            ml,
            apis.containers["inference"].add_environment,
            [apis.services["inference"].task_definition.task_role],
        )

        # The action API queues fire runs on the Dagster instance, measures generations in the
        # lake and their history, and searches the knowledge base.
        actions = apis.containers["actions"]
        service = apis.services["actions"]
        orchestration.connect_task(
            actions, service.task_definition.obtain_execution_role(), service
        )
        _serve_actions(
            actions.add_environment, service.task_definition.task_role, base, agents, knowledge_base
        )
        CfnOutput(self, "ApiUrl", value=apis.url, description="The REST API's stage URL")


class AgentStack(_EnvironmentStack):
    """The Bedrock agent and its action group, after Dagster's stack: the action group's
    function queues fire runs on the instance."""

    def __init__(
        self,
        scope: Construct,
        config: EnvironmentConfig,
        base: Base,
        *,
        orchestration: Orchestration,
        knowledge_base: KnowledgeBase,
        agents: Agents,
    ) -> None:
        super().__init__(scope, "bedrock-agent", config)
        self.genai = genai = GenerativeAi(
            self,
            "GenerativeAi",
            config=config,
            security=base.security,
            network=base.network,
            registry=base.registry,
            knowledge_base=knowledge_base,
        )
        function = genai.action_function
        orchestration.connect_function(function, function)
        _serve_actions(function.add_environment, function, base, agents, knowledge_base)
        self.environment_outputs(
            {k: v for k, v in genai.environment.items() if "AGENT" in k}, "the Bedrock agent"
        )


def _follow_champion(
    ml: MachineLearning, add_environment: Callable[[str, str], object], roles: list[iam.IRole]
) -> None:
    """What a process that scores with the champion needs (the inference service, the
    agents): the tracking server it resolves the champion on, and read access to the model."""
    tracking = env_name("MLFLOW_TRACKING_SERVER_ARN_VAR")
    add_environment(tracking, ml.environment[tracking])
    for role in roles:
        ml.grant_read_models(role)
        _acknowledge_granted(role, "the champion's artifacts under the ML bucket's mlflow/")


def _serve_actions(
    add_environment: Callable[[str, str], object],
    grantee: iam.IGrantable,
    base: Base,
    agents: Agents,
    knowledge_base: KnowledgeBase,
) -> None:
    """What the action API needs beside the Dagster instance, in its ECS service and in the
    Bedrock action group's function alike: the lake (a generation's quality), the generation
    history and the knowledge base (searchKnowledgeBase)."""
    history = env_name("GENERATION_HISTORY_TABLE_VAR")
    for name, value in {
        **base.lake.environment,
        history: agents.environment[history],
        **knowledge_base.environment,
    }.items():
        add_environment(name, value)
    base.lake.grant_use(grantee)
    agents.grant_generation_history(grantee)
    knowledge_base.grant_retrieve(grantee)
    role = grantee.grant_principal
    assert isinstance(role, iam.Role)
    _acknowledge_granted(role, "the lake's objects and its Glue tables")


@dataclass(frozen=True)
class EnvironmentStacks:
    security: SecurityStack
    network: NetworkStack
    lake: LakeStack
    registry: RegistryStack
    compute: ComputeStack
    ml: MlStack
    agents: AgentsStack
    knowledge_base: KnowledgeBaseStack
    orchestration: OrchestrationStack
    api: ApiStack
    agent: AgentStack
    observability: Stack
    backup: Stack


def _acknowledge_granted(
    role: iam.IRole | None, reason: str, actions: tuple[str, ...] = ()
) -> None:
    """Acknowledge cdk-nag's wildcard findings (AwsSolutions-IAM5) in the policies of `role`
    that the grants of other concerns wrote: objects under a prefix, names given at run time
    and calls that take no resource (the suffixes keep it to those forms), and the action
    wildcards named."""
    assert role is not None
    acknowledge_role_wildcards(role, reason, ["/*", "-*", "*", "_*", ":*"], actions)


def build_environment(app: Construct, config: EnvironmentConfig) -> EnvironmentStacks:
    """Every stack of one environment, in dependency order."""
    security = SecurityStack(app, config)
    network = NetworkStack(app, config, security.security)
    lake = LakeStack(app, config, security.security)
    registry = RegistryStack(app, config)
    base = Base(security.security, network.network, lake.lake, registry.registry)
    compute = ComputeStack(app, config, base)
    ml = MlStack(app, config, base)
    agents = AgentsStack(app, config, base, ml.ml)
    knowledge_base = KnowledgeBaseStack(app, config, base)
    orchestration = OrchestrationStack(
        app,
        config,
        base,
        compute=compute.compute,
        ml=ml.ml,
        agents=agents.agents,
        knowledge_base=knowledge_base.knowledge_base,
    )
    api = ApiStack(
        app,
        config,
        base,
        orchestration=orchestration.orchestration,
        ml=ml.ml,
        agents=agents.agents,
        knowledge_base=knowledge_base.knowledge_base,
    )
    agent = AgentStack(
        app,
        config,
        base,
        orchestration=orchestration.orchestration,
        knowledge_base=knowledge_base.knowledge_base,
        agents=agents.agents,
    )
    observability, backup = watch_environment(
        app,
        config,
        base,
        compute=compute,
        ml=ml,
        agents=agents,
        knowledge_base=knowledge_base,
        orchestration=orchestration,
        api=api,
        agent=agent,
    )
    return EnvironmentStacks(
        security,
        network,
        lake,
        registry,
        compute,
        ml,
        agents,
        knowledge_base,
        orchestration,
        api,
        agent,
        observability,
        backup,
    )


def cdk_context() -> dict[str, object]:
    """The context of infra/cdk.json (the feature flags)."""
    context = json.loads(CDK_JSON.read_text())["context"]
    assert isinstance(context, dict)
    return context


def new_app(outdir: Path) -> App:
    """An app with cdk.json's feature flags that writes its templates to `outdir` and runs
    cdk-nag's AwsSolutions checks on every stack: an unacknowledged error makes `synth()` raise.
    Context the CDK CLI passes (cdk.json, `--context`) overrides these defaults."""
    app = App(outdir=str(outdir), context=cdk_context())
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def build_environments(
    app: App, environments: dict[str, EnvironmentConfig] = ENVIRONMENTS
) -> dict[str, EnvironmentStacks]:
    check_environments(environments)
    for config in environments.values():  # context is set before the first child is added
        pin_availability_zones(app, config)
    return {name: build_environment(app, c) for name, c in environments.items()}


def pin_availability_zones(scope: Construct, config: EnvironmentConfig) -> None:
    """The environment's zones as the context value the CDK's zone lookup reads, so nothing
    is looked up in the account: the CDK CLI would otherwise ask each environment's account
    for them on every synthesis (and write cdk.context.json)."""
    key = f"availability-zones:account={config.account}:region={config.region}"
    scope.node.set_context(key, list(config.availability_zones))


def build_app(
    outdir: Path, environments: dict[str, EnvironmentConfig] = ENVIRONMENTS
) -> tuple[App, dict[str, EnvironmentStacks]]:
    app = new_app(outdir)
    return app, build_environments(app, environments)
