"""TrainingBackend: where a detector is trained and tuned.

Both backends run the same training job (`firepipe.core.training.job`) on the same
data channels (`train`, `validation`: Parquet) with the same string hyperparameters, and tune
over the same search space (`firepipe.core.training.tuning`):

- LocalTrainingBackend calls the entry point in-process on channel folders under the firepipe
  home (removed once the job ends: the model and metrics are what it returns), and tunes with
  optuna;
- SageMakerTrainingBackend uploads the channels to S3 (once per content: a tuning job and the
  training job after it share them) and starts a SageMaker training job, or a SageMaker
  automatic model tuning job over the search space's ranges, then downloads the model.
  The SageMaker Python SDK v3 builds and starts the jobs (`sagemaker.train`'s ModelTrainer and
  HyperparameterTuner); the firepipe training image runs the entry point (it is not built
  yet: docker/README.md). The SDK is imported inside the methods: it takes seconds to import.
"""

import contextlib
import functools
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
# The SDK's defaults config, given so that its Session looks for none (config files, or S3
# where SAGEMAKER_*_CONFIG_OVERRIDE points) and sends no telemetry: otherwise every job start
# is also an HTTP request to AWS's telemetry bucket. (sagemaker-core's create still fills the
# members left unset, a VPC for one, from local config files where there are any.)
SDK_CONFIG = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}


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


def _sdk_ranges(space: tuning.SearchSpace) -> dict[str, Any]:
    """The search space as the SDK's parameter ranges, bounds as `tuning`'s decimal strings:
    the SDK writes a float with str(), which gives "1e-05" for small bounds."""
    from sagemaker.core.parameter import ContinuousParameter, IntegerParameter

    kinds = {
        "IntegerParameterRanges": IntegerParameter,
        "ContinuousParameterRanges": ContinuousParameter,
    }
    ranges = tuning.sagemaker_parameter_ranges(space)
    return {
        r["Name"]: kinds[kind](r["MinValue"], r["MaxValue"], r["ScalingType"])
        for kind, members in ranges.items()
        for r in members
    }


def _send_random_seed(seed: int, params: dict[str, Any], **_: Any) -> None:
    # sagemaker-core's serializer leaves out every falsy member, so RandomSeed 0 (firepipe's
    # default seed) would never reach the API and the search would run unseeded.
    params["HyperParameterTuningJobConfig"]["RandomSeed"] = seed


class SageMakerTrainingBackend(TrainingBackend):
    """SageMaker training and automatic model tuning jobs running the firepipe training image
    (`image_uri`; the image is not built yet: docker/README.md). The image runs the entry
    point itself, so the jobs carry no SourceCode (which would upload code and a driver
    script to every job). A training job is named `<job_name>-<timestamp>` (the SDK's
    ModelTrainer always adds one, so a retried step starts a new job); a tuning job is named
    `job_name` (at most 32 characters)."""

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

    def _upload_channels(self, s3: Any, channels: Mapping[str, pl.DataFrame]) -> list[Any]:
        """Each channel as Parquet under `<prefix>/channels/<name>/<sha256 of the file>/`,
        uploaded only when no such object is there: a tuning job and the training job after
        it, or a run again on the same data, read one upload. (Given a local folder, the SDK
        would upload it again for every job, under that job's name.) The role needs
        s3:ListBucket: without it S3 answers a missing key with 403, which is raised."""
        from sagemaker.core.training.configs import InputData

        _check_channels(channels)
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
            out.append(
                InputData(
                    channel_name=name,
                    data_source=f"s3://{self.bucket}/{folder}",
                    content_type="application/x-parquet",
                )
            )
        return out

    def _trainer(self, boto_session: Any, job_name: str, hyperparameters: Mapping[str, str]) -> Any:
        """The SDK's ModelTrainer for one job; a tuning job takes its training definition from
        it. Building it checks the role (read-only IAM calls, iam:SimulatePrincipalPolicy
        among them): a role SageMaker may not assume, or one denied an action the SDK deems
        necessary (the VPC network-interface actions among them, even for a job outside a
        VPC), is refused here with the SDK's reason; where the caller may not simulate, the
        SDK logs a warning and goes on. SAGEMAKER_VALIDATE_ROLE=false turns the check off."""
        from sagemaker.core.helper.session_helper import Session
        from sagemaker.core.training.configs import (
            Compute,
            MetricDefinition,
            OutputDataConfig,
            StoppingCondition,
        )
        from sagemaker.train.model_trainer import ModelTrainer

        session = Session(
            boto_session=boto_session, sagemaker_config=SDK_CONFIG, default_bucket=self.bucket
        )
        trainer = ModelTrainer(
            sagemaker_session=session,
            role=self.role_arn,
            training_image=self.image_uri,
            base_job_name=job_name,
            hyperparameters=dict(hyperparameters),
            compute=Compute(
                instance_type=self.instance_type,
                instance_count=1,
                volume_size_in_gb=self.volume_size_gb,
            ),
            stopping_condition=StoppingCondition(max_runtime_in_seconds=self.max_runtime_s),
            output_data_config=OutputDataConfig(
                s3_output_path=f"s3://{self.bucket}/{self.prefix}/{job_name}/output"
            ),
        )
        # SageMaker reads the entry point's "name=value" lines from the job's log.
        return trainer.with_metric_definitions(
            [
                MetricDefinition(name=d["Name"], regex=d["Regex"])
                for d in training_job.METRIC_DEFINITIONS
            ]
        )

    def _wait(self, resource: Any, status_of: str, what: str) -> None:
        """Poll until the job ends. A job given up on (the wait timed out, or the run was
        interrupted) is stopped, so it does not go on running and billing with no one to
        collect its model. The SDK's own wait (ModelTrainer.train(wait=True), the
        sagemaker-core resource's wait()) stops neither, returns quietly for a Stopped job
        and draws a terminal progress panel; this polls the same sagemaker-core resource."""
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

    def _download_model(self, s3: Any, artifact_uri: str, model_dir: Path) -> None:
        bucket, _, key = artifact_uri.removeprefix("s3://").partition("/")
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
        _check_channels(channels)
        boto_session = self._session()
        s3 = boto_session.client("s3")
        trainer = self._trainer(boto_session, job_name, hyperparameters)  # a bad role: no upload
        trainer.train(input_data_config=self._upload_channels(s3, channels), wait=False, logs=False)
        # The job the trainer created (a sagemaker-core TrainingJob): ModelTrainer keeps it
        # only here, and its own documentation reads it from there.
        job = trainer._latest_training_job
        self._wait(job, "training_job_status", f"training job {job.training_job_name}")
        self._download_model(s3, job.model_artifacts.s3_model_artifacts, model_dir)
        return _written_metrics(model_dir)

    def tune(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        static_hyperparameters: Mapping[str, str],
        max_trials: int,
        seed: int,
    ) -> TuningResult:
        from sagemaker.train.tuner import HyperparameterTuner

        _check_channels(channels, tuning=True)
        algorithm = training_job.parse_hyperparameters(static_hyperparameters).algorithm
        boto_session = self._session()
        boto_session.events.register(
            "before-parameter-build.sagemaker.CreateHyperParameterTuningJob",
            functools.partial(_send_random_seed, seed),
        )
        trainer = self._trainer(boto_session, job_name, static_hyperparameters)
        # The tuner sends the trainer's hyperparameters less the searched ones as the static
        # ones (SageMaker refuses a name that is both); the tuned values come back with the
        # best job.
        tuner = HyperparameterTuner(
            model_trainer=trainer,
            objective_metric_name=training_job.OBJECTIVE_METRIC,
            objective_type="Maximize",
            hyperparameter_ranges=_sdk_ranges(tuning.SPACES[algorithm]),
            metric_definitions=list(training_job.METRIC_DEFINITIONS),
            strategy="Bayesian",
            max_jobs=max_trials,
            max_parallel_jobs=min(self.max_parallel_jobs, max_trials),
            random_seed=seed,
        )
        inputs = self._upload_channels(boto_session.client("s3"), channels)
        tuner.tune(inputs=inputs, job_name=job_name, wait=False)
        job = tuner.latest_tuning_job
        self._wait(job, "hyper_parameter_tuning_job_status", f"tuning job {job_name}")
        best = job.best_training_job
        tuned = {k: str(v) for k, v in dict(best.tuned_hyper_parameters).items()}
        objective = float(best.final_hyper_parameter_tuning_job_objective_metric.value)
        trials = pl.DataFrame(
            [{"training_job": best.training_job_name, "objective": objective, **tuned}]
        )
        return TuningResult({**dict(static_hyperparameters), **tuned}, trials, objective)
