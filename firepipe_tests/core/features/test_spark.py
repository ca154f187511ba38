"""Parity: the feature spec compiled to PySpark agrees with both polars paths to 1e-6."""

import polars as pl
import pytest

from firepipe.core.features.spec import (
    ID_COLUMNS,
    FeatureSpec,
    Rolling,
    compute_features,
    default_spec,
    reference_features,
)
from firepipe_tests.core.features.feature_sample import assert_same_features, silver_sample
from firepipe_tests.local_spark import local_spark

pytestmark = pytest.mark.slow
# Float32 outputs round to about 6e-8 relative; assert_same_features' 1e-6 leaves room for
# summation order.


@pytest.fixture(scope="module")
def spark():
    yield from local_spark("firepipe-feature-parity")


def to_spark(spark, frame: pl.DataFrame):
    return spark.createDataFrame(frame.to_arrow())


def from_spark(df) -> pl.DataFrame:
    return pl.from_arrow(df.toArrow())


def test_spark_matches_polars_on_silver_with_gaps(spark):
    sample = silver_sample()
    spec = default_spec()
    got = from_spark(spark_features_of(spark, sample, spec))
    assert got.columns == [*ID_COLUMNS, *spec.names]
    assert got.height == sample.filter(~pl.col("is_gap")).height
    expected = reference_features(sample, spec)
    assert_same_features(
        got.with_columns(pl.col(spec.names).cast(pl.Float32)), expected, spec.names
    )
    assert_same_features(compute_features(sample, spec), expected, spec.names)
    # The sample exercises every kind: no feature is all null.
    assert not [n for n in spec.names if expected[n].null_count() == expected.height]


def test_spark_min_and_a_window_longer_than_a_gap(spark):
    spec = FeatureSpec((Rolling("co_ppm", "min", 900), Rolling("h2_ppm", "std", 2)))
    sample = silver_sample(devices=3, seconds=1_500, seed=4)
    got = from_spark(spark_features_of(spark, sample, spec))
    assert_same_features(
        got.with_columns(pl.col(spec.names).cast(pl.Float32)),
        reference_features(sample, spec),
        spec.names,
    )


def spark_features_of(spark, sample: pl.DataFrame, spec: FeatureSpec):
    from firepipe.core.features.spark import spark_features

    # Through JSON, as the Spark job receives the spec.
    return spark_features(to_spark(spark, sample), FeatureSpec.from_json(spec.to_json()))
