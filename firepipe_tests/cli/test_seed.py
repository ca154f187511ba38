"""`firepipe seed`: the local field warehouse (NIST replay once, a stream batch each time) and
the landing folder (demo files once)."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from firepipe.cli import main
from firepipe.core.ingestion.extraction import parse_field_rows
from firepipe.lib.field_seed import FIELD_STREAM_SPEC, LANDING_DEMO_FOLDER
from firepipe.resources.warehouse import DuckDBWarehouseSource


def test_seed_fills_the_warehouse_and_landing_folder(firepipe_home: Path) -> None:
    first = CliRunner().invoke(main, ["seed"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    warehouse = firepipe_home / "field_warehouse.duckdb"
    rows = DuckDBWarehouseSource(path=str(warehouse), table="field_readings").next_chunk(
        None, 1_000_000
    )
    assert f"{rows.height:,} rows added" in first.output
    assert rows["device_id"].str.starts_with("nist-").any()
    assert rows["device_id"].str.starts_with("field-").any()
    _, dead = parse_field_rows(rows)
    assert dead["reason"].to_list() == [
        "co_ppm is not a number: 'ERR'",
        "ts missing",
        "temperature_c is not a number: '--.-'",
    ]
    landed = sorted(
        p.relative_to(firepipe_home / "landing").as_posix()
        for p in (firepipe_home / "landing").rglob("*")
        if p.is_file()
    )
    assert landed == [
        f"incoming/{LANDING_DEMO_FOLDER}/gateway.jsonl",
        f"incoming/{LANDING_DEMO_FOLDER}/gateway_us_units.csv",
        f"incoming/{LANDING_DEMO_FOLDER}/truncated_upload.parquet",
    ]

    second = CliRunner().invoke(main, ["seed"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    # Only the stream's seconds since the first call: no replay, no second delivered twice.
    added = int(re.search(r"([\d,]+) rows added", second.output)[1].replace(",", ""))
    assert added > 0  # the first call waited out the settle time: the stream moved on
    assert added % FIELD_STREAM_SPEC.devices == 0
    assert added < FIELD_STREAM_SPEC.devices * FIELD_STREAM_SPEC.duration_s
    again = DuckDBWarehouseSource(path=str(warehouse), table="field_readings").next_chunk(
        None, 1_000_000
    )
    assert again.height == rows.height + added
    assert again.select("device_id", "ts").n_unique() == again.height
    assert "0 file(s) dropped" in second.output


def test_seed_refuses_the_aws_environment(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIREPIPE_ENV", "aws")
    result = CliRunner().invoke(main, ["seed"])
    assert result.exit_code == 1
    assert "local stand-ins only" in result.output
    assert not (firepipe_home / "field_warehouse.duckdb").exists()
