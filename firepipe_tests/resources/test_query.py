"""Local ad hoc SQL: DuckDB over the Iceberg tables of the local catalog, and the CLI on top."""

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from firepipe.cli import main
from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.resources.query import DuckDBQueryEngine, QueryError, mentions_table


def test_queries_tables_by_namespace_and_name(lakehouse: LocalLakehouse) -> None:
    readings = pl.DataFrame({"site_id": ["a", "a", "b"], "temperature_c": [20.0, 30.0, 25.0]})
    sites = pl.DataFrame({"site_id": ["a", "b"], "city": ["Gaithersburg", "Boston"]})
    tables.write_table(lakehouse.catalog(), "silver.sensor_readings", readings)
    tables.write_table(lakehouse.catalog(), "bronze.sites", sites)
    engine = DuckDBQueryEngine(lakehouse=lakehouse)
    out = engine.query(
        "select s.city, max(r.temperature_c) as hottest "
        "from silver.sensor_readings r join bronze.sites s using (site_id) "
        "group by s.city order by s.city;"
    )
    assert out.rows() == [("Boston", 25.0), ("Gaithersburg", 30.0)]


def test_reads_every_file_of_an_evolved_partitioned_table(lakehouse: LocalLakehouse) -> None:
    part = [tables.PartitionColumn("family")]
    old = pl.DataFrame({"family": ["flaming"], "n": [1]})
    new = pl.DataFrame({"family": ["nuisance"], "n": [2], "label": ["x"]})
    for frame in (old, new):
        family = frame["family"][0]
        scope = tables.Scope(((tables.Values("family", (family,)),),))
        tables.write_table(lakehouse.catalog(), "bronze.events", frame, part, scope)
    out = DuckDBQueryEngine(lakehouse=lakehouse).query(
        'select family, n, label from "bronze"."events" order by family'
    )
    assert out.rows() == [("flaming", 1, None), ("nuisance", 2, "x")]
    assert out.columns == ["family", "n", "label"]


def test_an_empty_table_has_its_columns(lakehouse: LocalLakehouse) -> None:
    empty = pl.DataFrame(schema={"device_id": pl.String, "x": pl.Float64})
    tables.write_table(lakehouse.catalog(), "silver.quarantine", empty)
    out = DuckDBQueryEngine(lakehouse=lakehouse).query("select * from silver.quarantine")
    assert out.height == 0
    assert out.columns == ["device_id", "x"]


def test_bad_sql_and_unknown_tables_are_query_errors(lakehouse: LocalLakehouse) -> None:
    engine = DuckDBQueryEngine(lakehouse=lakehouse)
    with pytest.raises(QueryError, match="empty"):
        engine.query("  ;")
    with pytest.raises(QueryError, match="gold"):
        engine.query("select * from gold.sensor_features")
    with pytest.raises(QueryError, match="DuckDB could not run"):
        engine.query("selec 1")


def test_mentions_table_matches_whole_qualified_names() -> None:
    assert mentions_table("SELECT * FROM Silver.Sensor_Readings", "silver.sensor_readings")
    assert mentions_table('from "silver" . "sensor_readings"', "silver.sensor_readings")
    assert not mentions_table("from silver.sensor_readings_v2", "silver.sensor_readings")
    assert not mentions_table("from xsilver.sensor_readings", "silver.sensor_readings")


def test_cli_lake_query_prints_rows(firepipe_home: Path) -> None:
    lake = LocalLakehouse(root=str(firepipe_home / "lake"))
    tables.write_table(lake.catalog(), "silver.sensor_readings", pl.DataFrame({"n": [1, 2, 3]}))
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "lake",
            "query",
            "--json",
            "select cast(sum(n) as bigint) as total from silver.sensor_readings",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == [{"total": 6}]
    failed = runner.invoke(main, ["lake", "query", "select * from silver.nothing"])
    assert failed.exit_code == 1
    assert "nothing" in failed.output
