"""The stacks of one environment, one per concern, and the app that holds every environment.

A stack per concern rather than one per environment: the keys and the lake hold data and are
deployed rarely, with termination protection; the network (and, later, compute and services)
changes often and can be replaced without touching them. Stacks pass constructs to each other
by keyword argument; CloudFormation exports carry the references.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import App, CfnOutput, Environment, Stack, Tags, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from firepipe_infra.config import ENVIRONMENTS, EnvironmentConfig, check_environments
from firepipe_infra.env_names import env_name
from firepipe_infra.lake import LANDING_PREFIX, Lake
from firepipe_infra.network import Network
from firepipe_infra.registry import Registry
from firepipe_infra.security import Security

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
            env=Environment(account=config.account, region=config.region),
            description=f"firepipe {config.name}: {concern}",
            termination_protection=config.deletion_protection,
        )
        Tags.of(self).add("project", "firepipe")
        Tags.of(self).add("environment", config.name)
        Tags.of(self).add("concern", concern)

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


class RegistryStack(_EnvironmentStack):
    """The ECR repositories: deployed before the images are pushed, and before every stack
    that runs them."""

    def __init__(self, scope: Construct, config: EnvironmentConfig) -> None:
        super().__init__(scope, "registry", config)
        self.registry = Registry(self, "Registry", config=config)


@dataclass(frozen=True)
class EnvironmentStacks:
    security: SecurityStack
    network: NetworkStack
    lake: LakeStack
    registry: RegistryStack


def build_environment(app: App, config: EnvironmentConfig) -> EnvironmentStacks:
    """Every stack of one environment, in dependency order."""
    security = SecurityStack(app, config)
    network = NetworkStack(app, config, security.security)
    lake = LakeStack(app, config, security.security)
    registry = RegistryStack(app, config)
    return EnvironmentStacks(security, network, lake, registry)


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


def build_app(
    outdir: Path, environments: dict[str, EnvironmentConfig] = ENVIRONMENTS
) -> tuple[App, dict[str, EnvironmentStacks]]:
    check_environments(environments)
    app = new_app(outdir)
    return app, {name: build_environment(app, c) for name, c in environments.items()}
