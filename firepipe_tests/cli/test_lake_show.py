"""`firepipe lake show` for wide tables: chosen columns, one block per row, JSON lines, and a
table that fits the terminal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from firepipe.cli import main
from firepipe.cli.lake import fitted_table
from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import LocalLakehouse

TABLE = "gold.sensor_features"
# Wide like the feature table: 30 numeric columns between the key columns.
FEATURES = [f"smoke_od_mean_{s}s" for s in range(30)]


@pytest.fixture
def wide(firepipe_home: Path) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "device_id": ["syn-0-0", "syn-0-1", "syn-0-2"],
            "ts": [datetime(2026, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(3)],
            **{name: [float(i), i + 0.5, None] for i, name in enumerate(FEATURES)},
            "label": [0, 1, 1],
        }
    )
    catalog = LocalLakehouse(root=str(firepipe_home / "lake")).catalog()
    tables.write_table(catalog, TABLE, frame)
    return frame


def show(*args: str) -> Result:
    return CliRunner().invoke(main, ["lake", "show", TABLE, *args])


def test_columns_picks_and_orders_them(wide: pl.DataFrame) -> None:
    result = show("--columns", "label, device_id", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert rows == [
        {"label": 0, "device_id": "syn-0-0"},
        {"label": 1, "device_id": "syn-0-1"},
        {"label": 1, "device_id": "syn-0-2"},
    ]
    assert [list(r) for r in rows] == [["label", "device_id"]] * 3


def test_an_unknown_column_lists_the_tables_columns(wide: pl.DataFrame) -> None:
    result = show("--columns", "device_id,temperature")
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: {TABLE} has no column temperature; its columns: device_id, ts,")
    assert line.endswith(", smoke_od_mean_29s, label")


def test_json_is_one_object_per_row_with_every_column(wide: pl.DataFrame) -> None:
    result = show("--json", "--limit", "2")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 2
    assert list(rows[1]) == wide.columns
    assert rows[1]["smoke_od_mean_29s"] == 29.5
    assert rows[0]["ts"].startswith("2026-01-01")


def test_vertical_is_a_block_per_row_a_line_per_column(wide: pl.DataFrame) -> None:
    result = show("--vertical", "--columns", "device_id,smoke_od_mean_29s,label")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "-[ row 1 ]",
        "device_id:         syn-0-0",
        "smoke_od_mean_29s: 29.0",
        "label:             0",
        "-[ row 2 ]",
        "device_id:         syn-0-1",
        "smoke_od_mean_29s: 29.5",
        "label:             1",
        "-[ row 3 ]",
        "device_id:         syn-0-2",
        "smoke_od_mean_29s: null",
        "label:             1",
    ]
    both = show("--vertical", "--json")
    assert both.exit_code == 2
    assert "--vertical and --json are two layouts" in both.output


@pytest.mark.parametrize("columns", [60, 100, 150])
def test_the_table_fits_the_terminal(
    wide: pl.DataFrame, columns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))  # what shutil.get_terminal_size reads first
    result = show()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    table = [line for line in lines if line[:1] in "┌│╞└"]
    assert max(map(len, table)) <= columns
    assert "device_id" in table[1]  # the first columns and the last are kept
    assert "label" in table[1]
    assert "syn-0-0" in result.output
    shown = int(lines[-1].split()[0])
    assert (
        lines[-1]
        == f"{shown} of {wide.width} columns shown: --columns, --vertical or --json for all"
    )
    assert 2 <= shown < wide.width


def test_a_table_that_fits_is_shown_whole() -> None:
    frame = pl.DataFrame({"device_id": ["a"], "smoke_od": [0.1]})
    text = fitted_table(frame, 80)
    assert "device_id" in text
    assert "smoke_od" in text
    assert "…" not in text
    assert "columns shown" not in text
    # The widest table that still fits: one character less and a column goes.
    width = max(map(len, text.splitlines()))
    assert "…" in fitted_table(frame, width - 1)
