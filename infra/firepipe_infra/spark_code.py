"""The code the Spark engines run, built when the app is synthesised and deployed by the compute
stack into `artifacts/` of the lake bucket, so every deployment (the GitHub workflow's and the
CDK pipeline's alike) ships the engines the code of its own commit:

- `artifacts/spark/spark_features.py`: the entry point (firepipe/services/spark_features.py),
  also the Glue job's script;
- `artifacts/spark/firepipe-<version>-py3-none-any.whl`: firepipe's wheel, which the Glue job
  installs and EMR's bootstrap action installs on every node;
- `artifacts/emr/bootstrap.sh`: EMR on EC2's bootstrap action (artifacts/emr-bootstrap.sh, with
  the bucket's name written in when it is deployed).

The wheel is built with uv (hatchling builds it byte for byte the same from the same tree), so
the asset's hash, and with it the deployment, changes only when firepipe's code does. A
BucketDeployment copies the files and prunes what a previous commit left under `artifacts/`; its
function's role may touch `artifacts/` only (the construct's own grant would be the whole lake).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_s3_deployment as s3_deployment
from constructs import Construct

from firepipe_infra.config import ConfigError, EnvironmentConfig
from firepipe_infra.grants import ARTIFACTS_PREFIX, acknowledge_wildcards, grant_objects
from firepipe_infra.lake import Lake
from firepipe_infra.security import Security

REPO_ROOT = Path(__file__).resolve().parents[2]
FIREPIPE_PYPROJECT = REPO_ROOT / "pyproject.toml"
ENTRY_POINT = REPO_ROOT / "firepipe" / "services" / "spark_features.py"
EMR_BOOTSTRAP = REPO_ROOT / "infra" / "artifacts" / "emr-bootstrap.sh"
BOOTSTRAP_MARKER = "@ARTIFACTS@"  # where the bootstrap script takes the artifacts' location
# The Makefile's uv (make infra/.venv/.synced installs it), unless UV names another.
UV = REPO_ROOT / ".tools" / "bin" / "uv"
BUILD_TIMEOUT_S = 600
# The function unzips the code into its /tmp: a wheel under a megabyte, well inside the defaults.
DEPLOYMENT_MEMORY_MB = 256


def firepipe_wheel() -> str:
    """The file name of firepipe's wheel at the version of firepipe's pyproject.toml."""
    project = tomllib.loads(FIREPIPE_PYPROJECT.read_text())["project"]
    name = project["name"].replace("-", "_")
    return f"{name}-{project['version']}-py3-none-any.whl"


@functools.cache
def spark_code() -> Path:
    """A folder with `spark/spark_features.py` and `spark/<firepipe's wheel>`, built once per
    synthesis (every environment deploys the same files) and removed when the process ends."""
    uv = Path(os.environ.get("UV") or UV)
    if not uv.is_file():
        raise ConfigError(
            f"the Spark engines' code: no uv at {uv} to build firepipe's wheel "
            "(run `make synth`, which installs it, or set UV)"
        )
    out = Path(tempfile.mkdtemp(prefix="firepipe-spark-code-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    spark = out / "spark"
    spark.mkdir()
    try:
        built = subprocess.run(
            [str(uv), "build", "--wheel", "--quiet", "--out-dir", str(spark), str(REPO_ROOT)],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"the Spark engines' code: `uv build --wheel` took over {BUILD_TIMEOUT_S} s"
        ) from None
    if built.returncode != 0:
        raise ConfigError(f"the Spark engines' code: `uv build --wheel` failed:\n{built.stderr}")
    (spark / ".gitignore").unlink(missing_ok=True)  # uv marks its output folder
    wheels = sorted(p.name for p in spark.glob("*.whl"))
    if wheels != [firepipe_wheel()]:
        raise ConfigError(f"the Spark engines' code: expected {firepipe_wheel()}, built {wheels}")
    shutil.copy2(ENTRY_POINT, spark / ENTRY_POINT.name)
    return out


class SparkCode(Construct):
    """Deploys spark_code() and the EMR bootstrap script under `artifacts/` of the lake bucket."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        security: Security,
        lake: Lake,
    ) -> None:
        super().__init__(scope, id)
        bucket = lake.lake_bucket
        self.prefix = f"{ARTIFACTS_PREFIX}/"
        self.entry_point = bucket.s3_url_for_object(f"{self.prefix}spark/{ENTRY_POINT.name}")
        self.wheel = bucket.s3_url_for_object(f"{self.prefix}spark/{firepipe_wheel()}")
        self.bootstrap_script = bucket.s3_url_for_object(f"{self.prefix}emr/bootstrap.sh")
        self.asset = s3_assets.Asset(self, "Code", path=str(spark_code()))

        self.role = iam.Role(
            self,
            "DeploymentRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{config.prefix}: deploys the Spark engines' code into artifacts/",
        )
        grant_objects(
            self.role, bucket, security.data_key, self.prefix, read=True, write=True, delete=True
        )
        # Both sources (the code and the bootstrap script, written by Source.data) are staged
        # in the CDK's assets bucket under their content hashes.
        iam.Grant.add_to_principal(
            grantee=self.role,
            actions=["s3:GetObject"],
            resource_arns=[self.asset.bucket.arn_for_objects("*")],
        )
        self.log_group = logs.LogGroup(
            self,
            "DeploymentLogs",
            log_group_name=f"{config.prefix}/spark-code-deployment",
            encryption_key=security.logs_key,
            retention=config.log_retention,
            removal_policy=config.removal_policy,
        )
        self.log_group.grant_write(self.role)

        bootstrap = EMR_BOOTSTRAP.read_text()
        if BOOTSTRAP_MARKER not in bootstrap:
            raise ConfigError(f"{EMR_BOOTSTRAP} does not read {BOOTSTRAP_MARKER}")
        self.deployment = s3_deployment.BucketDeployment(
            self,
            "Deployment",
            destination_bucket=bucket,
            destination_key_prefix=self.prefix,
            sources=[
                s3_deployment.Source.bucket(self.asset.bucket, self.asset.s3_object_key),
                s3_deployment.Source.data(
                    "emr/bootstrap.sh",
                    bootstrap.replace(BOOTSTRAP_MARKER, bucket.s3_url_for_object(ARTIFACTS_PREFIX)),
                ),
            ],
            prune=True,  # drops the wheels and files a previous commit left
            retain_on_delete=True,
            # The construct's own grants would be the whole bucket: the role above is scoped to
            # artifacts/, and an immutable view of it makes the construct's grants no-ops.
            role=self.role.without_policy_updates(),
            log_group=self.log_group,
            memory_limit=DEPLOYMENT_MEMORY_MB,
        )
        acknowledge_wildcards(
            self.role.node.find_child("DefaultPolicy"),
            "The deployment function writes and prunes objects under artifacts/ of the lake "
            "bucket (their names come with each commit), reads the CDK assets bucket's staged "
            "sources (content-hashed keys) and writes its log group's streams.",
            [f"/{ARTIFACTS_PREFIX}/*", "/*", ":*"],
        )
        # The construct's function is one per stack (a singleton), made beside the stack's
        # other resources rather than under this construct.
        for function in Stack.of(self).node.children:
            if isinstance(function, lambda_.Function) and function.node.id.startswith(
                "Custom::CDKBucketDeployment"
            ):
                Validations.of(function).acknowledge(
                    Acknowledgment(
                        id="AwsSolutions-L1",
                        reason="The CDK's BucketDeployment function: its runtime is the one the "
                        "construct's AWS CLI layer is built for, which aws-cdk-lib moves on.",
                    )
                )
