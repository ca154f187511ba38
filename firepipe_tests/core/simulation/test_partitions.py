"""The per-partition seed rule and spec, shared by the bronze asset and `firepipe generate`."""

from datetime import UTC, datetime

import pytest

from firepipe.core.simulation.partitions import (
    BATCHES,
    FAMILIES,
    PartitionSettings,
    partition_generation,
    partition_seed,
)


def test_the_seed_is_config_seed_then_family_then_batch() -> None:
    # seed * 10_000 + family_index * 1_000 + batch: the formula the lake's data was made with.
    assert FAMILIES == ("baseline", "flaming", "smouldering", "nuisance")
    assert partition_seed(0, "baseline", "000") == 0
    assert partition_seed(0, "smouldering", "003") == 2_003
    assert partition_seed(7, "nuisance", "015") == 73_015
    seeds = {partition_seed(s, f, b) for s in range(3) for f in FAMILIES for b in BATCHES}
    assert len(seeds) == 3 * len(FAMILIES) * len(BATCHES)  # no two partitions share devices


@pytest.mark.parametrize(
    ("seed", "family", "batch"),
    [(-1, "flaming", "000"), (0, "wildfire", "000"), (0, "flaming", "x1"), (0, "flaming", "1000")],
)
def test_a_seed_outside_the_grid_is_refused(seed: int, family: str, batch: str) -> None:
    with pytest.raises(ValueError, match=r"seed must be >= 0|no partition"):
        partition_seed(seed, family, batch)


def test_a_partition_generates_its_family_under_its_seed_with_its_batch_column() -> None:
    settings = PartitionSettings(devices=7, duration_s=90, sites=2, seed=1, fault_share=0.2)
    generation = partition_generation(settings, "flaming", "004")
    spec = generation.spec
    assert (spec.devices, spec.duration_s, spec.sites, spec.fault_share) == (7, 90, 2, 0.2)
    assert spec.seed == 11_004
    assert spec.families == ("flaming",)
    assert spec.start == datetime(2026, 1, 1, tzinfo=UTC)
    assert generation.constant_columns == {"batch": "004"}


def test_a_start_that_is_not_a_time_is_refused_with_its_text() -> None:
    with pytest.raises(ValueError, match="start 'yesterday' is not an ISO 8601 time"):
        partition_generation(PartitionSettings(start="yesterday"), "flaming", "000")
    with pytest.raises(ValueError, match="timezone-aware"):
        partition_generation(PartitionSettings(start="2026-01-01T00:00:00"), "flaming", "000")
