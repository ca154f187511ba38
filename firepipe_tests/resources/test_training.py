"""TrainingBackend: local in-process training and optuna tuning, and SageMaker training and
tuning jobs on moto, where a stand-in for the training container runs the real entry point."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from firepipe.core.training import job as entry
from firepipe.core.training import tuning
from firepipe.core.training.dataset import LABEL, SECONDS_SINCE_IGNITION, SPLIT
from firepipe.core.training.job import TrainingRequest, encode_hyperparameters
from firepipe.core.training.models import Detector
from firepipe.resources.training import (
    LocalTrainingBackend,
    SageMakerTrainingBackend,
    TrainingError,
    snake_keys,
)
from firepipe.services import sagemaker_training

FEATURES = ("smoke__mean_30s", "temperature__diff_60s", "co_ppm__max_30s")
REGION = "eu-west-1"
BUCKET = "firepipe-training"


def channel(split: str, rows: int, seed: int) -> pl.DataFrame:
    """Rows whose first feature carries the fire signal, the last one nulls in a third."""
    rng = np.random.default_rng(seed)
    fire = rng.random(rows) < 0.3
    smoke = rng.normal(0.0, 1.0, rows) + 2.5 * fire
    heat = rng.normal(0.0, 1.0, rows) + 1.0 * fire
    co = np.where(rng.random(rows) < 0.33, np.nan, rng.normal(0.0, 1.0, rows))
    since = np.where(fire, rng.uniform(0, 600, rows), np.nan)  # fire rows: seconds after ignition
    return pl.DataFrame(
        {
            "device_id": [f"d{i % 40}" for i in range(rows)],
            SPLIT: split,
            LABEL: fire,
            FEATURES[0]: smoke,
            FEATURES[1]: heat,
            FEATURES[2]: pl.Series(co).fill_nan(None),
            SECONDS_SINCE_IGNITION: pl.Series(since).fill_nan(None),
        }
    )


@pytest.fixture(scope="module")
def channels() -> dict[str, pl.DataFrame]:
    return {"train": channel("train", 2_000, 1), "validation": channel("validation", 600, 2)}


def hyperparameters(algorithm: str = "lightgbm") -> dict[str, str]:
    params = {"num_boost_round": 20, "num_threads": 1} if algorithm == "lightgbm" else {}
    return encode_hyperparameters(TrainingRequest(algorithm, FEATURES, "spec-1", 0, params))


def test_local_backend_trains_through_the_entry_point(tmp_path, channels):
    backend = LocalTrainingBackend(work_dir=str(tmp_path / "work"))
    model_dir = tmp_path / "model"
    metrics = backend.train("job-1", channels, hyperparameters(), model_dir)
    detector = Detector.load(model_dir)
    assert detector.feature_names == FEATURES
    assert detector.feature_spec_hash == "spec-1"
    # The metrics are those the entry point wrote, and they describe this model.
    written = json.loads((model_dir / entry.METRICS_FILE).read_text())
    assert metrics == pytest.approx(written)
    assert metrics[entry.OBJECTIVE_METRIC] == pytest.approx(
        tuning.average_precision(channels["validation"], detector.scores(channels["validation"]))
    )
    assert metrics[entry.OBJECTIVE_METRIC] > 0.8  # the first feature separates the classes
    # The channels were written for the entry point and are gone once it ran.
    assert not (tmp_path / "work/job-1").exists()


def test_local_backend_removes_the_channels_when_training_fails(tmp_path, channels):
    backend = LocalTrainingBackend(work_dir=str(tmp_path / "work"))
    bad = {"train": channels["train"].drop(FEATURES[0]), "validation": channels["validation"]}
    with pytest.raises(ValueError, match="lacks feature column"):
        backend.train("job-x", bad, hyperparameters(), tmp_path / "model")
    assert not (tmp_path / "work/job-x").exists()


def test_local_backend_refuses_unknown_channels(tmp_path, channels):
    backend = LocalTrainingBackend(work_dir=str(tmp_path))
    with pytest.raises(ValueError, match="channels must be train"):
        backend.train("j", {"test": channels["train"]}, hyperparameters(), tmp_path / "m")
    with pytest.raises(ValueError, match="validation channel"):
        backend.tune("j", {"train": channels["train"]}, hyperparameters(), 2, 0)


def test_local_tuning_returns_hyperparameters_ready_to_train(tmp_path, channels):
    backend = LocalTrainingBackend(work_dir=str(tmp_path / "work"))
    result = backend.tune("tune-1", channels, hyperparameters(), max_trials=3, seed=7)
    assert result.trials.height == 3
    assert result.objective == pytest.approx(result.trials["average_precision"].max())
    request = entry.parse_hyperparameters(result.best_hyperparameters)
    assert request.feature_names == FEATURES
    best = result.trials.sort("average_precision", descending=True).row(0, named=True)
    for param in tuning.LIGHTGBM_SPACE:
        assert request.params is not None
        assert request.params[param.name] == pytest.approx(best[param.name])
    metrics = backend.train("job-2", channels, result.best_hyperparameters, tmp_path / "m")
    assert metrics[entry.OBJECTIVE_METRIC] == pytest.approx(result.objective)


def test_snake_keys_turns_api_dicts_into_shape_arguments():
    api = {"IntegerParameterRanges": [{"Name": "n", "MinValue": "1", "ScalingType": "Linear"}]}
    assert snake_keys(api) == {
        "integer_parameter_ranges": [{"name": "n", "min_value": "1", "scaling_type": "Linear"}]
    }


# --- SageMaker on moto -----------------------------------------------------------------------


def _run_container(s3, job: dict, root: Path) -> None:
    """What the firepipe training image does inside SageMaker, with `root` as /opt/ml: the
    job's hyperparameters in input/config, its channels under input/data, the entry point,
    then model/ as model.tar.gz at the job's artifact path."""
    (root / "input/config").mkdir(parents=True)
    (root / "input/config/hyperparameters.json").write_text(json.dumps(job["HyperParameters"]))
    for spec in job["InputDataConfig"]:
        uri = spec["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
            target = root / "input/data" / spec["ChannelName"] / Path(obj["Key"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
    assert sagemaker_training.main([], root=root) == 0
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for path in sorted((root / "model").iterdir()):
            tar.add(path, arcname=path.name)
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, _, key = artifact.removeprefix("s3://").partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=archive.getvalue())


class ContainerStandIn(SageMakerTrainingBackend):
    """moto completes a job at once without running it: run the container before waiting."""

    container_dir: str

    def _wait(self, resource, status_of, what):  # type: ignore[no-untyped-def]
        if status_of == "training_job_status":
            s3 = self._session().client("s3")
            job = (
                self._session()
                .client("sagemaker")
                .describe_training_job(TrainingJobName=resource.training_job_name)
            )
            _run_container(s3, job, Path(self.container_dir) / resource.training_job_name)
        super()._wait(resource, status_of, what)


@pytest.fixture
def sagemaker(aws_credentials, tmp_path):  # type: ignore[no-untyped-def]
    import boto3
    from moto import mock_aws

    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield ContainerStandIn(
            region=REGION,
            role_arn="arn:aws:iam::123456789012:role/firepipe-training",
            image_uri="123456789012.dkr.ecr.eu-west-1.amazonaws.com/firepipe-training:1",
            bucket=BUCKET,
            poll_interval_s=0.01,
            container_dir=str(tmp_path / "container"),
        )


@pytest.mark.aws
def test_sagemaker_training_job_runs_the_entry_point_and_brings_the_model_back(
    sagemaker, channels, tmp_path
):
    import boto3

    hps = hyperparameters()
    model_dir = tmp_path / "model"
    metrics = sagemaker.train("firepipe-job-1", channels, hps, model_dir)
    job = boto3.client("sagemaker", region_name=REGION).describe_training_job(
        TrainingJobName="firepipe-job-1"
    )
    assert job["HyperParameters"] == hps
    assert job["AlgorithmSpecification"]["TrainingImage"] == sagemaker.image_uri
    assert {c["ChannelName"] for c in job["InputDataConfig"]} == {"train", "validation"}
    assert (
        job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/training/firepipe-job-1/output"
    )
    # The model that came back is the one the container trained: same scores as trained here.
    remote = Detector.load(model_dir)
    local_dir = tmp_path / "local"
    LocalTrainingBackend(work_dir=str(tmp_path / "w")).train("j", channels, hps, local_dir)
    local = Detector.load(local_dir)
    np.testing.assert_array_equal(
        remote.scores(channels["validation"]), local.scores(channels["validation"])
    )
    assert metrics[entry.OBJECTIVE_METRIC] > 0.8


@pytest.mark.aws
def test_a_failed_training_job_is_a_clear_error(sagemaker, channels, tmp_path):
    class Failed:
        training_job_status = "Failed"
        failure_reason = "AlgorithmError: out of memory"

        def refresh(self) -> None:
            return None

    with pytest.raises(TrainingError, match="ended Failed: AlgorithmError: out of memory"):
        SageMakerTrainingBackend._wait(sagemaker, Failed(), "training_job_status", "job x")


class Running:
    """A job that never ends; records whether it was stopped."""

    training_job_status = "InProgress"

    def __init__(self, refreshes_before_interrupt: int | None = None) -> None:
        self.stopped = False
        self.refreshes = 0
        self.interrupt_after = refreshes_before_interrupt

    def refresh(self) -> None:
        self.refreshes += 1
        if self.interrupt_after is not None and self.refreshes > self.interrupt_after:
            raise KeyboardInterrupt  # what a terminated Dagster step sees, a BaseException

    def stop(self) -> None:
        self.stopped = True


@pytest.mark.aws
def test_a_job_waited_on_too_long_is_stopped(sagemaker):
    backend = sagemaker.model_copy(update={"wait_timeout_s": 0.0})
    job = Running()
    with pytest.raises(TrainingError, match="still InProgress after 0 s: stopped"):
        SageMakerTrainingBackend._wait(backend, job, "training_job_status", "job x")
    assert job.stopped


@pytest.mark.aws
def test_a_job_is_stopped_when_the_run_is_interrupted(sagemaker):
    job = Running(refreshes_before_interrupt=2)
    with pytest.raises(KeyboardInterrupt):
        SageMakerTrainingBackend._wait(sagemaker, job, "training_job_status", "job x")
    assert job.stopped
    assert job.refreshes == 3


@pytest.mark.aws
def test_channels_are_uploaded_once_per_content(sagemaker, channels, tmp_path):
    """Tuning then training on the same data reads one upload; other data gets its own."""
    import boto3

    hps = hyperparameters()
    sagemaker.tune("firepipe-tune-2", channels, hps, max_trials=2, seed=1)
    sagemaker.train("firepipe-job-3", channels, hps, tmp_path / "m")
    client = boto3.client("sagemaker", region_name=REGION)
    tuned = client.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="firepipe-tune-2"
    )
    trained = client.describe_training_job(TrainingJobName="firepipe-job-3")

    def uris(config):  # type: ignore[no-untyped-def]
        return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in config}

    assert uris(tuned["TrainingJobDefinition"]["InputDataConfig"]) == uris(
        trained["InputDataConfig"]
    )
    s3 = boto3.client("s3", region_name=REGION)
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="training/channels/")["Contents"]
    ]
    assert len(keys) == 2  # one file per channel
    assert all(k.endswith("/part-0.parquet") for k in keys)
    # The file is the channel: read back, it equals what was sent.
    train_key = next(k for k in keys if k.startswith("training/channels/train/"))
    body = s3.get_object(Bucket=BUCKET, Key=train_key)["Body"].read()
    assert pl.read_parquet(io.BytesIO(body)).equals(channels["train"])
    # Other data: another folder.
    other = {**channels, "train": channels["train"].head(100)}
    sagemaker.train("firepipe-job-4", other, hps, tmp_path / "m2")
    keys = s3.list_objects_v2(Bucket=BUCKET, Prefix="training/channels/train/")["Contents"]
    assert len(keys) == 2


@pytest.mark.aws
def test_sagemaker_tuning_job_searches_the_shared_space(sagemaker, channels):
    import boto3

    hps = hyperparameters()
    result = sagemaker.tune("firepipe-tune-1", channels, hps, max_trials=4, seed=3)
    job = boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="firepipe-tune-1"
    )
    config = job["HyperParameterTuningJobConfig"]
    ranges = tuning.sagemaker_parameter_ranges(tuning.LIGHTGBM_SPACE)
    assert config["ParameterRanges"] == {k: v for k, v in ranges.items() if v}  # moto drops []
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Maximize",
        "MetricName": entry.OBJECTIVE_METRIC,
    }
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 4
    # Every hyperparameter is static but the searched ones, which SageMaker refuses twice.
    static = job["TrainingJobDefinition"]["StaticHyperParameters"]
    searched = {p.name for p in tuning.LIGHTGBM_SPACE}
    assert searched & set(hps)  # the request carried values for them
    assert static == {k: v for k, v in hps.items() if k not in searched}
    # The best job's tuned values override the static ones (moto reports a fixed best job).
    best = job["BestTrainingJob"]
    assert result.best_hyperparameters == {**hps, **best["TunedHyperParameters"]}
    assert result.objective == best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
