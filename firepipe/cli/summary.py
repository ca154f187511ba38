"""What the last run of a job did, read back from the Dagster instance and the lakehouse."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

import dagster as dg

from firepipe import names
from firepipe.core.training.evaluation import ALL_PROFILES, PROFILES_REPORT
from firepipe.resources.lakehouse import Lakehouse


@dataclass(frozen=True)
class Materialisation:
    asset: str
    rows: int | None
    snapshot_id: str | None
    partition: str | None = None


@dataclass(frozen=True)
class CheckOutcome:
    asset: str
    check: str
    passed: bool
    blocking: bool = True  # severity ERROR; a failed WARN check is reported, not a failure


@dataclass
class RunSummary:
    job: str
    run_id: str
    status: str
    duration_s: float | None
    materialisations: list[Materialisation] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    # Rows of gold.generator_validation (test, station, channel, nrmse, time_to_4_3_error_s).
    validation: list[dict[str, object]] = field(default_factory=list)
    where: dict[str, str] = field(default_factory=dict)
    # The ml/* assets' metadata of this run (plain values), by asset key.
    detector: dict[str, dict[str, object]] = field(default_factory=dict)
    # agents/nist_replay's figures: stations, agree_with_evaluate_real, alarms, readings.
    agents: dict[str, object] = field(default_factory=dict)
    # genai/kb_index's figures: documents, chunks, reembedded, location.
    knowledge_base: dict[str, object] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == dg.DagsterRunStatus.SUCCESS.value and all(
            c.passed or not c.blocking for c in self.checks
        )


def _metadata_value(metadata: Mapping[str, dg.MetadataValue], key: str) -> object:
    value = metadata.get(key)
    return getattr(value, "value", value)


def last_run(instance: dg.DagsterInstance, job: str, lakehouse: Lakehouse) -> RunSummary | None:
    records = instance.get_run_records(dg.RunsFilter(job_name=job), limit=1)
    if not records:
        return None
    record = records[0]
    run = record.dagster_run
    duration = (
        record.end_time - record.start_time if record.start_time and record.end_time else None
    )
    summary = RunSummary(job, run.run_id, run.status.value, duration)
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.asset_materialization
        if mat is None:
            continue
        # The rows the materialisation wrote: a whole table's count, what a run of several
        # partitions wrote in all, or what an incremental load added.
        rows = next(
            (
                v
                for key in ("dagster/row_count", "rows_written", "rows")
                if (v := _metadata_value(mat.metadata, key)) is not None
            ),
            None,
        )
        if mat.asset_key.path[0] == "ml":
            summary.detector[mat.asset_key.to_user_string()] = {
                k: _metadata_value(mat.metadata, k)
                for k in mat.metadata
                if k in DETECTOR_FIELDS or k.startswith(("test/", ALL_PROFILES_PREFIX))
            }
        if mat.asset_key.path[0] == "agents":
            summary.agents = {
                k: _metadata_value(mat.metadata, k)
                for k in ("stations", "agree_with_evaluate_real", "alarms", "readings")
                if k in mat.metadata
            }
        if mat.asset_key.path == list(names.KB_INDEX):
            summary.knowledge_base = {
                k: _metadata_value(mat.metadata, k)
                for k in ("documents", "chunks", "reembedded", "location")
                if k in mat.metadata
            }
        snapshot = _metadata_value(mat.metadata, "iceberg/snapshot_id")
        summary.materialisations.append(
            Materialisation(
                mat.asset_key.to_user_string(),
                int(rows) if isinstance(rows, int) else None,
                str(snapshot) if snapshot is not None else None,
                mat.partition,
            )
        )
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        event = entry.dagster_event
        evaluation = event.event_specific_data if event else None
        if isinstance(evaluation, dg.AssetCheckEvaluation):
            summary.checks.append(
                CheckOutcome(
                    evaluation.asset_key.to_user_string(),
                    evaluation.check_name,
                    bool(evaluation.passed),
                    evaluation.severity == dg.AssetCheckSeverity.ERROR,
                )
            )
    summary.tables = {t: lakehouse.table_rows(t) for t in lakehouse.list_tables()}
    summary.where = lakehouse.describe()
    if VALIDATION_TABLE in summary.tables:
        columns = ["test", "station", "channel", "nrmse", "time_to_4_3_error_s"]
        summary.validation = lakehouse.scan(VALIDATION_TABLE).select(columns).collect().to_dicts()
    return summary


VALIDATION_TABLE = names.table_name(names.GENERATOR_VALIDATION)
# ml/evaluation's metrics of the test split through every channel profile, all together.
ALL_PROFILES_PREFIX = f"{PROFILES_REPORT}/{ALL_PROFILES}/"
# What the summary shows of the ml/* assets (their metadata keys).
DETECTOR_FIELDS = {
    "model_name",
    "model_version",
    "model_uri",
    "algorithm",
    "threshold",
    "persistence_s",
    "profile_points",
    "real_summary",
    "fixed_threshold_baseline",
    "promoted",
    "decision",
    "champion_version",
    "reasons",
}
VALIDATION_CHANNELS = {
    "temperature_c": "temp",
    "smoke_obscuration_pct_per_m": "smoke",
    "co_ppm": "CO",
    "co2_ppm": "CO2",
}


def render_validation(rows: list[dict[str, object]]) -> list[str]:
    """NRMSE per test, station and channel, and the time-to-4.3 %/m error, one line each."""
    if not rows:
        return []
    by_station: dict[tuple[str, str], dict[str, object]] = {}
    for row in rows:
        cells = by_station.setdefault((str(row["test"]), str(row["station"])), {})
        cells[str(row["channel"])] = row["nrmse"]
        if row["channel"] == "smoke_obscuration_pct_per_m":
            cells["dt"] = row["time_to_4_3_error_s"]

    header = "".join(f"{n:>8}" for n in VALIDATION_CHANNELS.values())
    lines = [
        "",
        f"NIST validation ({VALIDATION_TABLE}): NRMSE of simulated vs measured, and the "
        "time-to-4.3 %/m error (s, simulated - measured):",
        f"  {'test':<8}{'station':<9}{header}{'dt_4.3':>9}",
    ]
    for (test, station), cells in sorted(by_station.items()):
        nrmse = "".join(f"{_num(cells.get(c), '.3f'):>8}" for c in VALIDATION_CHANNELS)
        lines.append(f"  {test:<8}{station:<9}{nrmse}{_num(cells.get('dt'), '+.0f'):>9}")

    def numbers(key: str, absolute: bool = False) -> list[float]:
        values = [v for c in by_station.values() if isinstance(v := c.get(key), int | float)]
        return [abs(float(v)) if absolute else float(v) for v in values]

    medians = "".join(
        f"{statistics.median(v):>8.3f}" if (v := numbers(c)) else f"{'-':>8}"
        for c in VALIDATION_CHANNELS
    )
    lags = numbers("dt", absolute=True)
    median_lag = f"{statistics.median(lags):>8.0f}s" if lags else f"{'-':>9}"
    lines.append(f"  {'median':<17}{medians}{median_lag}  (of |dt_4.3|)")
    return lines


def render(summary: RunSummary, dagster_home: str) -> str:
    duration = f" in {summary.duration_s:.1f} s" if summary.duration_s is not None else ""
    lines = [f"{summary.job}: run {summary.run_id[:8]} {summary.status}{duration}", ""]
    per_asset: dict[str, list[Materialisation]] = {}
    for m in summary.materialisations:
        per_asset.setdefault(m.asset, []).append(m)
    lines.append(f"Assets materialised ({len(per_asset)}):")
    for asset, events in per_asset.items():
        m = events[-1]  # a run's partitions of one asset share its last commit
        partitions = sum(e.partition is not None for e in events)
        name = f"{asset} ({partitions} partitions)" if partitions > 1 else asset
        rows = f"{m.rows:>12,} rows" if m.rows is not None else " " * 17
        lines.append(f"  {name:<42}{rows}   snapshot {m.snapshot_id}")
    passed = sum(c.passed for c in summary.checks)
    lines.append(f"Asset checks: {passed} of {len(summary.checks)} passed")
    for c in summary.checks:
        if not c.passed:
            label = "FAILED" if c.blocking else "WARNING"
            lines.append(f"  {label} {c.asset} {c.check}")
    lines += ["", "Lake tables (rows in the current snapshot):"]
    lines += [f"  {t:<34}{rows:>12,}" for t, rows in summary.tables.items()]
    lines += ["", "Where the data is:"]
    lines += [f"  {k:<17}{v}" for k, v in summary.where.items()]
    lines.append(f"  {'dagster instance':<17}{dagster_home}")
    lines += render_validation(summary.validation)
    lines += render_detector(summary.detector)
    lines += render_agents(summary.agents)
    lines += render_knowledge_base(summary.knowledge_base)
    lines += ["", "Browse the asset lineage with `make dev` (http://127.0.0.1:3000)."]
    return "\n".join(lines)


def _pct(value: object) -> str:
    return f"{float(value):.0%}" if isinstance(value, int | float) else "-"


def _num(value: object, fmt: str = ".3f") -> str:
    return format(float(value), fmt) if isinstance(value, int | float) else "-"


def _seconds(value: object) -> str:
    return f"{float(value):.0f} s" if isinstance(value, int | float) else "-"


def _warm_up(real: Mapping[str, object]) -> str:
    """How the NIST records were replayed (the real_fires summary's warm-up keys)."""
    warm_up, basis = real.get("warm_up_s"), real.get("warm_up_basis_s")
    if not isinstance(warm_up, int | float) or warm_up == 0:
        return "replayed from ignition"
    held = f"first {basis:g} s median" if isinstance(basis, int | float) else "held start"
    return f"after {_seconds(warm_up)} of each station's {held}"


def render_agents(agents: Mapping[str, object]) -> list[str]:
    """The NIST tests replayed through the monitoring, analysis and response agents."""
    if not agents:
        return []
    return [
        "",
        f"Agents (the NIST tests through monitoring, analysis and response, "
        f"{agents.get('readings')} readings):",
        f"  {agents.get('alarms')} of {agents.get('stations')} stations alarmed; "
        f"{agents.get('agree_with_evaluate_real')} at evaluate-real's time",
        "  run them yourself: firepipe agents run, firepipe replay --test SDC02, "
        "firepipe alerts list (README, Agents)",
    ]


def render_knowledge_base(kb: Mapping[str, object]) -> list[str]:
    """genai/kb_index: what the knowledge base holds, where, and how to ask it."""
    if not kb:
        return []
    return [
        "",
        f"Knowledge base: {kb.get('chunks')} passages of {kb.get('documents')} documents "
        f"({kb.get('reembedded')} embedded in this run) at {kb.get('location')}",
        '  ask it: firepipe kb search "how are gold features computed?"; data on request: '
        "firepipe actions serve, firepipe agent ask (README, Data on request)",
    ]


def render_detector(detector: Mapping[str, Mapping[str, object]]) -> list[str]:
    """The candidate this run trained, how it did on synthetic and real fires, and whether it
    became the champion."""
    candidate = detector.get("ml/detector")
    if not candidate:
        return []
    uri = candidate.get("model_uri")
    persistence = _seconds(candidate.get("persistence_s"))
    own_points = candidate.get("profile_points")
    lines = [
        "",
        f"Detector: {uri} ({candidate.get('algorithm')}), threshold "
        f"{_num(candidate.get('threshold'))}, persistence {persistence}"
        + (f"; its own point for {own_points} channel profile(s)" if own_points else ""),
    ]
    evaluation = detector.get("ml/evaluation", {})
    if evaluation:
        for label, prefix in (
            ("synthetic test split", "test/"),
            ("the same through every channel profile", ALL_PROFILES_PREFIX),
        ):
            if not any(key.startswith(prefix) for key in evaluation):
                continue
            auc = f"{prefix}roc_auc"
            lines.append(
                f"  {label}: ROC-AUC {_num(evaluation.get(auc))}, PR-AUC "
                f"{_num(evaluation.get(f'{prefix}pr_auc'))}, false alarms per 1,000 device-hours "
                f"{_num(evaluation.get(f'{prefix}false_alarms_per_1000_device_hours'), '.1f')}, "
                "fires detected "
                f"{_pct(evaluation.get(f'{prefix}time_to_detection/detected_share'))} (median "
                f"{_seconds(evaluation.get(f'{prefix}time_to_detection/median_s'))})"
            )
        for label, key in (
            ("model", "real_summary"),
            ("fixed threshold", "fixed_threshold_baseline"),
        ):
            real = evaluation.get(key)
            if isinstance(real, Mapping):
                lines.append(
                    f"  NIST real fires, {label}: {real.get('stations')} stations, no later than "
                    f"the median alarm {_pct(real.get('share_no_later_than_median_alarm'))}, "
                    f"than the first {_pct(real.get('share_no_later_than_first_alarm'))}, median "
                    f"lead {_seconds(real.get('median_lead_s'))}, alarms before ignition "
                    f"{real.get('pre_ignition_alarms')} ({_warm_up(real)})"
                )
    decision = detector.get("ml/champion", {})
    if decision:
        # `decision` stands alone when the candidate already was the champion: nothing decided.
        verdict = decision.get("decision") or (
            "promoted to champion" if decision.get("promoted") else "not promoted"
        )
        lines.append(f"  champion: {verdict}; champion now {decision.get('champion_version')}")
        reasons = str(decision.get("reasons") or "")
        lines += [
            f"    {line.lstrip('- ')}" for line in reasons.splitlines() if line.startswith("- fail")
        ]
    if uri:
        lines.append(f"  replay the NIST fires: firepipe evaluate-real --model {uri}")
    if decision.get("champion_version") is not None:
        lines.append(
            "  score readings with the champion over HTTP: firepipe serve "
            "(README, Scoring readings)"
        )
    return lines
