"""The check suite of bronze/synthetic_readings, evaluated on a lazy scan of one family's
partition(s), so a partition of any size is judged in bounded memory.

schema, physical_ranges and label_consistency guard the contract and are blocking: bad rows
must not reach silver. scenario_mix and distribution_vs_reference judge how the data is
distributed, which can drift for benign reasons (a catalog change), so they warn.
"""

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl

from firepipe import names
from firepipe.core.lake import quality
from firepipe.core.schemas import validate_readings
from firepipe.core.simulation import scenarios as sc
from firepipe.core.simulation.partitions import REFERENCE_BATCH
from firepipe.defs.generation.partitions import Cell, cells_scope
from firepipe.defs.metadata import markdown_table
from firepipe.lib.lakehouse.staged import Audit
from firepipe.resources.lakehouse import Lakehouse

ASSET_KEY = dg.AssetKey(names.SYNTHETIC_READINGS)
TABLE = names.table_name(names.SYNTHETIC_READINGS)
BLOCKING = ("schema", "physical_ranges", "label_consistency")
DISTRIBUTION = "distribution_vs_reference"
ADVISORY = ("scenario_mix", "distribution_vs_reference")

# Offending rows quoted in check metadata: enough to find them, small enough for the UI.
EXAMPLE_ROWS = 5
EXAMPLE_COLUMNS = ("device_id", "ts", "scenario")

CheckMetadata = dict[str, object]


DESCRIPTIONS = {
    "schema": "Columns, dtypes, nullability and value sets match the pandera contract.",
    "physical_ranges": "Every channel value lies within its physical range (nulls allowed).",
    "label_consistency": "is_fire iff ignition_ts; seconds_since_ignition iff ignition.",
    "scenario_mix": "Device shares per scenario match the catalog's weights for the family.",
    DISTRIBUTION: (
        "KS complement per channel and correlation similarity against the family's "
        "reference batch (SDMetrics quality measures)."
    ),
}
CHECK_NAMES = tuple(DESCRIPTIONS)


def check_specs() -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=ASSET_KEY, blocking=name in BLOCKING, description=text)
        for name, text in DESCRIPTIONS.items()
    ]


def expected_scenario_mix(family: str) -> dict[str, float]:
    """The device share of each scenario of `family`, from the catalog's weights."""
    return sc.device_shares((family,))


def _examples(lf: pl.LazyFrame, problem: pl.Expr, columns: list[str]) -> dg.MetadataValue:
    names = lf.collect_schema().names()
    keep = [c for c in (*EXAMPLE_COLUMNS, *columns) if c in names]
    rows = lf.filter(problem).select(keep).head(EXAMPLE_ROWS).collect(engine="streaming")
    return markdown_table(rows)


def _schema(readings: pl.LazyFrame) -> tuple[bool, CheckMetadata]:
    failures = validate_readings(readings)
    metadata: CheckMetadata = {"failures": len(failures)}
    if failures:
        metadata["details"] = dg.MetadataValue.md("\n".join(f"- {f}" for f in failures))
    return not failures, metadata


def _physical_ranges(readings: pl.LazyFrame) -> tuple[bool, CheckMetadata]:
    violations = quality.range_violations(readings)
    total = sum(violations.values())
    metadata: CheckMetadata = {"violations": total, "by_channel": dg.MetadataValue.json(violations)}
    if total:
        problems = quality.range_problem_exprs()
        offending = [c for c, n in violations.items() if n]
        metadata["examples"] = _examples(
            readings, pl.any_horizontal([problems[c] for c in offending]), offending
        )
    return total == 0, metadata


def _label_consistency(readings: pl.LazyFrame) -> tuple[bool, CheckMetadata]:
    report = quality.label_report(readings)
    metadata: CheckMetadata = {
        "rows": report.rows,
        "inconsistent_rows": report.inconsistent_rows,
        "by_rule": dg.MetadataValue.json(
            {k: v for k, v in vars(report).items() if k not in ("rows", "inconsistent_rows")}
        ),
    }
    if report.inconsistent_rows:
        rules = quality.label_problem_exprs(readings.collect_schema().names())
        label_columns = ["is_fire", "ignition_ts", "seconds_since_ignition"]
        metadata["examples"] = _examples(
            readings, pl.any_horizontal(list(rules.values())), label_columns
        )
    return report.inconsistent_rows == 0, metadata


def _scenario_mix(
    readings: pl.LazyFrame, family: str, expected: Mapping[str, float]
) -> tuple[bool, CheckMetadata]:
    comparison = quality.compare_scenario_mix(quality.scenario_device_counts(readings), expected)
    other_families = 0
    if "scenario_family" in readings.collect_schema().names():
        wrong = (pl.col("scenario_family") != family).fill_null(True).sum()
        other_families = int(readings.select(wrong).collect(engine="streaming").item())
    table = [
        "| scenario | devices | observed share | expected share | allowed devices | ok |",
        "|---|---|---|---|---|---|",
    ]
    table += [
        f"| {d.scenario} | {d.devices} | {d.observed_share:.3f} | {d.expected_share:.3f} "
        f"| {d.allowed_devices[0]}-{d.allowed_devices[1]} | {'yes' if d.within else '**no**'} |"
        for d in comparison.scenarios
    ]
    metadata: CheckMetadata = {
        "family": family,
        "devices": comparison.devices,
        "out_of_tolerance": ", ".join(comparison.out_of_tolerance) or "none",
        "rows_of_other_families": other_families,
        "mix": dg.MetadataValue.md("\n".join(table)),
    }
    passed = comparison.devices > 0 and not comparison.out_of_tolerance and other_families == 0
    return passed, metadata


def _distribution(
    readings: pl.LazyFrame, reference: pl.LazyFrame | None, reference_label: str
) -> tuple[bool, CheckMetadata]:
    if reference is None:
        return True, {
            "reference": "none",
            "note": f"no reference partition ({reference_label}) yet: nothing to compare with",
        }
    # The verdict is core's, so the action API's quality metrics cannot judge otherwise.
    verdict = quality.distribution_verdict(readings, reference)
    report = verdict.report
    metadata: CheckMetadata = {
        "reference": reference_label,
        "candidate_rows_sampled": report.candidate_rows,
        "reference_rows_sampled": report.reference_rows,
        "overall_score": _score(report.overall),
        "ks_complement_mean": _score(report.ks_mean),
        "correlation_similarity_mean": _score(report.correlation_mean),
        "channels_below_ks_floor": ", ".join(verdict.channels_below_floor) or "none",
        "channels_missing_on_one_side": ", ".join(verdict.one_sided_nulls) or "none",
        "candidate_devices": verdict.candidate_devices,
        "reference_devices": verdict.reference_devices,
        "ks_complement_floor": verdict.ks_floor,
        "overall_quality_min": verdict.overall_floor,
        "report": dg.MetadataValue.md(report.to_markdown()),
    }
    for channel, score in report.ks_complement.items():
        metadata[f"ks_complement/{channel}"] = _score(score)
    return verdict.passed, metadata


def _score(score: float | None) -> object:
    return float(score) if score is not None else dg.MetadataValue.null()


def evaluate_checks(
    readings: pl.LazyFrame,
    *,
    family: str,
    reference: pl.LazyFrame | None,
    reference_label: str,
    expected_mix: Mapping[str, float] | None = None,
    names: Collection[str] | None = None,
) -> list[dg.AssetCheckResult]:
    """Every check of check_specs() on the readings of one scenario family.

    `reference` is another partition of the same family (the committed batch "000"), or None
    when there is none yet; `expected_mix` defaults to the catalog's weights for the family.
    A check whose inputs are unusable (a missing column, an unknown family) fails with the
    reason in its metadata instead of failing the step. `names` limits which checks run.
    """
    evaluations: dict[str, Callable[[], tuple[bool, CheckMetadata]]] = {
        "schema": lambda: _schema(readings),
        "physical_ranges": lambda: _physical_ranges(readings),
        "label_consistency": lambda: _label_consistency(readings),
        "scenario_mix": lambda: _scenario_mix(
            readings,
            family,
            expected_mix if expected_mix is not None else expected_scenario_mix(family),
        ),
        "distribution_vs_reference": lambda: _distribution(readings, reference, reference_label),
    }
    results = []
    for name, evaluate in evaluations.items():
        if names is not None and name not in names:
            continue
        try:
            passed, metadata = evaluate()
        except (ValueError, pl.exceptions.PolarsError) as e:
            passed, metadata = False, {"error": f"{type(e).__name__}: {e}"}
        severity = dg.AssetCheckSeverity.ERROR if name in BLOCKING else dg.AssetCheckSeverity.WARN
        results.append(
            dg.AssetCheckResult(
                asset_key=ASSET_KEY,
                check_name=name,
                passed=passed,
                severity=severity,
                metadata=metadata,
            )
        )
    return results


def staged_check_results(
    lakehouse: Lakehouse, staged: Mapping[Cell, Sequence[str]]
) -> list[dg.AssetCheckResult]:
    """Every check, per family, on lazy scans of a run's staged files, before any commit.

    The blocking checks read every staged batch; the distribution check compares a family's
    other batches with its reference batch "000" (staged in this run, or committed before); a
    run of batch "000" alone has nothing to compare with. A check passes when it passes for
    every family; its metadata keeps each family's.
    """
    options = lakehouse.storage_options() or None

    def scan(cells: Sequence[Cell]) -> pl.LazyFrame:
        return pl.scan_parquet([f for c in cells for f in staged[c]], storage_options=options)

    table_exists = lakehouse.catalog().table_exists(TABLE)  # once, not per family
    per_family: dict[str, list[dg.AssetCheckResult]] = {}
    for family in sorted({c.family for c in staged}):
        cells = sorted((c for c in staged if c.family == family), key=lambda c: c.batch)
        compared = [c for c in cells if c.batch != REFERENCE_BATCH]
        reference_cell = Cell(family, REFERENCE_BATCH)
        reference: pl.LazyFrame | None = None
        if compared and reference_cell in staged:
            reference = scan([reference_cell])
        elif compared and table_exists:
            committed = lakehouse.scan(TABLE, cells_scope([reference_cell]))
            reference = committed if committed.select(pl.len()).collect().item() else None
        judged = [name for name in CHECK_NAMES if name != DISTRIBUTION]
        per_family[family] = [
            *evaluate_checks(
                scan(cells), family=family, reference=None, reference_label="", names=judged
            ),
            *evaluate_checks(
                scan(compared or cells),
                family=family,
                reference=reference,
                reference_label=reference_cell.key,
                names=[DISTRIBUTION],
            ),
        ]
    return [_merged(spec.name, per_family) for spec in check_specs()]


def _merged(name: str, per_family: Mapping[str, list[dg.AssetCheckResult]]) -> dg.AssetCheckResult:
    """One family-wide result of check `name`: passed when every family's passed."""
    results = {
        family: next(r for r in results if r.check_name == name)
        for family, results in per_family.items()
    }
    failed = sorted(f for f, r in results.items() if not r.passed)
    return dg.AssetCheckResult(
        check_name=name,
        passed=not failed,
        severity=next(iter(results.values())).severity,
        metadata={
            "families": ", ".join(results),
            "failed_families": ", ".join(failed) or "none",
            **{f"{f}/{k}": v for f, r in results.items() for k, v in r.metadata.items()},
        },
    )


def audit_staged(
    lakehouse: Lakehouse, staged: Mapping[Cell, Sequence[str]]
) -> Audit[list[dg.AssetCheckResult]]:
    """The staged files' audit: passed when every blocking check passed for every family."""
    results = staged_check_results(lakehouse, staged)
    return Audit(passed=not _blocking_failures(results), results=results)


def _blocking_failures(results: Sequence[dg.AssetCheckResult]) -> list[dg.AssetCheckResult]:
    return [r for r in results if not r.passed and r.check_name in BLOCKING]


def blocking_failure(results: Sequence[dg.AssetCheckResult]) -> dg.Failure:
    """The run's failure when blocking checks failed: which checks, for which families."""
    failed = _blocking_failures(results)
    return dg.Failure(
        description="blocking checks failed on the generated rows, nothing committed: "
        + ", ".join(f"{r.check_name} ({r.metadata['failed_families'].value})" for r in failed),
        metadata={r.check_name: dg.MetadataValue.json(_plain(r.metadata)) for r in failed},
    )


def _plain(metadata: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(getattr(v, "value", v)) for k, v in metadata.items()}
