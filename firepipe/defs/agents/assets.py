"""agents/nist_replay: every NIST test pushed through the monitoring, analysis and response
agents (locally, workers started for the run unless `firepipe agents run` already runs them;
in AWS, the deployed ones), each station's alarm time recorded beside evaluate-real's for the
same champion. The two must agree: the agents compute gold's features online and alarm by
evaluate-real's rule."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from firepipe import names, settings
from firepipe.core.training import real_fires
from firepipe.defs.automation import FOLLOW_UPSTREAM
from firepipe.defs.training.assets import CHAMPION_KEY, MODEL_NAME
from firepipe.resources.queue import MessageQueue
from firepipe.resources.registry import ModelRegistry
from firepipe.resources.state_store import StateStore
from firepipe.resources.topic import Topic
from firepipe.services.agents import replay, runtime, supervisor

KEY = dg.AssetKey(names.AGENTS_REPLAY)
# The agents' and evaluate-real's alarm times are the same computation on one clock; the
# tolerance only absorbs the microsecond rounding of timestamps.
TOLERANCE_S = 1e-3


@dg.asset(
    key=KEY,
    group_name=names.group_name(names.AGENTS_REPLAY),
    deps=[CHAMPION_KEY],
    kinds={"sqs", "dynamodb"},
    # A new champion is replayed through the agents as soon as it is promoted.
    automation_condition=FOLLOW_UPSTREAM,
    output_required=False,
)
def nist_replay(
    context: dg.AssetExecutionContext,
    model_registry: ModelRegistry,
    queues: MessageQueue,
    events_topic: Topic,
    state_store: StateStore,
) -> Iterator[dg.MaterializeResult]:
    """Each NIST station's alarm through the three agents, against evaluate-real's."""
    champion = model_registry.champion(MODEL_NAME)
    if champion is None:
        context.log.info("no champion yet: nothing for the agents to score with")
        return
    local = settings.environment() == settings.Environment.LOCAL
    if local:
        runtime.wire(queues, events_topic)
    folder = settings.nist_data_dir()
    with supervisor.agents_running(settings.local_paths().home, local=local):
        rows, readings = replay.replay_nist(folder, queues, state_store)
    detector = model_registry.load_detector(champion.uri)
    expected = _evaluate_real(real_fires.replay_nist(folder, detector).model.stations)
    table = [
        {**row, "evaluate_real_s": expected.get((row["test"], row["station"]))} for row in rows
    ]
    agree = sum(_same(r["alarm_s"], r["evaluate_real_s"]) for r in table)
    yield dg.MaterializeResult(
        metadata={
            "model": dg.MetadataValue.text(champion.uri),
            "stations": len(table),
            "readings": readings,
            "agree_with_evaluate_real": agree,
            "alarms": sum(r["alarm_s"] is not None for r in table),
            "timeline": dg.MetadataValue.md(_markdown(table)),
            "timeline_json": dg.MetadataValue.json(table),
        }
    )


def _evaluate_real(stations: Any) -> dict[tuple[str, str], float | None]:
    return {(r["test"], r["station"]): r["model_alarm_s"] for r in stations.iter_rows(named=True)}


def _same(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and abs(a - b) <= TOLERANCE_S
    )


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| test | station | agents alarm (s) | evaluate-real (s) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['test']} | {r['station']} | {_cell(r['alarm_s'])} | "
            f"{_cell(r['evaluate_real_s'])} |"
        )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
