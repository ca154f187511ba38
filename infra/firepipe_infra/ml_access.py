"""What firepipe's SageMaker adapters name and call, for the ML construct (firepipe_infra.ml):
the names they give SageMaker resources and S3 prefixes, read from firepipe's files as text
(the app cannot import firepipe), and the API actions they make.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam

from firepipe_infra.env_names import AWS_ENV_MODULE

FIREPIPE_PACKAGE = AWS_ENV_MODULE.parents[1]  # firepipe/, read as text (the app cannot import it)


@cache
def firepipe_constant(module: str, name: str, owner: str | None = None) -> str:
    """The string constant `name` of firepipe/`module` (an attribute's default of class `owner`
    when given), so the names SageMaker resources get here are the ones firepipe's code uses;
    a constant firepipe no longer defines fails synthesis, not a deploy."""
    path = FIREPIPE_PACKAGE / module
    body = ast.parse(path.read_text(), filename=str(path)).body
    if owner is not None:
        body = next((n.body for n in body if isinstance(n, ast.ClassDef) and n.name == owner), [])
    for node in body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id == name and isinstance(value, ast.Constant):
            return str(value.value)
    raise KeyError(f"{path} defines no string {name}" + (f" in class {owner}" if owner else ""))


MODEL_NAME = firepipe_constant("names.py", "MODEL_NAME")
ENDPOINT_NAME = firepipe_constant("resources/endpoint.py", "DEFAULT_ENDPOINT")
FEATURE_GROUP_NAME = firepipe_constant("resources/feature_store.py", "DEFAULT_FEATURE_GROUP")
TRAINING_PREFIX = firepipe_constant("resources/training.py", "prefix", "SageMakerTrainingBackend")
SERVING_PREFIX = firepipe_constant("resources/endpoint.py", "prefix", "SageMakerEndpoint")
# firepipe.core.training.candidate.job_name: training jobs `firepipe-<run>-<algorithm>-<time>`,
# tuning jobs `...-tune` (and the jobs a tuning job starts carry its name).
JOB_NAME_PREFIX = "firepipe-"
FEATURE_STORE_PREFIX = "feature-store"
MLFLOW_PREFIX = "mlflow"
# Feature Store creates the offline store's Glue table in this database.
FEATURE_STORE_DATABASE = "sagemaker_featurestore"
SAGEMAKER = "sagemaker.amazonaws.com"
AUTOSCALING_ROLE = "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"


def model_package_group_name(tracking_server_name: str) -> str:
    """The group SageMaker's automatic registration puts MODEL_NAME's versions in:
    `<name>-<first 6 hex digits of SHA-256 of the tracking server's name>`, as
    firepipe.resources.registry.SageMakerModelRegistry.model_package_group computes it."""
    return f"{MODEL_NAME}-{hashlib.sha256(tracking_server_name.encode()).hexdigest()[:6]}"


# firepipe.resources.training (the SDK's ModelTrainer and HyperparameterTuner): create, poll,
# stop a job given up on; AddTags authorises a create that carries tags.
TRAINING_ACTIONS = [
    "sagemaker:CreateTrainingJob",
    "sagemaker:DescribeTrainingJob",
    "sagemaker:StopTrainingJob",
    "sagemaker:CreateHyperParameterTuningJob",
    "sagemaker:DescribeHyperParameterTuningJob",
    "sagemaker:StopHyperParameterTuningJob",
    "sagemaker:AddTags",
]
# firepipe.resources.endpoint: a model and config per version, the endpoint created or updated
# in place (never deleted by the code), transform jobs; Application Auto Scaling checks the
# caller may describe the endpoint and change its capacity.
SERVING_ACTIONS = [
    "sagemaker:CreateModel",
    "sagemaker:DescribeModel",
    "sagemaker:CreateEndpointConfig",
    "sagemaker:DescribeEndpointConfig",
    "sagemaker:CreateEndpoint",
    "sagemaker:UpdateEndpoint",
    "sagemaker:DescribeEndpoint",
    "sagemaker:UpdateEndpointWeightsAndCapacities",
    "sagemaker:CreateTransformJob",
    "sagemaker:DescribeTransformJob",
    "sagemaker:StopTransformJob",
    "sagemaker:AddTags",
]
# firepipe.resources.feature_store: the group created when missing, then PutRecord/GetRecord.
FEATURE_STORE_ACTIONS = [
    "sagemaker:CreateFeatureGroup",
    "sagemaker:DescribeFeatureGroup",
    "sagemaker:PutRecord",
    "sagemaker:GetRecord",
]
# What automatic model registration does with the tracking server's role (SageMaker developer
# guide, MLflow's IAM set-up).
REGISTRATION_ACTIONS = [
    "sagemaker:AddTags",
    "sagemaker:CreateModelPackageGroup",
    "sagemaker:DescribeModelPackageGroup",
    "sagemaker:CreateModelPackage",
    "sagemaker:UpdateModelPackage",
]


def grant_endpoint_autoscaling(stack: Stack, grantee: iam.IGrantable) -> None:
    """What the endpoint adapter's target tracking on its variant needs: Application Auto
    Scaling's calls (which take no resource), the alarms it makes in the caller's name, and
    its service-linked role, which the first registration creates."""
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=[
            "application-autoscaling:RegisterScalableTarget",
            "application-autoscaling:DeregisterScalableTarget",
            "application-autoscaling:PutScalingPolicy",
            "cloudwatch:DescribeAlarms",
        ],
        resource_arns=["*"],
    )
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"],
        resource_arns=[
            stack.format_arn(
                service="cloudwatch",
                resource="alarm",
                resource_name=f"TargetTracking-endpoint/{ENDPOINT_NAME}/*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
        ],
    )
    service = "sagemaker.application-autoscaling.amazonaws.com"
    iam.Grant.add_to_principal(
        grantee=grantee,
        actions=["iam:CreateServiceLinkedRole"],
        resource_arns=[
            stack.format_arn(
                service="iam",
                region="",
                resource="role",
                resource_name=f"aws-service-role/{service}/{AUTOSCALING_ROLE}",
            )
        ],
        conditions={"StringEquals": {"iam:AWSServiceName": service}},
    )
