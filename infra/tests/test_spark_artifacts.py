"""The Spark engines' code (spark_code.py): built at synthesis, staged as an asset and deployed
by the compute stack at the keys it hands the engines."""

import json
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
from aws_cdk import Stack
from firepipe_infra.config import ConfigError
from firepipe_infra.spark import SPARK_PYTHON
from firepipe_infra.spark_code import firepipe_wheel, spark_code

ROOT = Path(__file__).resolve().parents[2]
LAKE_BUCKET = {
    "Fn::ImportValue": "firepipe-dev-lake:ExportsOutputRefLakeLakeBucket24430E3D56A8127A"
}
DEPLOYED_NAME = "firepipe-dev-lake-bucket"  # a stand-in for what CloudFormation writes in


@pytest.fixture(scope="module")
def deployment(synthesised):
    template = synthesised.template("firepipe-dev-compute").to_json()
    [properties] = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "Custom::CDKBucketDeployment"
    ]
    return properties


@pytest.fixture(scope="module")
def deployed(synthesised, deployment, tmp_path_factory):
    """What the deployment leaves under the lake bucket's artifacts/: each source asset's files,
    with the deploy-time markers written in as the function writes them."""
    out = tmp_path_factory.mktemp("artifacts")
    for key, markers in zip(
        deployment["SourceObjectKeys"], deployment["SourceMarkers"], strict=True
    ):
        staged = synthesised.outdir / f"asset.{key.removesuffix('.zip')}"
        for path in staged.rglob("*"):
            if path.is_file():
                target = out / path.relative_to(staged)
                target.parent.mkdir(parents=True, exist_ok=True)
                data = path.read_bytes()
                for marker, value in markers.items():
                    assert value == LAKE_BUCKET, (marker, value)
                    data = data.replace(marker.encode(), DEPLOYED_NAME.encode())
                target.write_bytes(data)
    return out


def _key(value) -> str:
    """The object key of an s3://<bucket>/<key> URI the stack builds (a Fn::Join)."""
    joined = "".join(p if isinstance(p, str) else "<bucket>" for p in value["Fn::Join"][1])
    assert joined.startswith("s3://<bucket>/"), joined
    return joined.removeprefix("s3://<bucket>/")


def test_the_deployment_writes_artifacts_of_the_lake_bucket_and_prunes_the_rest(deployment):
    assert deployment["DestinationBucketName"] == LAKE_BUCKET
    assert deployment["DestinationBucketKeyPrefix"] == "artifacts/"
    assert deployment["Prune"] is True
    assert deployment["RetainOnDelete"] is True
    assert len(deployment["SourceObjectKeys"]) == 2  # the code, and the bootstrap script


def test_every_key_the_engines_are_given_is_deployed(synthesised, deployed):
    compute = synthesised.stacks["dev"].compute.compute
    stack = Stack.of(compute)
    environment = {k: stack.resolve(v) for k, v in compute.environment.items()}
    keys = {
        _key(environment["FIREPIPE_EMR_ENTRY_POINT"]),
        _key(environment["FIREPIPE_EMR_BOOTSTRAP_SCRIPT"]),
        _key(stack.resolve(compute.spark.wheel)),
    }
    assert keys == {
        "artifacts/spark/spark_features.py",
        "artifacts/emr/bootstrap.sh",
        f"artifacts/spark/{firepipe_wheel()}",
    }
    laid_out = {str(p.relative_to(deployed)) for p in deployed.rglob("*") if p.is_file()}
    assert laid_out == {key.removeprefix("artifacts/") for key in keys}
    entry = deployed / "spark" / "spark_features.py"
    assert entry.read_bytes() == (ROOT / "firepipe/services/spark_features.py").read_bytes()


def test_the_wheel_is_firepipe_at_its_version_with_the_entry_points_module(deployed):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with zipfile.ZipFile(deployed / "spark" / firepipe_wheel()) as wheel:
        names = set(wheel.namelist())
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert f"Version: {version}\n" in wheel.read(metadata).decode()
    assert "firepipe/services/spark_features.py" in names
    assert not any("__pycache__" in n for n in names)


def test_the_bootstrap_action_installs_the_wheel_where_the_steps_run_python(deployed):
    script = (deployed / "emr" / "bootstrap.sh").read_text()
    assert "@ARTIFACTS@" not in script
    assert "<<marker" not in script
    assert f'aws s3 cp "s3://{DEPLOYED_NAME}/artifacts/spark/"' in script
    assert f"ln -sf /usr/bin/python3.11 {SPARK_PYTHON}" in script
    assert f"sudo {SPARK_PYTHON} -m pip install" in script
    subprocess.run(["bash", "-n", str(deployed / "emr" / "bootstrap.sh")], check=True)


def test_the_deployment_function_touches_artifacts_only(synthesised, deployment):
    template = synthesised.template("firepipe-dev-compute").to_json()
    resources = template["Resources"]
    role = resources[deployment["ServiceToken"]["Fn::GetAtt"][0]]["Properties"]["Role"]
    [document] = [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy" and role["Fn::GetAtt"][0] in json.dumps(r)
    ]
    # No AWSLambdaBasicExecutionRole: the function writes its own log group only.
    assert "ManagedPolicyArns" not in resources[role["Fn::GetAtt"][0]]["Properties"]
    lake_arn = "firepipe-dev-lake:ExportsOutputFnGetAttLakeLakeBucket24430E3DArnB19AD76C"
    writes = [
        s for s in document["Statement"] if {"s3:PutObject", "s3:DeleteObject"} & set(s["Action"])
    ]
    assert writes == [
        {
            "Action": [
                "s3:AbortMultipartUpload",
                "s3:DeleteObject",
                "s3:GetObject",
                "s3:PutObject",
            ],
            "Effect": "Allow",
            "Resource": {"Fn::Join": ["", [{"Fn::ImportValue": lake_arn}, "/artifacts/*"]]},
        }
    ]
    on_lake = [s for s in document["Statement"] if lake_arn in json.dumps(s["Resource"])]
    assert all("artifacts/*" in json.dumps(s) for s in on_lake), on_lake  # keys or prefix
    # The CDK's assets bucket, where both sources are staged: read only.
    [staged] = [s for s in document["Statement"] if "cdk-hnb659fds-assets" in json.dumps(s)]
    assert staged["Action"] == "s3:GetObject"


def test_a_missing_uv_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("UV", str(tmp_path / "no-uv"))
    with pytest.raises(ConfigError, match=r"no uv at .*no-uv"):
        spark_code.__wrapped__()
