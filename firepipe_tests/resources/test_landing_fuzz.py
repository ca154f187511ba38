"""Hostile files at the landing ingest: seeded mutations of valid Parquet, CSV and JSON lines
files (byte flips, truncation, appended garbage), parsed as production parses them (in a child
process), must each end ingested or quarantined, and the run must survive. Of the Parquet
mutations, polars 2.1 raises a PanicException on ~0.3% and aborts on ~0.03% (an allocation of
2.3 EB); in this process either would end the run, or pytest.

The writer keeps the frames in memory: an Iceberg commit per ingested file (~90 ms here) would
make this minutes; writing to the table is tested in test_landing.py.
"""

import io
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from firepipe.core.ingestion.landing import LANDED_SCHEMA, LandingLedger, ingest_new
from firepipe.lib.isolated import IsolatedFunction
from firepipe.resources.landing import PARSER, LocalLandingZone, isolated_parser

SEED = 16
# Mutations per format: 8-11 s in all on 2 cores. With polars 2.1.0 this seed's Parquet
# mutations give 10 panics and 1 abort (each costs a new child, ~0.2 s).
MUTANTS = {"parquet": 2500, "csv": 400, "jsonl": 400}
ROWS = 40
START = datetime(2026, 11, 1, 8, tzinfo=UTC)


def _readings() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "site_id": ["s1"] * ROWS,
            "device_id": [f"d{i % 3}" for i in range(ROWS)],
            "ts": [START + timedelta(seconds=i) for i in range(ROWS)],
            "temperature_c": [20.0 + i / 8 for i in range(ROWS)],
            "co_ppm": [float(i % 7) for i in range(ROWS)],
            "is_fire": [i % 5 == 0 for i in range(ROWS)],
        }
    )


def _valid_files() -> dict[str, bytes]:
    readings = _readings()
    parquet = io.BytesIO()
    readings.write_parquet(parquet)
    text = readings.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return {
        "parquet": parquet.getvalue(),
        "csv": text.write_csv().encode(),
        "jsonl": "".join(json.dumps(row) + "\n" for row in text.iter_rows(named=True)).encode(),
    }


def _mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    how = rng.choice(("flip", "flip", "truncate", "append"))
    if how == "flip":
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            # Zeroed and saturated bytes break lengths and offsets, the readers' soft spots.
            mutated[rng.randrange(len(data))] = rng.choice((0x00, 0xFF, rng.randrange(256)))
        return how, bytes(mutated)
    if how == "truncate":
        return how, data[: rng.randrange(len(data))]
    return how, data + rng.randbytes(rng.randint(1, 64))


def _mutants(valid: dict[str, bytes]) -> dict[str, bytes]:
    """Name -> bytes: the valid files and MUTANTS of each, all different (no duplicates)."""
    rng = random.Random(SEED)
    files = {f"valid.{fmt}": data for fmt, data in valid.items()}
    seen = set(files.values())
    for fmt, count in MUTANTS.items():
        made = 0
        while made < count:
            how, data = _mutate(rng, valid[fmt])
            if data in seen:
                continue
            seen.add(data)
            files[f"{fmt}/{made:04d}-{how}.{fmt}"] = data
            made += 1
    return files


def test_every_mutated_file_is_ingested_or_quarantined_and_the_run_survives(
    tmp_path: Path,
) -> None:
    zone = LocalLandingZone(root=str(tmp_path / "landing"), settle_s=0.0)
    files = _mutants(_valid_files())
    for name, data in files.items():
        zone.drop(name, data)
    keys = {f"incoming/{name}": data for name, data in files.items()}

    parsed: dict[str, pl.DataFrame] = {}
    written: list[pl.DataFrame] = []
    with IsolatedFunction(PARSER, zone.parse_memory_limit_mb, zone.parse_timeout_s) as child:
        in_child = isolated_parser(child)

        def parse(source_file: str, data: bytes, ingested_at: datetime) -> pl.DataFrame:
            parsed[source_file] = in_child(source_file, data, ingested_at)
            return parsed[source_file]

        summary = ingest_new(zone, LandingLedger(), written.append, settle_s=0, parse=parse)
        assert summary.failed is None
        assert set(summary.ledger.handled) == set(keys)
        again = ingest_new(zone, summary.ledger, written.append, settle_s=0, parse=parse)
    assert (again.ingested, again.quarantined, again.duplicates) == ([], {}, [])

    # Each file once: ingested (its rows written, the file kept in incoming/ as the archive)
    # or quarantined (moved, bytes intact, the reason beside it); none lost, none duplicated.
    ingested, quarantined = set(summary.ingested), set(summary.quarantined)
    assert len(ingested) == len(summary.ingested)
    assert not ingested & quarantined
    assert ingested | quarantined == set(keys)
    assert summary.duplicates == []
    assert set(parsed) == ingested
    assert len(written) == len(ingested)
    assert {o.key for o in zone.list_objects()} == ingested
    for key in quarantined:
        moved = "quarantine/" + key.removeprefix("incoming/")
        assert zone.read(moved) == keys[key]
        assert zone.quarantine_reason(moved)["rule"] == summary.quarantined[key]
    for key, frame in parsed.items():
        assert {c: LANDED_SCHEMA[c] for c in frame.columns} == dict(frame.schema)
        assert frame["source_file"].to_list() == [key] * frame.height
    assert summary.rows == sum(frame.height for frame in written)

    # Valid files come through whole, with their values.
    expected = _readings()
    for fmt in MUTANTS:
        frame = parsed[f"incoming/valid.{fmt}"]
        assert frame.select(expected.columns).equals(
            expected.with_columns(
                pl.col("ts").dt.cast_time_unit("us"),
                pl.col("temperature_c", "co_ppm").cast(pl.Float32),
            )
        ), fmt
    rules = Counter(summary.quarantined.values())
    print(f"{len(ingested)} ingested; quarantined by rule: {dict(rules)}")
