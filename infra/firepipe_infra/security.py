"""Security: the KMS keys (data, logs) and the secrets (Snowflake credentials, API keys).

Nothing here grants access to anything: the stacks that run code call the `grant_*` methods
for the roles that need them, so each role holds exactly what it uses.
"""

from __future__ import annotations

import json

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as sm
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.env_names import env_name

# The Snowflake secret's fields are the variables firepipe and dbt read, so an ECS task maps
# each field to its variable one to one (ecs.Secret.from_secrets_manager(secret, field)).
SNOWFLAKE_FIELDS = tuple(
    env_name(c)
    for c in (
        "SNOWFLAKE_ACCOUNT_VAR",
        "SNOWFLAKE_USER_VAR",
        "SNOWFLAKE_ROLE_VAR",
        "SNOWFLAKE_WAREHOUSE_VAR",
        "SNOWFLAKE_DATABASE_VAR",
        "SNOWFLAKE_PRIVATE_KEY_VAR",
        "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE_VAR",
    )
)
SNOWFLAKE_PASSWORD_FIELD = env_name("SNOWFLAKE_PASSWORD_VAR")

_NO_ROTATION = (
    "Rotation needs the outside system's cooperation (Snowflake issues the user's password or "
    "key; the inference service's clients hold the API keys): it is an operator's runbook "
    "step, not a rotation Lambda that would lock the clients out."
)


class Security(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.data_key = self._key(config, "data", "the lake, query results and secrets")
        self.logs_key = self._key(config, "logs", "CloudWatch Logs log groups")
        # CloudWatch Logs encrypts with the key itself (no role of ours is involved), so the key
        # policy lets the service use it, for this account's log groups only.
        self.logs_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:*"
                        )
                    }
                },
            )
        )
        # The password is generated here and set on the Snowflake user by the operator (or
        # replaced, with the other fields, by the values Snowflake issued).
        self.snowflake_secret = sm.Secret(
            self,
            "SnowflakeSecret",
            secret_name=f"{config.prefix}/snowflake",
            description="Snowflake credentials: one field per variable firepipe and dbt read",
            encryption_key=self.data_key,
            generate_secret_string=sm.SecretStringGenerator(
                secret_string_template=json.dumps(dict.fromkeys(SNOWFLAKE_FIELDS, "")),
                generate_string_key=SNOWFLAKE_PASSWORD_FIELD,
                exclude_punctuation=True,  # Snowflake's connection strings need no escaping
                password_length=32,
            ),
            removal_policy=config.removal_policy,
        )
        # A JSON object whose values are the keys (a form the inference service reads), so a
        # new key is added beside the old one while clients move over; one key to start.
        self.api_keys_secret = sm.Secret(
            self,
            "ApiKeysSecret",
            secret_name=f"{config.prefix}/api-keys",
            description="The inference service's API keys (a JSON object of named keys)",
            encryption_key=self.data_key,
            generate_secret_string=sm.SecretStringGenerator(
                secret_string_template=json.dumps({}),
                generate_string_key="initial",
                exclude_punctuation=True,
                password_length=40,
            ),
            removal_policy=config.removal_policy,
        )
        for secret in (self.snowflake_secret, self.api_keys_secret):
            Validations.of(secret).acknowledge(
                Acknowledgment(id="AwsSolutions-SMG4", reason=_NO_ROTATION)
            )

    def _key(self, config: EnvironmentConfig, use: str, what: str) -> kms.Key:
        """A rotating key of this environment, `alias/<prefix>-<use>`."""
        return kms.Key(
            self,
            f"{use.capitalize()}Key",
            alias=f"alias/{config.prefix}-{use}",
            description=f"{config.prefix}: {what}",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
        )

    def grant_read_snowflake(self, grantee: iam.IGrantable) -> iam.Grant:
        """Read the Snowflake credentials (and decrypt them with the data key)."""
        return self._grant_read_secret(self.snowflake_secret, grantee)

    def grant_read_api_keys(self, grantee: iam.IGrantable) -> iam.Grant:
        return self._grant_read_secret(self.api_keys_secret, grantee)

    def _grant_read_secret(self, secret: sm.ISecret, grantee: iam.IGrantable) -> iam.Grant:
        """The secret's value, and the data key's Decrypt through Secrets Manager only (not
        any other data under the key), both in the grantee's own policy. Secret.grant_read
        would also write the grantee's ARN into the key policy, here in the security stack: a
        role of a stack that depends on this one would then make a dependency cycle. The key
        policy trusts the account, so the role's own policy is enough."""
        read = iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            resource_arns=[secret.secret_arn],
        )
        decrypt = iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kms:Decrypt"],
            resource_arns=[self.data_key.key_arn],
            conditions={
                "StringEquals": {
                    "kms:ViaService": f"secretsmanager.{Stack.of(self).region}.amazonaws.com"
                }
            },
        )
        return read.combine(decrypt)

    def grant_data_encrypt_decrypt(self, grantee: iam.IGrantable) -> iam.Grant:
        """Use the data key directly (writers of the lake and of query results)."""
        return self.data_key.grant_encrypt_decrypt(grantee)

    def grant_data_decrypt(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.data_key.grant_decrypt(grantee)
