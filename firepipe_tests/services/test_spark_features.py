"""The Spark features Pipes entry point: the requests it refuses, the local session it asks
dagster-pyspark for, and where it finds its Pipes parameters (its Pipes channels and `main` are
in test_pipes_io.py, the Spark runs themselves in firepipe_tests/resources/test_spark*.py)."""

import pytest
from dagster_pipes import PipesCliArgsParamsLoader, PipesEnvVarParamsLoader

from firepipe.core.features.spec import Difference, FeatureSpec, Rolling
from firepipe.services import spark_features

SPEC = FeatureSpec((Rolling("co_ppm", "mean", 30), Difference("temperature_c", 60)))


def test_a_complete_request_is_read_back() -> None:
    files, spec, output_dir, partitioning = spark_features._request(
        {
            "input_files": ["s3://lake/silver/a.parquet", "/tmp/b.parquet"],
            "spec": SPEC.to_json(),
            "output_dir": "s3://lake/gold/_staging/run/",
            "partitioning": ["day(ts)", "hour( ts )", "site_id"],
        }
    )
    assert files == ["s3://lake/silver/a.parquet", "/tmp/b.parquet"]
    assert spec == SPEC
    assert spec.hash() == SPEC.hash()
    assert output_dir == "s3://lake/gold/_staging/run"
    assert partitioning == ["day(ts)", "hour( ts )", "site_id"]


GOOD = {"input_files": ["/tmp/a.parquet"], "spec": SPEC.to_json(), "output_dir": "/tmp/out"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spec": None}, r"lack \['spec'\]"),
        ({"input_files": []}, "non-empty list of Parquet paths"),
        ({"input_files": "/tmp/a.parquet"}, "non-empty list of Parquet paths"),
        ({"input_files": ["/tmp/a.parquet", 3]}, "non-empty list of Parquet paths"),
        ({"output_dir": "/"}, "must name a directory"),
        ({"spec": '{"version": 99}'}, "version 1"),
        ({"partitioning": ["bucket(16, device_id)"]}, "cannot split by"),
        ({"partitioning": "day(ts)"}, "cannot split by"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(change: dict[str, object], message: str) -> None:
    extras = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        spark_features._request(extras)


class RecordedSession:
    """What spark_session does with the session it gets: sets the run's SQL settings."""

    def __init__(self) -> None:
        self.conf = self
        self.settings: dict[str, str] = {}

    def set(self, key: str, value: str) -> None:
        self.settings[key] = value


def test_a_local_session_is_built_by_dagster_pyspark_from_the_resources_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster_pyspark import resources as dagster_pyspark

    built: list[dict[str, object]] = []
    session = RecordedSession()
    monkeypatch.setattr(
        dagster_pyspark, "spark_session_from_config", lambda conf: built.append(conf) or session
    )
    got = spark_features.spark_session(
        {"spark_master": "local[2]", "spark_conf": {"spark.sql.shuffle.partitions": 8}}
    )
    assert got is session
    assert built == [
        {
            "spark.master": "local[2]",
            "spark.app.name": "firepipe-spark-features",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": "8",  # the resource's over firepipe's local "4"
        }
    ]
    assert session.settings == spark_features.SESSION_CONF


def test_glue_job_arguments_or_the_environment_carry_the_pipes_parameters() -> None:
    glue_argv = ["spark_features.py", "--JOB_ID", "j_1", "--dagster-pipes-context", "eJw="]
    assert isinstance(spark_features.params_loader(glue_argv), PipesCliArgsParamsLoader)
    emr_argv = ["spark_features.py"]
    assert isinstance(spark_features.params_loader(emr_argv), PipesEnvVarParamsLoader)
