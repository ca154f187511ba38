"""TrainingBackend: local in-process training and optuna tuning, and SageMaker training and
tuning jobs started through the SageMaker Python SDK on moto, where a stand-in for the training
container runs the real entry point."""

import copy
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
)
from firepipe.services import sagemaker_training

# The SDK's own model_trainer module imports its deprecated sagemaker.train.configs shim.
pytestmark = pytest.mark.filterwarnings(
    "ignore:sagemaker.train.configs has been moved:DeprecationWarning"
)

FEATURES = ("smoke__mean_30s", "temperature__diff_60s", "co_ppm__max_30s")
REGION = "eu-west-1"
BUCKET = "firepipe-training"
ROLE = "firepipe-training"
SETTINGS = {
    "region": REGION,
    "role_arn": f"arn:aws:iam::123456789012:role/{ROLE}",
    "image_uri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/firepipe-training:1",
    "bucket": BUCKET,
    "instance_type": "ml.c5.2xlarge",
    "volume_size_gb": 50,
    "max_runtime_s": 1_800,
    "poll_interval_s": 0.01,
}


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


# The SDK takes seconds to import: the backend imports it inside its methods. Importing it opens
# no connection; it does build a boto3 Session (sagemaker.core.jumpstart.constants, for a default
# region), which reads the AWS config file: tests point AWS_CONFIG_FILE and
# AWS_SHARED_CREDENTIALS_FILE away from ~/.aws.
SDK_IMPORT = """
import os, sys
import firepipe.resources.training
assert not [m for m in sys.modules if m.split(".")[0] == "sagemaker"], "imported with firepipe"
aws = os.path.join(os.environ["HOME"], ".aws")
seen = []
def audit(event, args):
    if event in ("socket.connect", "socket.getaddrinfo"):
        seen.append(event)
    elif event == "open" and isinstance(args[0], str) and args[0].startswith(aws):
        seen.append(args[0])
sys.addaudithook(audit)
import sagemaker.core.helper.session_helper, sagemaker.core.parameter
import sagemaker.core.training.configs, sagemaker.train.model_trainer, sagemaker.train.tuner
assert not seen, seen
"""


def _aws_files(folder: Path) -> dict[str, str]:
    """An empty AWS config and credentials file in `folder`, as the variables naming them."""
    (folder / "aws-config").touch()
    return {
        "AWS_CONFIG_FILE": str(folder / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(folder / "aws-config"),
    }


@pytest.mark.slow
def test_the_sdk_is_imported_when_a_job_starts_and_its_import_stays_offline(tmp_path):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws/config").write_text("[default]\nregion = eu-west-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-c", SDK_IMPORT],
        env={**env, "HOME": str(home), **_aws_files(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


# --- SageMaker through the SDK, on moto ------------------------------------------------------


class Api:
    """The requests the backend sends, as sent, and moto's answers as a test changes them:
    through botocore's events on the boto3 session every SDK client is made from (the SDK
    builds its clients itself, out of a Stubber's reach). moto implements neither
    iam:SimulatePrincipalPolicy (the SDK's role check) nor the Stop calls: answered here."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.changes: list[tuple[str, Callable[[dict[str, Any]], None]]] = []

    def sent(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.requests if name == operation]

    def change(self, operation: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Pass each answer moto gives to `operation` through `change` (in place)."""
        self.changes.append((operation, change))

    def session(self, region: str) -> Any:
        import boto3

        session = boto3.Session(region_name=region)
        events = session.events
        events.register("before-parameter-build.sagemaker", self._record)
        events.register("before-call.iam.SimulatePrincipalPolicy", _allow_all)
        for stop in ("StopTrainingJob", "StopHyperParameterTuningJob"):
            events.register(f"before-call.sagemaker.{stop}", _answer({}))
        for operation, change in self.changes:
            events.register(
                f"after-call.sagemaker.{operation}",
                lambda parsed, change=change, **_: change(parsed),
            )
        return session

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.requests.append((model.name, copy.deepcopy(params)))


def _answer(parsed: dict[str, Any]) -> Callable[..., Any]:
    from botocore.awsrequest import AWSResponse

    return lambda **_: (AWSResponse("https://stub", 200, {}, None), parsed)


def _allow_all(params: dict[str, Any], **_: Any) -> Any:
    """Every action the role check simulates is allowed (its query-encoded ActionNames)."""
    actions = [v for k, v in params["body"].items() if k.startswith("ActionNames.member.")]
    results = [{"EvalActionName": a, "EvalDecision": "allowed"} for a in actions]
    return _answer({"EvaluationResults": results, "IsTruncated": False})()


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
            session = self._session()
            job = session.client("sagemaker").describe_training_job(
                TrainingJobName=resource.training_job_name
            )
            root = Path(self.container_dir) / resource.training_job_name
            _run_container(session.client("s3"), job, root)
        super()._wait(resource, status_of, what)


def _trust(service: str) -> str:
    statement = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@pytest.fixture
def api(aws_credentials, monkeypatch, tmp_path) -> Any:  # type: ignore[no-untyped-def]
    import boto3
    from moto import mock_aws

    for name, value in _aws_files(tmp_path).items():
        monkeypatch.setenv(name, value)
    recorder = Api()
    monkeypatch.setattr(SageMakerTrainingBackend, "_session", lambda self: recorder.session(REGION))
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        iam = boto3.client("iam", region_name=REGION)
        iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=_trust("sagemaker.amazonaws.com"))
        yield recorder


@pytest.fixture
def sagemaker(api, tmp_path) -> ContainerStandIn:  # type: ignore[no-untyped-def]
    return ContainerStandIn(**SETTINGS, container_dir=str(tmp_path / "container"))


def _channel_uris(config: list[dict[str, Any]]) -> dict[str, str]:
    return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in config}


def _parquet_sha256(frame: pl.DataFrame) -> str:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


@pytest.mark.aws
def test_sagemaker_training_job_runs_the_entry_point_and_brings_the_model_back(
    sagemaker, api, channels, tmp_path
):
    hps = hyperparameters()
    model_dir = tmp_path / "model"
    metrics = sagemaker.train("firepipe-job-1", channels, hps, model_dir)
    (request,) = api.sent("CreateTrainingJob")
    # The SDK names the job after ours, with the time it started.
    assert request["TrainingJobName"].startswith("firepipe-job-1-")
    assert request["AlgorithmSpecification"] == {
        "TrainingImage": SETTINGS["image_uri"],
        "TrainingInputMode": "File",
        "MetricDefinitions": list(entry.METRIC_DEFINITIONS),
    }
    assert request["RoleArn"] == SETTINGS["role_arn"]
    assert request["HyperParameters"] == hps
    assert _channel_uris(request["InputDataConfig"]) == {
        name: f"s3://{BUCKET}/training/channels/{name}/{_parquet_sha256(frame)}/"
        for name, frame in channels.items()
    }
    assert {c["ContentType"] for c in request["InputDataConfig"]} == {"application/x-parquet"}
    assert request["ResourceConfig"] == {
        "InstanceType": "ml.c5.2xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 50,
    }
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 1_800}
    assert (
        request["OutputDataConfig"]["S3OutputPath"]
        == f"s3://{BUCKET}/training/firepipe-job-1/output"
    )
    # The model that came back is the one the container trained: same scores as trained here.
    remote = Detector.load(model_dir)
    local_dir = tmp_path / "local"
    LocalTrainingBackend(work_dir=str(tmp_path / "w")).train("j", channels, hps, local_dir)
    local = Detector.load(local_dir)
    np.testing.assert_array_equal(
        remote.scores(channels["validation"]), local.scores(channels["validation"])
    )
    assert metrics == json.loads((local_dir / entry.METRICS_FILE).read_text())
    assert metrics[entry.OBJECTIVE_METRIC] > 0.8


@pytest.mark.aws
def test_a_role_sagemaker_may_not_assume_is_refused_before_any_upload(api, channels, tmp_path):
    import boto3
    from sagemaker.core.helper.iam_role_resolver import RoleValidationError

    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName="ec2-only", AssumeRolePolicyDocument=_trust("ec2.amazonaws.com"))
    backend = SageMakerTrainingBackend(
        **{**SETTINGS, "role_arn": "arn:aws:iam::123456789012:role/ec2-only"}
    )
    with pytest.raises(RoleValidationError, match=r"sagemaker\.amazonaws\.com"):
        backend.train("firepipe-job-r", channels, hyperparameters(), tmp_path / "m")
    assert api.sent("CreateTrainingJob") == []
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET)
    assert "Contents" not in listed


@pytest.mark.aws
def test_a_failed_training_job_is_a_clear_error(api, channels, tmp_path):
    def failed(job: dict[str, Any]) -> None:
        job.update(TrainingJobStatus="Failed", FailureReason="AlgorithmError: out of memory")

    api.change("DescribeTrainingJob", failed)
    backend = SageMakerTrainingBackend(**SETTINGS)
    with pytest.raises(TrainingError, match="ended Failed: AlgorithmError: out of memory"):
        backend.train("firepipe-job-f", channels, hyperparameters(), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def _running(status_key: str) -> Callable[[dict[str, Any]], None]:
    return lambda job: job.update({status_key: "InProgress"})


@pytest.mark.aws
@pytest.mark.parametrize("kind", ["training", "tuning"])
def test_a_job_waited_on_too_long_is_stopped(api, channels, tmp_path, kind):
    backend = SageMakerTrainingBackend(**{**SETTINGS, "wait_timeout_s": 0.0})
    if kind == "training":
        api.change("DescribeTrainingJob", _running("TrainingJobStatus"))
        with pytest.raises(TrainingError, match="still InProgress after 0 s: stopped"):
            backend.train("firepipe-job-t", channels, hyperparameters(), tmp_path / "m")
        (created,) = api.sent("CreateTrainingJob")
        assert api.sent("StopTrainingJob") == [{"TrainingJobName": created["TrainingJobName"]}]
    else:
        api.change("DescribeHyperParameterTuningJob", _running("HyperParameterTuningJobStatus"))
        with pytest.raises(TrainingError, match="still InProgress after 0 s: stopped"):
            backend.tune("firepipe-tune-t", channels, hyperparameters(), max_trials=2, seed=0)
        stops = api.sent("StopHyperParameterTuningJob")
        assert stops == [{"HyperParameterTuningJobName": "firepipe-tune-t"}]


@pytest.mark.aws
def test_a_job_is_stopped_when_the_run_is_interrupted(api, channels, tmp_path):
    describes = []

    def interrupted_on_third_look(job: dict[str, Any]) -> None:
        describes.append(job["TrainingJobName"])
        job["TrainingJobStatus"] = "InProgress"
        if len(describes) == 3:
            raise KeyboardInterrupt  # what a terminated Dagster step sees, a BaseException

    api.change("DescribeTrainingJob", interrupted_on_third_look)
    backend = SageMakerTrainingBackend(**SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        backend.train("firepipe-job-i", channels, hyperparameters(), tmp_path / "m")
    assert api.sent("StopTrainingJob") == [{"TrainingJobName": describes[0]}]
    assert len(describes) == 3  # the look on creation, then the wait's two


@pytest.mark.aws
def test_channels_are_uploaded_once_per_content(sagemaker, api, channels, tmp_path):
    """Tuning then training on the same data reads one upload; other data gets its own."""
    import boto3

    hps = hyperparameters()
    sagemaker.tune("firepipe-tune-2", channels, hps, max_trials=2, seed=1)
    sagemaker.train("firepipe-job-3", channels, hps, tmp_path / "m")
    (tuned,) = api.sent("CreateHyperParameterTuningJob")
    (trained,) = api.sent("CreateTrainingJob")
    assert _channel_uris(tuned["TrainingJobDefinition"]["InputDataConfig"]) == _channel_uris(
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
def test_sagemaker_tuning_job_searches_the_shared_space(sagemaker, api, channels):
    import boto3

    hps = hyperparameters()
    result = sagemaker.tune("firepipe-tune-1", channels, hps, max_trials=4, seed=0)
    (request,) = api.sent("CreateHyperParameterTuningJob")
    assert request["HyperParameterTuningJobName"] == "firepipe-tune-1"
    config = request["HyperParameterTuningJobConfig"]
    ranges = tuning.sagemaker_parameter_ranges(tuning.LIGHTGBM_SPACE)
    assert config["ParameterRanges"] == {k: v for k, v in ranges.items() if v}  # [] left out
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Maximize",
        "MetricName": entry.OBJECTIVE_METRIC,
    }
    assert config["Strategy"] == "Bayesian"
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2}
    assert config["RandomSeed"] == 0  # sent although 0 (the SDK alone leaves it out)
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"] == {
        "TrainingImage": SETTINGS["image_uri"],
        "TrainingInputMode": "File",
        "MetricDefinitions": list(entry.METRIC_DEFINITIONS),
    }
    assert definition["RoleArn"] == SETTINGS["role_arn"]
    assert definition["ResourceConfig"]["InstanceType"] == "ml.c5.2xlarge"
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 1_800}
    assert set(_channel_uris(definition["InputDataConfig"])) == {"train", "validation"}
    # Every hyperparameter is static but the searched ones, which SageMaker refuses twice.
    searched = {p.name for p in tuning.LIGHTGBM_SPACE}
    assert searched & set(hps)  # the request carried values for them
    assert definition["StaticHyperParameters"] == {
        k: v for k, v in hps.items() if k not in searched
    }
    # The best job's tuned values override the static ones (moto reports a fixed best job).
    job = boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="firepipe-tune-1"
    )
    best = job["BestTrainingJob"]
    assert result.best_hyperparameters == {**hps, **best["TunedHyperParameters"]}
    assert result.objective == best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
