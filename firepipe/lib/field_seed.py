"""Seeding the local stand-ins of the field sources: the DuckDB field warehouse (the NIST tests
replayed as field devices and a small synthetic field stream, as field rows with (updated_at, id)
keys) and the landing folder (a few demo files, one of them corrupt)."""

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from firepipe.core.ingestion.extraction import RAW_FIELD_SCHEMA
from firepipe.core.lake.units import DEGC_PER_DEGF, FAHRENHEIT_OFFSET_DEGF, M_PER_FT
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.realdata import nist
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.resources.landing import LandingZone
from firepipe.resources.warehouse import COLUMNS, FIELD_TABLE_COLUMNS, checked_table

# The live part of the local field warehouse: each seeding appends the last 5 minutes of 8
# devices (the default catalog mix), so every `make run` has new rows past the watermark and a
# fresh field source, as a deployed fleet would.
FIELD_STREAM_SPEC = GenerationSpec(devices=8, duration_s=300, sites=2, seed=4)
STREAM_DEVICE_PREFIX = "field-"


def _renamed_devices(prefix: str) -> pl.Expr:
    """The simulator names devices syn-<seed>-<n>, as bronze/synthetic_readings does: another
    prefix keeps a field or landed device from being taken for a synthetic one in silver."""
    return pl.col("device_id").str.replace("^syn-", prefix)


def field_rows(readings: pl.DataFrame, first_id: int, updated_at: datetime) -> pl.DataFrame:
    """Readings (READING_SCHEMA) as the field table holds them: ids from `first_id`, one
    `updated_at` for the load, the payload as text (ts in ISO 8601 UTC)."""
    if updated_at.tzinfo is None:
        raise ValueError(f"updated_at must be timezone-aware, got {updated_at}")
    return readings.select(
        (pl.int_range(pl.len(), dtype=pl.Int64) + first_id).alias("id"),
        pl.lit(updated_at).cast(RAW_FIELD_SCHEMA["updated_at"]).alias("updated_at"),
        "site_id",
        "device_id",
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").alias("ts"),
        *[pl.col(c).cast(pl.String) for c in CHANNEL_NAMES],
    )


def append_field_rows(path: str, table: str, rows: pl.DataFrame) -> int:
    """Append rows in RAW_FIELD_SCHEMA to a DuckDB field table, creating it if missing."""
    import duckdb

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    staged = rows.select(COLUMNS).with_columns(
        pl.col("updated_at").dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    )
    with duckdb.connect(path) as connection:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {checked_table(table)} ({FIELD_TABLE_COLUMNS})"
        )
        connection.register("staged_rows", staged.to_arrow())
        connection.execute(f"INSERT INTO {checked_table(table)} SELECT * FROM staged_rows")
    return staged.height


def next_id(path: str, table: str) -> int:
    """The id after the largest in the table (1 for a missing or empty table)."""
    import duckdb

    if not Path(path).exists():
        return 1
    with duckdb.connect(path) as connection:
        exists = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
            [checked_table(table).split(".")[-1]],
        ).fetchone()
        if not exists or not exists[0]:
            return 1
        largest = connection.execute(f"SELECT max(id) FROM {checked_table(table)}").fetchone()
    return int(largest[0]) + 1 if largest and largest[0] is not None else 1


def last_stream_time(path: str, table: str) -> datetime | None:
    """The newest reading time of the synthetic field stream in the table, None before any."""
    import duckdb

    if next_id(path, table) == 1:
        return None
    with duckdb.connect(path) as connection:
        newest = connection.execute(
            f"SELECT max(ts) FROM {checked_table(table)} WHERE device_id LIKE ?",
            [f"{STREAM_DEVICE_PREFIX}%"],
        ).fetchone()
    if not newest or newest[0] is None:
        return None
    return datetime.fromisoformat(str(newest[0]).replace("Z", "+00:00"))


def seed_local_warehouse(
    path: str,
    table: str,
    nist_folder: Path,
    *,
    stream: GenerationSpec = FIELD_STREAM_SPEC,
    loaded_at: datetime | None = None,
) -> int:
    """Fill the local field table: the NIST tests replayed as field devices when the table is
    empty, then the synthetic field stream's readings since its last batch, up to `loaded_at`
    (at most `stream.duration_s` seconds; one second later, so they sort after the replay),
    with a few rows carrying what faulty firmware sends (FIRMWARE_FAULTS) for the dead-letter
    table. Returns the rows added."""
    loaded_at = (loaded_at or datetime.now(UTC)).replace(microsecond=0)
    first_id = next_id(path, table)
    added = 0
    if first_id == 1:
        replay = nist.readings(nist.read_tests(nist_folder))
        added = append_field_rows(path, table, field_rows(replay, 1, loaded_at))
        first_id += added
    # The stream goes on where it stopped, so no second is delivered twice.
    start = loaded_at - timedelta(seconds=stream.duration_s)
    previous = last_stream_time(path, table)
    if previous is not None:
        start = max(start, previous + timedelta(seconds=1))
    seconds = int((loaded_at - start).total_seconds())
    if seconds < 2:  # the simulator's shortest run
        return added
    # A new seed per batch (new readings), the same device names (the same fleet).
    batch = replace(
        stream, seed=stream.seed * 100_000 + first_id % 100_000, start=start, duration_s=seconds
    )
    synthetic = simulate(batch).with_columns(
        pl.col("device_id").str.replace(r"^syn-\d+-", STREAM_DEVICE_PREFIX)
    )
    later = loaded_at + timedelta(seconds=1)
    stream_rows = with_firmware_faults(field_rows(synthetic, first_id, later))
    return added + append_field_rows(path, table, stream_rows)


# Payloads field devices were seen to send instead of values, placed on every
# FIRMWARE_FAULT_EVERY_ROWS-th row of the synthetic field stream: each one a dead letter.
FIRMWARE_FAULTS: tuple[dict[str, str | None], ...] = (
    {"co_ppm": "ERR"},
    {"ts": ""},
    {"temperature_c": "--.-"},
)
FIRMWARE_FAULT_EVERY_ROWS = 700


def with_firmware_faults(rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` (RAW_FIELD_SCHEMA) with FIRMWARE_FAULTS written over rows 0, 700, 1400... in turn,
    as many as fit."""
    faulty = rows.clone()
    for n, fault in enumerate(FIRMWARE_FAULTS):
        row = n * FIRMWARE_FAULT_EVERY_ROWS
        if row >= faulty.height:
            break
        for column, value in fault.items():
            faulty[row, column] = value
    return faulty


# Demo files for the landing zone: 3 devices x 2 minutes of a fixed synthetic stream (fixed
# seed and start, so the same bytes every time and a second seeding adds nothing).
LANDING_DEMO_SPEC = GenerationSpec(
    devices=3, duration_s=120, sites=1, seed=11, start=datetime(2026, 2, 1, tzinfo=UTC)
)
LANDING_DEMO_FOLDER = "demo"
_LANDED_COLUMNS = ("site_id", "device_id", "ts", *CHANNEL_NAMES)


def _in_us_units(readings: pl.DataFrame) -> pl.DataFrame:
    """Temperature in degrees F and obscuration in %/ft, as some field gateways report them:
    F = C / (5/9) + 32; a metre of smoke transmitting T passes T^0.3048 over a foot
    (Beer-Lambert), so %/ft = 100 (1 - (1 - %/m / 100)^0.3048)."""
    transmission_per_m = 1.0 - pl.col("smoke_obscuration_pct_per_m").cast(pl.Float64) / 100.0
    return readings.with_columns(
        (pl.col("temperature_c").cast(pl.Float64) / DEGC_PER_DEGF + FAHRENHEIT_OFFSET_DEGF)
        .round(3)
        .alias("temperature_c"),
        (100.0 * (1.0 - transmission_per_m.pow(M_PER_FT)))
        .round(5)
        .alias("smoke_obscuration_pct_per_m"),
    ).rename(
        {
            "temperature_c": "temperature_f",
            "smoke_obscuration_pct_per_m": "smoke_obscuration_pct_per_ft",
        }
    )


def landing_demo_files() -> dict[str, bytes]:
    """Name -> bytes of the demo files: a CSV in degrees F and %/ft, a JSON lines file with one
    reading out of range (silver quarantines it), and a corrupt Parquet file (its first 64
    bytes) that ingestion must quarantine."""
    readings = simulate(LANDING_DEMO_SPEC).select(_LANDED_COLUMNS)
    readings = readings.with_columns(_renamed_devices("landed-"))
    devices = sorted(readings["device_id"].unique())
    by_device = {d: readings.filter(pl.col("device_id") == d) for d in devices}
    csv = _in_us_units(by_device[devices[0]]).with_columns(
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    jsonl = by_device[devices[1]].with_columns(
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        # One reading a faulty humidity sensor sent: the file is good, silver quarantines the row.
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(140.0, pl.Float32))
        .otherwise(pl.col("humidity_pct"))
        .alias("humidity_pct"),
    )
    parquet = io.BytesIO()
    by_device[devices[2]].write_parquet(parquet)
    return {
        f"{LANDING_DEMO_FOLDER}/gateway_us_units.csv": csv.write_csv().encode(),
        f"{LANDING_DEMO_FOLDER}/gateway.jsonl": jsonl.write_ndjson().encode(),
        f"{LANDING_DEMO_FOLDER}/truncated_upload.parquet": parquet.getvalue()[:64],
    }


def seed_landing(zone: LandingZone) -> list[str]:
    """Drop each demo file that the zone has not seen yet (not waiting, ingested or
    quarantined); returns the keys dropped."""
    return [
        zone.drop(name, data)
        for name, data in landing_demo_files().items()
        if not zone.has_landed(name, data)
    ]
