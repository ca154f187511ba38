from dataclasses import replace

import pytest
from firepipe_infra.config import (
    ENVIRONMENTS,
    SNOWFLAKE_AUTHS,
    ConfigError,
    Stateful,
    check_environments,
)
from firepipe_infra.env_names import SETTINGS_MODULE, enum_values, env_name, env_names
from firepipe_infra.naming import IN_AWS

DEV = ENVIRONMENTS["dev"]


def test_environments_are_dev_staging_prod_with_their_prefixes():
    assert list(ENVIRONMENTS) == ["dev", "staging", "prod"]
    assert [c.prefix for c in ENVIRONMENTS.values()] == [
        "firepipe-dev",
        "firepipe-staging",
        "firepipe-prod",
    ]
    check_environments(ENVIRONMENTS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"account": "12345"}, "account '12345' is not 12 digits"),
        ({"region": "europe"}, "region 'europe'"),
        ({"availability_zones": ("eu-west-1a",)}, "two distinct availability zones"),
        ({"availability_zones": ("eu-west-1a", "us-east-1b")}, "not all in eu-west-1"),
        ({"vpc_cidr": "10.0.0.0/33"}, "vpc_cidr '10.0.0.0/33'"),
        ({"vpc_cidr": "8.8.0.0/16"}, "must be a private /16 to /20"),
        ({"nat_gateways": 3}, "nat_gateways must be between 1"),
        ({"log_retention_days": 10}, "log_retention_days 10 is not one CloudWatch Logs"),
        ({"landing_retention_days": 1}, "landing_retention_days must be at least 7"),
        ({"athena_scan_limit_bytes": 1024}, "at least 10 MiB"),
        ({"alarm_email": "nobody"}, "alarm_email 'nobody'"),
        ({"stateful": "keep"}, "stateful must be one of"),
        ({"ui_certificate_arn": "arn:aws:acm:us-east-1:111111111111:certificate/x"}, "not an ACM"),
        ({"ui_allowed_cidrs": ()}, "at least one network"),
        ({"ui_domain_name": "https://dagster"}, "ui_domain_name 'https://dagster' is not a DNS"),
        ({"field_table": "a.b.c"}, "field_table 'a.b.c' is not a Snowflake"),
        ({"snowflake_auth": "oauth"}, "snowflake_auth 'oauth' is not one of password, key_pair"),
        ({"ui_allowed_cidrs": ("0.0.0.0/0",)}, "not admit the whole internet"),
        ({"ui_allowed_cidrs": ("10.0.0.1/8",)}, "ui_allowed_cidrs '10.0.0.1/8'"),
        ({"database_instance_type": "large"}, "database_instance_type 'large'"),
        ({"database_backup_days": 36}, "between 1 and 35"),
        ({"batch_gpu_max_vcpus": 0}, "batch_gpu_max_vcpus must be at least 1"),
        ({"api_burst_limit": 5}, "api_burst_limit must be at least api_rate_limit"),
        ({"backup_days": 0}, "backup_days must be between 1 and 35"),
        ({"backup_days": 36}, "backup_days must be between 1 and 35"),
        ({"backup_monthly_days": 60}, "backup_monthly_days must be 0 (none) or at least 120"),
    ],
)
def test_a_bad_value_is_refused_with_its_reason(changes, message):
    with pytest.raises(ConfigError, match="environment 'dev'") as raised:
        replace(DEV, **changes)
    assert message in str(raised.value)


def test_prod_must_retain_its_data_and_keep_deletion_protection():
    prod = ENVIRONMENTS["prod"]
    with pytest.raises(ConfigError, match="prod must retain"):
        replace(prod, stateful=Stateful.DESTROY)
    with pytest.raises(ConfigError, match="prod must retain"):
        replace(prod, deletion_protection=False)
    with pytest.raises(ConfigError, match="multi-AZ"):
        replace(prod, database_multi_az=False)


def test_two_environments_in_one_account_and_region_are_refused():
    clash = {"dev": DEV, "qa": replace(DEV, name="qa")}
    with pytest.raises(ConfigError, match="'dev' and 'qa' share account 111111111111"):
        check_environments(clash)


def test_variable_names_come_from_firepipe_aws_env_and_settings():
    assert env_name("LANDING_BUCKET_VAR") == "FIREPIPE_LANDING_BUCKET"
    assert env_names()["SNOWFLAKE_PASSWORD_VAR"] == "SNOWFLAKE_PASSWORD"
    assert env_name("SNOWFLAKE_AUTH_VAR") == "FIREPIPE_SNOWFLAKE_AUTH"  # settings.py's
    with pytest.raises(KeyError, match="defines NO_SUCH_VAR"):
        env_name("NO_SUCH_VAR")


def test_enum_values_are_read_from_firepipes_settings(tmp_path):
    assert enum_values("SnowflakeAuth", SETTINGS_MODULE) == SNOWFLAKE_AUTHS
    assert "password" in SNOWFLAKE_AUTHS
    module = tmp_path / "settings.py"
    module.write_text('class Mode(enum.StrEnum):\n    """Doc."""\n\n    A = "a"\n    B = "b"\n')
    assert enum_values("Mode", module) == ("a", "b")
    with pytest.raises(KeyError, match="defines no class Other"):
        enum_values("Other", module)


def test_the_deployment_selects_firepipes_aws_environment():
    """IN_AWS, set on every firepipe process of the deployment, names a value firepipe's
    settings accept (Environment), under the variable settings.py reads."""
    [(variable, value)] = IN_AWS.items()
    assert variable == env_name("ENV_VAR") == "FIREPIPE_ENV"
    assert value in enum_values("Environment")
