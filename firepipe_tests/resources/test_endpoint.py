"""The model endpoint port: the local record of deployments and in-process batch scoring, and
the SageMaker endpoint, its autoscaling and batch transform jobs through the SDK on moto."""

import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from firepipe.core.features.spec import FeatureSpec, Rolling
from firepipe.core.readings import CHANNEL_NAMES, TIMESTAMP
from firepipe.core.serving import batch
from firepipe.core.training.dataset import LABEL
from firepipe.core.training.models import Detector, train_detector
from firepipe.core.training.promotion import APPROVED, PENDING, REJECTED, ApprovalError
from firepipe.lib.aws_env import MODEL_VERSION_VAR
from firepipe.resources.endpoint import (
    ChampionModel,
    EndpointError,
    LocalModelEndpoint,
    SageMakerEndpoint,
)
from firepipe.resources.registry import APPROVAL_TAG, ModelVersionInfo

NAME = "firepipe-fire-detector"
SPEC = FeatureSpec((Rolling("temperature_c", "mean", 30), Rolling("co_ppm", "max", 30)))
T0 = datetime(2026, 12, 6, tzinfo=UTC)


def champion(version: int, folder: Path, status: str = APPROVED) -> ChampionModel:
    return ChampionModel(ModelVersionInfo(NAME, version, "run", {APPROVAL_TAG: status}), folder)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small LightGBM detector saved as the registry hands it over."""
    rng = np.random.default_rng(0)
    heat = rng.normal(0, 1, 400)
    frame = pl.DataFrame(
        {SPEC.names[0]: heat, SPEC.names[1]: rng.normal(0, 1, 400), LABEL: heat > 0.5}
    )
    detector = train_detector(
        frame,
        None,
        SPEC.names,
        SPEC.hash(),
        "lightgbm",
        {"num_boost_round": 5, "num_threads": 1, "early_fire_weight": 1.0},
    ).with_feature_spec(SPEC)
    folder = tmp_path_factory.mktemp("model")
    detector.with_operating_point(0.5, 2).save(folder)
    return folder


# --- local ------------------------------------------------------------------------------------


def test_local_deployments_are_recorded_durably(tmp_path, model_dir):
    path = str(tmp_path / "endpoint.db")
    endpoint = LocalModelEndpoint(path=path)
    assert endpoint.current() is None
    first = endpoint.deploy(champion(3, model_dir))
    assert first.action == "created"
    assert first.deployment.model_version == f"{NAME}/3"
    assert first.deployment.model_uri == f"models:/{NAME}/3"  # what `firepipe serve` loads
    assert endpoint.deploy(champion(3, model_dir)).action == "unchanged"
    assert endpoint.deploy(champion(4, model_dir)).action == "updated"
    again = LocalModelEndpoint(path=path).current()  # another process reads the same record
    assert again is not None
    assert again.model_version == f"{NAME}/4"
    assert LocalModelEndpoint(path=path, endpoint_name="other").current() is None


@pytest.mark.parametrize("status", [PENDING, REJECTED])
def test_a_version_not_approved_is_neither_deployed_nor_scored(tmp_path, model_dir, status):
    endpoint = LocalModelEndpoint(path=str(tmp_path / "endpoint.db"))
    with pytest.raises(ApprovalError, match=f"{NAME}/5 is {status}"):
        endpoint.deploy(champion(5, model_dir, status))
    assert endpoint.current() is None
    with pytest.raises(ApprovalError):
        endpoint.score(champion(5, model_dir, status), pl.LazyFrame(), pl.LazyFrame())


def gold_and_silver(devices: int = 3, seconds: int = 20) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(1)
    rows = devices * seconds
    keys = {
        "device_id": [f"d{i // seconds}" for i in range(rows)],
        "ts": [T0 + timedelta(seconds=i % seconds) for i in range(rows)],
    }
    gold = pl.DataFrame(
        {**keys, SPEC.names[0]: rng.normal(0.5, 1, rows), SPEC.names[1]: rng.normal(0, 1, rows)}
    ).with_columns(pl.col("ts").cast(TIMESTAMP), pl.col(SPEC.names).cast(pl.Float32))
    silver = pl.DataFrame(keys).with_columns(
        pl.col("ts").cast(TIMESTAMP),
        pl.lit(False).alias("is_gap"),
        *(pl.lit(1.0, pl.Float32).alias(c) for c in CHANNEL_NAMES),
    )
    return gold, silver


def test_local_scoring_runs_the_champion_in_process(tmp_path, model_dir):
    gold, silver = gold_and_silver()
    endpoint = LocalModelEndpoint(path=str(tmp_path / "endpoint.db"))
    scored = endpoint.score(champion(3, model_dir), gold.lazy(), silver.lazy())
    detector = Detector.load(model_dir)
    assert scored["score"].to_list() == pytest.approx(list(detector.scores(gold)), abs=1e-12)
    assert set(scored["model_version"]) == {f"{NAME}/3"}
    # Persistence 2 s: a reading alarms only after 2 s of scores at or above 0.5.
    expected = batch.alarms(
        scored.with_columns(pl.lit(None, pl.String).alias("channel_profile")), detector
    )
    assert scored["alarm"].equals(expected)
    assert 0 < scored["alarm"].sum() < (scored["score"] >= 0.5).sum()


# --- SageMaker on moto ------------------------------------------------------------------------

REGION = "eu-west-1"
ACCOUNT = "123456789012"
BUCKET = "firepipe-serving"
SETTINGS = {
    "region": REGION,
    "role_arn": f"arn:aws:iam::{ACCOUNT}:role/firepipe-serving",
    "image_uri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/firepipe-serving:1",
    "bucket": BUCKET,
    "instance_type": "ml.c5.large",
    "min_instances": 1,
    "max_instances": 3,
    "invocations_per_instance": 9_000.0,
    "poll_interval_s": 0.0,
    "wait_timeout_s": 5.0,
}


def _answer(parsed: dict[str, Any]) -> Any:
    from botocore.awsrequest import AWSResponse

    return AWSResponse("https://stub", 200, {}, None), parsed


class Api:
    """The requests the port sends, as sent, on a boto3 session of moto (every SDK client is
    made from it). moto implements no UpdateEndpoint: here it moves moto's endpoint to the new
    config, or leaves it (a rolled-back update) when `roll_back` is set. moto answers empty
    structures as {}, which the SDK's models refuse: they are left out."""

    def __init__(self) -> None:
        import boto3

        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.roll_back = False
        self.session = boto3.Session(region_name=REGION)
        events = self.session.events
        events.register("before-parameter-build", self._record)
        events.register("after-call.sagemaker", self._prune)
        events.register("before-call.sagemaker.UpdateEndpoint", self._update)
        events.register("before-call.sagemaker.StopTransformJob", lambda **_: _answer({}))

    def sent(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.requests if name == operation]

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.requests.append((model.name, json.loads(json.dumps(params, default=str))))

    def _prune(self, parsed: dict[str, Any], **_: Any) -> None:
        for key in [k for k, v in parsed.items() if v == {}]:
            del parsed[key]

    def _update(self, params: dict[str, Any], **_: Any) -> Any:
        from moto.sagemaker.models import sagemaker_backends

        body = json.loads(params["body"])
        endpoint = sagemaker_backends[ACCOUNT][REGION].endpoints[body["EndpointName"]]
        if self.roll_back:
            endpoint.failure_reason = "the new variant failed its health checks"
        else:
            endpoint.endpoint_config_name = body["EndpointConfigName"]
        return _answer({"EndpointArn": endpoint.arn})


@pytest.fixture
def api(aws_credentials, monkeypatch):
    import boto3
    from moto import mock_aws

    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        recorder = Api()
        monkeypatch.setattr(SageMakerEndpoint, "_session", lambda self: recorder.session)
        yield recorder


def scaling(api: Api) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    client = api.session.client("application-autoscaling")
    return (
        client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"],
        client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"],
    )


@pytest.mark.aws
def test_sagemaker_deploy_creates_model_config_endpoint_and_autoscaling(api, model_dir):
    outcome = SageMakerEndpoint(**SETTINGS).deploy(champion(3, model_dir))
    assert outcome.action == "created"
    archive_uri = f"s3://{BUCKET}/serving/models/{NAME}/3/model.tar.gz"
    assert outcome.deployment.model_data == archive_uri
    (model,) = api.sent("CreateModel")
    assert model["PrimaryContainer"] == {
        "Image": SETTINGS["image_uri"],
        "ModelDataUrl": archive_uri,
        "Environment": {MODEL_VERSION_VAR: f"{NAME}/3"},
    }
    assert model["ExecutionRoleArn"] == SETTINGS["role_arn"]
    (config,) = api.sent("CreateEndpointConfig")
    assert config["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": model["ModelName"],
            "InitialInstanceCount": 1,
            "InstanceType": "ml.c5.large",
            "InitialVariantWeight": 1.0,
        }
    ]
    (created,) = api.sent("CreateEndpoint")
    assert created == {"EndpointName": NAME, "EndpointConfigName": config["EndpointConfigName"]}
    # The archive holds the saved detector at its root (SageMaker unpacks it in /opt/ml/model).
    body = api.session.client("s3").get_object(Bucket=BUCKET, Key=archive_uri[len(BUCKET) + 6 :])
    with tarfile.open(fileobj=io.BytesIO(body["Body"].read())) as archive:
        assert sorted(archive.getnames()) == sorted(p.name for p in model_dir.iterdir())
    (target,), (policy,) = scaling(api)
    assert target["ResourceId"] == f"endpoint/{NAME}/variant/AllTraffic"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 9_000.0
    assert tracking["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }


@pytest.mark.aws
def test_sagemaker_deploy_updates_in_place_and_keeps_the_autoscaled_count(api, model_dir):
    endpoint = SageMakerEndpoint(**SETTINGS)
    endpoint.deploy(champion(3, model_dir))
    assert endpoint.deploy(champion(3, model_dir)).action == "unchanged"
    assert not api.sent("UpdateEndpoint")
    outcome = endpoint.deploy(champion(4, model_dir))
    assert outcome.action == "updated"
    (update,) = api.sent("UpdateEndpoint")
    new_config = api.sent("CreateEndpointConfig")[-1]["EndpointConfigName"]
    assert update == {
        "EndpointName": NAME,
        "EndpointConfigName": new_config,
        "RetainAllVariantProperties": True,
    }
    assert len(api.sent("CreateEndpoint")) == 1
    assert not api.sent("DeregisterScalableTarget")  # a new model alone may autoscale on
    current = endpoint.current()
    assert current is not None
    assert current.model_version == f"{NAME}/4"
    assert current.model_data.endswith(f"/{NAME}/4/model.tar.gz")


@pytest.mark.aws
def test_a_new_instance_type_deregisters_autoscaling_before_the_update(api, model_dir):
    SageMakerEndpoint(**SETTINGS).deploy(champion(3, model_dir))
    SageMakerEndpoint(**{**SETTINGS, "instance_type": "ml.c5.xlarge"}).deploy(
        champion(3, model_dir)
    )
    names = [name for name, _ in api.requests]
    assert names.index("DeregisterScalableTarget") < names.index("UpdateEndpoint")
    (target,), _ = scaling(api)  # registered again once the endpoint serves
    assert target["MaxCapacity"] == 3


@pytest.mark.aws
def test_a_rolled_back_update_is_an_error(api, model_dir):
    endpoint = SageMakerEndpoint(**SETTINGS)
    endpoint.deploy(champion(3, model_dir))
    api.roll_back = True
    with pytest.raises(EndpointError, match=r"did not take .*failed its health checks"):
        endpoint.deploy(champion(4, model_dir))


@pytest.mark.aws
def test_an_unapproved_version_sends_nothing(api, model_dir):
    with pytest.raises(ApprovalError):
        SageMakerEndpoint(**SETTINGS).deploy(champion(3, model_dir, PENDING))
    assert not api.requests


class ContainerStandIn(SageMakerEndpoint):
    """moto completes a transform job at once without running it: answer each input file the
    way the inference container does (a prediction per line, here score = temperature / 100)
    before waiting."""

    def _finish(self, job: Any, what: str) -> None:
        s3 = self._session().client("s3")
        source = job.transform_input.data_source.s3_data_source.s3_uri
        target = job.transform_output.s3_output_path
        bucket, _, prefix = source.removeprefix("s3://").partition("/")
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
            lines = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().splitlines()
            answers = []
            for line in map(json.loads, lines):
                score = line["temperature_c"] / 100
                answer = {"device_id": line["device_id"], "ts": line["ts"], "score": score}
                answers.append({**answer, "alarm": score >= 0.5, "model_version": f"{NAME}/3"})
            key = target.removeprefix(f"s3://{bucket}/") + item["Key"].removeprefix(prefix)
            body = "".join(json.dumps(a) + "\n" for a in answers)
            s3.put_object(Bucket=bucket, Key=f"{key}.out", Body=body.encode())
        super()._finish(job, what)


@pytest.mark.aws
def test_batch_transform_scores_silver_readings_line_by_line(api, model_dir):
    gold, silver = gold_and_silver(devices=3, seconds=4)
    temperatures = [float(20 + 10 * (i % 7)) for i in range(silver.height)]
    silver = silver.with_columns(pl.Series("temperature_c", temperatures, dtype=pl.Float32))
    endpoint = ContainerStandIn(**SETTINGS, transform_file_rows=5)
    scored = endpoint.score(champion(3, model_dir), gold.lazy(), silver.lazy())
    (job,) = api.sent("CreateTransformJob")
    assert job["TransformInput"]["ContentType"] == "application/jsonlines"
    assert job["TransformInput"]["SplitType"] == "Line"
    assert job["BatchStrategy"] == "MultiRecord"
    assert job["MaxConcurrentTransforms"] == 1
    assert job["MaxPayloadInMB"] == 5
    assert job["TransformOutput"]["AssembleWith"] == "Line"
    assert job["ModelName"] == api.sent("CreateModel")[0]["ModelName"]
    # 4 readings a device, 5 lines a file at most: a file per device, whole.
    inputs = api.session.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="serving/transform/")
    assert sum(k["Key"].endswith(".jsonl") for k in inputs["Contents"]) == 3
    assert scored.schema == pl.Schema(batch.SCORE_SCHEMA)
    assert scored.select("device_id", "ts").equals(silver.select("device_id", "ts"))
    assert scored["score"].to_list() == pytest.approx([t / 100 for t in temperatures])
    assert scored["alarm"].to_list() == [t >= 50 for t in temperatures]


@pytest.mark.aws
def test_a_failed_transform_job_is_a_clear_error(api, model_dir):
    def failed(parsed: dict[str, Any], **_: Any) -> None:
        parsed.update(
            TransformJobStatus="Failed", FailureReason="ClientError: 400 from /invocations"
        )

    api.session.events.register("after-call.sagemaker.DescribeTransformJob", failed)
    gold, silver = gold_and_silver(devices=1, seconds=3)
    with pytest.raises(EndpointError, match="ended Failed: ClientError: 400"):
        ContainerStandIn(**SETTINGS).score(champion(3, model_dir), gold.lazy(), silver.lazy())


@pytest.mark.aws
def test_a_transform_job_waited_on_too_long_is_stopped(api, model_dir):
    def running(parsed: dict[str, Any], **_: Any) -> None:
        parsed["TransformJobStatus"] = "InProgress"

    api.session.events.register("after-call.sagemaker.DescribeTransformJob", running)
    gold, silver = gold_and_silver(devices=1, seconds=3)
    endpoint = SageMakerEndpoint(**{**SETTINGS, "wait_timeout_s": 0.0})
    with pytest.raises(EndpointError, match="still InProgress"):
        endpoint.score(champion(3, model_dir), gold.lazy(), silver.lazy())
    assert len(api.sent("StopTransformJob")) == 1
