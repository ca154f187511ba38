"""Bronze -> silver: units, last write wins, 1 Hz alignment, quarantine rules, and the promise
that every reading is in silver once or in quarantine."""

import json
from datetime import UTC, datetime, timedelta

import pandera.polars as pa
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firepipe.core.ingestion.extraction import FIELD_READING_SCHEMA
from firepipe.core.ingestion.landing import LANDED_SCHEMA
from firepipe.core.lake.standardise import (
    MAX_CLOCK_SKEW_S,
    MAX_FILLED_GAP_S,
    QUARANTINE_SCHEMA,
    RULES,
    SILVER_SCHEMA,
    channel_null_rates,
    to_silver,
)
from firepipe.core.readings import CHANNEL_NAMES, CHANNELS, KEY_COLUMNS, READING_SCHEMA
from firepipe.core.schemas import SILVER_READINGS
from firepipe.core.simulation.simulator import GenerationSpec, simulate

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def field(rows: list[tuple[str | None, float | None, float, int, float]]) -> pl.DataFrame:
    """Field rows (device, second, temperature, id, updated_at second); other channels 1.0."""
    n = len(rows)
    return pl.DataFrame(
        {
            "site_id": ["site-f"] * n,
            "device_id": [r[0] for r in rows],
            "ts": [None if r[1] is None else at(r[1]) for r in rows],
            **{c: [1.0] * n for c in CHANNEL_NAMES},
            "temperature_c": [r[2] for r in rows],
            "updated_at": [at(r[4]) for r in rows],
            "id": [r[3] for r in rows],
        },
        schema=FIELD_READING_SCHEMA,
    )


def landed(columns: dict[str, list], source_file: str, ingested_s: float) -> pl.DataFrame:
    """A landed file's frame as bronze holds it: only the columns the file had, plus lineage."""
    n = len(next(iter(columns.values())))
    frame = pl.DataFrame(
        {
            **columns,
            "source_file": [source_file] * n,
            "ingested_at": [at(ingested_s)] * n,
        }
    )
    return frame.cast({c: LANDED_SCHEMA[c] for c in frame.columns})


def synthetic(devices: int = 3, duration_s: int = 40, seed: int = 2) -> pl.DataFrame:
    return simulate(GenerationSpec(devices=devices, duration_s=duration_s, seed=seed))


def value_at(silver: pl.DataFrame, device: str, second: float, column: str) -> object:
    row = silver.filter((pl.col("device_id") == device) & (pl.col("ts") == at(second)))
    assert row.height == 1, row
    return row.item(0, column)


# --- typing and the synthetic path -------------------------------------------------------------


def test_simulation_round_trips_unchanged_and_sorted() -> None:
    bronze = synthetic()
    out = to_silver({"synthetic": bronze.sample(fraction=1.0, shuffle=True, seed=1)}, now=NOW)
    expected = bronze.select(list(READING_SCHEMA)).sort(KEY_COLUMNS)
    assert dict(out.readings.schema) == SILVER_SCHEMA
    assert out.readings.select(list(READING_SCHEMA)).equals(expected)
    assert out.readings["source"].unique().to_list() == ["synthetic"]
    assert out.readings["arrived_at"].null_count() == out.readings.height
    assert out.gap_rows == 0
    assert out.duplicate_rows == 0
    assert out.quarantine.height == 0
    SILVER_READINGS.validate(out.readings)


def test_retried_upload_collapses_to_one_row_per_second() -> None:
    bronze = synthetic()
    noisy = pl.concat([bronze, bronze.sample(fraction=0.5, seed=1)])
    out = to_silver({"synthetic": noisy}, now=NOW)
    assert out.duplicate_rows == noisy.height - bronze.height
    assert out.readings.select(list(READING_SCHEMA)).equals(
        bronze.select(list(READING_SCHEMA)).sort(KEY_COLUMNS)
    )


def test_readings_within_a_second_are_floored_and_the_later_write_wins() -> None:
    bronze = field([("a", 0.2, 20.0, 1, 10), ("a", 0.7, 21.0, 2, 5)])
    out = to_silver({"field": bronze}, now=NOW).readings
    assert out["ts"].to_list() == [T0]
    assert out["temperature_c"].to_list() == [20.0]  # written at 10 s, after the 5 s one


@pytest.mark.parametrize("source", ["synthetic", "field"])
def test_a_missing_column_is_named(source: str) -> None:
    frame = synthetic() if source == "synthetic" else field([("a", 0, 20.0, 1, 0)])
    with pytest.raises(ValueError, match=f"{source} readings lack required columns: co_ppm"):
        to_silver({source: frame.drop("co_ppm")}, now=NOW)


def test_unknown_sources_and_empty_inputs() -> None:
    with pytest.raises(ValueError, match="unknown bronze source"):
        to_silver({"warehouse": synthetic()}, now=NOW)
    empty = to_silver({"synthetic": pl.DataFrame(), "field": pl.DataFrame()}, now=NOW)
    assert empty.readings.height == 0
    assert dict(empty.readings.schema) == SILVER_SCHEMA
    assert dict(empty.quarantine.schema) == QUARANTINE_SCHEMA
    assert empty.arrived_rows == {"synthetic": 0, "field": 0}


def test_field_rows_carry_no_labels() -> None:
    out = to_silver({"field": field([("a", 0, 20.0, 1, 0)])}, now=NOW).readings
    row = out.row(0, named=True)
    assert row["scenario"] is None
    assert row["is_fire"] is None
    assert row["ignition_ts"] is None
    assert row["source"] == "field"
    assert row["arrived_at"] == at(0)


# --- units -------------------------------------------------------------------------------------


def test_landed_alternate_units_are_converted() -> None:
    bronze = landed(
        {
            "device_id": ["d", "d"],
            "ts": [at(0), at(1)],
            "temperature_f": [212.0, 50.0],
            "smoke_obscuration_pct_per_ft": [10.0, 0.0],
            "co2_pct": [0.1, 0.04],
        },
        "in/a.csv",
        100,
    )
    out = to_silver({"landed": bronze}, now=NOW).readings
    assert out["temperature_c"].to_list() == pytest.approx([100.0, 10.0], abs=1e-4)
    assert out["smoke_obscuration_pct_per_m"].to_list() == pytest.approx([29.2253, 0.0], abs=1e-3)
    assert out["co2_ppm"].to_list() == pytest.approx([1000.0, 400.0], rel=1e-6)
    assert out["co_ppm"].to_list() == [None, None]  # not in the file: not invented
    assert out["site_id"].to_list() == [None, None]


def test_a_row_giving_a_channel_twice_is_ambiguous() -> None:
    # Bronze is the union of many files: one row may carry both only if its file did.
    bronze = landed(
        {
            "device_id": ["d", "d"],
            "ts": [at(0), at(1)],
            "temperature_c": [20.0, None],
            "temperature_f": [68.0, 68.0],
        },
        "in/a.csv",
        100,
    )
    out = to_silver({"landed": bronze}, now=NOW)
    assert out.quarantine["rule"].to_list() == ["ambiguous_units"]
    assert out.quarantine["detail"].to_list() == ["given twice: temperature_c and temperature_f"]
    assert out.readings["temperature_c"].to_list() == pytest.approx([20.0])
    assert out.readings["ts"].to_list() == [at(1)]


# --- last write wins ---------------------------------------------------------------------------


def test_last_write_wins_by_arrival_across_sources() -> None:
    rows = field([("a", 0, 20.0, 1, 50), ("a", 1, 21.0, 2, 50), ("a", 0, 22.0, 3, 30)])
    correction = landed(
        {"device_id": ["a", "a"], "ts": [at(1), at(2)], "temperature_c": [31.0, 32.0]},
        "in/fix.csv",
        40,  # ingested before the field row of second 1 was last updated
    )
    out = to_silver({"field": rows, "landed": correction}, now=NOW).readings
    assert out["temperature_c"].to_list() == [20.0, 21.0, 32.0]  # not 22 (older), not 31
    assert out["source"].to_list() == ["field", "field", "landed"]
    assert out["arrived_at"].to_list() == [at(50), at(50), at(40)]


def test_ties_on_arrival_break_by_source_then_source_order() -> None:
    rows = field([("a", 0, 20.0, 7, 50), ("a", 0, 21.0, 3, 50), ("b", 0, 1.0, 1, 50)])
    same_time = landed(
        {"device_id": ["b", "c"], "ts": [at(0), at(0)], "temperature_c": [2.0, 5.0]}, "in/y.csv", 50
    )
    earlier_name = landed(
        {"device_id": ["c", "c"], "ts": [at(0), at(0)], "temperature_c": [3.0, 4.0]}, "in/x.csv", 50
    )
    out = to_silver({"field": rows, "landed": pl.concat([same_time, earlier_name])}, now=NOW)
    got = dict(zip(out.readings["device_id"], out.readings["temperature_c"], strict=True))
    # a: same updated_at, the higher warehouse id wins; b: landed beats field at equal time;
    # c: in/y.csv sorts after in/x.csv, whose second line would otherwise win.
    assert got == {"a": 20.0, "b": 2.0, "c": 5.0}
    assert out.duplicate_rows == 4  # a: 1, b: 1, c: 2


def test_synthetic_copy_loses_to_any_real_arrival() -> None:
    bronze = synthetic(devices=1, duration_s=3)
    device = bronze["device_id"][0]
    fix = landed({"device_id": [device], "ts": [at(1)], "co_ppm": [9.0]}, "in/fix.csv", 0)
    out = to_silver({"synthetic": bronze, "landed": fix}, now=NOW).readings
    assert out["co_ppm"].to_list()[1] == 9.0
    assert out["temperature_c"].to_list()[1] is None  # the correction replaces the whole row
    assert out["source"].to_list() == ["synthetic", "landed", "synthetic"]


# --- 1 Hz alignment ----------------------------------------------------------------------------


def test_gaps_are_marked_not_invented() -> None:
    rows = field([("a", 0, 20.0, 1, 0), ("a", 1, 21.0, 2, 0), ("a", 4, 24.0, 3, 0)])
    out = to_silver({"field": rows}, now=NOW).readings
    assert out["ts"].to_list() == [at(s) for s in range(5)]
    assert out["is_gap"].to_list() == [False, False, True, True, False]
    assert out["temperature_c"].to_list() == [20.0, 21.0, None, None, 24.0]
    gaps = out.filter("is_gap")
    assert gaps.select(CHANNEL_NAMES).null_count().sum_horizontal().item() == 2 * len(CHANNELS)
    assert gaps["device_id"].to_list() == ["a", "a"]
    assert gaps["site_id"].to_list() == ["site-f", "site-f"]
    assert gaps["arrived_at"].to_list() == [None, None]
    SILVER_READINGS.validate(out)


def test_long_gaps_are_not_filled_and_devices_are_not_bridged() -> None:
    limit = MAX_FILLED_GAP_S
    rows = field(
        [
            ("a", 0, 20.0, 1, 0),
            ("a", limit, 20.0, 2, 0),  # exactly the limit: filled
            ("a", 2 * limit + 1, 20.0, 3, 0),  # one second more: not filled
            ("b", 5, 20.0, 4, 0),  # another device: nothing between a and b
        ]
    )
    out = to_silver({"field": rows}, now=NOW)
    assert out.gap_rows == limit - 1
    assert out.readings.height == 4 + limit - 1
    a = out.readings.filter(pl.col("device_id") == "a")
    assert a["ts"].is_sorted()
    assert a["ts"].n_unique() == a.height
    assert a.filter(~pl.col("is_gap"))["ts"].to_list() == [at(0), at(limit), at(2 * limit + 1)]
    assert a["ts"].max() == at(2 * limit + 1)


def test_a_quarantined_reading_leaves_a_gap() -> None:
    rows = field([("a", 0, 20.0, 1, 0), ("a", 1, 5000.0, 2, 0), ("a", 2, 22.0, 3, 0)])
    out = to_silver({"field": rows}, now=NOW)
    assert out.readings["is_gap"].to_list() == [False, True, False]
    assert out.quarantine["rule"].to_list() == ["out_of_range"]


# --- quarantine --------------------------------------------------------------------------------


def test_quarantine_names_each_rule_and_keeps_the_raw_row() -> None:
    future = NOW + timedelta(seconds=MAX_CLOCK_SKEW_S + 1)
    rows = field(
        [
            (None, 0, 20.0, 1, 0),  # missing_key
            ("a", None, 20.0, 2, 0),  # missing_key
            ("a", 1, 1500.0, 3, 0),  # out_of_range
            ("a", 2, float("nan"), 4, 0),  # out_of_range (NaN)
            ("a", 3, 20.0, 5, 0),  # good
        ]
    ).vstack(field([("a", 0, 20.0, 6, 0)]).with_columns(pl.lit(future).alias("ts")))
    fahrenheit = landed(
        {"device_id": ["b"], "ts": [at(0)], "temperature_f": [-50.0]}, "in/cold.csv", 0
    )
    out = to_silver({"field": rows, "landed": fahrenheit}, now=NOW)
    q = out.quarantine
    assert dict(q.schema) == QUARANTINE_SCHEMA
    assert q["rule"].to_list() == [
        "missing_key",
        "missing_key",
        "out_of_range",
        "out_of_range",
        "future_ts",
        "out_of_range",
    ]
    assert q["detail"][0] == "device_id is null"
    assert q["detail"][1] == "ts is null"
    assert q["detail"][2] == "temperature_c=1500.0 outside [-40, 1200]"
    assert q["detail"][3] == "temperature_c=NaN outside [-40, 1200]"
    assert q["detail"][4] == (
        "ts 2026-11-01 00:05:01.000000+00:00 is after 2026-11-01T00:05:00+00:00 (now + clock skew)"
    )
    # -50 degF is -45.6 degC, below the range; the raw row still says -50 degF.
    assert q["detail"][5].startswith("temperature_c=-45.5")
    raw = json.loads(q["raw"][5])
    assert raw["temperature_f"] == -50.0
    assert raw["source_file"] == "in/cold.csv"
    assert json.loads(q["raw"][2])["id"] == 3
    assert q["source"].to_list() == ["field"] * 5 + ["landed"]
    assert out.quarantined_by_rule() == {
        "missing_key": 2,
        "ambiguous_units": 0,
        "future_ts": 1,
        "out_of_range": 3,
    }
    assert out.readings.filter(~pl.col("is_gap"))["ts"].to_list() == [at(3)]


def test_the_first_broken_rule_names_the_reading() -> None:
    # Both null device and out of range: missing_key comes first in RULES.
    out = to_silver({"field": field([(None, 0, 5000.0, 1, 0)])}, now=NOW)
    assert RULES.index("missing_key") < RULES.index("out_of_range")
    assert out.quarantine["rule"].to_list() == ["missing_key"]


# --- the property: silver once, or quarantine --------------------------------------------------

# device, second (to the microsecond), temperature (some out of range or NaN), arrival second,
# source
reading = st.tuples(
    st.sampled_from(["a", "b", "c", None]),
    st.one_of(st.none(), st.integers(0, 30_000_000).map(lambda us: us / 1e6)),
    st.one_of(st.floats(-100, 1300, allow_nan=False, width=32), st.just(float("nan"))),
    st.integers(0, 5),
    st.sampled_from(["synthetic", "field", "landed"]),
)


def frames_of(rows: list[tuple]) -> dict[str, pl.DataFrame]:
    by_source: dict[str, list[tuple[int, tuple]]] = {"synthetic": [], "field": [], "landed": []}
    for i, r in enumerate(rows):
        by_source[r[4]].append((i, r))
    frames = {}
    if by_source["synthetic"]:
        base = synthetic(devices=1, duration_s=2).drop("device_id", "ts", "temperature_c")
        items = by_source["synthetic"]
        frames["synthetic"] = base.select(pl.all().gather([0] * len(items))).with_columns(
            pl.Series("device_id", [r[0] for _, r in items], pl.String),
            pl.Series("ts", [None if r[1] is None else at(r[1]) for _, r in items]).cast(
                READING_SCHEMA["ts"]
            ),
            pl.Series("temperature_c", [r[2] for _, r in items], pl.Float32),
        )
    if by_source["field"]:
        frames["field"] = field([(r[0], r[1], r[2], i, r[3]) for i, r in by_source["field"]])
    if by_source["landed"]:
        frames["landed"] = pl.concat(
            [
                landed(
                    {
                        "device_id": pl.Series([r[0]], dtype=pl.String),
                        "ts": pl.Series([None if r[1] is None else at(r[1])]).cast(
                            READING_SCHEMA["ts"]
                        ),
                        "temperature_c": [r[2]],
                    },
                    f"in/{i:03d}.csv",
                    r[3],
                )
                for i, r in by_source["landed"]
            ]
        )
    return frames


def is_valid(r: tuple) -> bool:
    t = r[2]
    return r[0] is not None and r[1] is not None and t == t and -40.0 <= t <= 1200.0


def expected_winners(rows: list[tuple]) -> dict[tuple[str, int], float]:
    """The oracle: per (device, whole second), the valid reading with the latest arrival
    (synthetic: none, first), ties to the later source, then the later row in that source."""
    rank = {"synthetic": 0, "field": 1, "landed": 2}
    best: dict[tuple[str, int], tuple[tuple, float]] = {}
    for i, r in enumerate(rows):
        if not is_valid(r):
            continue
        order = (-1 if r[4] == "synthetic" else r[3], rank[r[4]], i)
        key = (r[0], int(r[1]))
        if key not in best or order > best[key][0]:
            best[key] = (order, r[2])
    return {k: v for k, (_, v) in best.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(reading, min_size=1, max_size=40))
def test_every_reading_is_in_silver_once_or_in_quarantine(rows: list[tuple]) -> None:
    out = to_silver(frames_of(rows), now=NOW)
    assert out.quarantine.height == sum(not is_valid(r) for r in rows)
    readings = out.readings.filter(~pl.col("is_gap"))
    winners = expected_winners(rows)
    got = {
        (d, int((t - T0).total_seconds())): v
        for d, t, v in readings.select("device_id", "ts", "temperature_c").iter_rows()
    }
    assert got.keys() == winners.keys()
    assert got == pytest.approx(winners)
    assert out.duplicate_rows == sum(is_valid(r) for r in rows) - len(winners)
    assert out.readings.select(KEY_COLUMNS).equals(
        out.readings.select(KEY_COLUMNS).sort(KEY_COLUMNS)
    )
    SILVER_READINGS.validate(out.readings)


# --- null rates --------------------------------------------------------------------------------


def test_null_rate_ignores_devices_without_the_sensor_and_gap_rows() -> None:
    rows = field(
        [("a", s, 20.0, s, 0) for s in range(4)] + [("b", s, 20.0, 10 + s, 0) for s in range(4)]
    ).with_columns(
        # a lost one co reading; b has no H2 sensor at all; a's H2 is fine.
        pl.when((pl.col("device_id") == "a") & (pl.col("ts") == at(1)))
        .then(None)
        .otherwise(pl.col("co_ppm"))
        .alias("co_ppm"),
        pl.when(pl.col("device_id") == "b").then(None).otherwise(pl.col("h2_ppm")).alias("h2_ppm"),
    )
    gappy = rows.filter(pl.col("ts") != at(2))  # a gap row at second 2 for each device
    silver = to_silver({"field": gappy}, now=NOW).readings
    rates = channel_null_rates(silver)
    assert rates["co_ppm"] == pytest.approx(1 / 6)  # 1 null of a's and b's 6 non-gap rows
    assert rates["h2_ppm"] == 0.0  # b left out, a complete
    assert rates["temperature_c"] == 0.0
    no_voc = silver.with_columns(pl.lit(None, pl.Float32).alias("voc_ppb"))
    assert channel_null_rates(no_voc)["voc_ppb"] is None


BREAKAGES = {
    "duplicate key": lambda f: pl.concat([f, f.head(1)]),
    "out of range": lambda f: f.with_columns(pl.lit(1500.0, pl.Float32).alias("temperature_c")),
    "gap with values": lambda f: f.with_columns(pl.lit(1.0, pl.Float32).alias("co_ppm")),
    "unknown source": lambda f: f.with_columns(pl.lit("email").alias("source")),
    "null device": lambda f: f.with_columns(pl.lit(None, pl.String).alias("device_id")),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_silver_contract_rejects_what_silver_never_emits(breakage: str) -> None:
    good = to_silver({"field": field([("a", 0, 20.0, 1, 0), ("a", 2, 22.0, 2, 0)])}, now=NOW)
    SILVER_READINGS.validate(good.readings)  # with a gap row at second 1
    with pytest.raises(pa.errors.SchemaError):
        SILVER_READINGS.validate(BREAKAGES[breakage](good.readings))
