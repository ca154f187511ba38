"""`firepipe evaluate-real`: the champion (or a given model) replayed over the NIST tests."""

import json
from pathlib import Path

import click
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from firepipe import settings
from firepipe.cli import main
from firepipe.core.features.spec import FeatureSpec, default_spec
from firepipe.core.realdata import nist
from firepipe.core.training import real_fires
from firepipe.core.training.dataset import LABEL
from firepipe.core.training.models import FEATURE_SPEC_FILE, train_detector
from firepipe.names import MODEL_NAME
from firepipe.resources.registry import LocalModelRegistry
from firepipe_tests.conftest import nist_data_dir
from firepipe_tests.services.detector_sample import register_detector

# Rises of smoke and heat: features every NIST station with those sensors has.
FEATURES = ("smoke_obscuration_pct_per_m__rise_per_min_30s", "temperature_c__rise_per_min_30s")


def rise_detector(directory, spec=None):  # type: ignore[no-untyped-def]
    """A logistic detector that alarms on fast smoke or heat rises, carrying `spec` (default:
    the default spec)."""
    spec = spec or default_spec()
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 2.0, (2_000, 2))
    label = (x[:, 0] > 1.0) | (x[:, 1] > 3.0)
    frame = pl.DataFrame({FEATURES[0]: x[:, 0], FEATURES[1]: x[:, 1], LABEL: label})
    no_ignition_times = {"early_fire_weight": 1.0}
    detector = train_detector(frame, None, FEATURES, spec.hash(), "logistic", no_ignition_times)
    detector = detector.with_feature_spec(spec).with_operating_point(0.5, 0)
    detector.save(directory)
    return detector


@pytest.fixture
def champion(firepipe_home, tmp_path):  # type: ignore[no-untyped-def]
    registry = LocalModelRegistry(root=str(settings.local_paths().mlflow))
    model_dir = tmp_path / "model"
    rise_detector(model_dir)
    example = pl.DataFrame({name: [0.0] for name in FEATURES})
    version = register_detector(registry, model_dir, MODEL_NAME, example, default_spec().hash())
    registry.promote(MODEL_NAME, version.version, "test")
    return version


def test_evaluate_real_replays_the_champion_and_prints_json(champion):
    result = CliRunner().invoke(main, ["evaluate-real", "--json", "--baseline"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["model"] == f"models:/{MODEL_NAME}@champion"
    folder = Path(nist_data_dir())
    assert [t["test"] for t in report["tests"]] == [t.name for t in nist.read_tests(folder)]
    summary = report["summary"]
    for key in (
        "stations",
        "share_no_later_than_median_alarm",
        "share_no_later_than_first_alarm",
        "median_lead_s",
        "pre_ignition_alarms",
    ):
        assert key in summary, key
    compared = [
        s for t in report["tests"] for s in t["stations"] if s["no_later_than_median"] is not None
    ]
    assert summary["stations"] == len(compared) == 29
    share = sum(s["no_later_than_median"] for s in compared) / len(compared)
    assert summary["share_no_later_than_median_alarm"] == pytest.approx(share)
    assert report["fixed_threshold_baseline"]["stations"] == 29
    assert summary["warm_up_s"] == report["fixed_threshold_baseline"]["warm_up_s"] == 300


def test_evaluate_real_replays_with_the_warm_up_asked_for(champion):
    result = CliRunner().invoke(main, ["evaluate-real", "--json", "--warm-up-s", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["warm_up_s"] == 0
    for bad in ("-5", "nan", "inf"):
        refused = CliRunner().invoke(main, ["evaluate-real", "--warm-up-s", bad])
        assert refused.exit_code == 2, (bad, refused.output)
        assert "--warm-up-s" in refused.output


def test_evaluate_real_prints_a_table_for_a_given_model(champion):
    result = CliRunner().invoke(main, ["evaluate-real", "--model", champion.uri])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"model: {champion.uri}")
    assert "share_no_later_than_median_alarm:" in result.output
    assert "SDC02" in result.output


def test_evaluate_real_without_a_champion_says_how_to_get_one(firepipe_home):
    result = CliRunner().invoke(main, ["evaluate-real"])
    assert result.exit_code == 1
    assert "no champion yet?" in result.output


def test_evaluate_real_computes_the_features_of_the_models_own_spec(firepipe_home, tmp_path):
    # A spec of the two rises alone: not the default spec, which the command never looks at.
    spec = FeatureSpec(tuple(f for f in default_spec().features if f.name in FEATURES))
    assert spec.hash() != default_spec().hash()
    detector = rise_detector(tmp_path / "own", spec)
    result = CliRunner().invoke(main, ["evaluate-real", "--json", "--model", str(tmp_path / "own")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    expected = real_fires.replay_nist(Path(nist_data_dir()), detector).model.summary
    assert summary == json.loads(json.dumps(expected, default=str))


def test_evaluate_real_refuses_a_model_saved_without_its_feature_spec(firepipe_home, tmp_path):
    rise_detector(tmp_path / "m")
    (tmp_path / "m" / FEATURE_SPEC_FILE).unlink()  # as saved before models carried it
    result = CliRunner().invoke(main, ["evaluate-real", "--model", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "saved without its feature spec" in result.output


def test_evaluate_real_reports_bad_nist_data(champion, tmp_path):
    (tmp_path / "nist").mkdir()
    result = CliRunner().invoke(main, ["evaluate-real", "--data-dir", str(tmp_path / "nist")])
    assert result.exit_code == 1
    assert "NIST_Smoke_Alarms" in result.output


def test_the_cli_registry_resolves_its_aws_variables(monkeypatch):
    from firepipe.cli.context import model_registry
    from firepipe.lib.aws_env import AWS_REGION_VAR, MLFLOW_TRACKING_SERVER_ARN_VAR

    arn = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/firepipe"
    monkeypatch.setenv(settings.ENV_VAR, "aws")
    monkeypatch.setenv(MLFLOW_TRACKING_SERVER_ARN_VAR, arn)
    monkeypatch.setenv(AWS_REGION_VAR, "eu-west-1")
    with click.Context(main):  # as inside a command
        registry = model_registry()
        # Unresolved, the fields are dg.EnvVar: the ARN would read as the variable's name.
        assert registry.describe() == f"SageMaker managed MLflow {arn}"
        assert registry._tracking_uri() == arn


def test_promote_by_hand_moves_the_champion_and_refuses_what_cannot_be(champion, tmp_path):
    registry = LocalModelRegistry(root=str(settings.local_paths().mlflow))
    rise_detector(tmp_path / "second")
    example = pl.DataFrame({name: [0.0] for name in FEATURES})
    second = register_detector(
        registry, tmp_path / "second", MODEL_NAME, example, default_spec().hash(), snapshot="2"
    )
    result = CliRunner().invoke(main, ["promote", str(second.version), "--reason", "new replay"])
    assert result.exit_code == 0, result.output
    assert registry.champion(MODEL_NAME).version == second.version  # type: ignore[union-attr]
    moved = registry.version(MODEL_NAME, second.version)
    assert moved.tags["promotion_reason"] == "by hand: new replay"
    assert moved.tags["previous_champion"] == str(champion.version)
    absent = CliRunner().invoke(main, ["promote", "99", "--reason", "x"])
    assert absent.exit_code == 1
    assert f"Error: no version 99 of registered model '{MODEL_NAME}'\n" in absent.output
