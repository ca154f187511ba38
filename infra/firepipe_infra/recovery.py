"""Recovery: AWS Backup plans for what firepipe cannot rebuild from its sources: the agents'
and the generation history's DynamoDB tables, the lake and model buckets, and the Dagster
instance's database.

The services' own recovery stays on beside it (DynamoDB point-in-time recovery, RDS automated
backups, S3 versioning): those restore to a minute within their short windows; the plan keeps
daily (and, where configured, monthly) recovery points far longer, in a vault of their own key,
so a deleted table, bucket or database is still restorable after its own backups are gone.
docs/runbooks/restore.md says how to restore from each.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_backup as backup
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig

# AWS Backup's own service policies: they track every resource type's backup and restore API
# (S3 needs its own pair), which a hand-written policy would have to follow release by release.
_SERVICE_POLICIES = (
    "service-role/AWSBackupServiceRolePolicyForBackup",
    "service-role/AWSBackupServiceRolePolicyForRestores",
    "AWSBackupServiceRolePolicyForS3Backup",
    "AWSBackupServiceRolePolicyForS3Restore",
)


class Recovery(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, id)
        self._config = config
        self.vault_key = kms.Key(
            self,
            "VaultKey",
            alias=f"alias/{config.prefix}-backup",
            description=f"{config.prefix}: the backup vault",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
        )
        self.vault = backup.BackupVault(
            self,
            "Vault",
            backup_vault_name=f"{config.prefix}-vault",
            encryption_key=self.vault_key,
            removal_policy=config.removal_policy,
        )
        self.role = iam.Role(
            self,
            "BackupRole",
            assumed_by=iam.ServicePrincipal("backup.amazonaws.com"),
            description=f"{config.prefix}: AWS Backup's role for the plan's resources",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(name) for name in _SERVICE_POLICIES
            ],
        )
        Validations.of(self.role).acknowledge(
            *(
                Acknowledgment(
                    id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{name}]",
                    reason="AWS Backup's documented service policies, kept current by AWS for "
                    "every resource type it backs up and restores",
                )
                for name in _SERVICE_POLICIES
            )
        )
        rules = [
            backup.BackupPlanRule(
                rule_name="daily",
                backup_vault=self.vault,
                schedule_expression=events.Schedule.cron(hour="3", minute="0"),
                start_window=Duration.hours(1),
                completion_window=Duration.hours(8),
                delete_after=Duration.days(config.backup_days),
                # Continuous backups for point-in-time restores of S3 and RDS within the window.
                enable_continuous_backup=True,
            )
        ]
        if config.backup_monthly_days:
            rules.append(
                backup.BackupPlanRule(
                    rule_name="monthly",
                    backup_vault=self.vault,
                    schedule_expression=events.Schedule.cron(day="1", hour="4", minute="0"),
                    start_window=Duration.hours(1),
                    completion_window=Duration.hours(12),
                    delete_after=Duration.days(config.backup_monthly_days),
                    move_to_cold_storage_after=Duration.days(30),
                )
            )
        self.plan = backup.BackupPlan(
            self, "Plan", backup_plan_name=f"{config.prefix}-plan", backup_plan_rules=rules
        )
        self.selected: list[str] = []

    def protect(self, name: str, resource_arns: list[str], keys: list[kms.IKey]) -> None:
        """Back `resource_arns` up under the plan (one selection, `name`), and let the role use
        the customer keys they are encrypted with (in the role's own policy: no key policy of
        another stack changes)."""
        backup.BackupSelection(
            self,
            f"Select{name.capitalize()}",
            backup_plan=self.plan,
            backup_selection_name=f"{self._config.prefix}-{name}",
            resources=[backup.BackupResource.from_arn(arn) for arn in resource_arns],
            role=self.role,
        )
        for key in keys:
            iam.Grant.add_to_principal(
                grantee=self.role,
                actions=[
                    "kms:Decrypt",
                    "kms:Encrypt",
                    "kms:GenerateDataKey",
                    "kms:GenerateDataKeyWithoutPlaintext",
                    "kms:ReEncryptFrom",
                    "kms:ReEncryptTo",
                    "kms:DescribeKey",
                    "kms:CreateGrant",
                ],
                resource_arns=[key.key_arn],
            )
        self.selected.append(name)
