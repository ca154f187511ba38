"""The partitions of the synthetic readings and what each one generates.

A partition is a scenario family x a batch "000".."015". Its seed is
`seed * 10_000 + family_index * 1_000 + batch`, distinct for every (config seed, family,
batch), so partitions never repeat devices. The bronze asset (through the generator compute)
and `firepipe generate --family F --batch B` both take a partition's spec and its constant
columns from `partition_generation`, so the same settings give the same bytes either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from firepipe.core.simulation import scenarios
from firepipe.core.simulation.simulator import GenerationSpec

FAMILIES = scenarios.FAMILIES
BATCHES = tuple(f"{i:03d}" for i in range(16))
# The batch every other batch of a family is compared with (the distribution check).
REFERENCE_BATCH = BATCHES[0]
# Seeds per config seed and per family: batches stay below 1_000, families below 10.
SEED_STRIDE_PER_CONFIG_SEED = 10_000
SEED_STRIDE_PER_FAMILY = 1_000
# The columns that hold a partition's family (written by the simulator) and batch (a constant
# column the writer adds), which the lake table is partitioned by.
FAMILY_COLUMN = "scenario_family"
BATCH_COLUMN = "batch"


@dataclass(frozen=True)
class PartitionSettings:
    """How much each partition generates: the bronze asset's run config, the CLI's options.

    The defaults are the asset's: 100 devices a partition, enough for the distribution check
    to tell a real shift from the room-to-room spread of a handful of devices.
    """

    devices: int = 100
    duration_s: int = 600
    sites: int = 4
    seed: int = 0
    fault_share: float = 0.05
    start: str = "2026-01-01T00:00:00+00:00"

    def start_time(self) -> datetime:
        try:
            return datetime.fromisoformat(self.start)
        except ValueError as e:
            raise ValueError(f"start {self.start!r} is not an ISO 8601 time: {e}") from e


@dataclass(frozen=True)
class PartitionGeneration:
    """What one partition generates: the simulator's spec and the columns added to its rows."""

    spec: GenerationSpec
    constant_columns: dict[str, str]


def partition_seed(seed: int, family: str, batch: str) -> int:
    """The simulator seed of one partition, distinct for every (seed, family, batch)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if family not in FAMILIES or not batch.isdigit() or int(batch) >= SEED_STRIDE_PER_FAMILY:
        raise ValueError(f"no partition ({family!r}, {batch!r}): families {FAMILIES}, batch 0-999")
    family_offset = FAMILIES.index(family) * SEED_STRIDE_PER_FAMILY
    return seed * SEED_STRIDE_PER_CONFIG_SEED + family_offset + int(batch)


def partition_generation(
    settings: PartitionSettings, family: str, batch: str
) -> PartitionGeneration:
    """The spec and constant columns of partition (family, batch) under `settings`."""
    spec = GenerationSpec(
        devices=settings.devices,
        duration_s=settings.duration_s,
        sites=settings.sites,
        seed=partition_seed(settings.seed, family, batch),
        start=settings.start_time(),
        families=(family,),
        fault_share=settings.fault_share,
    )
    return PartitionGeneration(spec, {BATCH_COLUMN: batch})
