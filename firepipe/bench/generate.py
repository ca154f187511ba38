"""Generation: readings per second of the simulator against the floor of filling the same columns.

A reading is one row with all eight channels and its labels, as `simulate_chunks` yields them.
The floor is numpy filling the same eight float32 columns with standard normals (one thread):
no physics, no labels, nothing to assemble. Each measurement runs in a fresh process; the peak
resident memory of the all-cores run is the generator's own. Every figure is the best of at
least --repeats calls, sampled until --min-seconds was measured.
"""

from __future__ import annotations

import importlib.util
import math
import multiprocessing
import resource
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from firepipe.bench import BenchOptions, Figure, best_seconds
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.simulation.simulator import GenerationSpec, simulate_chunks

DEFAULT_ROWS = 10_000_000
DURATION_S = 5_000  # 2,000 devices x 5,000 s for the default 10 million readings


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
    return figures
