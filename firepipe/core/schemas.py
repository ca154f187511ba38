"""The pandera contract of bronze synthetic readings, and a validation that reports instead of
raising and reads a partition of any size in bounded memory.

pandera validates a polars LazyFrame at SCHEMA_ONLY depth unless PANDERA_VALIDATION_DEPTH says
otherwise (column presence and dtypes, from the plan, no data read), and a DataFrame at
SCHEMA_AND_DATA. `validate_readings` sets the depth of each step itself, so that variable
changes nothing here: the schema step sees the whole LazyFrame, the value checks (channel
bounds, the family set, the fault set) a seeded sample of bounded size, and nulls in the
non-nullable columns are counted exactly over the whole frame by one streaming aggregation.
"""

from __future__ import annotations

from collections import defaultdict

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.config import ValidationDepth, config_context
from pandera.errors import SchemaErrors

from firepipe.core.lake.quality import seeded_sample
from firepipe.core.lake.standardise import SILVER_SCHEMA, SOURCES
from firepipe.core.readings import CHANNELS, FAULTS, KEY_COLUMNS, SYNTHETIC_SCHEMA
from firepipe.core.simulation.scenarios import FAMILIES

# Rows the value checks look at: 100k rows of ~20 columns is ~10 MB, and a bound violated by
# one row in 10,000 is then missed with probability e^-10. Ranges and labels are counted exactly
# over every row by their own checks (firepipe.core.lake.quality).
SCHEMA_SAMPLE_ROWS = 100_000
# Failure cases quoted per failing check: enough to recognise the problem.
EXAMPLES_PER_FAILURE = 3

# Columns that may be null: no ignition outside fires, no fault on most devices, and a channel
# is null where the device dropped out (NaN fails in_range, so a value is in range or missing).
NULLABLE: frozenset[str] = frozenset(
    {"ignition_ts", "seconds_since_ignition", "fault", *(c.name for c in CHANNELS)}
)
BRONZE_SYNTHETIC_SCHEMA: dict[str, pl.DataType] = {**SYNTHETIC_SCHEMA, "batch": pl.String()}


def _checks(name: str) -> list[pa.Check]:
    bounds = {c.name: c for c in CHANNELS}
    if name in bounds:
        return [pa.Check.in_range(bounds[name].min_value, bounds[name].max_value)]
    if name == "scenario_family":
        return [pa.Check.isin(list(FAMILIES))]
    if name == "fault":
        return [pa.Check.isin(list(FAULTS))]
    return []


# One row per simulated device per second, as landed in bronze: the simulator's schema plus the
# partition's batch. Strict: a column the contract does not name is an error, not silently kept.
SYNTHETIC_READINGS = pa.DataFrameSchema(
    {
        name: pa.Column(dtype, nullable=name in NULLABLE, checks=_checks(name))
        for name, dtype in BRONZE_SYNTHETIC_SCHEMA.items()
    },
    strict=True,
    name="SyntheticReadings",
)


def non_nullable_columns() -> list[str]:
    return [name for name in BRONZE_SYNTHETIC_SCHEMA if name not in NULLABLE]


def _describe(errors: SchemaErrors, *, sampled_rows: int | None = None) -> list[str]:
    """One line per failing check, from pandera's failure-case table."""
    cases: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in errors.failure_cases.iter_rows(named=True):
        cases[(str(row["column"]), str(row["check"]))].append(str(row["failure_case"]))
    descriptions = []
    for (column, check), values in cases.items():
        if check == "column_in_schema":
            descriptions += [f"unexpected column {v!r}" for v in values]
        elif check == "column_in_dataframe":
            descriptions += [f"missing column {v!r}" for v in values]
        elif check.startswith("dtype("):
            descriptions.append(f"{column}: expected {check}, got {', '.join(values)}")
        elif check == "not_nullable" and sampled_rows is not None:
            continue  # counted exactly over the whole frame instead
        else:
            examples = ", ".join(list(dict.fromkeys(values))[:EXAMPLES_PER_FAILURE])
            scope = f" of {sampled_rows} sampled" if sampled_rows is not None else ""
            descriptions.append(
                f"{column}: {check} failed on {len(values)}{scope} row(s), e.g. {examples}"
            )
    return descriptions


def _validate(frame: pl.LazyFrame | pl.DataFrame, depth: ValidationDepth) -> SchemaErrors | None:
    with config_context(validation_depth=depth):
        try:
            SYNTHETIC_READINGS.validate(frame, lazy=True)  # type: ignore[type-var]
        except SchemaErrors as errors:
            return errors
    return None


def validate_readings(
    readings: pl.LazyFrame, *, sample_rows: int = SCHEMA_SAMPLE_ROWS, seed: int = 0
) -> list[str]:
    """Describe every way `readings` breaks the contract; an empty list means it holds.

    Value checks run only when the columns and dtypes are right: on a wrong-typed frame they
    would only repeat the dtype error.
    """
    schema_errors = _validate(readings, ValidationDepth.SCHEMA_ONLY)
    if schema_errors is not None:
        return _describe(schema_errors)
    required = non_nullable_columns()
    null_counts = readings.select(pl.col(required).null_count()).collect(engine="streaming")
    failures = [
        f"{name}: {int(n)} null value(s) in a non-nullable column"
        for name, n in null_counts.row(0, named=True).items()
        if n
    ]
    sample = seeded_sample(readings, sample_rows, seed=seed)
    data_errors = _validate(sample, ValidationDepth.DATA_ONLY)
    if data_errors is not None:
        failures += _describe(data_errors, sampled_rows=sample.height)
    return failures


# --- silver ------------------------------------------------------------------------------------

# Silver's identity columns are never null; labels are null on field rows (unknown), channels
# on gap rows and where a device lacks the sensor, site_id where a landed file gave none.
SILVER_NON_NULLABLE: frozenset[str] = frozenset({"device_id", "ts", "source", "is_gap"})


def _silver_checks(name: str) -> list[pa.Check]:
    if name == "source":
        return [pa.Check.isin(list(SOURCES))]
    return _checks(name)


def _gap_rows_are_empty(data: PolarsData) -> pl.LazyFrame:
    empty = pl.all_horizontal(pl.col(c.name).is_null() for c in CHANNELS)
    return data.lazyframe.select(~pl.col("is_gap") | empty)


# The contract of silver.sensor_readings: one row per (device_id, second), every channel within
# its physical range, gap rows without values. to_silver quarantines the rows that would break
# it (firepipe.core.standardise.RULES); tests hold both to the same data.
SILVER_READINGS = pa.DataFrameSchema(
    {
        name: pa.Column(
            dtype, nullable=name not in SILVER_NON_NULLABLE, checks=_silver_checks(name)
        )
        for name, dtype in SILVER_SCHEMA.items()
    },
    checks=[pa.Check(_gap_rows_are_empty, name="gap_rows_are_empty")],
    unique=list(KEY_COLUMNS),
    strict=True,
    name="SilverReadings",
)
