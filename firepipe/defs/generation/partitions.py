"""The partitions of bronze/synthetic_readings: scenario family x batch, both static.

- family (baseline, flaming, smouldering, nuisance) is the unit the checks judge (scenario mix
  within a family, distributions against the family's reference batch) and the unit of hold-out
  splits downstream, so one family is one generator run with one expected mix.
- batch "000".."015" is a fixed set of slices of the same distribution. A static set keeps
  partition keys, seeds and reference partitions ("000" of each family) stable in code and
  reviewable, lets the UI show the whole grid and backfill any part of it, and bounds the
  fan-out onto AWS Batch to 64 jobs (run side by side up to the compute's max_concurrent). A
  bigger data set is more devices per batch (run config), not more keys; dynamic partitions
  would make the key set live only in the instance database.

The seed of each partition and what it generates are firepipe.core.simulation.partitions'.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from firepipe.core.simulation import partitions
from firepipe.lib.instance import RANGE_END_TAG, RANGE_START_TAG
from firepipe.lib.lakehouse import tables

FAMILY_DIM, BATCH_DIM = "family", "batch"
PARTITION_COLUMNS = {FAMILY_DIM: partitions.FAMILY_COLUMN, BATCH_DIM: partitions.BATCH_COLUMN}
PARTITIONS = dg.MultiPartitionsDefinition(
    {
        FAMILY_DIM: dg.StaticPartitionsDefinition(list(partitions.FAMILIES)),
        BATCH_DIM: dg.StaticPartitionsDefinition(list(partitions.BATCHES)),
    }
)


@dataclass(frozen=True)
class Cell:
    """One partition: a family and a batch."""

    family: str
    batch: str

    @property
    def key(self) -> str:
        """Its Dagster partition key (dimensions in name order: batch, then family)."""
        return f"{self.batch}|{self.family}"

    @property
    def scope(self) -> tuple[tables.Constraint, ...]:
        return (
            tables.Values(PARTITION_COLUMNS[BATCH_DIM], (self.batch,)),
            tables.Values(PARTITION_COLUMNS[FAMILY_DIM], (self.family,)),
        )


def partition_cells(keys: Sequence[str]) -> list[Cell]:
    by_dim = [PARTITIONS.get_partition_key_from_str(k).keys_by_dimension for k in keys]
    return [Cell(k[FAMILY_DIM], k[BATCH_DIM]) for k in by_dim]


def cells_scope(cells: Sequence[Cell]) -> tables.Scope:
    """The rows of these partitions, which a run over them replaces."""
    return tables.Scope(tuple(cell.scope for cell in cells))


# The partitions a run of the end_to_end job generates when it is not told which: the first two
# batches of every family (batch 001 is checked against the reference batch 000), what
# `make run` generates.
DEFAULT_BATCHES = partitions.BATCHES[:2]


def default_range_tags() -> dict[str, str]:
    """The partition range tags (start and end key) of the default batches, every family: keys
    run batch by batch (dimensions in name order), so the default batches are one range."""
    keys = PARTITIONS.get_partition_keys()
    chosen = [k for k in keys if partition_cells([k])[0].batch in DEFAULT_BATCHES]
    start, end = keys.index(chosen[0]), keys.index(chosen[-1])
    if keys[start : end + 1] != chosen:
        raise ValueError(f"the default batches {DEFAULT_BATCHES} are not one range of {keys}")
    return {
        RANGE_START_TAG: chosen[0],
        RANGE_END_TAG: chosen[-1],
    }
