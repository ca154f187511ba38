import json

import pytest
from aws_cdk import App, Environment, Stack
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.security import SNOWFLAKE_PASSWORD_FIELD, Security
from firepipe_infra.stacks import cdk_context


@pytest.fixture(scope="module")
def dev(synthesised):
    return synthesised.template("firepipe-dev-security")


def test_data_and_logs_keys_rotate(dev):
    keys = dev.find_resources("AWS::KMS::Key")
    assert len(keys) == 2
    assert all(k["Properties"]["EnableKeyRotation"] for k in keys.values())
    aliases = dev.find_resources("AWS::KMS::Alias")
    assert sorted(a["Properties"]["AliasName"] for a in aliases.values()) == [
        "alias/firepipe-dev-data",
        "alias/firepipe-dev-logs",
    ]


def test_dev_keys_are_destroyed_with_the_stack_and_prod_keys_kept(synthesised, dev):
    assert {k["DeletionPolicy"] for k in dev.find_resources("AWS::KMS::Key").values()} == {"Delete"}
    prod = synthesised.template("firepipe-prod-security")
    assert {k["DeletionPolicy"] for k in prod.find_resources("AWS::KMS::Key").values()} == {
        "Retain"
    }


def test_secrets_are_encrypted_with_the_data_key(dev):
    data_key = next(
        iter(
            dev.find_resources(
                "AWS::KMS::Key",
                {"Properties": {"Description": Match.string_like_regexp("the lake")}},
            )
        )
    )
    secrets = dev.find_resources("AWS::SecretsManager::Secret")
    assert sorted(s["Properties"]["Name"] for s in secrets.values()) == [
        "firepipe-dev/api-keys",
        "firepipe-dev/snowflake",
    ]
    assert all(
        s["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [data_key, "Arn"]} for s in secrets.values()
    )


def test_snowflake_secret_holds_one_field_per_variable_and_generates_the_password(dev):
    secret = dev.find_resources(
        "AWS::SecretsManager::Secret", {"Properties": {"Name": "firepipe-dev/snowflake"}}
    )
    generator = next(iter(secret.values()))["Properties"]["GenerateSecretString"]
    assert generator["GenerateStringKey"] == SNOWFLAKE_PASSWORD_FIELD == "SNOWFLAKE_PASSWORD"
    assert set(json.loads(generator["SecretStringTemplate"])) == {
        "SNOWFLAKE_ACCOUNT",
        "SNOWFLAKE_USER",
        "SNOWFLAKE_ROLE",
        "SNOWFLAKE_WAREHOUSE",
        "SNOWFLAKE_DATABASE",
        "SNOWFLAKE_PRIVATE_KEY",
        "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
    }


def test_nothing_is_granted_in_the_security_stack(dev):
    dev.resource_count_is("AWS::IAM::Policy", 0)
    dev.resource_count_is("AWS::IAM::Role", 0)
    dev.has_output(
        "FIREPIPEAPIKEYSSECRET",
        {"Description": Match.string_like_regexp("^FIREPIPE_API_KEYS_SECRET:")},
    )


def test_a_role_of_another_stack_reads_the_secrets_and_decrypts_through_secrets_manager_only(
    tmp_path,
):
    """The secrets' readers live in later stacks of the same environment: the grants go into
    the role's own policy, so the security stack does not depend on theirs (a grant in the key
    policy made synthesis fail with a dependency cycle)."""
    env = Environment(account="111111111111", region="eu-west-1")
    app = App(outdir=str(tmp_path), context=cdk_context())
    producer = Stack(app, "security", env=env)
    security = Security(producer, "Security", config=ENVIRONMENTS["dev"])
    consumer = Stack(app, "consumer", env=env)
    role = iam.Role(consumer, "Reader", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    security.grant_read_snowflake(role)
    security.grant_read_api_keys(role)
    assembly = app.synth()

    produced = assembly.get_stack_by_name("security").template
    exports = {json.dumps(o["Value"]): o["Export"]["Name"] for o in produced["Outputs"].values()}

    def imported(construct, attribute=None):
        logical_id = producer.get_logical_id(construct.node.default_child)
        value = {"Fn::GetAtt": [logical_id, attribute]} if attribute else {"Ref": logical_id}
        return {"Fn::ImportValue": exports[json.dumps(value)]}

    template = Template.from_json(assembly.get_stack_by_name("consumer").template)
    [policy] = template.find_resources("AWS::IAM::Policy").values()
    assert policy["Properties"]["Roles"] == [
        {"Ref": consumer.get_logical_id(role.node.default_child)}
    ]
    read, decrypt = policy["Properties"]["PolicyDocument"]["Statement"]
    assert read["Action"] == ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    secrets = (security.snowflake_secret, security.api_keys_secret)
    assert sorted(map(json.dumps, read["Resource"])) == sorted(
        json.dumps(imported(s)) for s in secrets
    )
    # The key decrypts for the role only through Secrets Manager, not any data under the key.
    assert decrypt == {
        "Action": "kms:Decrypt",
        "Effect": "Allow",
        "Resource": imported(security.data_key, "Arn"),
        "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}},
    }
    # Nothing of the role reached the security stack (its key policy among it).
    assert "Reader" not in json.dumps(produced)
    assert "Fn::ImportValue" not in json.dumps(produced)
