"""Generation: readings per second of the simulator against the floor of filling the same columns.

A reading is one row with all eight channels and its labels, as `simulate_chunks` yields them.
The floor is numpy filling the same eight float32 columns with standard normals (one thread):
no physics, no labels, nothing to assemble. Each measurement runs in a fresh process; the peak
resident memory of the all-cores run is the generator's own. Every figure is the best of at
least --repeats calls, sampled until --min-seconds was measured.

`partitions_wall_s` is the wall time of one run that materialises 16 partitions of
bronze/synthetic_readings at make run's size (60,000 readings each) through the local compute,
one process per core, against the same run one partition after another: the asset end to end
(generator processes, checks, one Iceberg commit) into a fresh temporary lakehouse, each run in
a fresh process, the two alternated --repeats times and the best of each kept.
"""

from __future__ import annotations

import importlib.util
import math
import multiprocessing
import resource
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from firepipe.bench import BenchOptions, Figure, best_seconds
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.simulation.partitions import PartitionSettings
from firepipe.core.simulation.simulator import GenerationSpec, simulate_chunks

DEFAULT_ROWS = 10_000_000
DURATION_S = 5_000  # 2,000 devices x 5,000 s for the default 10 million readings
# One run's partitions for partitions_wall_s: the first 16 keys (batches 000-003 x the four
# families), each of make run's size, the asset's defaults (100 devices x 600 s).
PARTITIONS = 16
PARTITION_DEVICES = PartitionSettings().devices
PARTITION_DURATION_S = PartitionSettings().duration_s


def _spec(rows: int) -> GenerationSpec:
    return GenerationSpec(devices=max(math.ceil(rows / DURATION_S), 1), duration_s=DURATION_S)


def _generate(
    rows: int, backend: str, workers: int | None, options: BenchOptions
) -> tuple[float, float]:
    """Best seconds to produce the readings, and this process's peak resident memory in MiB."""
    spec = _spec(rows)

    def produce() -> None:
        produced = sum(
            chunk.height for chunk in simulate_chunks(spec, backend=backend, workers=workers)
        )
        assert produced == spec.rows

    seconds = best_seconds(produce, options.repeats, min_total_s=options.min_seconds)
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _floor(rows: int, options: BenchOptions) -> float:
    rng = np.random.default_rng(0)
    columns = [np.empty(rows, dtype=np.float32) for _ in CHANNEL_NAMES]

    def fill() -> None:
        for column in columns:
            rng.standard_normal(out=column, dtype=np.float32)

    return best_seconds(fill, options.repeats, min_total_s=options.min_seconds)


def _in_fresh_process(fn, *args):  # type: ignore[no-untyped-def]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _materialise_partitions(
    partitions: int, devices: int, duration_s: int, max_concurrent: int | None
) -> float:
    """Seconds for one run of bronze/synthetic_readings over its first `partitions` keys,
    through the local compute with `max_concurrent` processes (None: one per core)."""
    import dagster as dg

    # The asset's beta and preview notices, printed once per fresh process, are not figures.
    warnings.simplefilter("ignore", dg.BetaWarning)
    warnings.simplefilter("ignore", dg.PreviewWarning)
    from firepipe.defs.generation.assets import synthetic_readings
    from firepipe.defs.generation.partitions import PARTITIONS as PARTITIONS_DEF
    from firepipe.lib.instance import RANGE_END_TAG, RANGE_START_TAG
    from firepipe.resources.compute import LocalCompute
    from firepipe.resources.history import SqliteGenerationHistory
    from firepipe.resources.lakehouse import LocalLakehouse

    keys = PARTITIONS_DEF.get_partition_keys()[:partitions]
    size = {"devices": devices, "duration_s": duration_s}
    with tempfile.TemporaryDirectory(prefix="firepipe-bench-") as home:
        start = time.perf_counter()
        dg.materialize(
            [synthetic_readings],
            resources={
                "lakehouse": LocalLakehouse(root=f"{home}/lake"),
                "generator_compute": LocalCompute(max_concurrent=max_concurrent),
                "generation_history": SqliteGenerationHistory(path=f"{home}/history.db"),
            },
            instance=dg.DagsterInstance.ephemeral(),
            run_config={
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                "ops": {"bronze__synthetic_readings": {"config": size}},
            },
            tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
        )
        return time.perf_counter() - start


def _partitions_wall(options: BenchOptions) -> Figure:
    """One run's partitions side by side against one after another, alternated so that a
    change in the machine's load falls on both."""
    size = (PARTITIONS, PARTITION_DEVICES, PARTITION_DURATION_S)
    side_by_side, one_by_one = float("inf"), float("inf")
    for _ in range(max(options.repeats, 1)):
        one_by_one = min(one_by_one, _in_fresh_process(_materialise_partitions, *size, 1))
        side_by_side = min(side_by_side, _in_fresh_process(_materialise_partitions, *size, None))
    return Figure(
        "generate", "partitions_wall_s", side_by_side, "s", one_by_one, higher_is_better=False
    )


def _gpu_backends() -> list[str]:
    found = []
    if importlib.util.find_spec("cupy") is not None:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            found.append("cupy")
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            found.append("torch")
    return found


def run(options: BenchOptions) -> list[Figure]:
    rows = _spec(options.rows or DEFAULT_ROWS).rows
    floor_s = _in_fresh_process(_floor, rows, options)
    floor = rows / floor_s
    figures = []
    every_core_s, peak_mib = _in_fresh_process(_generate, rows, "numpy", None, options)
    one_core_s, _ = _in_fresh_process(_generate, rows, "numpy", 1, options)
    figures += [
        Figure("generate", "rows_per_s", rows / every_core_s, "rows/s", floor),
        Figure("generate", "rows_per_s_one_worker", rows / one_core_s, "rows/s", floor),
        Figure("generate", "peak_memory_mib", peak_mib, "MiB", None, higher_is_better=False),
    ]
    for backend in _gpu_backends():
        gpu_s, _ = _in_fresh_process(_generate, rows, backend, 1, options)
        figures.append(Figure("generate", f"rows_per_s_{backend}", rows / gpu_s, "rows/s", floor))
    figures.append(_partitions_wall(options))
    return figures
