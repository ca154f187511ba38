"""The Spark features Pipes entry point: the requests it refuses (its Pipes channels and `main`
are in test_pipes_io.py, the Spark runs themselves in firepipe_tests/resources/test_spark*.py)."""

import pytest

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
