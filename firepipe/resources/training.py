"""TrainingBackend: where a detector is trained and tuned.

Both backends run the same training training job (`firepipe.core.training.job`) on the same
data channels (`train`, `validation`: Parquet) with the same string hyperparameters, and tune
over the same search space (`firepipe.core.training.tuning`):

- LocalTrainingBackend calls the entry point in-process on channel folders under the firepipe
  home (removed once the job ends: the model and metrics are what it returns), and tunes with
  optuna;
- SageMakerTrainingBackend uploads the channels to S3 (once per content: a tuning job and the
  training job after it share them) and starts a SageMaker training job, or a SageMaker
  automatic model tuning job over the search space's ranges, then downloads the model.
  sagemaker-core drives the API; the firepipe training image runs the entry point (it is not
  built yet: docker/README.md).
"""

import contextlib
import hashlib
import json
import shutil
import tarfile
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from firepipe.core.training import job as training_job
from firepipe.core.training import tuning
from firepipe.lib.s3 import object_exists

CHANNELS = ("train", "validation")
TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")


class TrainingError(RuntimeError):
    """A training or tuning job failed, stopped or ran out of time."""


@dataclass(frozen=True)
class TuningResult:
    best_hyperparameters: dict[str, str]
    # Locally one row per trial (its hyperparameters and objective); SageMaker: the best
    # training job only (the others are listed on the tuning job in the console).
    trials: pl.DataFrame
    objective: float


class TrainingBackend(dg.ConfigurableResource, ABC):
    @abstractmethod
    def train(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        hyperparameters: Mapping[str, str],
        model_dir: Path,
    ) -> dict[str, float]:
        """Run the training entry point on `channels`; the model lands in `model_dir`. Returns
        the metrics the entry point wrote beside it (training_job.METRICS_FILE)."""

    @abstractmethod
    def tune(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        static_hyperparameters: Mapping[str, str],
        max_trials: int,
        seed: int,
    ) -> TuningResult:
        """Search the algorithm's space (`tuning.SPACES`) for the best validation objective;
        the best hyperparameters are ready for `train`."""


def _check_channels(channels: Mapping[str, pl.DataFrame], tuning: bool = False) -> None:
    unknown = sorted(set(channels) - set(CHANNELS))
    if unknown or "train" not in channels:
        raise ValueError(f"channels must be train (and validation), got {sorted(channels)}")
    if tuning and "validation" not in channels:
        raise ValueError("tuning needs a validation channel")


class LocalTrainingBackend(TrainingBackend):
    """In-process training and optuna tuning; a job's channels under `work_dir`/<job> while it
    runs."""

    work_dir: str

    def _write_channels(self, job_name: str, channels: Mapping[str, pl.DataFrame]) -> Path:
        _check_channels(channels)
        job_dir = Path(self.work_dir) / job_name
        for name, frame in channels.items():
            (job_dir / name).mkdir(parents=True, exist_ok=True)
            frame.write_parquet(job_dir / name / "part-0.parquet")
        return job_dir

    def train(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        hyperparameters: Mapping[str, str],
        model_dir: Path,
    ) -> dict[str, float]:
        job_dir = self._write_channels(job_name, channels)
        try:
            validation = job_dir / "validation" if "validation" in channels else None
            training_job.run_training(job_dir / "train", validation, model_dir, hyperparameters)
        finally:
            # A copy of the training set per run would pile up under the firepipe home.
            shutil.rmtree(job_dir, ignore_errors=True)
        return _written_metrics(model_dir)

    def tune(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        static_hyperparameters: Mapping[str, str],
        max_trials: int,
        seed: int,
    ) -> TuningResult:
        _check_channels(channels, tuning=True)
        request = training_job.parse_hyperparameters(static_hyperparameters)
        best, trials = tuning.tune(
            channels["train"],
            channels["validation"],
            request.feature_names,
            request.feature_spec_hash,
            tuning.SPACES[request.algorithm],
            max_trials,
            seed,
            request.algorithm,
            dict(request.params or {}),
            request.increasing,
        )
        # The trials trained with the tuning seed: the best one is retrained with it too.
        tuned = training_job.encode_hyperparameters(replace(request, params=best, seed=seed))
        objective = float(trials["average_precision"].max())
        return TuningResult(tuned, trials, objective)


def _written_metrics(model_dir: Path) -> dict[str, float]:
    """The metrics the entry point wrote beside the model: the same on both backends."""
    path = model_dir / training_job.METRICS_FILE
    if not path.is_file():
        raise TrainingError(f"the training job wrote no {training_job.METRICS_FILE} into its model")
    return {name: float(value) for name, value in json.loads(path.read_text()).items()}


def _stop_quietly(resource: Any) -> None:
    # The job may be ending already, or the API may refuse: the first error is the one to see.
    with contextlib.suppress(Exception):
        resource.stop()


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(key))


def snake_keys(value: Any) -> Any:
    """An API request dict (PascalCase keys) as sagemaker-core's shape arguments (snake_case)."""
    if isinstance(value, dict):
        return {_snake(k): snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake_keys(v) for v in value]
    return value


class SageMakerTrainingBackend(TrainingBackend):
    """SageMaker training and automatic model tuning jobs running the firepipe training image
    (`image_uri`; the image is not built yet: docker/README.md)."""

    region: str
    role_arn: str = Field(description="the execution role the training jobs assume")
    image_uri: str = Field(description="the firepipe training image (runs the entry point)")
    bucket: str = Field(description="S3 bucket for the data channels and model artifacts")
    prefix: str = "training"
    instance_type: str = "ml.m5.xlarge"
    volume_size_gb: int = 30
    max_runtime_s: int = 3_600
    max_parallel_jobs: int = 2
    poll_interval_s: float = 30.0
    wait_timeout_s: float = 4 * 3_600.0

    def _session(self) -> Any:
        import boto3

        return boto3.Session(region_name=self.region)

    def _upload_channels(self, channels: Mapping[str, pl.DataFrame]) -> list[Any]:
        """Each channel as Parquet under `<prefix>/channels/<name>/<sha256 of the file>/`,
        uploaded only when no such object is there: a tuning job and the training job after
        it, or a run again on the same data, read one upload. The role needs s3:ListBucket:
        without it S3 answers a missing key with 403, which is raised."""
        from sagemaker.core.shapes import Channel, DataSource, S3DataSource

        _check_channels(channels)
        s3 = self._session().client("s3")
        out = []
        for name, frame in channels.items():
            with tempfile.TemporaryFile() as buffer:
                frame.write_parquet(buffer)
                buffer.seek(0)
                digest = hashlib.file_digest(buffer, "sha256").hexdigest()
                folder = f"{self.prefix}/channels/{name}/{digest}/"
                if not object_exists(s3, self.bucket, f"{folder}part-0.parquet"):
                    buffer.seek(0)
                    s3.upload_fileobj(buffer, self.bucket, f"{folder}part-0.parquet")
            source = S3DataSource(
                s3_data_type="S3Prefix",
                s3_uri=f"s3://{self.bucket}/{folder}",
                s3_data_distribution_type="FullyReplicated",
            )
            out.append(
                Channel(
                    channel_name=name,
                    data_source=DataSource(s3_data_source=source),
                    content_type="application/x-parquet",
                )
            )
        return out

    def _job_parts(self, job_name: str, algorithm_shape: Any = None) -> dict[str, Any]:
        """What a training job and a tuning job's training definition share; the algorithm
        is an AlgorithmSpecification in one, a HyperParameterAlgorithmSpecification in the
        other."""
        from sagemaker.core.shapes import (
            AlgorithmSpecification,
            MetricDefinition,
            OutputDataConfig,
            ResourceConfig,
            StoppingCondition,
        )

        return {
            "algorithm_specification": (algorithm_shape or AlgorithmSpecification)(
                training_image=self.image_uri,
                training_input_mode="File",
                # SageMaker reads the entry point's "name=value" lines from the job's log.
                metric_definitions=[
                    MetricDefinition(name=d["Name"], regex=d["Regex"])
                    for d in training_job.METRIC_DEFINITIONS
                ],
            ),
            "role_arn": self.role_arn,
            "output_data_config": OutputDataConfig(
                s3_output_path=f"s3://{self.bucket}/{self.prefix}/{job_name}/output"
            ),
            "resource_config": ResourceConfig(
                instance_type=self.instance_type,
                instance_count=1,
                volume_size_in_gb=self.volume_size_gb,
            ),
            "stopping_condition": StoppingCondition(max_runtime_in_seconds=self.max_runtime_s),
        }

    def _wait(self, resource: Any, status_of: str, what: str) -> None:
        """Poll until the job ends. A job given up on (the wait timed out, or the run was
        interrupted) is stopped, so it does not go on running and billing with no one to
        collect its model."""
        deadline = time.monotonic() + self.wait_timeout_s
        try:
            while True:
                resource.refresh()
                status = getattr(resource, status_of)
                if status in TERMINAL_STATUSES:
                    break
                if time.monotonic() > deadline:
                    raise TrainingError(
                        f"{what} still {status} after {self.wait_timeout_s:.0f} s: stopped"
                    )
                time.sleep(self.poll_interval_s)
        except BaseException:
            _stop_quietly(resource)
            raise
        if status != "Completed":
            reason = getattr(resource, "failure_reason", None)
            raise TrainingError(f"{what} ended {status}: {reason or 'no reason given'}")

    def _download_model(self, artifact_uri: str, model_dir: Path) -> None:
        bucket, _, key = artifact_uri.removeprefix("s3://").partition("/")
        s3 = self._session().client("s3")
        model_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as buffer:
            s3.download_fileobj(bucket, key, buffer)
            buffer.seek(0)
            with tarfile.open(fileobj=buffer, mode="r:gz") as archive:
                archive.extractall(model_dir, filter="data")  # no links, no paths outside

    def train(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        hyperparameters: Mapping[str, str],
        model_dir: Path,
    ) -> dict[str, float]:
        from sagemaker.core.resources import TrainingJob

        job = TrainingJob.create(
            training_job_name=job_name,
            hyper_parameters=dict(hyperparameters),
            input_data_config=self._upload_channels(channels),
            session=self._session(),
            region=self.region,
            **self._job_parts(job_name),
        )
        self._wait(job, "training_job_status", f"training job {job_name}")
        self._download_model(job.model_artifacts.s3_model_artifacts, model_dir)
        return _written_metrics(model_dir)

    def tune(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        static_hyperparameters: Mapping[str, str],
        max_trials: int,
        seed: int,
    ) -> TuningResult:
        from sagemaker.core.resources import HyperParameterTuningJob
        from sagemaker.core.shapes import (
            HyperParameterAlgorithmSpecification,
            HyperParameterTrainingJobDefinition,
            HyperParameterTuningJobConfig,
            HyperParameterTuningJobObjective,
            ParameterRanges,
            ResourceLimits,
        )

        _check_channels(channels, tuning=True)
        algorithm = training_job.parse_hyperparameters(static_hyperparameters).algorithm
        space = tuning.SPACES[algorithm]
        ranges = snake_keys(tuning.sagemaker_parameter_ranges(space))
        # A tuned name may not also be static: SageMaker refuses the job (its own SDK drops
        # them the same way). The tuned values come back with the best job.
        searched = {p.name for p in space}
        static = {k: v for k, v in static_hyperparameters.items() if k not in searched}
        definition = HyperParameterTrainingJobDefinition(
            static_hyper_parameters=static,
            input_data_config=self._upload_channels(channels),
            **self._job_parts(job_name, HyperParameterAlgorithmSpecification),
        )
        config = HyperParameterTuningJobConfig(
            strategy="Bayesian",
            hyper_parameter_tuning_job_objective=HyperParameterTuningJobObjective(
                type="Maximize", metric_name=training_job.OBJECTIVE_METRIC
            ),
            resource_limits=ResourceLimits(
                max_number_of_training_jobs=max_trials,
                max_parallel_training_jobs=min(self.max_parallel_jobs, max_trials),
            ),
            parameter_ranges=ParameterRanges(**ranges),
            random_seed=seed,
        )
        job = HyperParameterTuningJob.create(
            hyper_parameter_tuning_job_name=job_name,
            hyper_parameter_tuning_job_config=config,
            training_job_definition=definition,
            session=self._session(),
            region=self.region,
        )
        self._wait(job, "hyper_parameter_tuning_job_status", f"tuning job {job_name}")
        best = job.best_training_job
        tuned = {k: str(v) for k, v in dict(best.tuned_hyper_parameters).items()}
        objective = float(best.final_hyper_parameter_tuning_job_objective_metric.value)
        trials = pl.DataFrame(
            [{"training_job": best.training_job_name, "objective": objective, **tuned}]
        )
        return TuningResult({**dict(static_hyperparameters), **tuned}, trials, objective)
