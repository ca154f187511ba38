import re

import pytest
from aws_cdk.assertions import Match

DATA_KEY_IMPORT = {"Fn::ImportValue": Match.string_like_regexp("firepipe-dev-security:.*DataKey")}


@pytest.fixture(scope="module")
def dev(synthesised):
    return synthesised.template("firepipe-dev-lake")


@pytest.fixture(scope="module")
def buckets(dev):
    return dev.find_resources("AWS::S3::Bucket")


def _bucket(buckets, name):
    return next(v["Properties"] for k, v in buckets.items() if k.startswith(f"Lake{name}"))


def _logical_id(buckets, name):
    return next(k for k in buckets if k.startswith(f"Lake{name}"))


@pytest.mark.parametrize(
    ("name", "log_prefix"), [("LakeBucket", "lake/"), ("ResultsBucket", "results/")]
)
def test_data_buckets_are_encrypted_with_the_data_key_and_log_their_access(
    buckets, name, log_prefix
):
    bucket = _bucket(buckets, name)
    [encryption] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["BucketKeyEnabled"] is True
    default = encryption["ServerSideEncryptionByDefault"]
    assert default["SSEAlgorithm"] == "aws:kms"
    assert re.fullmatch(
        r"firepipe-dev-security:.*DataKey.*Arn.*", default["KMSMasterKeyID"]["Fn::ImportValue"]
    )
    assert bucket["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": _logical_id(buckets, "AccessLogs")},
        "LogFilePrefix": log_prefix,
    }


def test_access_logs_are_delivered_through_the_bucket_policy_with_acls_disabled(dev, buckets):
    access_logs = _bucket(buckets, "AccessLogs")
    assert access_logs["OwnershipControls"] == {
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]
    }
    assert "AccessControl" not in access_logs  # no LogDeliveryWrite ACL
    assert access_logs["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
    }
    [policy] = dev.find_resources(
        "AWS::S3::BucketPolicy",
        {"Properties": {"Bucket": {"Ref": _logical_id(buckets, "AccessLogs")}}},
    ).values()
    # Each data bucket's logs: written by the logging service, from that bucket, in this
    # account, under that bucket's prefix only. (Buckets of later stacks log here too, each
    # under its own prefix: their tests check their statements.)
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    logging = [
        s
        for s in statements
        if s.get("Principal") == {"Service": "logging.s3.amazonaws.com"}
        and s["Action"] == "s3:PutObject"
    ]
    assert all(
        s["Condition"]["StringEquals"] == {"aws:SourceAccount": "111111111111"} for s in logging
    )
    deliveries = {
        s["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::GetAtt"][0]: s["Resource"]["Fn::Join"][1]
        for s in logging
        if isinstance(s["Condition"]["ArnLike"]["aws:SourceArn"], dict)
        and "Fn::GetAtt" in s["Condition"]["ArnLike"]["aws:SourceArn"]
    }
    access_logs_arn = {"Fn::GetAtt": [_logical_id(buckets, "AccessLogs"), "Arn"]}
    assert deliveries == {
        _logical_id(buckets, "LakeBucket"): [access_logs_arn, "/lake/*"],
        _logical_id(buckets, "ResultsBucket"): [access_logs_arn, "/results/*"],
    }


def test_every_bucket_is_versioned_private_and_denies_plain_http(dev, buckets):
    assert len(buckets) == 3
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    policies = dev.find_resources("AWS::S3::BucketPolicy")
    denied = set()
    for policy in policies.values():
        for s in policy["Properties"]["PolicyDocument"]["Statement"]:
            if s["Effect"] == "Deny" and s["Condition"] == {
                "Bool": {"aws:SecureTransport": "false"}
            }:
                denied.add(policy["Properties"]["Bucket"]["Ref"])
    assert denied == set(buckets)


def test_lifecycle_expires_ingested_landing_files_and_old_versions(buckets):
    rules = {
        r.get("Id"): r for r in _bucket(buckets, "LakeBucket")["LifecycleConfiguration"]["Rules"]
    }
    assert rules["expire-ingested-landing-files"]["Prefix"] == "landing/incoming/"
    assert rules["expire-ingested-landing-files"]["ExpirationInDays"] == 30
    assert rules["expire-old-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 7}
    results = _bucket(buckets, "ResultsBucket")["LifecycleConfiguration"]["Rules"]
    assert {"ExpirationInDays": 7, "Status": "Enabled"}.items() <= results[0].items()


def test_glue_databases_are_the_iceberg_namespaces_under_the_warehouse(dev):
    databases = dev.find_resources("AWS::Glue::Database")
    inputs = {
        d["Properties"]["DatabaseInput"]["Name"]: d["Properties"]["DatabaseInput"]
        for d in databases.values()
    }
    assert sorted(inputs) == ["analytics", "bronze", "gold", "ml", "silver"]
    location = inputs["silver"]["LocationUri"]["Fn::Join"][1]
    assert location[0] == "s3://"
    assert location[-1] == "/warehouse/silver.db"


def test_athena_workgroup_enforces_its_kms_encrypted_result_location(dev):
    dev.has_resource_properties(
        "AWS::Athena::WorkGroup",
        {
            "Name": "firepipe-dev",
            "WorkGroupConfiguration": Match.object_like(
                {
                    "EnforceWorkGroupConfiguration": True,
                    "BytesScannedCutoffPerQuery": 10 * 1024**3,
                    "ResultConfiguration": {
                        "OutputLocation": {
                            "Fn::Join": [
                                "",
                                [
                                    "s3://",
                                    {"Ref": Match.string_like_regexp("^LakeResultsBucket")},
                                    "/athena/",
                                ],
                            ]
                        },
                        "EncryptionConfiguration": {
                            "EncryptionOption": "SSE_KMS",
                            "KmsKey": DATA_KEY_IMPORT,
                        },
                    },
                }
            ),
        },
    )


def test_outputs_are_named_after_firepipes_variables(dev):
    outputs = dev.find_outputs("*")
    named = {
        o["Description"].split(":")[0] for k, o in outputs.items() if not k.startswith("Exports")
    }
    assert named == {
        "FIREPIPE_LAKE_WAREHOUSE",
        "FIREPIPE_LANDING_BUCKET",
        "FIREPIPE_LANDING_PREFIX",
        "FIREPIPE_ATHENA_WORKGROUP",
        "FIREPIPE_ATHENA_OUTPUT_LOCATION",
        "FIREPIPE_WATERMARKS_TABLE",
    }
    assert outputs["FIREPIPELANDINGPREFIX"]["Value"] == "landing"
    assert outputs["FIREPIPEWATERMARKSTABLE"]["Value"] == {"Ref": "LakeWatermarks3AE400A4"}


def test_dev_buckets_are_emptied_before_deletion_and_prod_buckets_kept(synthesised, dev, buckets):
    """CloudFormation deletes only an empty bucket: dev's (DESTROY) are emptied by the CDK's
    auto-delete custom resource; prod's are retained and nothing may empty them."""
    emptied = dev.find_resources("Custom::S3AutoDeleteObjects")
    assert sorted(e["Properties"]["BucketName"]["Ref"] for e in emptied.values()) == sorted(buckets)
    assert {b["DeletionPolicy"] for b in buckets.values()} == {"Delete"}
    prod = synthesised.template("firepipe-prod-lake")
    prod.resource_count_is("Custom::S3AutoDeleteObjects", 0)
    prod.resource_count_is("AWS::Lambda::Function", 0)
    prod_buckets = prod.find_resources("AWS::S3::Bucket").values()
    assert {b["DeletionPolicy"] for b in prod_buckets} == {"Retain"}
