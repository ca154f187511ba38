"""The model endpoint port: where the champion serves, and gold scored by it in batch.

- `LocalModelEndpoint`: a deployment is a row in a SQLite file under FIREPIPE_HOME (the
  version, its model URI, when), the one `firepipe serve --model <model_uri>` serves; batch
  scoring runs in process (`firepipe.core.serving.batch`).
- `SageMakerEndpoint`: a SageMaker model (the serving image, the saved detector as
  model.tar.gz in S3, the execution role), an endpoint config and the endpoint, created, or
  updated in place: a new config, then UpdateEndpoint, SageMaker's blue/green deployment, which
  keeps the old fleet serving until the new one answers its health checks and rolls back when
  it does not. Target-tracking autoscaling on invocations per instance through Application
  Auto Scaling. Batch scoring is a batch transform job over silver's readings; the container
  computes gold's features from them itself. The SDK (sagemaker-core's resources) is imported
  inside the methods: it takes seconds to import.

Both refuse a version whose approval status is not Approved.
"""

import contextlib
import hashlib
import io
import sqlite3
import tarfile
import time
from abc import ABC, abstractmethod
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from firepipe.core.history import timestamp_text
from firepipe.core.serving import batch
from firepipe.core.serving.scoring import load_serving_model
from firepipe.core.training.promotion import APPROVED, ApprovalError
from firepipe.lib import sqlite_state
from firepipe.lib.aws_env import MODEL_VERSION_VAR
from firepipe.lib.s3 import object_exists
from firepipe.resources.registry import ModelVersionInfo

DEFAULT_ENDPOINT = "firepipe-fire-detector"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
TRANSITIONAL = ("Creating", "Updating", "SystemUpdating", "RollingBack")
# A mini-batch of a transform job is one request: under the container's 6 MiB body limit,
# however SageMaker counts a megabyte.
TRANSFORM_PAYLOAD_MB = 5
MAX_NAME_CHARS = 63  # SageMaker's models, endpoint configs, endpoints and jobs


class EndpointError(RuntimeError):
    """A deployment or a transform job failed, or the endpoint is in no state to take one."""


@dataclass(frozen=True)
class ChampionModel:
    info: ModelVersionInfo
    model_dir: Path  # the saved detector, as `ModelRegistry.download_model` gives it

    @property
    def version(self) -> str:
        """As predictions name it: "firepipe-fire-detector/7"."""
        return f"{self.info.name}/{self.info.version}"


@dataclass(frozen=True)
class Deployment:
    endpoint_name: str
    model_version: str
    model_uri: str  # models:/<name>/<version>
    model_data: str  # what the server loads: the model URI locally, the archive's s3:// URI
    deployed_at: str


@dataclass(frozen=True)
class DeployOutcome:
    deployment: Deployment
    action: str  # "created", "updated" or "unchanged" (that version already serves)


def require_approved(champion: ChampionModel) -> None:
    status = champion.info.approval_status
    if status != APPROVED:
        raise ApprovalError(f"{champion.version} is {status}, not {APPROVED}: it is not served")


class ModelEndpoint(dg.ConfigurableResource, ABC):
    endpoint_name: str = Field(default=DEFAULT_ENDPOINT, description="the endpoint's name")

    @abstractmethod
    def deploy(self, champion: ChampionModel) -> DeployOutcome:
        """Serve `champion` (Approved only) at the endpoint, in place of what it served."""

    @abstractmethod
    def current(self) -> Deployment | None:
        """What the endpoint serves now; None when it was never deployed."""

    @abstractmethod
    def score(
        self, champion: ChampionModel, features: pl.LazyFrame, readings: pl.LazyFrame
    ) -> pl.DataFrame:
        """`batch.SCORE_SCHEMA` rows, one per gold row: `features` is gold and `readings` the
        silver it was computed from (each implementation reads what it needs)."""

    @abstractmethod
    def describe(self) -> str: ...


class LocalModelEndpoint(ModelEndpoint):
    """Deployments recorded in a SQLite file; batch scoring in process."""

    path: str = Field(description="the SQLite record of deployments; created on first deploy")

    def _connect(self) -> sqlite3.Connection:
        return sqlite_state.connect(
            self.path,
            "CREATE TABLE IF NOT EXISTS deployments (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "endpoint_name TEXT NOT NULL, model_version TEXT NOT NULL, model_uri TEXT NOT NULL, "
            "model_data TEXT NOT NULL, deployed_at TEXT NOT NULL)",
        )

    def deploy(self, champion: ChampionModel) -> DeployOutcome:
        require_approved(champion)
        current = self.current()
        if current is not None and current.model_version == champion.version:
            return DeployOutcome(current, "unchanged")
        uri = champion.info.uri
        deployment = Deployment(
            self.endpoint_name, champion.version, uri, uri, timestamp_text(datetime.now(UTC))
        )
        with closing(self._connect()) as connection, connection:
            connection.execute(
                "INSERT INTO deployments (endpoint_name, model_version, model_uri, model_data, "
                "deployed_at) VALUES (?, ?, ?, ?, ?)",
                [self.endpoint_name, deployment.model_version, uri, uri, deployment.deployed_at],
            )
        return DeployOutcome(deployment, "created" if current is None else "updated")

    def current(self) -> Deployment | None:
        if not Path(self.path).exists():
            return None
        with closing(self._connect()) as connection:
            row = connection.execute(
                "SELECT endpoint_name, model_version, model_uri, model_data, deployed_at "
                "FROM deployments WHERE endpoint_name = ? ORDER BY id DESC LIMIT 1",
                [self.endpoint_name],
            ).fetchone()
        return Deployment(*row) if row else None

    def score(
        self, champion: ChampionModel, features: pl.LazyFrame, readings: pl.LazyFrame
    ) -> pl.DataFrame:
        require_approved(champion)
        model = load_serving_model(champion.model_dir, champion.version)
        return batch.score_features(features, model, batch.device_profiles(readings))

    def describe(self) -> str:
        return f"local endpoint {self.endpoint_name} recorded in {self.path}"


def sagemaker_name(base: str, suffix: str) -> str:
    """`base`-`suffix` within SageMaker's 63 characters (base cut to fit)."""
    room = MAX_NAME_CHARS - len(suffix) - 1
    if room < 1:
        raise ValueError(f"name suffix {suffix!r} leaves no room for a name")
    return f"{base[:room].rstrip('-')}-{suffix}"


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:8]


def _missing(error: Exception) -> bool:
    """A ClientError that says the SageMaker resource does not exist."""
    details = getattr(error, "response", {}).get("Error", {})
    code, message = details.get("Code"), str(details.get("Message", ""))
    return code == "ResourceNotFound" or (
        code == "ValidationException" and "Could not find" in message
    )


def model_archive(model_dir: Path) -> bytes:
    """The saved detector as the model.tar.gz SageMaker unpacks into /opt/ml/model."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                archive.add(path, arcname=str(path.relative_to(model_dir)))
    return buffer.getvalue()


class SageMakerEndpoint(ModelEndpoint):
    """A SageMaker real-time endpoint serving the firepipe inference image (`image_uri`), and
    batch transform jobs of the same SageMaker model. One model per version and image
    (`<endpoint>-v<version>-<hash>`), one endpoint config per model and variant settings."""

    region: str
    role_arn: str = Field(description="the execution role of the SageMaker models")
    image_uri: str = Field(description="the firepipe inference image (its `serve` command)")
    bucket: str = Field(description="S3 bucket of model archives and transform input/output")
    prefix: str = "serving"
    variant_name: str = "AllTraffic"
    instance_type: str = "ml.c5.large"
    initial_instance_count: int = Field(default=1, ge=1)
    min_instances: int = Field(default=1, ge=1)
    # One by default: each instance holds its own devices' recent readings, so an endpoint of
    # several serves correct features only to clients that keep each device on one instance
    # (a SageMaker stateful session per gateway: docs/serving.md). Raise it for those.
    max_instances: int = Field(default=1, ge=1)
    # SageMakerVariantInvocationsPerInstance is per minute. The service answers about 1,000
    # single-reading requests a second on two cores (firepipe bench serve): a third of that
    # leaves room for bursts while a new instance starts.
    invocations_per_instance: float = Field(default=20_000.0, gt=0)
    scale_in_cooldown_s: int = 300
    scale_out_cooldown_s: int = 60
    transform_instance_type: str = "ml.c5.xlarge"
    transform_instance_count: int = Field(default=1, ge=1)
    transform_file_rows: int = Field(default=batch.TRANSFORM_FILE_ROWS, ge=1)
    poll_interval_s: float = 30.0
    wait_timeout_s: float = 3_600.0

    def _session(self) -> Any:
        import boto3

        return boto3.Session(region_name=self.region)

    def _sdk(self, session: Any) -> dict[str, Any]:
        return {"session": session, "region": self.region}

    def _model_data(self, s3: Any, champion: ChampionModel) -> str:
        """The saved detector as model.tar.gz in S3, uploaded once per version."""
        key = f"{self.prefix}/models/{champion.info.name}/{champion.info.version}/model.tar.gz"
        if not object_exists(s3, self.bucket, key):
            s3.put_object(Bucket=self.bucket, Key=key, Body=model_archive(champion.model_dir))
        return f"s3://{self.bucket}/{key}"

    def _model(self, session: Any, champion: ChampionModel, model_data: str) -> str:
        """The SageMaker model of this version and image, created when missing."""
        from botocore.exceptions import ClientError
        from sagemaker.core.resources import Model
        from sagemaker.core.shapes import ContainerDefinition, Tag

        environment = {MODEL_VERSION_VAR: champion.version}
        settings = (self.image_uri, model_data, self.role_arn, sorted(environment.items()))
        name = sagemaker_name(self.endpoint_name, f"v{champion.info.version}-{_digest(settings)}")
        try:
            Model.get(model_name=name, **self._sdk(session))
        except ClientError as error:
            if not _missing(error):
                raise
            Model.create(
                model_name=name,
                primary_container=ContainerDefinition(
                    image=self.image_uri, model_data_url=model_data, environment=environment
                ),
                execution_role_arn=self.role_arn,
                tags=[Tag(key="firepipe:model-version", value=champion.version)],
                **self._sdk(session),
            )
        return name

    def _config(self, session: Any, champion: ChampionModel, model_name: str) -> str:
        from botocore.exceptions import ClientError
        from sagemaker.core.resources import EndpointConfig
        from sagemaker.core.shapes import ProductionVariant

        variant = (model_name, self.variant_name, self.instance_type, self.initial_instance_count)
        name = sagemaker_name(self.endpoint_name, f"v{champion.info.version}-{_digest(variant)}")
        try:
            EndpointConfig.get(endpoint_config_name=name, **self._sdk(session))
        except ClientError as error:
            if not _missing(error):
                raise
            EndpointConfig.create(
                endpoint_config_name=name,
                production_variants=[
                    ProductionVariant(
                        variant_name=self.variant_name,
                        model_name=model_name,
                        instance_type=self.instance_type,
                        initial_instance_count=self.initial_instance_count,
                        initial_variant_weight=1.0,
                    )
                ],
                **self._sdk(session),
            )
        return name

    def _endpoint(self, session: Any) -> Any:
        """The endpoint, None when it does not exist."""
        from botocore.exceptions import ClientError
        from sagemaker.core.resources import Endpoint

        try:
            return Endpoint.get(endpoint_name=self.endpoint_name, **self._sdk(session))
        except ClientError as error:
            if _missing(error):
                return None
            raise

    def _wait(self, resource: Any, status_of: str, waiting: tuple[str, ...], what: str) -> str:
        """Poll until the resource's status leaves `waiting`; a wait past wait_timeout_s raises.
        (The SDK's own waits draw a terminal progress panel.)"""
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            resource.refresh()
            status = str(getattr(resource, status_of))
            if status not in waiting:
                return status
            if time.monotonic() > deadline:
                raise EndpointError(f"{what} still {status} after {self.wait_timeout_s:.0f} s")
            time.sleep(self.poll_interval_s)

    def _scalable_target(self) -> dict[str, str]:
        return {
            "ServiceNamespace": "sagemaker",
            "ResourceId": f"endpoint/{self.endpoint_name}/variant/{self.variant_name}",
            "ScalableDimension": SCALABLE_DIMENSION,
        }

    def _autoscale(self, session: Any) -> None:
        """Target tracking on invocations per instance; both calls replace what was there."""
        if not self.min_instances <= self.max_instances:
            raise ValueError(f"min_instances {self.min_instances} > max {self.max_instances}")
        scaling = session.client("application-autoscaling")
        target = self._scalable_target()
        scaling.register_scalable_target(
            **target, MinCapacity=self.min_instances, MaxCapacity=self.max_instances
        )
        scaling.put_scaling_policy(
            PolicyName=f"{self.endpoint_name}-invocations-per-instance",
            PolicyType="TargetTrackingScaling",
            **target,
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": self.invocations_per_instance,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                "ScaleInCooldown": self.scale_in_cooldown_s,
                "ScaleOutCooldown": self.scale_out_cooldown_s,
            },
        )

    def _release_autoscaling_for_new_instance_type(self, session: Any, endpoint: Any) -> None:
        """UpdateEndpoint refuses to change the instance type of a variant that autoscales
        (a new model alone is allowed): its target is deregistered first (with its policy),
        and registered again once the endpoint serves."""
        from sagemaker.core.resources import EndpointConfig

        config = EndpointConfig.get(
            endpoint_config_name=endpoint.endpoint_config_name, **self._sdk(session)
        )
        types = {v.variant_name: v.instance_type for v in config.production_variants}
        if types.get(self.variant_name, self.instance_type) == self.instance_type:
            return
        scaling = session.client("application-autoscaling")
        with contextlib.suppress(scaling.exceptions.ObjectNotFoundException):
            scaling.deregister_scalable_target(**self._scalable_target())

    def deploy(self, champion: ChampionModel) -> DeployOutcome:
        from sagemaker.core.resources import Endpoint

        require_approved(champion)
        session = self._session()
        model_data = self._model_data(session.client("s3"), champion)
        config_name = self._config(session, champion, self._model(session, champion, model_data))
        endpoint = self._endpoint(session)
        what = f"endpoint {self.endpoint_name}"
        if endpoint is None:
            endpoint = Endpoint.create(
                endpoint_name=self.endpoint_name,
                endpoint_config_name=config_name,
                **self._sdk(session),
            )
            action = "created"
        else:
            status = self._wait(endpoint, "endpoint_status", TRANSITIONAL, what)
            if status != "InService":
                raise EndpointError(
                    f"{what} is {status} ({endpoint.failure_reason or 'no reason given'}): "
                    "only an endpoint in service is updated; delete it to deploy afresh"
                )
            action = "unchanged"
            if endpoint.endpoint_config_name != config_name:
                self._release_autoscaling_for_new_instance_type(session, endpoint)
                endpoint.endpoint_config_name = config_name
                # The instance count autoscaling chose stays; the new config's count is for a
                # new endpoint.
                endpoint.update(retain_all_variant_properties=True)
                action = "updated"
        status = self._wait(endpoint, "endpoint_status", TRANSITIONAL, what)
        if status != "InService" or endpoint.endpoint_config_name != config_name:
            raise EndpointError(
                f"{what} did not take {champion.version}: {status}, serving config "
                f"{endpoint.endpoint_config_name} ({endpoint.failure_reason or 'no reason given'})"
            )
        self._autoscale(session)
        deployment = Deployment(
            self.endpoint_name,
            champion.version,
            champion.info.uri,
            model_data,
            timestamp_text(endpoint.last_modified_time),
        )
        return DeployOutcome(deployment, action)

    def current(self) -> Deployment | None:
        from sagemaker.core.resources import EndpointConfig, Model

        session = self._session()
        endpoint = self._endpoint(session)
        if endpoint is None:
            return None
        config = EndpointConfig.get(
            endpoint_config_name=endpoint.endpoint_config_name, **self._sdk(session)
        )
        (variant,) = [v for v in config.production_variants if v.variant_name == self.variant_name]
        container = Model.get(model_name=variant.model_name, **self._sdk(session)).primary_container
        version = container.environment[MODEL_VERSION_VAR]
        return Deployment(
            self.endpoint_name,
            version,
            f"models:/{version}",
            container.model_data_url,
            timestamp_text(endpoint.last_modified_time),
        )

    def score(
        self, champion: ChampionModel, features: pl.LazyFrame, readings: pl.LazyFrame
    ) -> pl.DataFrame:
        """A batch transform job of the champion's model over silver's non-gap readings; each
        file is whole devices in time order, sent a mini-batch at a time to one container
        (MaxConcurrentTransforms 1), so the container sees each device's readings in order."""
        from sagemaker.core.resources import TransformJob
        from sagemaker.core.shapes import (
            TransformDataSource,
            TransformInput,
            TransformOutput,
            TransformResources,
            TransformS3DataSource,
        )

        require_approved(champion)
        session = self._session()
        s3 = session.client("s3")
        model_name = self._model(session, champion, self._model_data(s3, champion))
        started = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        job_name = sagemaker_name(self.endpoint_name, f"scores-{started}")
        folder = f"{self.prefix}/transform/{job_name}"
        sent: dict[str, pl.DataFrame] = {}
        files = batch.transform_files(batch.transform_readings(readings), self.transform_file_rows)
        for number, part in enumerate(files):
            name = f"part-{number:05d}.jsonl"
            s3.put_object(Bucket=self.bucket, Key=f"{folder}/input/{name}", Body=part.body)
            sent[name] = part.keys
        if not sent:
            return pl.DataFrame(schema=batch.SCORE_SCHEMA)
        job = TransformJob.create(
            transform_job_name=job_name,
            model_name=model_name,
            transform_input=TransformInput(
                data_source=TransformDataSource(
                    s3_data_source=TransformS3DataSource(
                        s3_data_type="S3Prefix", s3_uri=f"s3://{self.bucket}/{folder}/input/"
                    )
                ),
                content_type="application/jsonlines",
                split_type="Line",
            ),
            transform_output=TransformOutput(
                s3_output_path=f"s3://{self.bucket}/{folder}/output/",
                accept="application/jsonlines",
                assemble_with="Line",
            ),
            transform_resources=TransformResources(
                instance_type=self.transform_instance_type,
                instance_count=self.transform_instance_count,
            ),
            batch_strategy="MultiRecord",
            max_payload_in_mb=TRANSFORM_PAYLOAD_MB,
            max_concurrent_transforms=1,
            **self._sdk(session),
        )
        self._finish(job, f"transform job {job_name}")
        # The output of input/<name> is output/<name>.out, line i answering line i.
        frames = [
            batch.read_transform_output(
                keys,
                s3.get_object(Bucket=self.bucket, Key=f"{folder}/output/{name}.out")["Body"].read(),
            )
            for name, keys in sent.items()
        ]
        return pl.concat(frames).sort("device_id", "ts")

    def _finish(self, job: Any, what: str) -> None:
        """Wait for the job; one given up on (timed out, or the run interrupted) is stopped."""
        try:
            status = self._wait(job, "transform_job_status", ("InProgress", "Stopping"), what)
        except BaseException:
            with contextlib.suppress(Exception):
                job.stop()
            raise
        if status != "Completed":
            raise EndpointError(f"{what} ended {status}: {job.failure_reason or 'no reason given'}")

    def describe(self) -> str:
        return f"SageMaker endpoint {self.endpoint_name} ({self.region})"
