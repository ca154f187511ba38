"""The NIST adapter on the real folder and on small folders written here in the same format."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from firepipe.core.readings import READING_SCHEMA
from firepipe.core.realdata import nist
from firepipe_tests.conftest import nist_data_dir

NIST_DIR = Path(nist_data_dir())


def raw_row(test: str, seconds: float) -> dict[str, str]:
    """One row of a test CSV as text, read without the adapter."""
    with (NIST_DIR / f"NIST_Smoke_Alarms_{test}.csv").open() as f:
        for row in csv.DictReader(f):
            if float(row["TIME"]) == seconds:
                return row
    raise AssertionError(f"{test} has no row at {seconds} s")


@pytest.fixture(scope="module")
def tests() -> tuple[nist.NistTest, ...]:
    assert NIST_DIR.is_dir(), f"the NIST data is missing at {NIST_DIR}"
    return nist.read_tests(NIST_DIR)


def reading(frame: pl.DataFrame, device: str, seconds: float) -> dict[str, object]:
    rows = frame.filter(
        (pl.col("device_id") == device) & (pl.col("seconds_since_ignition") == seconds)
    )
    assert rows.height == 1
    return rows.row(0, named=True)


def test_real_folder_has_six_tests_with_their_stations(tests: tuple[nist.NistTest, ...]) -> None:
    assert [t.name for t in tests] == ["SDC02", "SDC05", "SDC07", "SDC10", "SDC33", "SDC35"]
    assert all(t.stations == ("A", "B", "C", "D", "E", "F") for t in tests)


def test_real_readings_match_values_computed_by_hand_from_the_csv(
    tests: tuple[nist.NistTest, ...],
) -> None:
    frame = nist.readings(tests)
    assert frame.schema == pl.Schema(READING_SCHEMA)
    raw = raw_row("SDC02", 150.0)
    got = reading(frame, "nist-SDC02-C", 150.0)
    assert got["temperature_c"] == pytest.approx(float(raw["TCC_1"]), rel=1e-6)
    expected_obscuration = 100.0 * (1.0 - 10.0 ** -float(raw["SMC_1"]))
    assert got["smoke_obscuration_pct_per_m"] == pytest.approx(expected_obscuration, rel=1e-5)
    assert got["co_ppm"] == pytest.approx(float(raw["GASC_1"]) * 1e4, rel=1e-5)
    assert got["co2_ppm"] == pytest.approx(float(raw["GASC_3"]) * 1e4, rel=1e-5)
    assert got["humidity_pct"] is None
    assert got["pm25_ugm3"] is None
    assert got["site_id"] == "nist-SDC02"
    assert got["scenario"] == "nist_flaming"
    assert got["is_fire"] is True
    assert got["ignition_ts"] == nist.NOMINAL_IGNITION_TS
    assert got["ts"] == nist.NOMINAL_IGNITION_TS + timedelta(seconds=150)


def test_measured_time_steps_are_kept(tests: tuple[nist.NistTest, ...]) -> None:
    sdc05 = next(t for t in tests if t.name == "SDC05").readings()
    a = sdc05.filter(pl.col("device_id") == "nist-SDC05-A")
    assert a.height == 41  # 5 s steps from 2 s to 202 s: no invented 1 Hz rows
    assert a["ts"].diff().drop_nulls().unique().to_list() == [timedelta(seconds=5)]


def test_implausible_channels_are_screened_with_a_reason(
    tests: tuple[nist.NistTest, ...],
) -> None:
    screening = nist.screening_frame(tests)

    def verdict(test: str, column: str) -> dict[str, object]:
        rows = screening.filter((pl.col("test") == test) & (pl.col("column") == column))
        assert rows.height == 1
        return rows.row(0, named=True)

    o2 = verdict("SDC07", "GASF_5")
    assert not o2["usable"]
    assert "O2 59.20 %" in str(o2["reason"])
    dead = verdict("SDC07", "GASF_1")
    assert not dead["usable"]
    assert "constant" in str(dead["reason"])
    co2 = verdict("SDC02", "GASB_3")
    assert not co2["usable"]
    assert "10200 ppm" in str(co2["reason"])
    assert verdict("SDC02", "GASC_3")["usable"]
    frame = nist.readings(tests)
    b = frame.filter(pl.col("device_id") == "nist-SDC02-B")
    assert b["co2_ppm"].null_count() == b.height
    assert b["temperature_c"].null_count() == 0


def test_a_station_without_a_smoke_meter_has_null_obscuration(
    tests: tuple[nist.NistTest, ...],
) -> None:
    sdc10 = next(t for t in tests if t.name == "SDC10")
    assert sdc10.column_for("E", "smoke_obscuration_pct_per_m") is None
    e = sdc10.readings().filter(pl.col("device_id") == "nist-SDC10-E")
    assert e["smoke_obscuration_pct_per_m"].null_count() == e.height
    assert e["temperature_c"].max() == pytest.approx(float(sdc10.raw["TCE_1"].max()), rel=1e-6)


def test_real_activation_times_are_tidy() -> None:
    act = nist.read_activation_times(NIST_DIR)
    assert act.columns == ["test", "station", "alarm_type", "model_id", "activation_s"]
    assert set(act["alarm_type"]) == {"ion", "pho"}
    first = act.row(0, named=True)
    assert first == {
        "test": "SDC02",
        "station": "A",
        "alarm_type": "ion",
        "model_id": 1,
        "activation_s": 106.0,
    }
    header = (NIST_DIR / "Activation_Times.csv").read_text().splitlines()[0].split(",")
    assert act.height == len(header) - 1
    assert act.filter(pl.col("test") == "SDC35").height == sum(
        h.startswith("SDC35-") for h in header
    )


HEADER = "TIME,TCA_1,TCA_2,SMA_1,GASA_1,GASA_3,GASA_5,TCB_1,GASB_3,TCG,Ion1A"
ROWS = [
    "0.00E+00,2.00E+01,1.90E+01,0.00E+00,0.00E+00,4.00E-02,2.09E+01,2.10E+01,-5.00E-01,2.0E+01,1",
    "5.00E+00,2.50E+01,2.00E+01,1.00E-01,1.00E-03,5.00E-02,2.09E+01,2.20E+01,-5.00E-01,2.0E+01,1",
    "1.00E+01,4.00E+01,2.50E+01,5.00E-01,2.00E-03,1.00E-01,2.08E+01,2.60E+01,-4.00E-01,2.0E+01,1",
    "1.50E+01,6.00E+01,3.00E+01,1.00E+00,3.00E-03,2.00E-01,2.07E+01,3.00E+01,-3.00E-01,2.0E+01,1",
]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    (tmp_path / "NIST_Smoke_Alarms_T01.csv").write_text("\n".join([HEADER, *ROWS]) + "\n")
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")  # not a test file: ignored
    (tmp_path / "Activation_Times.csv").write_text("Act,T01-Ion2A,T01-Pho7B\n-1,12,-1\n")
    return tmp_path


def test_tiny_folder_maps_stations_and_screens_a_negative_co2(tiny: Path) -> None:
    (test,) = nist.read_tests(tiny)
    assert test.name == "T01"
    assert test.stations == ("A", "B")
    frame = test.readings()
    a = frame.filter(pl.col("device_id") == "nist-T01-A").sort("ts")
    assert a["temperature_c"].to_list() == [20.0, 25.0, 40.0, 60.0]
    assert a["smoke_obscuration_pct_per_m"][2] == pytest.approx(100 * (1 - 10**-0.5), rel=1e-6)
    assert a["co_ppm"].to_list() == pytest.approx([0.0, 10.0, 20.0, 30.0])
    assert a["co2_ppm"].to_list() == pytest.approx([400.0, 500.0, 1000.0, 2000.0])
    assert a["seconds_since_ignition"].to_list() == [0.0, 5.0, 10.0, 15.0]
    b = frame.filter(pl.col("device_id") == "nist-T01-B")
    assert b["smoke_obscuration_pct_per_m"].null_count() == 4  # no SMB_1 column
    assert b["co2_ppm"].null_count() == 4  # negative trace, screened
    reason = nist.screening_frame([test]).filter(pl.col("column") == "GASB_3")["reason"][0]
    assert reason.startswith("negative CO2")


def test_tiny_activation_times(tiny: Path) -> None:
    act = nist.read_activation_times(tiny)
    assert act.to_dicts() == [
        {"test": "T01", "station": "A", "alarm_type": "ion", "model_id": 2, "activation_s": 12.0},
        {"test": "T01", "station": "B", "alarm_type": "pho", "model_id": 7, "activation_s": None},
    ]


def test_bad_input_is_a_clear_error(tmp_path: Path, tiny: Path) -> None:
    with pytest.raises(nist.NistDataError, match="does not exist"):
        nist.read_tests(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(nist.NistDataError, match="no NIST_Smoke_Alarms_"):
        nist.read_tests(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    path = bad / "NIST_Smoke_Alarms_X.csv"
    path.write_text("\n".join([HEADER, ROWS[0], ROWS[1].replace("2.50E+01", "hot")]) + "\n")
    with pytest.raises(nist.NistDataError, match="not a number"):
        nist.read_test(path)
    path.write_text("\n".join([HEADER, ROWS[0], ROWS[2], ROWS[1], ROWS[3]]) + "\n")
    with pytest.raises(nist.NistDataError, match="strictly increasing"):
        nist.read_test(path)
    (tiny / "Activation_Times.csv").write_text("Act,T01-Smoke1A\n-1,3\n")
    with pytest.raises(nist.NistDataError, match="T01-Smoke1A"):
        nist.read_activation_times(tiny)
