import json

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template
from firepipe_infra.config import ENVIRONMENTS
from firepipe_infra.security import SNOWFLAKE_PASSWORD_FIELD, Security


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


def test_grant_read_snowflake_gives_the_secret_and_decryption_of_it_only():
    stack = Stack(App(), "s", env={"account": "111111111111", "region": "eu-west-1"})
    security = Security(stack, "Security", config=ENVIRONMENTS["dev"])
    role = iam.Role(stack, "Reader", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    security.grant_read_snowflake(role)
    template = Template.from_stack(stack)
    policy = next(iter(template.find_resources("AWS::IAM::Policy").values()))
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Resource"] for s in statements] == [{"Ref": "SecuritySnowflakeSecret259A230B"}]
    assert "secretsmanager:GetSecretValue" in statements[0]["Action"]
    # The key lets the role decrypt through Secrets Manager only, not any data under the key.
    key = template.find_resources(
        "AWS::KMS::Key", {"Properties": {"Description": Match.string_like_regexp("the lake")}}
    )
    key_statements = next(iter(key.values()))["Properties"]["KeyPolicy"]["Statement"]
    role_arn = {"Fn::GetAtt": [stack.get_logical_id(role.node.default_child), "Arn"]}
    [decrypt] = [s for s in key_statements if s["Principal"].get("AWS") == role_arn]
    assert decrypt["Action"] == "kms:Decrypt"
    assert (
        decrypt["Condition"]["StringEquals"]["kms:ViaService"]
        == "secretsmanager.eu-west-1.amazonaws.com"
    )
