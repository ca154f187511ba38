"""The check suite of bronze/synthetic_readings, on small frames broken one way each."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest

from firepipe.core.lake import quality
from firepipe.core.readings import CHANNELS, READING_SCHEMA
from firepipe.core.simulation.scenarios import CATALOG
from firepipe.defs.generation import checks
from firepipe.defs.generation.partitions import Cell

T0 = datetime(2026, 1, 1, tzinfo=UTC)
IGNITION_AFTER_S = 10
SECONDS_PER_DEVICE = 30
BRONZE_SCHEMA = {
    **READING_SCHEMA,
    "scenario_family": pl.String,
    "fault": pl.String,
    "batch": pl.String,
}
CHECKS = ["schema", "physical_ranges", "label_consistency", "scenario_mix"]
ALL_CHECKS = [*CHECKS, "distribution_vs_reference"]


def partition(family: str, *, seed: int, devices: int = 40, batch: str = "001") -> pl.DataFrame:
    """One family's partition: devices split across the family's scenarios by catalog weight,
    channel values drawn from one fixed distribution per channel (in range), seeded."""
    scenarios = [s for s in CATALOG if s.family == family]
    total_weight = sum(s.weight for s in scenarios)
    counts = [round(devices * s.weight / total_weight) for s in scenarios]
    rng = np.random.default_rng(seed)
    frames = []
    device = 0
    for scenario, count in zip(scenarios, counts, strict=True):
        for _ in range(count):
            seconds = np.arange(SECONDS_PER_DEVICE, dtype=np.float64)
            ts = [T0 + timedelta(seconds=int(s)) for s in seconds]
            ignition = T0 + timedelta(seconds=IGNITION_AFTER_S) if scenario.is_fire else None
            frames.append(
                pl.DataFrame(
                    {
                        "site_id": f"site-{device % 3}",
                        "device_id": f"b{batch}-d{device:03d}",
                        "ts": ts,
                        "scenario": scenario.name,
                        "is_fire": scenario.is_fire,
                        "ignition_ts": ignition,
                        "seconds_since_ignition": seconds - IGNITION_AFTER_S
                        if scenario.is_fire
                        else None,
                        **{
                            c.name: np.clip(
                                rng.normal(c.min_value + 20.0, 3.0, SECONDS_PER_DEVICE),
                                c.min_value,
                                c.max_value,
                            )
                            for c in CHANNELS
                        },
                        "scenario_family": family,
                        "fault": None,
                        "batch": batch,
                    },
                    schema=BRONZE_SCHEMA,
                )
            )
            device += 1
    return pl.concat(frames)


def evaluate(readings: pl.DataFrame, family: str = "flaming", reference=None):
    results = checks.evaluate_checks(
        readings.lazy(),
        family=family,
        reference=None if reference is None else reference.lazy(),
        reference_label=f"{family}|000",
    )
    return {r.check_name: r for r in results}


def failed(results) -> list[str]:
    return [name for name, r in results.items() if not r.passed]


def value(result: dg.AssetCheckResult, key: str):
    return result.metadata[key].value


@pytest.fixture(scope="module")
def good() -> pl.DataFrame:
    return partition("flaming", seed=1)


@pytest.fixture(scope="module")
def reference() -> pl.DataFrame:
    return partition("flaming", seed=2, batch="000")


def test_specs_name_the_five_checks_and_block_on_the_contract():
    specs = {s.name: s for s in checks.check_specs()}
    assert list(specs) == ALL_CHECKS
    assert {n for n, s in specs.items() if s.blocking} == {
        "schema",
        "physical_ranges",
        "label_consistency",
    }
    assert all(s.asset_key == dg.AssetKey(["bronze", "synthetic_readings"]) for s in specs.values())


@pytest.mark.parametrize("family", ["baseline", "flaming", "smouldering", "nuisance"])
def test_good_partitions_of_every_family_pass_all_checks(family):
    results = evaluate(
        partition(family, seed=1), family, reference=partition(family, seed=2, batch="000")
    )
    assert list(results) == ALL_CHECKS
    assert failed(results) == []
    dist = results["distribution_vs_reference"]
    assert value(dist, "overall_score") > 0.9
    assert value(dist, "reference") == f"{family}|000"
    assert value(dist, "candidate_rows_sampled") == 40 * SECONDS_PER_DEVICE
    assert "| KS complement | temperature_c |" in value(dist, "report")
    assert value(results["label_consistency"], "rows") == 40 * SECONDS_PER_DEVICE
    assert value(results["scenario_mix"], "devices") == 40


def test_without_a_reference_the_distribution_check_says_so_and_passes(good):
    dist = evaluate(good)["distribution_vs_reference"]
    assert dist.passed
    assert value(dist, "reference") == "none"
    assert "flaming|000" in value(dist, "note")


def test_a_wrong_dtype_fails_the_schema_only(good, reference):
    results = evaluate(good.with_columns(pl.col("co_ppm").cast(pl.Float64)), reference=reference)
    assert failed(results) == ["schema"]
    assert results["schema"].severity == dg.AssetCheckSeverity.ERROR
    assert "co_ppm: expected dtype('Float32'), got Float64" in value(results["schema"], "details")


def test_an_out_of_range_value_fails_physical_ranges_with_an_example(good, reference):
    bad_row = pl.int_range(pl.len()) == 7
    broken = good.with_columns(
        pl.when(bad_row).then(pl.lit(12_000.0)).otherwise("co_ppm").cast(pl.Float32).alias("co_ppm")
    )
    results = evaluate(broken, reference=reference)
    ranges = results["physical_ranges"]
    assert not ranges.passed
    assert value(ranges, "violations") == 1
    assert value(ranges, "by_channel")["co_ppm"] == 1
    assert "| 12000 |" in value(ranges, "examples")
    # The schema's sampled value checks see the same row (the sample is the whole partition).
    assert failed(results) == ["schema", "physical_ranges"]


def test_a_fire_without_ignition_fails_label_consistency(good, reference):
    device = good.filter("is_fire")["device_id"][0]
    broken = good.with_columns(
        pl.when(pl.col("device_id") == device).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("ignition_ts", "seconds_since_ignition")
    )
    results = evaluate(broken, reference=reference)
    assert failed(results) == ["label_consistency"]
    labels = results["label_consistency"]
    assert value(labels, "inconsistent_rows") == SECONDS_PER_DEVICE
    assert value(labels, "by_rule")["fire_without_ignition"] == SECONDS_PER_DEVICE
    assert device in value(labels, "examples")


def test_a_wrong_family_mix_fails_scenario_mix(good, reference):
    # Every device staged as the same flaming scenario.
    results = evaluate(
        good.with_columns(pl.lit("flaming_fast").alias("scenario")), reference=reference
    )
    assert failed(results) == ["scenario_mix"]
    mix = results["scenario_mix"]
    assert mix.severity == dg.AssetCheckSeverity.WARN
    assert value(mix, "out_of_tolerance") == (
        "flaming_fast, flaming_medium, flaming_slow, flaming_ultra_fast"
    )


def test_a_device_of_another_family_fails_scenario_mix(good, reference):
    intruder = partition("nuisance", seed=3, devices=7).head(SECONDS_PER_DEVICE)
    results = evaluate(pl.concat([good, intruder]), reference=reference)
    assert failed(results) == ["scenario_mix"]
    mix = results["scenario_mix"]
    assert value(mix, "rows_of_other_families") == SECONDS_PER_DEVICE
    assert value(mix, "out_of_tolerance") == intruder["scenario"][0]


def test_a_shifted_distribution_fails_the_reference_comparison(good, reference):
    shifted = good.with_columns((pl.col("temperature_c") + 15.0).alias("temperature_c"))
    results = evaluate(shifted, reference=reference)
    assert failed(results) == ["distribution_vs_reference"]
    dist = results["distribution_vs_reference"]
    assert value(dist, "channels_below_ks_floor") == "temperature_c"
    assert value(dist, "ks_complement/temperature_c") < 0.2
    assert value(dist, "ks_complement/co_ppm") > quality.KS_COMPLEMENT_MIN
    # 40 devices a side: a KS gap up to 1.95 * sqrt(2 / 40) = 0.44 could be chance.
    assert value(dist, "candidate_devices") == value(dist, "reference_devices") == 40
    assert value(dist, "ks_complement_floor") == pytest.approx(1 - 1.95 * (2 / 40) ** 0.5, abs=1e-3)


def test_with_many_devices_the_ks_floor_is_the_sdmetrics_band(good):
    many = good.with_columns(pl.col("device_id") + "-" + pl.col("ts").dt.second().cast(pl.String))
    dist = evaluate(many, reference=many)["distribution_vs_reference"]
    assert value(dist, "candidate_devices") == 40 * SECONDS_PER_DEVICE
    assert value(dist, "ks_complement_floor") == quality.KS_COMPLEMENT_MIN


def test_a_channel_that_dropped_out_entirely_fails_the_reference_comparison(good, reference):
    dropped = good.with_columns(pl.lit(None, pl.Float32).alias("h2_ppm"))
    dist = evaluate(dropped, reference=reference)["distribution_vs_reference"]
    assert not dist.passed
    assert value(dist, "channels_missing_on_one_side") == "h2_ppm"


def test_an_unknown_family_fails_scenario_mix_with_the_reason(good):
    mix = evaluate(good, family="volcanic")["scenario_mix"]
    assert not mix.passed
    assert "unknown scenario families ['volcanic']" in value(mix, "error")


def test_dagster_accepts_the_results_of_a_materialisation():
    readings = partition("smouldering", seed=5)

    @dg.asset(key=checks.ASSET_KEY, check_specs=checks.check_specs())
    def synthetic_readings():
        yield dg.MaterializeResult(metadata={"rows": readings.height})
        yield from checks.evaluate_checks(
            readings.lazy(), family="smouldering", reference=None, reference_label="none"
        )

    result = dg.materialize([synthetic_readings])
    evaluations = result.get_asset_check_evaluations()
    assert sorted(e.check_name for e in evaluations) == sorted(ALL_CHECKS)
    assert all(e.passed for e in evaluations)


def test_staged_files_are_judged_per_family_and_merged(tmp_path, lakehouse):
    # Two families staged in one run: flaming's batch 001 is compared with its batch 000 staged
    # beside it, and nuisance's labels are broken. Each check is one result over both families.
    files = {}
    frames = {
        Cell("flaming", "000"): partition("flaming", seed=2, batch="000"),
        Cell("flaming", "001"): partition("flaming", seed=1),
        Cell("nuisance", "001"): partition("nuisance", seed=3).with_columns(is_fire=True),
    }
    for cell, frame in frames.items():
        path = tmp_path / f"{cell.family}-{cell.batch}.parquet"
        frame.write_parquet(path)
        files[cell] = [str(path)]
    audit = checks.audit_staged(lakehouse, files)
    assert not audit.passed
    results = {r.check_name: r for r in audit.results}
    assert list(results) == ALL_CHECKS
    labels = results["label_consistency"]
    assert not labels.passed
    assert value(labels, "families") == "flaming, nuisance"
    assert value(labels, "failed_families") == "nuisance"
    assert value(labels, "flaming/inconsistent_rows") == 0
    assert value(labels, "nuisance/inconsistent_rows") > 0
    dist = results["distribution_vs_reference"]
    assert value(dist, "flaming/reference") == "000|flaming"
    assert value(dist, "nuisance/reference") == "none"  # no nuisance batch 000 anywhere
    failure = checks.blocking_failure(audit.results)
    assert failure.description == (
        "blocking checks failed on the generated rows, nothing committed: "
        "label_consistency (nuisance)"
    )
    good = {c: f for c, f in files.items() if c.family == "flaming"}
    assert checks.audit_staged(lakehouse, good).passed
