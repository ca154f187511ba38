"""The training set's lineage: written as snapshot properties, read back, and refused when
missing."""

from __future__ import annotations

import pytest

from firepipe.core.features.spec import (
    FEATURE_SPEC_PROPERTY,
    SILVER_SNAPSHOT_PROPERTY,
    FeatureSpec,
    default_spec,
)
from firepipe.core.training import lineage


def test_the_training_set_properties_carry_the_spec_and_both_snapshots() -> None:
    spec = FeatureSpec(default_spec().features[:5])
    written = lineage.training_set_properties(lineage.Lineage(spec, 7, 42))
    assert FeatureSpec.from_json(written[FEATURE_SPEC_PROPERTY]) == spec
    assert written[SILVER_SNAPSHOT_PROPERTY] == "7"
    assert written[lineage.GOLD_SNAPSHOT_PROPERTY] == "42"
    assert all(name.startswith("firepipe.") for name in written)  # the lake's property prefix
    assert lineage.training_set_lineage(written) == lineage.Lineage(spec, 7, 42)
    with pytest.raises(ValueError, match="gold snapshot"):
        lineage.training_set_properties(lineage.Lineage(spec, 7))


def test_golds_properties_give_its_spec_and_silver_snapshot() -> None:
    spec = default_spec()
    gold = {FEATURE_SPEC_PROPERTY: spec.to_json(), SILVER_SNAPSHOT_PROPERTY: "123"}
    assert lineage.gold_lineage(gold) == lineage.Lineage(spec, 123)


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({}, "has no firepipe.feature-spec, firepipe.silver-snapshot-id property"),
        ({SILVER_SNAPSHOT_PROPERTY: "1"}, "gold snapshot has no firepipe.feature-spec"),
        (
            {FEATURE_SPEC_PROPERTY: default_spec().to_json(), SILVER_SNAPSHOT_PROPERTY: "x"},
            "'x' is no snapshot id",
        ),
    ],
)
def test_a_gold_snapshot_without_its_lineage_is_a_clear_error(
    properties: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        lineage.gold_lineage(properties)


def test_a_training_set_written_before_it_carried_its_lineage_is_a_clear_error() -> None:
    gold_only = {FEATURE_SPEC_PROPERTY: default_spec().to_json(), SILVER_SNAPSHOT_PROPERTY: "1"}
    missing = r"training set snapshot has no firepipe\.gold-snapshot-id"
    with pytest.raises(ValueError, match=missing):
        lineage.training_set_lineage(gold_only)
