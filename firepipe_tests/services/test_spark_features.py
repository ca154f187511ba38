"""The Spark features Pipes entry point: its Pipes channels and the requests it refuses (the
Spark runs themselves are in firepipe_tests/resources/test_spark*.py)."""

import subprocess
import sys
from pathlib import Path

import pytest
from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_ENV_VAR,
    DAGSTER_PIPES_MESSAGES_ENV_VAR,
    PipesMappingParamsLoader,
    encode_param,
)

from firepipe.core.features import Difference, FeatureSpec, Rolling
from firepipe.services import spark_features

SPEC = FeatureSpec((Rolling("co_ppm", "mean", 30), Difference("temperature_c", 60)))


def loader(context: dict[str, str], messages: dict[str, str]) -> PipesMappingParamsLoader:
    return PipesMappingParamsLoader(
        {
            DAGSTER_PIPES_CONTEXT_ENV_VAR: encode_param(context),
            DAGSTER_PIPES_MESSAGES_ENV_VAR: encode_param(messages),
        }
    )


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


@pytest.mark.slow
def test_outside_dagster_it_says_what_to_run_instead(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "firepipe.services.spark_features"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "engine 'spark'" in done.stderr
