"""`firepipe bench commits` at a tiny size: the chunks it commits, and the figures it reports."""

import polars as pl
import pytest

from firepipe.bench import BenchOptions, iceberg
from firepipe.bench.suites import SUITES
from firepipe.core.ingestion.extraction import FIELD_READING_SCHEMA


def test_chunks_follow_one_another_with_the_extraction_schema() -> None:
    first, second = iceberg.chunk(0, 5), iceberg.chunk(1, 5)
    assert first.readings.schema == pl.Schema(FIELD_READING_SCHEMA)
    assert (first.first.id, first.last.id, second.first.id) == (1, 5, 6)
    assert first.last < second.first
    assert first.dead_letters.height == 0


def test_commits_suite_reports_commit_times_and_metadata_before_and_after_maintenance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(iceberg, "COMMITS", 25)
    monkeypatch.setattr(iceberg, "WINDOW", 3)
    figures = {f.name: f for f in SUITES["commits"](BenchOptions(rows=10))}
    assert list(figures) == [
        "chunk_commit_s_23_to_25",
        "chunk_commit_s_26_to_28_after_maintenance",
        "maintenance_s",
        "metadata_mb_after_maintenance",
    ]
    assert all(f.value > 0 for f in figures.values())
    assert figures["chunk_commit_s_23_to_25"].baseline == (
        figures["chunk_commit_s_26_to_28_after_maintenance"].baseline
    )
    metadata = figures["metadata_mb_after_maintenance"]
    assert metadata.baseline is not None
    assert metadata.value < metadata.baseline
