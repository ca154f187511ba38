import hashlib
import json
import re

import pytest
from aws_cdk import Stack
from cfn_refs import imported
from firepipe_infra.env_names import AWS_ENV_MODULE

FIREPIPE = AWS_ENV_MODULE.parents[1]
DATA_KEY = {
    "Fn::ImportValue": "firepipe-dev-security:"
    "ExportsOutputFnGetAttSecurityDataKeyA8BBAEFFArnA6346D5A"
}
SAGEMAKER = "arn:aws:sagemaker:eu-west-1:111111111111"


@pytest.fixture(scope="module")
def template(synthesised):
    return synthesised.template("firepipe-dev-ml")


@pytest.fixture(scope="module")
def prod_template(synthesised):
    return synthesised.template("firepipe-prod-ml")


@pytest.fixture(scope="module")
def run_role(synthesised):
    """The statements of Dagster's run role, which the orchestration stack grants
    `MachineLearning.grant_use` (with every other concern's grants, across its default and
    overflow policies)."""
    template = synthesised.template("firepipe-dev-orchestration")
    role = synthesised.stacks["dev"].orchestration.orchestration.run_role
    role_id = Stack.of(role).resolve(role.node.default_child.logical_id)
    return [
        s
        for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        for p in template.find_resources(kind).values()
        if {"Ref": role_id} in p["Properties"].get("Roles", [])
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def _list(value):
    return value if isinstance(value, list) else [value]


def _one(template, type_, prefix):
    [(logical_id, resource)] = [
        (k, v) for k, v in template.find_resources(type_).items() if k.startswith(prefix)
    ]
    return logical_id, resource


def _statements(template, role_prefix):
    _, policy = _one(template, "AWS::IAM::Policy", f"{role_prefix}DefaultPolicy")
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _actions(statement):
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def _granted(statements, action):
    """Every resource the statements give `action` on, with their conditions."""
    return [(s["Resource"], s.get("Condition")) for s in statements if action in _actions(s)]


def _bucket_id(template):
    return _one(template, "AWS::S3::Bucket", "MachineLearningBucket")[0]


def _objects(template, pattern):
    return {"Fn::Join": ["", [{"Fn::GetAtt": [_bucket_id(template), "Arn"]}, f"/{pattern}"]]}


def test_nag_passes_with_no_violation(synthesised):
    report = json.loads((synthesised.outdir / "validation-report.json").read_text())
    assert {p["conclusion"] for p in report["pluginReports"]} == {"success"}


def test_bucket_is_kms_encrypted_versioned_private_tls_only_and_logged(template):
    bucket_id, bucket = _one(template, "AWS::S3::Bucket", "MachineLearningBucket")
    props = bucket["Properties"]
    [encryption] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": DATA_KEY,
    }
    assert encryption["BucketKeyEnabled"] is True
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "ml/"
    destination = props["LoggingConfiguration"]["DestinationBucketName"]["Fn::ImportValue"]
    assert re.fullmatch(r"firepipe-dev-lake:.*LakeAccessLogs.*", destination)
    [policy] = template.find_resources("AWS::S3::BucketPolicy").values()
    assert {
        "Action": "s3:*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Resource": [
            {"Fn::GetAtt": [bucket_id, "Arn"]},
            {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
        ],
    } in policy["Properties"]["PolicyDocument"]["Statement"]


def test_access_log_delivery_admits_this_stacks_buckets_only(synthesised):
    lake = synthesised.template("firepipe-dev-lake")
    statements = [
        s
        for p in lake.find_resources("AWS::S3::BucketPolicy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if "/ml/*" in json.dumps(s["Resource"])
    ]
    # Nothing of the ML stack is named there: the lake stack does not depend on it.
    assert statements == [
        {
            "Action": "s3:PutObject",
            "Condition": {
                "ArnLike": {"aws:SourceArn": "arn:aws:s3:::firepipe-dev-ml-*"},
                "StringEquals": {"aws:SourceAccount": "111111111111"},
            },
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Resource": statements[0]["Resource"],
        }
    ]
    assert "firepipe-dev-ml" not in json.dumps(lake.to_json()).replace("firepipe-dev-ml-*", "")


def test_lifecycle_expires_job_files_and_keeps_models_mlflow_and_the_offline_store(template):
    _, bucket = _one(template, "AWS::S3::Bucket", "MachineLearningBucket")
    rules = {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert {r.get("Prefix") for r in rules.values() if "ExpirationInDays" in r} == {
        "training/",
        "serving/transform/",
    }
    assert rules["expire-training"]["ExpirationInDays"] == 30
    assert rules["expire-old-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}


def test_log_groups_are_sagemakers_own_encrypted_with_the_logs_key(template):
    groups = template.find_resources("AWS::Logs::LogGroup").values()
    assert sorted(g["Properties"]["LogGroupName"] for g in groups) == [
        "/aws/sagemaker/Endpoints/firepipe-fire-detector",
        "/aws/sagemaker/TrainingJobs",
        "/aws/sagemaker/TransformJobs",
    ]
    for g in groups:
        assert g["Properties"]["RetentionInDays"] == 14
        assert "LogsKey" in g["Properties"]["KmsKeyId"]["Fn::ImportValue"]


@pytest.mark.parametrize(
    ("role", "scoped"),
    [
        ("TrainingRole", True),
        ("ServingRole", True),
        ("FeatureStoreRole", True),
        ("MlflowRole", False),
    ],
)
def test_roles_trust_sagemaker_alone(template, role, scoped):
    _, resource = _one(template, "AWS::IAM::Role", f"MachineLearning{role}")
    [statement] = resource["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    expected = {"StringEquals": {"aws:SourceAccount": "111111111111"}} if scoped else None
    assert statement.get("Condition") == expected


def _data_key_grants(statements):
    return _granted(statements, "kms:GenerateDataKey") + _granted(statements, "kms:Decrypt")


def test_training_role_reads_and_writes_training_pulls_its_image_and_logs(template):
    statements = _statements(template, "MachineLearningTrainingRole")
    objects = _objects(template, "training/*")
    assert _granted(statements, "s3:GetObject") == [(objects, None)]
    assert _granted(statements, "s3:PutObject") == [(objects, None)]
    assert not _granted(statements, "s3:DeleteObject")
    via_s3 = {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}
    assert set(map(json.dumps, _data_key_grants(statements))) == {json.dumps((DATA_KEY, via_s3))}
    [(repository, _)] = _granted(statements, "ecr:BatchGetImage")
    assert "RegistryTraining" in repository["Fn::ImportValue"]
    [(logs, _)] = _granted(statements, "logs:PutLogEvents")
    assert logs["Fn::GetAtt"][0].startswith("MachineLearningTrainingLogs")
    assert _granted(statements, "cloudwatch:PutMetricData") == [
        ("*", {"StringEquals": {"cloudwatch:namespace": ["/aws/sagemaker/TrainingJobs"]}})
    ]


def test_serving_role_reads_archives_writes_transform_output_only(template):
    statements = _statements(template, "MachineLearningServingRole")
    gets = [r for r, _ in _granted(statements, "s3:GetObject")]
    assert _objects(template, "serving/*") in gets
    assert _granted(statements, "s3:PutObject") == [
        (_objects(template, "serving/transform/*"), None)
    ]
    [(repository, _)] = _granted(statements, "ecr:BatchGetImage")
    assert "RegistryInference" in repository["Fn::ImportValue"]
    [(logs, _)] = _granted(statements, "logs:PutLogEvents")
    logs = [r["Fn::GetAtt"][0] for r in logs]
    assert sorted(re.sub(r"Logs.*", "", g) for g in logs) == [
        "MachineLearningEndpoint",
        "MachineLearningTransform",
    ]


def test_feature_store_role_writes_the_offline_store_and_its_glue_table(template):
    statements = _statements(template, "MachineLearningFeatureStoreRole")
    objects = _objects(template, "feature-store/*")
    assert _granted(statements, "s3:PutObject") == [(objects, None)]
    assert _granted(statements, "s3:PutObjectAcl") == [(objects, None)]
    [(glue, _)] = _granted(statements, "glue:UpdateTable")
    assert glue == [
        "arn:aws:glue:eu-west-1:111111111111:catalog",
        "arn:aws:glue:eu-west-1:111111111111:database/sagemaker_featurestore",
        "arn:aws:glue:eu-west-1:111111111111:table/sagemaker_featurestore/*",
    ]


def _firepipe_model_name():
    text = (FIREPIPE / "names.py").read_text()
    [name] = re.findall(r'^MODEL_NAME = "([^"]+)"', text, re.MULTILINE)
    return name


def test_model_package_group_is_the_one_automatic_registration_fills(template):
    """SageMaker names the group `<MLflow model>-<sha256(tracking server name)[:6]>`
    (firepipe.resources.registry.SageMakerModelRegistry.model_package_group)."""
    [server] = template.find_resources("AWS::SageMaker::MlflowTrackingServer").values()
    server_name = server["Properties"]["TrackingServerName"]
    assert server_name == "firepipe-dev-mlflow"
    suffix = hashlib.sha256(server_name.encode()).hexdigest()[:6]
    template.has_resource_properties(
        "AWS::SageMaker::ModelPackageGroup",
        {"ModelPackageGroupName": f"{_firepipe_model_name()}-{suffix}"},
    )
    statements = _statements(template, "MachineLearningMlflowRole")
    [(packages, _)] = _granted(statements, "sagemaker:CreateModelPackage")
    assert packages == [
        f"{SAGEMAKER}:model-package-group/firepipe-fire-detector-{suffix}",
        f"{SAGEMAKER}:model-package/firepipe-fire-detector-{suffix}/*",
    ]


def test_tracking_server_stores_artifacts_under_mlflow_and_registers_models(template):
    _, server = _one(template, "AWS::SageMaker::MlflowTrackingServer", "MachineLearning")
    props = server["Properties"]
    assert props["ArtifactStoreUri"] == {
        "Fn::Join": ["", ["s3://", {"Ref": _bucket_id(template)}, "/mlflow"]]
    }
    assert props["AutomaticModelRegistration"] is True
    assert props["TrackingServerSize"] == "Small"
    role_id, _ = _one(template, "AWS::IAM::Role", "MachineLearningMlflowRole")
    assert props["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    policy_id, _ = _one(template, "AWS::IAM::Policy", "MachineLearningMlflowRoleDefaultPolicy")
    assert policy_id in server["DependsOn"]
    statements = _statements(template, "MachineLearningMlflowRole")
    assert _granted(statements, "s3:PutObject") == [(_objects(template, "mlflow/*"), None)]


def test_prod_has_a_medium_tracking_server_and_keeps_its_ml_data(prod_template):
    prod_template.has_resource_properties(
        "AWS::SageMaker::MlflowTrackingServer",
        {"TrackingServerName": "firepipe-prod-mlflow", "TrackingServerSize": "Medium"},
    )
    for type_ in ("AWS::S3::Bucket", "AWS::SageMaker::ModelPackageGroup"):
        assert {r["DeletionPolicy"] for r in prod_template.find_resources(type_).values()} == {
            "Retain"
        }
    prod_template.resource_count_is("Custom::S3AutoDeleteObjects", 0)


def _aws_env_names(*constants):
    text = AWS_ENV_MODULE.read_text()
    return {c: re.search(rf'^{c} = "([^"]+)"', text, re.MULTILINE).group(1) for c in constants}


def test_environment_names_firepipes_variables_with_values_in_their_formats(template):
    names = _aws_env_names(
        "SAGEMAKER_ROLE_ARN_VAR",
        "TRAINING_IMAGE_URI_VAR",
        "TRAINING_BUCKET_VAR",
        "MLFLOW_TRACKING_SERVER_ARN_VAR",
        "SERVING_IMAGE_URI_VAR",
        "SERVING_ROLE_ARN_VAR",
        "SERVING_BUCKET_VAR",
        "FEATURE_STORE_ROLE_ARN_VAR",
        "FEATURE_STORE_OFFLINE_URI_VAR",
    )
    # The ML stack's output per variable ("<NAME>: ..."), not the exports other stacks import.
    values = {
        o["Description"].split(":")[0]: o["Value"]
        for o in template.find_outputs("*").values()
        if "Export" not in o
    }
    assert set(values) == set(names.values())
    bucket = {"Ref": _bucket_id(template)}

    def role(name):
        return {
            "Fn::GetAtt": [_one(template, "AWS::IAM::Role", f"MachineLearning{name}")[0], "Arn"]
        }

    server_id, _ = _one(template, "AWS::SageMaker::MlflowTrackingServer", "MachineLearning")
    assert values[names["SAGEMAKER_ROLE_ARN_VAR"]] == role("TrainingRole")
    assert values[names["SERVING_ROLE_ARN_VAR"]] == role("ServingRole")
    assert values[names["FEATURE_STORE_ROLE_ARN_VAR"]] == role("FeatureStoreRole")
    # The adapters take bucket names, and the offline store a prefix URI.
    assert values[names["TRAINING_BUCKET_VAR"]] == bucket
    assert values[names["SERVING_BUCKET_VAR"]] == bucket
    assert values[names["FEATURE_STORE_OFFLINE_URI_VAR"]] == {
        "Fn::Join": ["", ["s3://", bucket, "/feature-store"]]
    }
    assert values[names["MLFLOW_TRACKING_SERVER_ARN_VAR"]] == {
        "Fn::GetAtt": [server_id, "TrackingServerArn"]
    }
    for constant, image in (
        ("TRAINING_IMAGE_URI_VAR", "training"),
        ("SERVING_IMAGE_URI_VAR", "inference"),
    ):
        # <account>.dkr.ecr.<region>.amazonaws.com/<the image's repository>:<deployed tag>
        parts = values[names[constant]]["Fn::Join"][1]
        assert ".dkr.ecr." in parts
        assert parts[-1] == ":unpublished"
        assert f"Registry{image.capitalize()}" in parts[-2]["Fn::ImportValue"]


def test_grant_use_covers_the_adapters_calls_by_their_resource_names(template, run_role):
    statements = run_role
    [(jobs, _)] = _granted(statements, "sagemaker:CreateTrainingJob")
    assert sorted(jobs) == [
        f"{SAGEMAKER}:hyper-parameter-tuning-job/firepipe-*",
        f"{SAGEMAKER}:training-job/firepipe-*",
    ]
    [(serving, _)] = _granted(statements, "sagemaker:UpdateEndpoint")
    assert sorted(serving) == sorted(
        [
            f"{SAGEMAKER}:endpoint/firepipe-fire-detector",
            f"{SAGEMAKER}:model/firepipe-fire-detector-*",
            f"{SAGEMAKER}:endpoint-config/firepipe-fire-detector-*",
            f"{SAGEMAKER}:transform-job/firepipe-fire-detector-*",
        ]
    )
    assert {"sagemaker:CreateTransformJob", "sagemaker:CreateModel"} <= {
        a for s in statements if s["Resource"] == serving for a in _actions(s)
    }
    server_id, _ = _one(template, "AWS::SageMaker::MlflowTrackingServer", "MachineLearning")
    assert _granted(statements, "sagemaker-mlflow:*") == [
        (imported(template, {"Fn::GetAtt": [server_id, "TrackingServerArn"]}), None)
    ]
    [(packages, _)] = _granted(statements, "sagemaker:UpdateModelPackage")
    assert re.fullmatch(
        rf"{SAGEMAKER}:model-package/firepipe-fire-detector-[0-9a-f]{{6}}/\*", packages
    )
    assert _granted(statements, "sagemaker:PutRecord") == [
        (f"{SAGEMAKER}:feature-group/firepipe-sensor-features", None)
    ]
    # The run role also writes the lake and its own buckets: the ML bucket's objects are these.
    bucket = imported(template, {"Fn::GetAtt": [_bucket_id(template), "Arn"]})
    ml_objects = [
        r
        for resources, _ in _granted(statements, "s3:PutObject")
        for r in _list(resources)
        if isinstance(r, dict) and r.get("Fn::Join", ["", [None]])[1][0] == bucket
    ]
    assert sorted(r["Fn::Join"][1][1] for r in ml_objects) == [
        "/mlflow/*",
        "/serving/*",
        "/training/*",
    ]
    assert not any(a.startswith("sagemaker:Delete") for s in statements for a in _actions(s))
    assert not [
        s
        for s in statements
        if any(a.startswith("s3:Delete") for a in _actions(s))
        and json.dumps(bucket) in json.dumps(s["Resource"])
    ]


def test_grant_use_passes_exactly_the_three_execution_roles_to_sagemaker(template, run_role):
    # The run role's PassRole statement naming roles of the ML stack (compute passes its own).
    [(roles, condition)] = [
        (resources, condition)
        for resources, condition in _granted(run_role, "iam:PassRole")
        if "firepipe-dev-ml:" in json.dumps(resources)
    ]
    assert condition == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert sorted(map(json.dumps, roles)) == sorted(
        json.dumps(
            imported(
                template,
                {
                    "Fn::GetAtt": [
                        _one(template, "AWS::IAM::Role", f"MachineLearning{name}")[0],
                        "Arn",
                    ]
                },
            )
        )
        for name in ("TrainingRole", "ServingRole", "FeatureStoreRole")
    )


def test_grant_use_writes_the_grantees_policy_only(synthesised, template):
    """No bucket or key policy names the grantee (Dagster's run role, of a later stack: a
    reference would make a cycle): the bucket's policy keeps the TLS deny and dev's
    auto-delete only."""
    [policy] = template.find_resources("AWS::S3::BucketPolicy").values()
    assert "OrchestrationRunRole" not in json.dumps(policy)
    [auto_delete] = [
        k for k in template.find_resources("AWS::IAM::Role") if k.startswith("CustomS3AutoDelete")
    ]
    assert [s["Principal"] for s in policy["Properties"]["PolicyDocument"]["Statement"]] == [
        {"AWS": "*"},
        {"AWS": {"Fn::GetAtt": [auto_delete, "Arn"]}},
    ]
    assert "orchestration" not in json.dumps(template.to_json())
    security = synthesised.template("firepipe-dev-security").to_json()
    assert "firepipe-dev-ml" not in json.dumps(security)
