"""The configuration of each environment (dev, staging, prod): typed, frozen, checked when made.

Synthesis is offline, so everything CloudFormation would otherwise look up (account, region,
availability zones) is written here. The accounts are the deployment's own: replace them with
yours before `cdk deploy` (the templates name them in every ARN).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from aws_cdk import RemovalPolicy
from aws_cdk.aws_logs import RetentionDays

from firepipe_infra.env_names import enum_values


class ConfigError(ValueError):
    """An environment's configuration holds a value the deployment cannot use."""


class Stateful(StrEnum):
    """What deleting a stack does to the data it holds (keys, buckets, catalog, log groups)."""

    RETAIN = "retain"
    DESTROY = "destroy"

    @property
    def removal_policy(self) -> RemovalPolicy:
        return RemovalPolicy.RETAIN if self is Stateful.RETAIN else RemovalPolicy.DESTROY


# CloudWatch Logs accepts these retention periods only (the jsii enum holds names, not days).
_LOG_RETENTION_DAYS = {
    1: RetentionDays.ONE_DAY,
    3: RetentionDays.THREE_DAYS,
    5: RetentionDays.FIVE_DAYS,
    7: RetentionDays.ONE_WEEK,
    14: RetentionDays.TWO_WEEKS,
    30: RetentionDays.ONE_MONTH,
    60: RetentionDays.TWO_MONTHS,
    90: RetentionDays.THREE_MONTHS,
    180: RetentionDays.SIX_MONTHS,
    365: RetentionDays.ONE_YEAR,
    731: RetentionDays.TWO_YEARS,
    1827: RetentionDays.FIVE_YEARS,
    3653: RetentionDays.TEN_YEARS,
}
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,19}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
# The Iceberg namespaces firepipe writes (the layers of firepipe.names; dbt's models land in
# analytics): PyIceberg's Glue catalog makes each one a Glue database of the same name.
LAKE_NAMESPACES = ("bronze", "silver", "gold", "ml", "analytics")
# How firepipe may sign in to Snowflake: firepipe.settings.SnowflakeAuth's values.
SNOWFLAKE_AUTHS = enum_values("SnowflakeAuth")


@dataclass(frozen=True)
class EnvironmentConfig:
    """One environment: where it is deployed and how much it keeps. Checked in __post_init__."""

    name: str
    account: str
    region: str
    availability_zones: tuple[str, ...]
    vpc_cidr: str
    nat_gateways: int
    log_retention_days: int  # flow logs (and, later, every service's logs)
    access_log_days: int  # S3 server access logs
    noncurrent_version_days: int  # overwritten or deleted lake objects stay restorable this long
    landing_retention_days: int  # ingested files kept in landing/incoming/ as the raw archive
    athena_results_days: int
    athena_scan_limit_bytes: int  # per query: a runaway query stops instead of billing on
    stateful: Stateful
    deletion_protection: bool  # termination protection of the stacks (later: of the database)
    alarm_email: str
    # The field readings' table in Snowflake, [schema.]table (FIREPIPE_FIELD_TABLE): the
    # database, warehouse and credentials are the Snowflake secret's.
    field_table: str
    # How the field extraction signs in (FIREPIPE_SNOWFLAKE_AUTH, one of SNOWFLAKE_AUTHS): with
    # the secret's password, or its key pair (encrypted: with the passphrase field too).
    snowflake_auth: str
    # Orchestration: the Dagster UI's load balancer is internal (Dagster's UI has no login of
    # its own) and admits HTTPS from these networks only (the VPN's, the office's).
    ui_certificate_arn: str  # an ACM certificate in the region, for the UI's HTTPS listener
    # The UI's DNS name, which the certificate covers: the links in notifications use it, and
    # a record of yours points it at the load balancer (docs/runbooks/deploy.md).
    ui_domain_name: str
    ui_allowed_cidrs: tuple[str, ...]
    database_instance_type: str  # RDS PostgreSQL for the Dagster instance, e.g. "t4g.micro"
    database_multi_az: bool
    database_backup_days: int
    # Compute: the most vCPUs each Batch compute environment (Spot) scales to.
    batch_cpu_max_vcpus: int
    batch_gpu_max_vcpus: int
    # APIs: API Gateway's throttling per API key (steady rate, burst) and daily quota.
    api_rate_limit: int
    api_burst_limit: int
    api_daily_quota: int
    # Recovery: AWS Backup's daily recovery points are kept this long; monthly ones (0: none)
    # move to cold storage after 30 days and are kept this long.
    backup_days: int
    backup_monthly_days: int

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ConfigError(f"environment {self.name!r}: " + "; ".join(problems))

    @property
    def prefix(self) -> str:
        """The start of every resource name and stack id: `firepipe-dev`."""
        return f"firepipe-{self.name}"

    @property
    def removal_policy(self) -> RemovalPolicy:
        return self.stateful.removal_policy

    @property
    def log_retention(self) -> RetentionDays:
        return _LOG_RETENTION_DAYS[self.log_retention_days]


def _problems(c: EnvironmentConfig) -> list[str]:
    problems = []
    if not _NAME.match(c.name):
        problems.append("the name must be 2-20 lowercase letters, digits or dashes")
    if not _ACCOUNT.match(c.account):
        problems.append(f"account {c.account!r} is not 12 digits")
    if not _REGION.match(c.region):
        problems.append(f"region {c.region!r} is not a region name such as eu-west-1")
    if len(c.availability_zones) < 2 or len(set(c.availability_zones)) != len(c.availability_zones):
        problems.append("at least two distinct availability zones are needed")
    elif not all(re.fullmatch(rf"{c.region}[a-z]", az) for az in c.availability_zones):
        problems.append(f"availability zones {c.availability_zones} are not all in {c.region}")
    try:
        network = ipaddress.IPv4Network(c.vpc_cidr)
    except ValueError as e:
        problems.append(f"vpc_cidr {c.vpc_cidr!r}: {e}")
    else:
        if not 16 <= network.prefixlen <= 20 or not network.is_private:
            problems.append(f"vpc_cidr {c.vpc_cidr} must be a private /16 to /20")
    if not 1 <= c.nat_gateways <= len(c.availability_zones):
        problems.append("nat_gateways must be between 1 and the number of availability zones")
    if c.log_retention_days not in _LOG_RETENTION_DAYS:
        problems.append(
            f"log_retention_days {c.log_retention_days} is not one CloudWatch Logs accepts "
            f"({sorted(_LOG_RETENTION_DAYS)})"
        )
    for field in ("access_log_days", "noncurrent_version_days", "athena_results_days"):
        if getattr(c, field) < 1:
            problems.append(f"{field} must be at least 1")
    # Files wait in incoming/ until ingestion sees them complete: a short expiry could delete
    # a file before it is ingested.
    if c.landing_retention_days < 7:
        problems.append("landing_retention_days must be at least 7")
    if c.athena_scan_limit_bytes < 10 * 1024**2:  # Athena's own minimum is 10 MB
        problems.append("athena_scan_limit_bytes must be at least 10 MiB")
    if not isinstance(c.stateful, Stateful):
        problems.append(f"stateful must be one of {[s.value for s in Stateful]}")
    if c.name == "prod" and (c.stateful is not Stateful.RETAIN or not c.deletion_protection):
        problems.append("prod must retain its data and keep deletion protection on")
    if not _EMAIL.match(c.alarm_email):
        problems.append(f"alarm_email {c.alarm_email!r} is not an e-mail address")
    if not re.fullmatch(
        rf"arn:aws[a-z-]*:acm:{c.region}:\d{{12}}:certificate/[0-9a-f-]{{36}}", c.ui_certificate_arn
    ):
        problems.append(
            f"ui_certificate_arn {c.ui_certificate_arn!r} is not an ACM certificate in {c.region}"
        )
    if c.snowflake_auth not in SNOWFLAKE_AUTHS:
        problems.append(
            f"snowflake_auth {c.snowflake_auth!r} is not one of {', '.join(SNOWFLAKE_AUTHS)}"
        )
    if not re.fullmatch(r"([A-Za-z_][A-Za-z0-9_$]*\.)?[A-Za-z_][A-Za-z0-9_$]*", c.field_table):
        problems.append(f"field_table {c.field_table!r} is not a Snowflake [schema.]table name")
    if not re.fullmatch(
        r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", c.ui_domain_name
    ):
        problems.append(f"ui_domain_name {c.ui_domain_name!r} is not a DNS name")
    if not c.ui_allowed_cidrs:
        problems.append("ui_allowed_cidrs must name at least one network")
    for cidr in c.ui_allowed_cidrs:
        try:
            ipaddress.IPv4Network(cidr)
        except ValueError as e:
            problems.append(f"ui_allowed_cidrs {cidr!r}: {e}")
        else:
            if cidr.endswith("/0"):
                problems.append("ui_allowed_cidrs must not admit the whole internet")
    if not re.fullmatch(r"[a-z][a-z0-9]*\.[a-z0-9]+", c.database_instance_type):
        problems.append(
            f"database_instance_type {c.database_instance_type!r} is not a type such as t4g.micro"
        )
    if not 1 <= c.database_backup_days <= 35:  # RDS keeps automated backups 1-35 days
        problems.append("database_backup_days must be between 1 and 35")
    if c.name == "prod" and not c.database_multi_az:
        problems.append("prod's database must be multi-AZ")
    for field in (
        "batch_cpu_max_vcpus",
        "batch_gpu_max_vcpus",
        "api_rate_limit",
        "api_burst_limit",
        "api_daily_quota",
    ):
        if getattr(c, field) < 1:
            problems.append(f"{field} must be at least 1")
    if not 1 <= c.backup_days <= 35:  # continuous backups (point in time) keep 35 days at most
        problems.append("backup_days must be between 1 and 35")
    # Cold storage keeps a recovery point 90 days at least, after its 30 warm ones.
    if c.backup_monthly_days and c.backup_monthly_days < 120:
        problems.append("backup_monthly_days must be 0 (none) or at least 120")
    if c.api_burst_limit < c.api_rate_limit:
        problems.append("api_burst_limit must be at least api_rate_limit")
    return problems


def check_environments(environments: dict[str, EnvironmentConfig]) -> None:
    """Environments must not share an account and region: Glue database names (the Iceberg
    namespaces) and KMS aliases are unique there, so two environments would collide."""
    seen: dict[tuple[str, str], str] = {}
    for c in environments.values():
        other = seen.setdefault((c.account, c.region), c.name)
        if other != c.name:
            raise ConfigError(
                f"environments {other!r} and {c.name!r} share account {c.account} in {c.region}"
            )


def _gib(n: int) -> int:
    return n * 1024**3


ENVIRONMENTS: dict[str, EnvironmentConfig] = {
    c.name: c
    for c in (
        EnvironmentConfig(
            name="dev",
            account="111111111111",
            region="eu-west-1",
            availability_zones=("eu-west-1a", "eu-west-1b"),
            vpc_cidr="10.10.0.0/16",
            nat_gateways=1,  # one NAT is a single point of failure dev can afford
            log_retention_days=14,
            access_log_days=30,
            noncurrent_version_days=7,
            landing_retention_days=30,
            athena_results_days=7,
            athena_scan_limit_bytes=_gib(10),
            stateful=Stateful.DESTROY,
            deletion_protection=False,
            alarm_email="firepipe-dev-alarms@example.com",
            field_table="FIELD.SENSOR_READINGS",
            snowflake_auth="password",
            ui_certificate_arn="arn:aws:acm:eu-west-1:111111111111:certificate/00000000-0000-0000-0000-000000000000",
            ui_domain_name="dagster.dev.firepipe.example.com",
            ui_allowed_cidrs=("10.0.0.0/8",),
            database_instance_type="t4g.micro",
            database_multi_az=False,
            database_backup_days=1,
            batch_cpu_max_vcpus=64,
            batch_gpu_max_vcpus=8,
            api_rate_limit=10,
            api_burst_limit=20,
            api_daily_quota=10_000,
            backup_days=7,
            backup_monthly_days=0,
        ),
        EnvironmentConfig(
            name="staging",
            account="222222222222",
            region="eu-west-1",
            availability_zones=("eu-west-1a", "eu-west-1b"),
            vpc_cidr="10.20.0.0/16",
            nat_gateways=1,
            log_retention_days=30,
            access_log_days=90,
            noncurrent_version_days=30,
            landing_retention_days=90,
            athena_results_days=14,
            athena_scan_limit_bytes=_gib(50),
            stateful=Stateful.RETAIN,
            deletion_protection=False,
            alarm_email="firepipe-staging-alarms@example.com",
            field_table="FIELD.SENSOR_READINGS",
            snowflake_auth="password",
            ui_certificate_arn="arn:aws:acm:eu-west-1:222222222222:certificate/00000000-0000-0000-0000-000000000000",
            ui_domain_name="dagster.staging.firepipe.example.com",
            ui_allowed_cidrs=("10.0.0.0/8",),
            database_instance_type="t4g.small",
            database_multi_az=False,
            database_backup_days=7,
            batch_cpu_max_vcpus=256,
            batch_gpu_max_vcpus=32,
            api_rate_limit=50,
            api_burst_limit=100,
            api_daily_quota=100_000,
            backup_days=35,
            backup_monthly_days=0,
        ),
        EnvironmentConfig(
            name="prod",
            account="333333333333",
            region="eu-west-1",
            availability_zones=("eu-west-1a", "eu-west-1b", "eu-west-1c"),
            vpc_cidr="10.30.0.0/16",
            nat_gateways=3,  # one per zone: losing a zone does not cut the others off
            log_retention_days=365,
            access_log_days=365,
            noncurrent_version_days=90,
            landing_retention_days=365,
            athena_results_days=30,
            athena_scan_limit_bytes=_gib(200),
            stateful=Stateful.RETAIN,
            deletion_protection=True,
            alarm_email="firepipe-prod-alarms@example.com",
            field_table="FIELD.SENSOR_READINGS",
            snowflake_auth="password",
            ui_certificate_arn="arn:aws:acm:eu-west-1:333333333333:certificate/00000000-0000-0000-0000-000000000000",
            ui_domain_name="dagster.prod.firepipe.example.com",
            ui_allowed_cidrs=("10.0.0.0/8",),
            database_instance_type="m7g.large",
            database_multi_az=True,
            database_backup_days=35,
            batch_cpu_max_vcpus=1024,
            batch_gpu_max_vcpus=128,
            api_rate_limit=500,
            api_burst_limit=1_000,
            api_daily_quota=5_000_000,
            backup_days=35,
            backup_monthly_days=365,
        ),
    )
}
