"""The detector's assets on a small simulated lake: training set, candidate, evaluation on the
held-out splits and the real NIST fires, and champion/challenger, with MLflow on SQLite."""

import json
from dataclasses import replace

import dagster as dg
import polars as pl
import pytest

from firepipe.core.features.spec import (
    FEATURE_SPEC_PROPERTY,
    SILVER_SNAPSHOT_PROPERTY,
    FeatureSpec,
    compute_features,
    default_spec,
    spec_from_properties,
)
from firepipe.core.lake.standardise import to_silver
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.core.training import assessment, dataset, lineage, promotion
from firepipe.core.training.inputs import detector_inputs, increasing_inputs
from firepipe.defs.features.assets import SILVER_TABLE, sensor_features
from firepipe.defs.features.assets import TABLE as GOLD_TABLE
from firepipe.defs.lake.assets import READINGS_PARTITIONING
from firepipe.defs.training.assets import (
    CHAMPION_KEY,
    EVALUATION_KEY,
    MODEL_NAME,
    TRAINING_SET_KEY,
    TRAINING_SET_SNAPSHOT_TAG,
    TRAINING_SET_TABLE,
    champion,
    detector,
    model_evaluation,
    training_set,
)
from firepipe.lib.lakehouse import tables
from firepipe.lib.lakehouse.io_manager import IcebergIOManager
from firepipe.resources.registry import CHAMPION_ALIAS, REQUIRED_TAGS, LocalModelRegistry
from firepipe.resources.spark import LocalSparkCompute
from firepipe.resources.training import LocalTrainingBackend

ASSETS = [sensor_features, training_set, detector, model_evaluation, champion]
FAST = {"params": {"num_boost_round": "30", "num_threads": "1"}}
# The goal floors (no false alarm, no alarm before ignition) are not what this test is about.
LENIENT = {"max_false_alarms_per_1000h": 1e9, "max_pre_ignition_alarms": 1000}


def write_silver(lakehouse, devices: int) -> pl.DataFrame:
    bronze = simulate(GenerationSpec(devices=devices, duration_s=600, seed=11), workers=1)
    silver = to_silver({"synthetic": bronze}).readings
    tables.write_table(
        lakehouse.catalog(), SILVER_TABLE, silver, tables.parse_partitioning(READINGS_PARTITIONING)
    )
    return silver


@pytest.fixture
def lake(lakehouse, tmp_path, firepipe_home):
    write_silver(lakehouse, 80)
    return {
        "lakehouse": lakehouse,
        "io_manager": IcebergIOManager(lakehouse=lakehouse),
        "spark_compute": LocalSparkCompute(master="local[1]"),
        "training_backend": LocalTrainingBackend(work_dir=str(tmp_path / "training")),
        "model_registry": LocalModelRegistry(root=str(tmp_path / "mlflow")),
    }


def run(resources, instance, detector_config=None, champion_config=None):
    config = {"ml__detector": {"config": {**FAST, **(detector_config or {})}}}
    if champion_config:
        config["ml__champion"] = {"config": champion_config}
    result = dg.materialize(
        ASSETS, resources=resources, instance=instance, run_config={"ops": config}
    )
    assert result.success
    return {
        key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
        for key, m in (
            (e.asset_key, e.materialization) for e in result.get_asset_materialization_events()
        )
    }


@pytest.mark.slow
def test_training_evaluation_and_champion_on_a_simulated_lake(lake, tmp_path):
    registry = lake["model_registry"]
    lakehouse = lake["lakehouse"]
    with dg.instance_for_test() as instance:
        # 80 devices: a profile has a non-fire validation device or two, so the bar is 1.
        first = run(lake, instance, {"profile_min_devices": 1}, champion_config=LENIENT)
        ts = first["ml/training_set"]
        assert ts["rows_train"] > 0
        assert ts["rows_validation"] > 0
        assert ts["rows_test"] > 0
        # Gold's current snapshot, with the spec and silver snapshot stored in it.
        gold_snapshot = first["gold/sensor_features"]["iceberg/snapshot_id"]
        assert ts["gold_snapshot_id"] == gold_snapshot
        gold = lakehouse.snapshot_properties(GOLD_TABLE)
        assert ts["silver_snapshot_id"] == gold[SILVER_SNAPSHOT_PROPERTY]
        # The training set's snapshot carries its spec and both upstream snapshots.
        built = lineage.training_set_lineage(lakehouse.snapshot_properties(TRAINING_SET_TABLE))
        spec = spec_from_properties(gold)
        assert built == lineage.Lineage(spec, int(ts["silver_snapshot_id"]), int(gold_snapshot))
        assert ts["feature_spec_hash"] == spec.hash()
        frame = lakehouse.read("ml.training_set")
        # Whole devices in one split; only synthetic readings.
        assert (
            frame.group_by("device_id").agg(pl.col(dataset.SPLIT).n_unique())[dataset.SPLIT].max()
            == 1
        )
        assert frame["device_id"].str.starts_with("syn-").all()
        # Two noisy copies of every train and validation device, none of a test device.
        copy = frame["device_id"].str.contains("~noise", literal=True)
        originals = frame.filter(~copy)
        learning = originals.filter(pl.col(dataset.SPLIT) != "test").height
        assert ts["noise_copies"] == 2
        assert ts["rows_noisy_copies"] == frame.filter(copy).height == 2 * learning > 0
        assert set(frame.filter(copy)[dataset.SPLIT].unique()) == {"train", "validation"}

        candidate = first["ml/detector"]
        assert candidate["model_version"] == 1
        assert 0.0 <= candidate["threshold"] <= 1.0
        # The default inputs: the offset-robust set, monotone in the rises.
        assert candidate["feature_set"] == "offset_robust"
        read = detector_inputs(spec, "offset_robust")
        assert candidate["features"] == list(read)
        assert candidate["increasing"] == list(increasing_inputs(spec, read))
        assert json.loads(candidate["hyperparameters"]["increasing"]) == candidate["increasing"]
        version = registry.version(MODEL_NAME, 1)
        assert version.tags["feature_spec_hash"] == spec.hash()
        assert version.tags["training_snapshot_id"] == ts["gold_snapshot_id"]
        assert version.tags[TRAINING_SET_SNAPSHOT_TAG] == ts["iceberg/snapshot_id"]

        # A threshold per channel profile, at the one point's persistence, saved with the model,
        # and the model carries its feature spec.
        model = registry.load_detector(candidate["model_uri"])
        assert model.feature_spec == spec
        assert candidate["profile_points"] == len(model.profile_points) > 0
        assert set(model.profile_points) <= {
            dataset.profile_name(p) for p in dataset.CHANNEL_PROFILES
        }
        assert {p for _, p in model.profile_points.values()} == {candidate["persistence_s"]}
        assert len({t for t, _ in model.profile_points.values()}) > 1
        table = candidate["operating_points"]
        assert "| channel_profile | fire_devices | non_fire_devices | own_point |" in table

        # The evaluation's metadata: a few headline figures, tables and the plots.
        evaluation = first["ml/evaluation"]
        assert evaluation["model_version"] == 1
        figures = {k for k, v in evaluation.items() if isinstance(v, float)}
        headline = set(assessment.HEADLINE_METRICS)
        assert headline - {promotion.MEDIAN_LEAD_S} <= figures <= headline  # lead: None or not
        assert len(evaluation) < 30
        assert evaluation["splits"].startswith("| split | readings | devices | roc_auc |")
        assert evaluation["splits"].count("\n") == 1 + 3  # header, rule, three splits
        profiles = evaluation["test_profiles"]
        assert profiles.count("\n") == 1 + len(dataset.CHANNEL_PROFILES) + 1  # and "all"
        assert "| fixed threshold |" in evaluation["nist_summary"]
        stations = evaluation["real_summary"]["stations_replayed"]
        assert evaluation["nist_stations"].count("\n") == 1 + stations  # and the header rule

        # The training set rebuilt with another split, the candidate not retrained: the
        # evaluation still scores the snapshot the candidate was fitted on, so its splits and
        # figures are those of the first evaluation, not of devices it trained on.
        rebuilt = dg.materialize(
            ASSETS,
            selection=[TRAINING_SET_KEY, EVALUATION_KEY],
            resources=lake,
            instance=instance,
            run_config={"ops": {"ml__training_set": {"config": {"seed": 7}}}},
        )
        assert rebuilt.success
        [again] = rebuilt.asset_materializations_for_node("ml__evaluation")
        assert again.metadata["splits"].value == evaluation["splits"]
        for png in ("roc.png", "time_to_detection.png", "nist_timelines.png"):
            assert evaluation[png].startswith(f"![{png}](data:image/png;base64,")
        # The registry keeps every flat metric, as promotion reads them.
        metrics = registry.version_metrics(MODEL_NAME, 1)
        assert evaluation["test/roc_auc"] == metrics["test/roc_auc"]
        test_devices = metrics["test/devices"]
        for profile in dataset.CHANNEL_PROFILES:
            name = dataset.profile_name(profile).replace("+", ".")
            assert metrics[f"test_profiles/{name}/devices"] == test_devices, name
        assert metrics["test_profiles/all/devices"] == test_devices * len(dataset.CHANNEL_PROFILES)
        summary = evaluation["real_summary"]
        assert summary["profile_points"] == {k: list(v) for k, v in model.profile_points.items()}
        assert summary["stations"] == 29  # NIST stations with commercial alarms
        assert 0.0 <= summary["share_no_later_than_median_alarm"] <= 1.0
        assert evaluation["fixed_threshold_baseline"]["stations"] == 29
        for name in promotion.PROMOTION_METRICS:
            assert name in metrics, name
        assert metrics["real_stations"] == 29
        assert metrics["real_warm_up_s"] == summary["warm_up_s"] == 300.0
        assert metrics["real_warm_up_basis_s"] == summary["warm_up_basis_s"] == 10.0

        # Floors opened wide: the first candidate becomes the champion, Approved.
        decision = first["ml/champion"]
        assert decision["promoted"] is True
        assert registry.version(MODEL_NAME, 1).approval_status == promotion.APPROVED
        assert registry.champion(MODEL_NAME).version == 1

        # A second candidate must beat the champion by 1,000 s of lead: refused, with reasons.
        second = run(lake, instance, champion_config={**LENIENT, "min_lead_gain_s": 1000.0})
        assert second["ml/detector"]["model_version"] == 2
        assert second["ml/evaluation"]["model_version"] == 2
        assert second["ml/champion"]["promoted"] is False
        assert "fail: " in second["ml/champion"]["reasons"]
        assert registry.version(MODEL_NAME, 2).approval_status == promotion.REJECTED
        assert registry.champion(MODEL_NAME).version == 1
        # The same decision taken again: the rejected candidate stays rejected, no error.
        again = dg.materialize(
            ASSETS,
            selection=[CHAMPION_KEY],
            resources=lake,
            instance=instance,
            run_config={
                "ops": {"ml__champion": {"config": {**LENIENT, "min_lead_gain_s": 1000.0}}}
            },
        )
        assert again.success
        assert registry.version(MODEL_NAME, 2).approval_status == promotion.REJECTED
        assert registry.champion(MODEL_NAME).version == 1
        champion_model = registry.load_detector(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}")
        assert champion_model.threshold == first["ml/detector"]["threshold"]
        assert champion_model.feature_names == tuple(candidate["features"])

        # A candidate saved before models carried their spec is not evaluated, nor decided on.
        replace(champion_model, feature_spec=None).save(tmp_path / "old")
        registry.log_candidate(
            tmp_path / "old",
            name=MODEL_NAME,
            metrics={},
            params={},
            tags={tag: version.tags[tag] for tag in REQUIRED_TAGS},
            artifacts={},
            input_example=frame.select(*champion_model.feature_names).head(5),
        )
        for key, message in (
            (EVALUATION_KEY, "version 3: this detector"),
            (CHAMPION_KEY, "version 3: candidate metrics lack"),
        ):
            result = dg.materialize(
                ASSETS, selection=[key], resources=lake, instance=instance, raise_on_error=False
            )
            assert not result.success
            failure = result.failure_data_for_node(key.to_python_identifier())
            assert message in str(failure.error), failure.error
        assert registry.champion(MODEL_NAME).version == 1


def test_the_training_set_takes_gold_spec_from_golds_snapshot(lakehouse, firepipe_home):
    """Not the default spec, nor any record of a materialisation: the properties of gold's
    current snapshot, carried on into the training set's."""
    silver = write_silver(lakehouse, 12)
    spec = FeatureSpec(default_spec().features[:9])
    silver_snapshot = lakehouse.snapshots(SILVER_TABLE)[-1].snapshot_id
    properties = {
        FEATURE_SPEC_PROPERTY: spec.to_json(),
        SILVER_SNAPSHOT_PROPERTY: str(silver_snapshot),
    }
    written = tables.write_table(
        lakehouse.catalog(), GOLD_TABLE, compute_features(silver, spec), (), None, properties
    )
    config = {"ops": {"ml__training_set": {"config": {"noise_copies": 0}}}}
    io = IcebergIOManager(lakehouse=lakehouse)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [training_set],
            resources={"lakehouse": lakehouse, "io_manager": io},
            instance=instance,
            run_config=config,
        )
        assert result.success
        metadata = result.asset_materializations_for_node("ml__training_set")[0].metadata
        assert metadata["feature_spec_hash"].value == spec.hash() != default_spec().hash()
        assert metadata["gold_snapshot_id"].value == str(written.snapshot_id)
        built = lineage.training_set_lineage(lakehouse.snapshot_properties(TRAINING_SET_TABLE))
        assert built == lineage.Lineage(spec, silver_snapshot, written.snapshot_id)
        assert set(spec.names) <= set(lakehouse.read(TRAINING_SET_TABLE).columns)
        # Gold written without its lineage (before gold stored it): a clear failure.
        tables.write_table(lakehouse.catalog(), GOLD_TABLE, compute_features(silver, spec))
        failed = dg.materialize(
            [training_set],
            resources={"lakehouse": lakehouse, "io_manager": io},
            instance=instance,
            run_config=config,
            raise_on_error=False,
        )
        assert not failed.success
        error = str(failed.failure_data_for_node("ml__training_set").error)
        assert "gold snapshot has no firepipe.feature-spec" in error


def test_git_sha_prefers_the_image_variable(monkeypatch):
    from firepipe.defs.training.assets import GIT_SHA_VAR, git_sha

    monkeypatch.setenv(GIT_SHA_VAR, "abc123")
    assert git_sha() == "abc123"
    monkeypatch.delenv(GIT_SHA_VAR)
    sha = git_sha()
    assert sha == "unknown" or len(sha) == 40
