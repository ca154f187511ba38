"""Two extractions at once (issue 16, item 7): the second is refused at once with one line naming
the run that holds the extraction, and the first lands every row once."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from firepipe.core.ingestion.extraction import Watermark
from firepipe.defs.ingestion.assets import EXTRACTION_NAME, FIELD_READINGS
from firepipe.lib.extraction_sinks import DEAD_LETTERS_TABLE, FIELD_READINGS_TABLE
from firepipe.lib.field_seed import append_field_rows
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.resources.warehouse import DuckDBWarehouseSource, WarehouseSession
from firepipe.resources.watermarks import SqliteWatermarkStore
from firepipe_tests.core.ingestion.test_extraction import raw_rows
from firepipe_tests.defs.test_ingestion import BAD, extract_run, metadata_of

# The held run's gates; module-level because a resource's fields must be plain config.
INSIDE, RELEASE = threading.Event(), threading.Event()


class _Held:
    """A session that stops inside its first read until the test releases it."""

    def __init__(self, source: WarehouseSession) -> None:
        self.source = source

    def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
        INSIDE.set()
        assert RELEASE.wait(timeout=60), "the test never released the first extraction"
        return self.source.next_chunk(after, limit)

    def maxima(self):
        return self.source.maxima()


class HeldWarehouse(DuckDBWarehouseSource):
    @contextmanager
    def session(self) -> Iterator[WarehouseSession]:
        with super().session() as source:
            yield _Held(source)


@pytest.fixture
def gates() -> Iterator[None]:
    INSIDE.clear()
    RELEASE.clear()
    yield
    RELEASE.set()  # never leave a thread waiting, whatever the test did


def test_a_second_extraction_is_refused_while_the_first_runs_and_nothing_is_lost(
    tmp_path: Path, lakehouse: LocalLakehouse, gates: None
) -> None:
    path = str(tmp_path / "field.duckdb")
    append_field_rows(path, "field_readings", raw_rows(50, bad=BAD))
    watermarks = SqliteWatermarkStore(path=str(tmp_path / "watermarks.db"))
    plain = DuckDBWarehouseSource(path=path, table="field_readings")
    held = HeldWarehouse(path=path, table="field_readings")
    resources = {"extraction_watermarks": watermarks, "lakehouse": lakehouse}

    first: list[dg.ExecuteInProcessResult] = []
    runner = threading.Thread(
        target=lambda: first.append(
            extract_run({**resources, "warehouse_source": held}, raise_on_error=False)
        )
    )
    runner.start()
    assert INSIDE.wait(timeout=60), "the first extraction never started"

    second = extract_run({**resources, "warehouse_source": plain}, raise_on_error=False)
    RELEASE.set()
    runner.join(timeout=120)

    assert not second.success
    [failure] = second.get_step_failure_events()
    message = failure.step_failure_data.user_failure_data.description
    [first_result] = first
    assert message.startswith("another extraction of field_readings is running (since ")
    assert message.endswith(f" UTC, run {first_result.run_id})")

    # The first ran to the end, alone: every source key once, the watermark past the last.
    assert first_result.success
    assert metadata_of(first_result, FIELD_READINGS)["chunks"] == 8
    ids = lakehouse.read(FIELD_READINGS_TABLE)["id"].sort().to_list()
    assert ids == [i for i in range(1, 51) if i not in BAD]
    assert lakehouse.read(DEAD_LETTERS_TABLE)["id"].sort().to_list() == sorted(BAD)
    assert watermarks.get(EXTRACTION_NAME).id == 50

    # Once it is done, the next run takes the extraction and finds nothing new.
    again = extract_run({**resources, "warehouse_source": plain})
    assert metadata_of(again, FIELD_READINGS)["chunks"] == 0
