import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from firepipe.bench import Figure, best_seconds, render_table
from firepipe.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_home_creates_the_instance_config(firepipe_home: Path) -> None:
    result = invoke("home")
    assert result.exit_code == 0
    assert result.output.strip() == str(firepipe_home)
    config = (firepipe_home / "dagster" / "dagster.yaml").read_text()
    assert "enabled: false" in config


def test_bench_prints_one_json_line_per_figure(firepipe_home: Path) -> None:
    result = invoke(
        "bench", "iceberg", "--json", "--rows", "20000", "--repeats", "1", "--min-seconds", "0"
    )
    assert result.exit_code == 0, result.output
    figures = [json.loads(line) for line in result.output.splitlines()]
    assert [f["name"] for f in figures] == ["write_rows_per_s", "read_rows_per_s"]
    for f in figures:
        assert set(f) == {"bench", "name", "value", "unit", "baseline", "ratio"}
        assert f["bench"] == "iceberg"
        assert f["unit"] == "rows/s"
        assert f["value"] > 0
        assert f["baseline"] > 0


def test_unknown_bench_suite_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["bench", "nope"])
    assert result.exit_code == 2
    assert "unknown suite(s) nope; known: generate, iceberg" in result.output


def test_ratio_means_times_better_for_throughputs_and_times() -> None:
    throughput = Figure("b", "rows_per_s", value=300.0, unit="rows/s", baseline=100.0)
    latency = Figure("b", "p50", value=2.0, unit="ms", baseline=8.0, higher_is_better=False)
    assert throughput.ratio == 3.0
    assert latency.ratio == 4.0
    assert Figure("b", "x", 1.0, "s", baseline=None).as_json()["ratio"] is None
    table = render_table([throughput, latency])
    assert table.splitlines()[2].split()[-1] == "3.00x"
    assert table.splitlines()[3].split()[-1] == "4.00x"


def test_summary_without_an_instance_or_a_run_says_so(firepipe_home: Path) -> None:
    result = CliRunner().invoke(main, ["summary"])
    assert result.exit_code == 1
    assert f"no Dagster instance at {firepipe_home / 'dagster'}" in result.output
    invoke("home")
    result = CliRunner().invoke(main, ["summary"])
    assert result.exit_code == 1
    assert "no run of end_to_end" in result.output


def test_lake_show_of_a_missing_table_explains(firepipe_home: Path) -> None:
    result = CliRunner().invoke(main, ["lake", "show", "gold.nothing"])
    assert result.exit_code == 1
    assert "materialise its asset first" in result.output


def test_best_seconds_samples_quick_steps_until_the_time_budget() -> None:
    calls = {"fn": 0, "setup": 0}

    def fn() -> None:
        calls["fn"] += 1

    def setup() -> None:
        calls["setup"] += 1

    best_seconds(fn, repeats=2, setup=setup, min_total_s=10.0, max_runs=5)
    assert calls == {"fn": 5, "setup": 5}
    calls.update(fn=0, setup=0)
    best_seconds(fn, repeats=2, setup=setup, min_total_s=0.0)
    assert calls == {"fn": 2, "setup": 2}


def test_generate_writes_the_rows_it_announces(tmp_path: Path) -> None:
    out = tmp_path / "readings"
    result = CliRunner().invoke(
        main,
        ["generate", "--rows", "5000", "--seed", "4", "--out", str(out), "--duration-s", "600"],
    )
    assert result.exit_code == 0, result.output
    # 5,000 readings at 600 s per device round up to 9 devices.
    assert "5,400 readings: 9 devices x 600 s" in result.output
    assert "wrote 5,400 readings in 1 file(s)" in result.output
    import polars as pl

    frame = pl.read_parquet(out / "part-00000.parquet")
    assert frame.height == 5_400
    assert frame["device_id"].n_unique() == 9
    assert frame["device_id"][0] == "syn-4-0"


def test_generate_refuses_a_folder_holding_an_earlier_run(tmp_path: Path) -> None:
    args = ["generate", "--rows", "1000", "--duration-s", "100", "--out", str(tmp_path)]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, [*args, "--seed", "2"])
    assert again.exit_code == 1
    assert "already holds generated files (part-00000.parquet" in again.output
    import polars as pl

    assert pl.read_parquet(tmp_path)["device_id"][0] == "syn-0-0"  # the first run is intact


def test_generate_refuses_an_unknown_family(tmp_path: Path) -> None:
    args = ["generate", "--rows", "10", "--out", str(tmp_path), "--family", "wildfire"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "unknown scenario families ['wildfire']" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_bench_generate_reports_throughput_against_the_floor() -> None:
    args = [
        "bench",
        "generate",
        "--json",
        "--rows",
        "50000",
        "--repeats",
        "1",
        "--min-seconds",
        "0",
    ]
    figures = {f["name"]: f for f in map(json.loads, invoke(*args).output.splitlines())}
    assert {"rows_per_s", "rows_per_s_one_worker", "peak_memory_mib"} <= set(figures)
    # Both generator figures share one floor, measured once in the same run.
    assert figures["rows_per_s"]["baseline"] == figures["rows_per_s_one_worker"]["baseline"] > 0
    assert figures["rows_per_s"]["unit"] == "rows/s"
    assert figures["peak_memory_mib"]["value"] > 50  # a Python process with numpy and polars


def test_features_versions_and_diff_between_two_snapshots(firepipe_home: Path) -> None:
    import polars as pl

    from firepipe.lib.lakehouse import tables
    from firepipe.resources.lakehouse import LocalLakehouse

    catalog = LocalLakehouse(root=str(firepipe_home / "lake")).catalog()
    first = pl.DataFrame({"device_id": ["a", "b", "c"], "mean_30s": [1.0, 2.0, 3.0]})
    second = first.with_columns((pl.col("mean_30s") * 10).alias("mean_30s"), max_30s=pl.lit(4.0))
    tables.write_table(catalog, "gold.sensor_features", first)
    tables.write_table(catalog, "gold.sensor_features", second)
    listed = invoke("features", "versions").output.splitlines()
    assert len(listed) == 2
    before, after = (int(line.split()[0]) for line in listed)
    diff = json.loads(invoke("features", "diff", str(before), str(after), "--json").output)
    assert (diff["added"], diff["removed"]) == (["max_30s"], [])
    [shift] = diff["shifts"]
    assert shift["column"] == "mean_30s"
    assert shift["ks_complement"] == 0.0  # 1-3 against 10-30: no overlap at all
    assert (shift["mean_before"], shift["mean_after"]) == (2.0, 20.0)
    missing = CliRunner().invoke(main, ["features", "diff", str(before), "123"])
    assert missing.exit_code == 1
    assert "has no snapshot 123" in missing.output
