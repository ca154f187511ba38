"""IAM helpers of the constructs: statements in a grantee's own policy, prefix-scoped grants on
the lake bucket, the role every Spark engine runs as, and cdk-nag acknowledgements of the
wildcards those prefixes (and services without resource-level permissions) need.

cdk-nag 3 reports each wildcard of a policy as a finding of its own
(`AwsSolutions-IAM5[Resource::<the resource, flattened>]`) and an acknowledgement must name the
finding exactly. A resource in another stack is flattened to the name of the export CloudFormation
imports it by, known only once the app has resolved its cross-stack references: so
`acknowledge_wildcards` acknowledges, when the tree is validated (after that resolution, before
cdk-nag runs), the findings of a policy that end with one of the object patterns it was given,
and nothing else. A wildcard nobody declared still fails the synthesis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import jsii
from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct, IValidation

from firepipe_infra.lake import WAREHOUSE_PREFIX, Lake

IAM5 = "AwsSolutions-IAM5"
# firepipe's resources keep the Pipes context and messages under this prefix of the bucket
# (BatchCompute.pipes_prefix, AwsSparkCompute.pipes_prefix).
PIPES_PREFIX = "pipes/"
# The code the Spark engines run, deployed with the compute stack (see spark_code.py).
ARTIFACTS_PREFIX = "artifacts"
_SPARK_WILDCARDS = (
    "Object patterns under prefixes of the lake bucket: the job reads silver files and writes "
    "gold staging files under warehouse/ (firepipe names each path at run time), its Pipes "
    "context and messages under pipes/, reads the code under artifacts/ (EMR nodes: writes "
    "their logs under logs/emr/); its log groups' streams (named per run) and, for EMR "
    "Serverless, logs:DescribeLogGroups, which takes no single group."
)


def spark_role(
    scope: Construct,
    id: str,
    *,
    service: str,
    description: str,
    lake: Lake,
    data_key: kms.IKey,
    wildcards: Sequence[str] = (),
    name: str | None = None,
) -> iam.Role:
    """A role `service` runs the Spark features as: reads and writes the warehouse (silver in,
    gold staging out; Spark's output committer deletes its temporary files), uses the Pipes
    prefix and reads the artifacts. `wildcards`: suffixes of further wildcard resources the
    caller grants it, acknowledged with these."""
    role = iam.Role(
        scope, id, role_name=name, assumed_by=iam.ServicePrincipal(service), description=description
    )
    bucket = lake.lake_bucket
    grant_objects(
        role, bucket, data_key, f"{WAREHOUSE_PREFIX}/", read=True, write=True, delete=True
    )
    grant_objects(role, bucket, data_key, PIPES_PREFIX, read=True, write=True)
    grant_objects(role, bucket, data_key, f"{ARTIFACTS_PREFIX}/", read=True)
    suffixes = [f"/{WAREHOUSE_PREFIX}/*", f"/{PIPES_PREFIX}*", f"/{ARTIFACTS_PREFIX}/*", *wildcards]
    acknowledge_wildcards(role.node.find_child("DefaultPolicy"), _SPARK_WILDCARDS, suffixes)
    return role


def grant_objects(
    grantee: iam.IGrantable,
    bucket: s3.IBucket,
    key: kms.IKey,
    prefix: str,
    *,
    read: bool = False,
    write: bool = False,
    delete: bool = False,
) -> None:
    """Objects under `prefix` of `bucket` (SSE-KMS with `key`), in the grantee's own policy:
    named actions only (no `s3:GetObject*`), listing limited to the prefix, and the key through
    S3 only. A multipart upload's completion decrypts its parts' data keys, so writers decrypt."""
    actions = (["s3:GetObject"] if read else []) + (
        ["s3:PutObject", "s3:AbortMultipartUpload"] if write else []
    )
    actions += ["s3:DeleteObject"] if delete else []
    iam.Grant.add_to_principal(
        grantee=grantee, actions=actions, resource_arns=[bucket.arn_for_objects(f"{prefix}*")]
    )
    if read:
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:ListBucket"],
            resource_arns=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
        )
    key_actions = ["kms:Decrypt"] + (["kms:GenerateDataKey"] if write else [])
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=key_actions,
        resource_arns=[key.key_arn],
        conditions={
            "StringEquals": {"kms:ViaService": f"s3.{Stack.of(bucket).region}.amazonaws.com"}
        },
    )


def allow(
    grantee: iam.IGrantable,
    actions: list[str],
    resources: list[str],
    conditions: dict[str, object] | None = None,
) -> iam.Grant:
    """A statement in the grantee's own policy: never a resource or key policy, where a role of
    another stack would make a dependency cycle."""
    return iam.Grant.add_to_principal(
        grantee=grantee, actions=actions, resource_arns=resources, conditions=conditions
    )


# What a Lambda function in a VPC needs to attach its network interfaces: EC2 names none
# before they exist, so AWS documents these on "*".
VPC_FUNCTION_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


def grant_vpc_function(role: iam.IGrantable) -> iam.Grant:
    """A Lambda function's role in a VPC: its network interfaces (on "*", see above)."""
    return allow(role, VPC_FUNCTION_ACTIONS, ["*"])


def default_policy(grantee: iam.IGrantable) -> IConstruct | None:
    """The policy grants to a role of this app were written into (None for other principals)."""
    principal = grantee.grant_principal
    if isinstance(principal, iam.Role):
        return principal.node.try_find_child("DefaultPolicy")
    return None


def acknowledge_wildcards(policy: IConstruct, reason: str, suffixes: Sequence[str]) -> None:
    """Acknowledge, on `policy` (an iam.Policy), each IAM5 finding whose resource ends with
    one of `suffixes` (e.g. "/pipes/*", ":log-group:*"); an exact `"*"` suffix acknowledges
    the bare `"*"` only."""
    policy.node.add_validation(_AcknowledgeWildcards(policy, reason, tuple(suffixes)))


@jsii.implements(IValidation)
class _AcknowledgeWildcards:
    def __init__(self, policy: IConstruct, reason: str, suffixes: tuple[str, ...]) -> None:
        self._policy, self._reason, self._suffixes = policy, reason, suffixes

    def validate(self) -> list[str]:
        resource = self._policy.node.default_child
        if not isinstance(resource, iam.CfnPolicy):
            return [f"{self._policy.node.path} is not an iam.Policy"]
        document = Stack.of(resource).resolve(resource.policy_document)
        for finding in wildcard_resources(document):
            if any(_matches(finding, suffix) for suffix in self._suffixes):
                Validations.of(self._policy).acknowledge(
                    Acknowledgment(id=f"{IAM5}[Resource::{finding}]", reason=self._reason)
                )
        return []


def acknowledge_role_wildcards(
    role: iam.IRole, reason: str, suffixes: Sequence[str], actions: Sequence[str] = ()
) -> None:
    """acknowledge_wildcards on every policy of `role`, the overflow policies CDK splits a
    large one into included (they exist only once the app is prepared), and the action
    wildcards named in `actions` (e.g. "sagemaker-mlflow:*")."""
    role.node.add_validation(_AcknowledgeRoleWildcards(role, reason, tuple(suffixes), actions))


@jsii.implements(IValidation)
class _AcknowledgeRoleWildcards:
    def __init__(
        self, role: IConstruct, reason: str, suffixes: tuple[str, ...], actions: Sequence[str]
    ) -> None:
        self._role, self._reason = role, reason
        self._suffixes, self._actions = suffixes, tuple(actions)

    def validate(self) -> list[str]:
        for child in self._role.node.children:
            resource = child.node.default_child
            if not isinstance(resource, iam.CfnPolicy | iam.CfnManagedPolicy):
                continue
            document = Stack.of(resource).resolve(resource.policy_document)
            findings = [
                f"Resource::{r}"
                for r in wildcard_resources(document)
                if any(_matches(r, suffix) for suffix in self._suffixes)
            ]
            granted = {
                action
                for statement in document.get("Statement", [])
                if statement.get("Effect") == "Allow"
                for action in _as_list(statement.get("Action"))
            }
            findings += [f"Action::{a}" for a in self._actions if a in granted]
            Validations.of(child).acknowledge(
                *(Acknowledgment(id=f"{IAM5}[{f}]", reason=self._reason) for f in findings)
            )
        return []


def _matches(resource: str, suffix: str) -> bool:
    return resource == "*" if suffix == "*" else resource.endswith(suffix)


def wildcard_resources(document: dict[str, Any]) -> list[str]:
    """The resources of Allow statements holding a "*", flattened as cdk-nag flattens them
    (cdk-nag's utils/flatten-cfn-reference.js)."""
    found: dict[str, None] = {}
    for statement in document.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        for resource in _as_list(statement.get("Resource")):
            flat = flatten(resource)
            if "*" in flat:
                found[flat] = None
    return list(found)


def flatten(node: Any) -> str:
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return str(delimiter).join(flatten(i) for i in items)
        if "Fn::Sub" in node:
            return flatten(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            target, attribute = node["Fn::GetAtt"]
            return f"<{flatten(target)}.{flatten(attribute)}>"
        if "Fn::ImportValue" in node:
            return flatten(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{flatten(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))


def _as_list(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list) else [value]
