"""Where the training set came from, stored with its snapshot (Iceberg snapshot properties):
the feature spec of its features and the gold and silver snapshots they were read at.

Gold's snapshots carry their spec and silver snapshot the same way
(`firepipe.core.features.spec.FEATURE_SPEC_PROPERTY`, `SILVER_SNAPSHOT_PROPERTY`), so each
reader takes them from its input's snapshot, never from an orchestrator's records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from firepipe.core.features.spec import (
    FEATURE_SPEC_PROPERTY,
    SILVER_SNAPSHOT_PROPERTY,
    FeatureSpec,
    spec_from_properties,
)

GOLD_SNAPSHOT_PROPERTY = "firepipe.gold-snapshot-id"
TRAINING_SET_PROPERTIES = (FEATURE_SPEC_PROPERTY, SILVER_SNAPSHOT_PROPERTY, GOLD_SNAPSHOT_PROPERTY)


@dataclass(frozen=True)
class Lineage:
    spec: FeatureSpec
    silver_snapshot_id: int
    gold_snapshot_id: int | None = None  # None for gold's own snapshot


def _require(properties: Mapping[str, str], names: tuple[str, ...], table: str) -> None:
    missing = [name for name in names if name not in properties]
    if missing:
        raise ValueError(
            f"the {table} snapshot has no {', '.join(missing)} property: it was written before "
            f"{table} recorded its lineage; materialise {table} again"
        )


def _snapshot_id(properties: Mapping[str, str], name: str) -> int:
    text = properties[name]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"the snapshot's {name!r} property {text!r} is no snapshot id") from None


def gold_lineage(properties: Mapping[str, str]) -> Lineage:
    """The spec and silver snapshot of a gold snapshot, from its properties."""
    _require(properties, (FEATURE_SPEC_PROPERTY, SILVER_SNAPSHOT_PROPERTY), "gold")
    return Lineage(
        spec_from_properties(properties), _snapshot_id(properties, SILVER_SNAPSHOT_PROPERTY)
    )


def training_set_properties(lineage: Lineage) -> dict[str, str]:
    """The training set's snapshot properties: the spec and both upstream snapshots."""
    if lineage.gold_snapshot_id is None:
        raise ValueError("a training set's lineage names the gold snapshot it was built from")
    return {
        FEATURE_SPEC_PROPERTY: lineage.spec.to_json(),
        SILVER_SNAPSHOT_PROPERTY: str(lineage.silver_snapshot_id),
        GOLD_SNAPSHOT_PROPERTY: str(lineage.gold_snapshot_id),
    }


def training_set_lineage(properties: Mapping[str, str]) -> Lineage:
    """`training_set_properties` read back."""
    _require(properties, TRAINING_SET_PROPERTIES, "training set")
    return Lineage(
        spec_from_properties(properties),
        _snapshot_id(properties, SILVER_SNAPSHOT_PROPERTY),
        _snapshot_id(properties, GOLD_SNAPSHOT_PROPERTY),
    )
