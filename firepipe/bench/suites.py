"""The benchmark suites `firepipe bench` knows, by name."""

from __future__ import annotations

from collections.abc import Callable

from firepipe.bench import BenchOptions, Figure, agents, generate, iceberg, kb, lake, serve, train

SUITES: dict[str, Callable[[BenchOptions], list[Figure]]] = {
    "generate": generate.run,
    "iceberg": iceberg.run,
    "commits": iceberg.run_commits,
    "lake": lake.run,
    "train": train.run,
    "serve": serve.run,
    "agents": agents.run,
    "kb": kb.run,
}
