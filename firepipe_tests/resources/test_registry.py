import hashlib
import importlib.metadata
from pathlib import Path

import boto3
import mlflow.pyfunc
import numpy as np
import polars as pl
import pytest
from botocore.stub import Stubber
from mlflow import MlflowClient

from firepipe.core.training.promotion import ApprovalError
from firepipe.resources.registry import (
    LocalModelRegistry,
    ModelVersionInfo,
    SageMakerModelRegistry,
)
from firepipe.services.detector_model import input_example_pandas
from firepipe_tests.conftest import REPO_ROOT
from firepipe_tests.services.detector_sample import FEATURES, feature_frame, saved_detector

NAME = "fire_detector"
TAGS = {"feature_spec_hash": "spec-hash", "training_snapshot_id": "42", "git_sha": "abc123"}
PNG = b"\x89PNG\r\n\x1a\nplot"
SERVER_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/firepipe-mlflow"


def log(registry: LocalModelRegistry, directory: Path, name: str = NAME, lead: float = 12.0):
    return registry.log_candidate(
        directory,
        name=name,
        metrics={"real_median_lead_s": lead, "test_roc_auc": 0.97},
        params={"algorithm": "lightgbm", "num_boost_round": 20},
        tags=TAGS,
        artifacts={"roc.png": PNG, "time_to_detection.png": PNG + b"2"},
        input_example=feature_frame(),
    )


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory):
    """A registry with two candidates of NAME: a LightGBM detector (v1), a logistic one (v2)."""
    root = tmp_path_factory.mktemp("registry")
    registry = LocalModelRegistry(root=str(root / "mlflow"))
    detectors = {}
    # Logged from the checkout, whose uv.lock MLflow would copy from the working directory.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO_ROOT)
        for algorithm in ("lightgbm", "logistic"):
            directory = root / algorithm
            detector = saved_detector(directory, algorithm, threshold=0.6)
            detectors[log(registry, directory).version] = (detector, directory)
    return registry, detectors


def test_candidate_is_registered_with_metrics_tags_and_plots(logged, tmp_path: Path) -> None:
    registry, detectors = logged
    assert sorted(detectors) == [1, 2]
    info = registry.version(NAME, 1)
    assert info.approval_status == "PendingManualApproval"
    assert {k: info.tags[k] for k in TAGS} == TAGS
    assert registry.version_metrics(NAME, 1) == {"real_median_lead_s": 12.0, "test_roc_auc": 0.97}
    client = MlflowClient(tracking_uri=registry._tracking_uri())
    run = client.get_run(info.run_id)
    assert run.data.params["num_boost_round"] == "20"
    assert run.data.tags["git_sha"] == "abc123"
    plots = client.download_artifacts(info.run_id, "plots", str(tmp_path))
    assert (Path(plots) / "roc.png").read_bytes() == PNG
    assert (Path(plots) / "time_to_detection.png").read_bytes() == PNG + b"2"
    assert registry.champion(NAME) is None  # logging never names a champion
    # The model holds the detector and its own requirements, not firepipe's lock file (MLflow
    # copies a uv project's files from the working directory, the checkout above, unless told).
    assert (REPO_ROOT / "uv.lock").exists()
    with registry._mlflow() as fluent:
        model = Path(
            fluent.artifacts.download_artifacts(f"models:/{NAME}/1", dst_path=str(tmp_path / "m"))
        )
    files = {p.name for p in model.rglob("*") if p.is_file()}
    assert {"MLmodel", "requirements.txt"} <= files
    assert "uv.lock" not in files


def test_candidate_needs_its_tags_and_png_names(logged, tmp_path: Path) -> None:
    registry, detectors = logged
    directory = detectors[1][1]
    kwargs = {"name": NAME, "metrics": {}, "params": {}, "input_example": feature_frame()}
    with pytest.raises(ValueError, match="needs the tags training_snapshot_id"):
        registry.log_candidate(
            directory, tags={**TAGS, "training_snapshot_id": ""}, artifacts={}, **kwargs
        )
    with pytest.raises(ValueError, match="'approval_status' is set by the registry"):
        registry.log_candidate(
            directory, tags={**TAGS, "approval_status": "Approved"}, artifacts={}, **kwargs
        )
    with pytest.raises(ValueError, match=r"plain \*\.png"):
        registry.log_candidate(directory, tags=TAGS, artifacts={"../x.png": PNG}, **kwargs)


@pytest.mark.parametrize("version", [1, 2])
def test_registered_detector_loads_back_bit_identical(logged, version: int) -> None:
    registry, detectors = logged
    detector, directory = detectors[version]
    frame = feature_frame(seed=3)
    expected = detector.scores(frame)
    for uri in (f"models:/{NAME}/{version}", str(directory)):
        loaded = registry.load_detector(uri)
        assert loaded.algorithm == detector.algorithm
        assert loaded.threshold == 0.6
        assert np.array_equal(loaded.scores(frame), expected)


def test_registered_pyfunc_has_the_feature_signature(logged) -> None:
    registry, detectors = logged
    detector, _ = detectors[1]
    frame = feature_frame(seed=4)
    with registry._mlflow():
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
        predicted = model.predict(frame.select(FEATURES).to_pandas())
    inputs = model.metadata.get_input_schema().inputs
    assert [c.name for c in inputs if c.required] == list(FEATURES)
    assert np.array_equal(predicted["score"].to_numpy(), detector.scores(frame))
    assert predicted["alarm"].tolist() == (detector.scores(frame) >= 0.6).tolist()


def test_load_detector_refuses_what_is_not_a_model(logged, tmp_path: Path) -> None:
    registry, _ = logged
    with pytest.raises(ValueError, match="neither a model URI nor an existing folder"):
        registry.load_detector(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match=r"holds neither detector\.json nor an MLflow model"):
        registry.load_detector(str(tmp_path))


def test_a_detector_with_persistence_is_registered_and_served(logged, tmp_path: Path) -> None:
    from firepipe.core.training import evaluation

    registry, _ = logged
    detector = saved_detector(tmp_path / "d", threshold=0.5, persistence_s=2)
    # The lake's timestamps are UTC-aware; MLflow's signature takes them as naive UTC.
    frame = feature_frame(seed=3).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    version = registry.log_candidate(
        tmp_path / "d",
        name="persistent",
        metrics={},
        params={},
        tags=TAGS,
        artifacts={},
        input_example=frame.select(*FEATURES, "device_id", "ts").head(5),
    )
    request = input_example_pandas(detector, frame)
    alarms = registry.load_pyfunc(version.uri).predict(request)["alarm"].tolist()
    scored = frame.select("device_id", "ts").with_columns(score=detector.scores(frame))
    assert alarms == evaluation.alarm_sounding(scored, 0.5, 2).to_list()
    assert 0 < sum(alarms) < int((scored["score"] >= 0.5).sum())  # the persistence mattered


def test_evaluation_is_recorded_on_the_candidates_run(logged, tmp_path: Path) -> None:
    registry, detectors = logged
    name = "evaluated"
    version = log(registry, detectors[1][1], name).version
    many = {f"test/metric_{i:04d}": float(i) for i in range(1_005)}  # more than one batch
    registry.record_evaluation(name, version, {**many, "real_stations": 29.0}, {"nist.png": PNG})
    metrics = registry.version_metrics(name, version)
    assert metrics["real_stations"] == 29.0
    assert metrics["real_median_lead_s"] == 12.0  # the training metrics are kept
    assert {k: metrics[k] for k in many} == many
    run_id = registry.version(name, version).run_id
    client = MlflowClient(tracking_uri=registry._tracking_uri())
    plots = Path(client.download_artifacts(run_id, "plots", str(tmp_path)))
    assert (plots / "nist.png").read_bytes() == PNG
    assert (plots / "roc.png").read_bytes() == PNG  # the candidate's plots stay beside it
    with pytest.raises(ValueError, match="plain"):
        registry.record_evaluation(name, version, {}, {"../x.png": PNG})


def test_approval_and_champion_only_through_promote(logged) -> None:
    registry, detectors = logged
    name = "promotion_flow"
    for version in (1, 2):
        assert log(registry, detectors[version][1], name).version == version
    with pytest.raises(ApprovalError, match="unknown approval status 'Approve'"):
        registry.set_approval(name, 1, "Approve", "typo")
    registry.set_approval(name, 2, "Approved", "reviewed by a person")
    assert registry.version(name, 2).tags["approval_reason"] == "reviewed by a person"
    assert registry.champion(name) is None  # approval does not move the champion

    registry.promote(name, 1, "first champion")
    first = registry.champion(name)
    assert isinstance(first, ModelVersionInfo)
    assert (first.version, first.approval_status) == (1, "Approved")
    assert first.tags["previous_champion"] == "none"

    registry.promote(name, 2, "leads by 5 s")
    second = registry.champion(name)
    assert second is not None
    assert second.version == 2
    assert second.tags["previous_champion"] == "1"
    assert second.tags["promotion_reason"] == "leads by 5 s"
    old = registry.version(name, 1)
    assert old.tags["superseded_by"] == "2"
    assert "previous_champion" in old.aliases

    frame = feature_frame(seed=5)
    loaded = registry.load_detector(f"models:/{name}@champion")
    assert np.array_equal(loaded.scores(frame), detectors[2][0].scores(frame))

    with pytest.raises(ApprovalError, match="is the champion: promote another version first"):
        registry.set_approval(name, 2, "Rejected", "regression")
    registry.set_approval(name, 1, "Rejected", "superseded and flawed")
    with pytest.raises(ApprovalError, match="is Rejected: it cannot be champion"):
        registry.promote(name, 1, "rollback")
    with pytest.raises(ApprovalError, match="cannot go from Rejected to PendingManualApproval"):
        registry.set_approval(name, 1, "PendingManualApproval", "again")
    # The same decision taken again: the status stays, the latest reason is recorded.
    registry.set_approval(name, 1, "Rejected", "rejected again")
    again = registry.version(name, 1)
    assert (again.approval_status, again.tags["approval_reason"]) == ("Rejected", "rejected again")
    assert registry.champion(name).version == 2  # type: ignore[union-attr]
    with pytest.raises(KeyError, match="no version 9"):
        registry.promote(name, 9, "absent")


# -- SageMaker ----------------------------------------------------------------------------


def test_sagemaker_mlflow_plugin_handles_tracking_server_arns() -> None:
    from mlflow.tracking._model_registry.utils import _get_store as registry_store
    from mlflow.tracking._tracking_service.utils import _get_store as tracking_store

    plugin = importlib.metadata.distribution("sagemaker-mlflow")
    groups = {ep.group for ep in plugin.entry_points if ep.name == "arn"}
    assert {"mlflow.tracking_store", "mlflow.model_registry_store"} <= groups
    registry = SageMakerModelRegistry(tracking_server_arn=SERVER_ARN, region="eu-west-1")
    uri = registry._tracking_uri()
    assert uri == SERVER_ARN
    assert type(tracking_store(uri)).__name__ == "MlflowSageMakerStore"
    assert type(registry_store(uri)).__name__ == "MlflowSageMakerRegistryStore"


def test_sagemaker_registry_refuses_other_arns() -> None:
    registry = SageMakerModelRegistry(
        tracking_server_arn="arn:aws:s3:::bucket/key", region="eu-west-1"
    )
    with pytest.raises(ValueError, match="not the ARN of a SageMaker MLflow tracking server"):
        registry._tracking_uri()


def _stubbed(monkeypatch: pytest.MonkeyPatch) -> Stubber:
    client = boto3.client("sagemaker", region_name="eu-west-1")
    monkeypatch.setattr(SageMakerModelRegistry, "_sagemaker", lambda self: client)
    return Stubber(client)


def _package(group: str, version: int) -> dict:
    return {
        "ModelPackageGroupName": group,
        "ModelPackageVersion": version,
        "ModelPackageArn": (
            f"arn:aws:sagemaker:eu-west-1:123456789012:model-package/{group}/{version}"
        ),
        "CreationTime": "2026-01-01T00:00:00Z",
        "ModelPackageStatus": "Completed",
        "ModelApprovalStatus": "PendingManualApproval",
    }


class _SqliteBackedSageMaker(SageMakerModelRegistry):
    """The SageMaker registry with its MLflow calls sent to a SQLite store: the managed server
    cannot run here, the approval mirror through boto3 is what is under test."""

    root: str

    def _tracking_uri(self) -> str:
        return LocalModelRegistry(root=self.root)._tracking_uri()


@pytest.mark.aws
@pytest.mark.usefixtures("aws_credentials")
def test_sagemaker_approval_updates_the_model_package(logged, monkeypatch) -> None:
    local, detectors = logged
    registry = _SqliteBackedSageMaker(
        tracking_server_arn=SERVER_ARN, region="eu-west-1", root=local.root
    )
    name = "sagemaker_flow"
    log(local, detectors[1][1], name)
    group = f"{name}-{hashlib.sha256(b'firepipe-mlflow').hexdigest()[:6]}"
    assert registry.model_package_group(name) == group
    stub = _stubbed(monkeypatch)
    listing = {"ModelPackageGroupName": group, "MaxResults": 100}
    stub.add_response(
        "list_model_packages",
        {"ModelPackageSummaryList": [_package(group, 2)], "NextToken": "page-2"},
        listing,
    )
    stub.add_response(
        "list_model_packages",
        {"ModelPackageSummaryList": [_package(group, 1)]},
        {**listing, "NextToken": "page-2"},
    )
    stub.add_response(
        "update_model_package",
        {"ModelPackageArn": _package(group, 1)["ModelPackageArn"]},
        {
            "ModelPackageArn": _package(group, 1)["ModelPackageArn"],
            "ModelApprovalStatus": "Approved",
            "ApprovalDescription": "reviewed",
        },
    )
    with stub:
        registry.set_approval(name, 1, "Approved", "reviewed")
        stub.assert_no_pending_responses()
    assert local.version(name, 1).approval_status == "Approved"

    # No package for the version (sync off): a clear error, and MLflow keeps its status.
    stub = _stubbed(monkeypatch)
    stub.add_response("list_model_packages", {"ModelPackageSummaryList": []}, listing)
    with stub, pytest.raises(LookupError, match="automatic model registration"):
        registry.set_approval(name, 1, "Rejected", "on second thought")
    assert local.version(name, 1).approval_status == "Approved"


def test_a_failing_server_is_not_read_as_no_champion(logged, monkeypatch) -> None:
    """Only "not found" means no champion or no version; a server error is raised, or the
    champion asset would promote a candidate on the floors alone."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    registry, _ = logged

    class Failing:
        def __init__(self, code: int) -> None:
            self.code = code

        def get_model_version_by_alias(self, name, alias):  # type: ignore[no-untyped-def]
            raise MlflowException("boom", error_code=self.code)

        get_model_version = get_model_version_by_alias

    monkeypatch.setattr(type(registry), "_client", lambda self: Failing(INTERNAL_ERROR))
    with pytest.raises(MlflowException, match="boom"):
        registry.champion(NAME)
    with pytest.raises(MlflowException, match="boom"):
        registry.version(NAME, 1)
    monkeypatch.setattr(type(registry), "_client", lambda self: Failing(RESOURCE_DOES_NOT_EXIST))
    assert registry.champion(NAME) is None
    with pytest.raises(KeyError, match="no version 1"):
        registry.version(NAME, 1)


def test_the_newest_version_is_found_and_the_feature_spec_travels_with_it(
    logged, tmp_path: Path
) -> None:
    from firepipe.core.features.spec import default_spec
    from firepipe.core.training.models import train_detector

    registry, _ = logged
    name = "spec-carrier"
    assert registry.latest_version(name) is None
    spec = default_spec()
    names = spec.names[: len(FEATURES)]
    frame = feature_frame().rename(dict(zip(FEATURES, names, strict=True)))
    detector = train_detector(frame, None, names, spec.hash(), "logistic", {"early_fire_weight": 1})
    detector.with_feature_spec(spec).save(tmp_path / "with")
    detector.save(tmp_path / "without")
    for folder in ("with", "without", "with"):
        registry.log_candidate(
            tmp_path / folder,
            name=name,
            metrics={},
            params={},
            tags=TAGS,
            artifacts={},
            input_example=frame.head(5),
        )
    newest = registry.latest_version(name)
    assert newest is not None
    assert newest.version == 3
    assert registry.load_detector(newest.uri).feature_spec == spec
    # A detector registered without its spec loads, saying it has none.
    assert registry.load_detector(registry.version(name, 2).uri).feature_spec is None
    # The alias a search leaves out is there.
    registry.promote(name, 3, "newest")
    assert registry.latest_version(name).aliases == ("champion",)  # type: ignore[union-attr]


def test_the_registered_model_carries_the_compiled_detector(tmp_path: Path) -> None:
    """A detector exported for serving before registration is downloaded with its compiled
    library, which the service loads; the pyfunc still loads the detector as before."""
    from firepipe.core.serving.export import export_compiled
    from firepipe.core.serving.scoring import load_serving_model

    directory = tmp_path / "detector"
    detector = saved_detector(directory)
    assert export_compiled(detector, directory, feature_frame(seed=3)).backend == "tl2cgen"
    registry = LocalModelRegistry(root=str(tmp_path / "mlflow"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO_ROOT)
        info = log(registry, directory)
    served = load_serving_model(registry.download_model(info.uri, tmp_path / "m"), info.uri)
    assert served.scorer.backend == "tl2cgen"
    assert served.fallback_reason is None
    frame = feature_frame(seed=4)
    x = np.ascontiguousarray(frame.select(FEATURES).to_numpy(), dtype=np.float64)
    np.testing.assert_allclose(served.scorer.scores(x), detector.scores(frame), atol=1e-12)
    pyfunc = registry.load_pyfunc(info.uri)
    predicted = pyfunc.predict(input_example_pandas(detector, frame))
    np.testing.assert_allclose(predicted["score"].to_numpy(), detector.scores(frame))
