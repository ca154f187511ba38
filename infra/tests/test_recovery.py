import pytest
from aws_cdk import Stack
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Template
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.recovery import Recovery
from firepipe_infra.stacks import _EnvironmentStack, build_app

TABLE = "arn:aws:dynamodb:eu-west-1:111111111111:table/firepipe-dev-state"
BUCKET = "arn:aws:s3:::firepipe-dev-lake"


def _recovery(app, env):
    config = ENVIRONMENTS[env]
    stack = _EnvironmentStack(app, "recovery", config)
    recovery = Recovery(stack, "Recovery", config=config)
    key = kms.Key.from_key_arn(
        stack, "TableKey", f"arn:aws:kms:eu-west-1:{config.account}:key/1234abcd"
    )
    recovery.protect("tables", [TABLE], [key])
    recovery.protect("buckets", [BUCKET], [])
    return recovery


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    environments = {env: ENVIRONMENTS[env] for env in ("dev", "prod")}
    app, _ = build_app(tmp_path_factory.mktemp("cdk.out"), environments)
    recoveries = {env: _recovery(app, env) for env in environments}
    assembly = app.synth()  # with cdk-nag: an unacknowledged finding fails here
    return {
        env: Template.from_json(assembly.get_stack_by_name(Stack.of(r).stack_name).template)
        for env, r in recoveries.items()
    }


def test_daily_backups_kept_per_environment_and_monthly_in_prod_only(templates):
    [dev] = templates["dev"].find_resources("AWS::Backup::BackupPlan").values()
    [prod] = templates["prod"].find_resources("AWS::Backup::BackupPlan").values()
    dev_rules = {r["RuleName"]: r for r in dev["Properties"]["BackupPlan"]["BackupPlanRule"]}
    prod_rules = {r["RuleName"]: r for r in prod["Properties"]["BackupPlan"]["BackupPlanRule"]}
    assert list(dev_rules) == ["daily"]
    assert dev_rules["daily"]["Lifecycle"] == {"DeleteAfterDays": 7}
    assert dev_rules["daily"]["EnableContinuousBackup"] is True
    assert prod_rules["daily"]["Lifecycle"] == {"DeleteAfterDays": 35}
    assert prod_rules["monthly"]["Lifecycle"] == {
        "DeleteAfterDays": 365,
        "MoveToColdStorageAfterDays": 30,
    }


def test_the_vault_has_a_rotating_key_of_its_own_and_prod_keeps_it(templates):
    for env, policy in (("dev", "Delete"), ("prod", "Retain")):
        [vault] = templates[env].find_resources("AWS::Backup::BackupVault").values()
        assert vault["Properties"]["BackupVaultName"] == f"firepipe-{env}-vault"
        assert vault["DeletionPolicy"] == policy
        [key] = templates[env].find_resources("AWS::KMS::Key").values()
        assert key["Properties"]["EnableKeyRotation"] is True


def test_each_selection_names_its_resources_and_the_role_may_use_their_keys(templates):
    dev = templates["dev"]
    selections = {
        s["Properties"]["BackupSelection"]["SelectionName"]: s["Properties"]["BackupSelection"]
        for s in dev.find_resources("AWS::Backup::BackupSelection").values()
    }
    assert selections["firepipe-dev-tables"]["Resources"] == [TABLE]
    assert selections["firepipe-dev-buckets"]["Resources"] == [BUCKET]
    [policy] = dev.find_resources("AWS::IAM::Policy").values()
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Resource"] == "arn:aws:kms:eu-west-1:111111111111:key/1234abcd"
    assert "kms:Decrypt" in statement["Action"]
    [role] = dev.find_resources("AWS::IAM::Role").values()
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "backup.amazonaws.com"
    }
