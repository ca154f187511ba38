"""`firepipe generate`: one partition of the bronze asset by name, and the destinations and
backends it refuses before generating anything."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import boto3
import polars as pl
import pytest
from click.testing import CliRunner

from firepipe.cli import main
from firepipe.core.simulation import simulator
from firepipe.core.simulation.output_size import estimated_parquet_bytes
from firepipe.core.simulation.partitions import PartitionSettings, partition_generation
from firepipe.core.simulation.simulator import simulate


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["generate", *args])
    return result.exit_code, result.output


def test_a_partition_is_the_assets_spec_with_its_batch_column(tmp_path: Path) -> None:
    code, output = run(
        *("--family", "smouldering", "--batch", "3", "--seed", "2", "--devices", "4"),
        *("--duration-s", "60", "--out", str(tmp_path)),
    )
    assert code == 0, output
    assert "partition (smouldering, 003) of seed 2: 240 readings: 4 devices x 60 s" in output
    frame = pl.read_parquet(tmp_path / "part-00000.parquet")
    spec = partition_generation(
        PartitionSettings(devices=4, duration_s=60, seed=2), "smouldering", "003"
    ).spec
    assert spec.seed == 22_003
    expected = simulate(spec).with_columns(batch=pl.lit("003"))
    assert frame.equals(expected)
    assert frame["device_id"][0] == "syn-22003-0"
    assert set(frame["scenario_family"]) == {"smouldering"}


def test_a_partition_defaults_to_the_assets_run_config(tmp_path: Path) -> None:
    code, output = run("--family", "baseline", "--batch", "000", "--out", str(tmp_path))
    assert code == 0, output
    asset = PartitionSettings()
    assert (
        f"{asset.devices * asset.duration_s:,} readings: {asset.devices} devices x 600 s" in output
    )
    assert pl.read_parquet(tmp_path)["ts"].min().isoformat() == "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "1"], "give exactly one --family with it"),
        (["--batch", "1", "--family", "flaming", "--rows", "10"], "--devices (not --rows)"),
        (["--batch", "16", "--family", "flaming"], "'16' is not a batch of the asset: 000-015"),
        (["--family", "flaming"], "give --rows N (readings to generate), or --family F --batch B"),
        (["--rows", "10", "--devices", "3"], "give --rows N"),
        (["--batch", "1", "--family", "wildfire"], "no partition ('wildfire', '001')"),
        (["--rows", "10", "--start", "2026-01-01"], "start must be timezone-aware"),
    ],
)
def test_ambiguous_or_unknown_partitions_are_usage_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, output = run(*args, "--out", str(tmp_path / "out"))
    assert code == 2
    assert message in output
    assert not (tmp_path / "out").exists()


def test_a_missing_gpu_library_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("cupy", "torch"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    for backend in ("cupy", "torch"):
        code, output = run("--rows", "10", "--backend", backend, "--out", str(tmp_path / "out"))
        assert code == 2
        assert f"Invalid value for --backend: the {backend} backend needs {backend}" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("/", "/ is the filesystem root"),
        ("", "Invalid value for --out: is empty"),
        ("  ", "Invalid value for --out: is empty"),
    ],
)
def test_an_out_that_is_no_folder_is_refused(out: str, message: str) -> None:
    code, output = run("--rows", "10", "--out", out)
    assert code == 2
    assert message in output


def test_an_out_under_a_file_or_an_unwritable_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    code, output = run("--rows", "10", "--out", str(tmp_path / "notes.txt" / "out"))
    assert code == 2
    assert f"{tmp_path / 'notes.txt'} is not a folder" in output
    # Permission bits do not bind root (the test may run as root), so access is denied here.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    code, output = run("--rows", "10", "--out", str(locked / "a" / "b"))
    assert code == 2
    assert f"cannot write under {locked / 'a' / 'b'}: {locked} is not writable" in output
    assert not (locked / "a").exists()


def test_a_size_beyond_the_free_disk_space_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write_parquet(*args: object, **kwargs: object) -> None:
        raise AssertionError("the generator started writing")  # without the check: for hours

    monkeypatch.setattr(simulator, "write_parquet", write_parquet)
    out = tmp_path / "out"
    code, output = run("--rows", "1000000000000", "--out", str(out))
    assert code == 1
    [error] = [line for line in output.splitlines() if line.startswith("Error:")]
    # 10^12 readings at 20 bytes each: 20 TB, more than any test machine's free space.
    assert error.startswith(
        f"Error: not enough disk space for {out}: the files would take up to about 20.0 TB "
        "(estimated), "
        f"and {tmp_path} has "
    )
    assert error.endswith(" free; generate fewer readings or choose another --out")
    assert "generating" not in output
    assert list(tmp_path.iterdir()) == []  # not even the folder


def test_the_free_space_check_compares_the_estimate_with_the_destinations_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("--family", "flaming", "--batch", "1", "--devices", "4", "--duration-s", "60")
    spec = partition_generation(PartitionSettings(devices=4, duration_s=60), "flaming", "001").spec
    needed = estimated_parquet_bytes(spec)
    asked: list[Path] = []

    def disk_with(free_bytes: int):
        def usage(path: Path) -> SimpleNamespace:
            asked.append(Path(path))
            return SimpleNamespace(
                total=10 * needed, used=10 * needed - free_bytes, free=free_bytes
            )

        return usage

    monkeypatch.setattr(shutil, "disk_usage", disk_with(needed - 1))
    code, output = run(*args, "--out", str(tmp_path / "a" / "b"))
    assert code == 1
    assert f"up to about 20.8 kB (estimated), and {tmp_path} has 20.8 kB free" in output
    assert asked == [tmp_path]  # the nearest folder that exists: the disk the files will fill
    assert not (tmp_path / "a").exists()

    monkeypatch.setattr(shutil, "disk_usage", disk_with(needed))
    code, output = run(*args, "--out", str(tmp_path / "a" / "b"))
    assert code == 0, output
    assert "240 readings: 4 devices x 60 s" in output
    assert "(at most about 20.8 kB)" in output
    written = sum(p.stat().st_size for p in (tmp_path / "a" / "b").glob("*.parquet"))
    assert 0 < written <= needed


@pytest.mark.aws
def test_an_unreachable_bucket_fails_with_one_line_naming_it(
    moto_endpoint: str, aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    code, output = run("--rows", "100", "--out", "s3://no-such-bucket/readings")
    assert code == 1
    [error] = [line for line in output.splitlines() if line.startswith("Error:")]
    assert error.startswith("Error: cannot write to s3://no-such-bucket/readings: ")
    assert "Traceback" not in output
    # The same command writes once the bucket exists.
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(
        Bucket="no-such-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    code, output = run("--rows", "100", "--out", "s3://no-such-bucket/readings")
    assert code == 0, output
    assert "s3://no-such-bucket/readings/part-00000.parquet" in output
