"""The model registry port: MLflow runs and registered versions of the fire detector.

- `LocalModelRegistry`: MLflow on a SQLite file with artifacts in a folder beside it
  (`$FIREPIPE_HOME/mlflow/mlflow.db`, `.../artifacts/`); no server process.
- `SageMakerModelRegistry`: the SageMaker managed MLflow tracking server, reached by its ARN
  through the sagemaker-mlflow plugin (it registers the `arn` tracking and registry stores).
  With automatic model registration on, each MLflow version also appears as a model package in
  the SageMaker Model Registry; approval is set there too, through boto3, since MLflow has no
  field for it.

One candidate = one MLflow run (metrics, params, tags, PNG plots under `plots/`) and one
registered version of the pyfunc in `firepipe.services.detector_model`, with its signature.
Version tags: feature_spec_hash, training_snapshot_id, git_sha, approval_status (and, once
reviewed, approval_reason / approval_at). The champion is the MLflow alias `champion`; only
`promote` moves it, and it records the version it replaced (tag `previous_champion`, alias
`previous_champion`, tag `superseded_by` on the old one).
"""

import hashlib
import importlib.metadata
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from firepipe.core.training.models import Detector
from firepipe.core.training.promotion import (
    APPROVED,
    PENDING,
    REJECTED,
    ApprovalError,
    check_approval_transition,
)

CHAMPION_ALIAS = "champion"
PREVIOUS_CHAMPION_ALIAS = "previous_champion"
APPROVAL_TAG = "approval_status"
REQUIRED_TAGS = ("feature_spec_hash", "training_snapshot_id", "git_sha")
EXPERIMENT = "firepipe-fire-detector"
MODEL_ARTIFACT_NAME = "detector"  # the logged model's name inside its run
PLOTS_DIR = "plots"
# MLflow accepts run tag values up to 8,000 characters (mlflow/utils/validation.py,
# MAX_TAG_VAL_LENGTH; registry tags allow more); reasons are cut to fit the smaller.
MAX_TAG_VALUE_CHARS = 8000
# SageMaker ApprovalDescription is at most 1,024 characters (API reference, UpdateModelPackage).
MAX_APPROVAL_DESCRIPTION_CHARS = 1024
# MLflow's log_batch takes at most 1,000 metrics a call (mlflow/utils/validation.py).
MAX_METRICS_PER_BATCH = 1000
# What the pyfunc needs at serving time; firepipe itself is in the serving image.
_SERVING_PACKAGES = ("mlflow-skinny", "lightgbm", "numpy", "pandas", "polars", "pyarrow")
_DETECTOR_FILE = "detector.json"  # Detector.save writes it (firepipe/core/training/models.py)
_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:(?P<region>[a-z0-9-]+):\d{12}:"
    r"(?P<kind>mlflow-tracking-server|mlflow-app)/(?P<name>[A-Za-z0-9-]+)$"
)


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: int
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def approval_status(self) -> str:
        return self.tags.get(APPROVAL_TAG, PENDING)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _serving_requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in _SERVING_PACKAGES]


def _check_plot_names(artifacts: Mapping[str, bytes]) -> None:
    for file_name in artifacts:
        if Path(file_name).name != file_name or not file_name.endswith(".png"):
            raise ValueError(f"plot artifact {file_name!r} must be a plain *.png file name")


@contextmanager
def _plots_folder(artifacts: Mapping[str, bytes]) -> Iterator[str | None]:
    """The PNG plots written into a scratch folder for log_artifacts; None when there are none."""
    if not artifacts:
        yield None
        return
    with tempfile.TemporaryDirectory() as folder:
        for file_name, data in artifacts.items():
            (Path(folder) / file_name).write_bytes(data)
        yield folder


def detector_directory(model_dir: Path) -> Path:
    """The saved Detector inside `model_dir`: the folder itself, or the artifact of an MLflow
    pyfunc model folder (as downloaded from the registry)."""
    if (model_dir / _DETECTOR_FILE).is_file():
        return model_dir
    if (model_dir / "MLmodel").is_file():
        from mlflow.models import Model

        flavor = Model.load(str(model_dir)).flavors.get("python_function", {})
        artifact = flavor.get("artifacts", {}).get(MODEL_ARTIFACT_NAME)
        if artifact is None:
            raise ValueError(f"{model_dir} is an MLflow model without a '{MODEL_ARTIFACT_NAME}'")
        return model_dir / artifact["path"]
    raise ValueError(f"{model_dir} holds neither {_DETECTOR_FILE} nor an MLflow model (MLmodel)")


class ModelRegistry(dg.ConfigurableResource, ABC):
    """Where detector candidates are logged, reviewed and promoted (MLflow semantics)."""

    experiment: str = Field(default=EXPERIMENT, description="MLflow experiment of the runs")

    @abstractmethod
    def _tracking_uri(self) -> str: ...

    def _artifact_location(self) -> str | None:
        """Where a new experiment keeps artifacts; None: the tracking server's default."""
        return None

    def _sync_approval(self, name: str, version: int, status: str, reason: str) -> None:
        """Mirror an approval outside MLflow (SageMaker Model Registry); nothing by default."""

    @abstractmethod
    def describe(self) -> str: ...

    # -- MLflow plumbing -------------------------------------------------------------------

    @contextmanager
    def _mlflow(self) -> Iterator[Any]:
        """MLflow's fluent API pointed at this registry for the block (restored afterwards)."""
        import mlflow
        import mlflow.artifacts
        import mlflow.pyfunc

        # Downloads draw progress bars on stderr: noise in Dagster logs and CLI output.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # Run from the checkout, MLflow copies firepipe's uv.lock and pyproject.toml into every
        # model (440 KB each): the model states its own serving requirements instead.
        os.environ.setdefault("MLFLOW_LOG_UV_FILES", "false")
        previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
        uri = self._tracking_uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield mlflow
        finally:
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])

    def _client(self) -> Any:
        from mlflow import MlflowClient

        uri = self._tracking_uri()
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def _experiment_id(self, client: Any) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        return str(client.create_experiment(self.experiment, self._artifact_location()))

    def _info(self, version: Any) -> ModelVersionInfo:
        return ModelVersionInfo(
            name=version.name,
            version=int(version.version),
            run_id=version.run_id or "",
            tags=dict(version.tags),
            aliases=tuple(version.aliases),
        )

    def version(self, name: str, version: int) -> ModelVersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self._client().get_model_version(name, str(version)))
        except MlflowException as error:
            if not _not_found(error):
                raise  # the server failed: not an answer about the version
            raise KeyError(f"no version {version} of registered model {name!r}") from error

    def latest_version(self, name: str) -> ModelVersionInfo | None:
        """The newest registered version of `name` (the last candidate logged), None when it
        has none."""
        if "'" in name:
            raise ValueError(f"a registered model's name has no quote: {name!r}")
        found = self._client().search_model_versions(
            f"name = '{name}'", max_results=1, order_by=["version_number DESC"]
        )
        # A search leaves the aliases out: the version itself carries them.
        return self.version(name, int(found[0].version)) if found else None

    # -- the interface -----------------------------------------------------------------------

    def log_candidate(
        self,
        detector_dir: Path,
        *,
        name: str,
        metrics: Mapping[str, float],
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        artifacts: Mapping[str, bytes],
        input_example: pl.DataFrame,
    ) -> ModelVersionInfo:
        """Log one run and register its pyfunc as a new version, PendingManualApproval.
        `artifacts` are PNG plots by file name; `tags` must hold REQUIRED_TAGS."""
        from firepipe.services.detector_model import (
            DETECTOR_ARTIFACT,
            DetectorModel,
            detector_signature,
            input_example_pandas,
        )

        missing = [tag for tag in REQUIRED_TAGS if not tags.get(tag)]
        if missing:
            raise ValueError(f"a candidate needs the tags {', '.join(missing)}")
        if APPROVAL_TAG in tags:
            raise ValueError(f"'{APPROVAL_TAG}' is set by the registry (set_approval), not a tag")
        _check_plot_names(artifacts)
        detector = Detector.load(detector_dir)
        signature = detector_signature(detector, input_example)
        all_tags = {**tags, APPROVAL_TAG: PENDING}
        client = self._client()
        experiment_id = self._experiment_id(client)
        with self._mlflow() as mlflow, mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.set_tags(all_tags)
            mlflow.log_params({key: str(value) for key, value in params.items()})
            mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
            with _plots_folder(artifacts) as plots:
                if plots:
                    mlflow.log_artifacts(plots, PLOTS_DIR)
            logged = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT_NAME,
                python_model=DetectorModel(),
                artifacts={DETECTOR_ARTIFACT: str(detector_dir)},
                signature=signature,
                input_example=input_example_pandas(detector, input_example.head(5)),
                pip_requirements=_serving_requirements(),
                registered_model_name=name,
            )
            run_id = run.info.run_id
        version = int(logged.registered_model_version)
        for key, value in all_tags.items():
            client.set_model_version_tag(name, str(version), key, value)
        return ModelVersionInfo(name=name, version=version, run_id=run_id, tags=all_tags)

    def set_approval(self, name: str, version: int, status: str, reason: str) -> None:
        """Move a version to `status` (one of APPROVAL_STATUSES), recording why. A version
        already at `status` stays there with the new reason (a decision taken again)."""
        current = self.version(name, version)
        if current.approval_status != status:
            check_approval_transition(current.approval_status, status)
            if status == REJECTED and CHAMPION_ALIAS in current.aliases:
                raise ApprovalError(
                    f"{name} version {version} is the champion: promote another version first"
                )
            self._sync_approval(name, version, status, reason)
        client = self._client()
        for key, value in {
            APPROVAL_TAG: status,
            "approval_reason": _cut(reason, MAX_TAG_VALUE_CHARS),
            "approval_at": _now(),
        }.items():
            client.set_model_version_tag(name, str(version), key, value)

    def champion(self, name: str) -> ModelVersionInfo | None:
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            return self._info(client.get_model_version_by_alias(name, CHAMPION_ALIAS))
        except MlflowException as error:
            if not _not_found(error):
                # A server or auth failure must not read as "no champion": the candidate would
                # be promoted on the floors alone.
                raise
            return None  # no such model, or no champion yet

    def promote(self, name: str, version: int, reason: str) -> None:
        """Make `version` the champion. A pending version is approved by the promotion (the
        champion/challenger decision is the review); a rejected one is refused."""
        candidate = self.version(name, version)
        if candidate.approval_status == REJECTED:
            raise ApprovalError(f"{name} version {version} is Rejected: it cannot be champion")
        previous = self.champion(name)
        if previous is not None and previous.version == version:
            return
        if candidate.approval_status == PENDING:
            self.set_approval(name, version, APPROVED, f"promoted to champion: {reason}")
        client = self._client()
        tags = {
            "promotion_reason": _cut(reason, MAX_TAG_VALUE_CHARS),
            "promoted_at": _now(),
            "previous_champion": str(previous.version) if previous else "none",
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, value)
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))
        if previous is not None:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION_ALIAS, str(previous.version))
            client.set_model_version_tag(name, str(previous.version), "superseded_by", str(version))

    def load_detector(self, uri: str) -> Detector:
        """The Detector at "models:/name@alias", "models:/name/N", another MLflow artifact URI,
        or a local folder (a saved Detector or an MLflow model folder)."""
        local = Path(uri).expanduser()
        if "://" not in uri and ":/" not in uri:
            if not local.is_dir():
                raise ValueError(f"{uri!r} is neither a model URI nor an existing folder")
            return Detector.load(detector_directory(local))
        with tempfile.TemporaryDirectory() as scratch:
            return Detector.load(self.download_model(uri, Path(scratch)))

    def download_model(self, uri: str, dst: Path) -> Path:
        """The saved detector's folder of the model at `uri` (models:/ or another MLflow
        artifact URI), downloaded under `dst`, with what was saved beside the detector (the
        compiled model the inference service loads)."""
        with self._mlflow() as mlflow:
            downloaded = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
        return detector_directory(Path(downloaded))

    def record_evaluation(
        self, name: str, version: int, metrics: Mapping[str, float], artifacts: Mapping[str, bytes]
    ) -> None:
        """Add evaluation metrics and PNG plots to the run that registered a version."""
        info = self.version(name, version)
        if not info.run_id:
            raise ValueError(f"{name} version {version} has no MLflow run to record on")
        _check_plot_names(artifacts)
        from mlflow.entities import Metric

        client = self._client()
        # One request per batch, not per metric: an evaluation records ~150 of them, and the
        # SageMaker tracking server is a round trip away.
        now_ms = int(time.time() * 1000)
        batch = [Metric(key, float(value), now_ms, 0) for key, value in metrics.items()]
        for start in range(0, len(batch), MAX_METRICS_PER_BATCH):
            client.log_batch(info.run_id, metrics=batch[start : start + MAX_METRICS_PER_BATCH])
        with _plots_folder(artifacts) as plots:
            if plots:
                client.log_artifacts(info.run_id, plots, PLOTS_DIR)

    def load_pyfunc(self, uri: str) -> Any:
        """The registered model at `uri` as MLflow loads it for serving (the pyfunc)."""
        with self._mlflow() as mlflow:
            return mlflow.pyfunc.load_model(uri)

    def version_metrics(self, name: str, version: int) -> dict[str, float]:
        info = self.version(name, version)
        if not info.run_id:
            return {}
        return {k: float(v) for k, v in self._client().get_run(info.run_id).data.metrics.items()}


def _not_found(error: Any) -> bool:
    """An MlflowException that says the model, version or alias does not exist (a missing
    alias is INVALID_PARAMETER_VALUE in MLflow's stores), not that the server failed."""
    return getattr(error, "error_code", None) in (
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_PARAMETER_VALUE",
    )


class LocalModelRegistry(ModelRegistry):
    """MLflow on SQLite with a local artifact folder, both under `root`."""

    root: str = Field(description="folder of mlflow.db and artifacts/ ($FIREPIPE_HOME/mlflow)")

    def _tracking_uri(self) -> str:
        # The local stand-ins never reach the internet; MLflow 3 reports usage unless told not to.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        folder = Path(self.root).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}"

    def _artifact_location(self) -> str:
        return (Path(self.root).expanduser().resolve() / "artifacts").as_uri()

    def describe(self) -> str:
        return f"MLflow on SQLite at {Path(self.root) / 'mlflow.db'}"


class SageMakerModelRegistry(ModelRegistry):
    """The SageMaker managed MLflow tracking server (by ARN, through sagemaker-mlflow), with
    approval mirrored onto the SageMaker Model Registry package of each version."""

    tracking_server_arn: str = Field(description="ARN of the managed MLflow tracking server")
    region: str
    model_package_group_suffix: str | None = Field(
        default=None,
        description="suffix SageMaker appends to the model name for the package group; "
        "default: first 6 hex digits of SHA-256 of the tracking server name",
    )
    endpoint_url: str | None = None

    def _arn(self) -> re.Match[str]:
        match = _ARN.match(self.tracking_server_arn)
        if match is None:
            raise ValueError(
                f"{self.tracking_server_arn!r} is not the ARN of a SageMaker MLflow tracking "
                "server (arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>)"
            )
        return match

    def _tracking_uri(self) -> str:
        return self._arn().string

    def model_package_group(self, name: str) -> str:
        """SageMaker syncs MLflow model `name` into the package group `<name>-<suffix>`, the
        suffix being the first six characters of the SHA-256 of the server's name (SageMaker
        developer guide, "Automatically register SageMaker AI models with Model Registry")."""
        suffix = self.model_package_group_suffix
        if suffix is None:
            suffix = hashlib.sha256(self._arn()["name"].encode()).hexdigest()[:6]
        return f"{name}-{suffix}"

    def _sagemaker(self) -> Any:
        import boto3

        return boto3.client("sagemaker", region_name=self.region, endpoint_url=self.endpoint_url)

    def model_package_arn(self, client: Any, name: str, version: int) -> str:
        group = self.model_package_group(name)
        request: dict[str, Any] = {"ModelPackageGroupName": group, "MaxResults": 100}
        while True:
            page = client.list_model_packages(**request)
            for package in page["ModelPackageSummaryList"]:
                if package.get("ModelPackageVersion") == version:
                    return str(package["ModelPackageArn"])
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
        raise LookupError(
            f"no model package version {version} in SageMaker group {group}: is automatic "
            "model registration enabled on the tracking server?"
        )

    def _sync_approval(self, name: str, version: int, status: str, reason: str) -> None:
        client = self._sagemaker()
        client.update_model_package(
            ModelPackageArn=self.model_package_arn(client, name, version),
            ModelApprovalStatus=status,
            ApprovalDescription=_cut(reason, MAX_APPROVAL_DESCRIPTION_CHARS),
        )

    def describe(self) -> str:
        return f"SageMaker managed MLflow {self.tracking_server_arn}"
