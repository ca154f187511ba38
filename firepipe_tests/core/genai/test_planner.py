"""The local planner's grammar, as a table: request -> the tool call the agent would make, and
the requests it refuses with what it cannot read."""

from __future__ import annotations

from typing import Any

import pytest

from firepipe.core.genai.planner import Plan, PlanError, plan
from firepipe.core.genai.planner_words import _word_number

FIRE = "fire_scenarios"


def only_call(request: str) -> tuple[str, dict[str, Any]]:
    result = plan(request)
    assert len(result.calls) == 1
    return result.calls[0].operation_id, result.calls[0].body


@pytest.mark.parametrize(
    ("words", "number"),
    [
        ("two hundred", 200),
        ("a hundred", 100),
        ("twenty-five", 25),
        ("two hundred and fifty", 250),
        ("one thousand two hundred", 1200),
        ("three thousand", 3000),
        ("a dozen", 12),
        ("nineteen", 19),
    ],
)
def test_number_words(words: str, number: int) -> None:
    read = _word_number(words.split())
    assert read == (number, len(words.split()))


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        # the issue's own example: 200 counted + "a few" = 10 % of all -> 222 devices
        (
            "two hundred kitchens with frying and a few slow smouldering fires, ten minutes "
            "each, five percent faulty sensors",
            {
                "devices": 222,
                "mix": {"nuisance": 200 / 222, "smouldering": 22 / 222},
                "duration_s": 600,
                "fault_share": 0.05,
            },
        ),
        (
            "500 rooms: 30% flaming, 20% smouldering and the rest cooking, 90 s each, seed 7",
            {
                "devices": 500,
                "mix": {"flaming": 0.3, "smouldering": 0.2, "nuisance": 0.5},
                "duration_s": 90,
                "seed": 7,
            },
        ),
        (
            "flaming and smouldering fires for 1 h, no faults, on a GPU",
            {
                "devices": 100,
                "families": ["flaming", "smouldering"],
                "duration_s": 3600,
                "fault_share": 0.0,
                "use_gpu": True,
            },
        ),
        ("1,000 showers for 2 min", {"devices": 1000, "families": ["nuisance"], "duration_s": 120}),
        (
            "80 sensors with candles, 5 percent faulty sensors",
            {"devices": 80, "families": ["nuisance"], "fault_share": 0.05},
        ),
        (
            "2k quiet homes, 5% faults, batch 3",
            {"devices": 2000, "families": ["baseline"], "fault_share": 0.05, "batch": 3},
        ),
        (
            "50 flaming and 150 smoldering, thirty seconds each",
            {"devices": 200, "mix": {"flaming": 0.25, "smouldering": 0.75}, "duration_s": 30},
        ),
        (
            "a dozen candles and twelve upholstery fires",
            {"devices": 24, "mix": {"nuisance": 0.5, "smouldering": 0.5}},
        ),
        (
            "300 devices with dust and toast and 10 per cent blaze",
            {"devices": 300, "mix": {"flaming": 0.1, "nuisance": 0.9}},
        ),
    ],
)
def test_fire_requests(request_text: str, expected: dict[str, Any]) -> None:
    operation, body = only_call(request_text)
    assert operation == "generateSyntheticData"
    assert body["data_type"] == FIRE
    for key, value in expected.items():
        if key == "mix":
            assert body["mix"] == pytest.approx(value)
            assert sum(body["mix"].values()) == 1.0  # exactly: the action API checks it
        else:
            assert body[key] == value, key
    assert ("mix" in body) != ("families" in body)


@pytest.mark.parametrize(
    ("request_text", "seconds"),
    [
        ("flaming 1 h 30 min", 5400),
        ("flaming for 2 minutes 30 seconds", 150),
        ("flaming for 1 hour and 30 minutes each", 5400),
        ("flaming for one hour thirty minutes and ten seconds", 5410),
        ("flaming for 1.5 h", 5400),
    ],
)
def test_duration_parts_from_larger_to_smaller_add_up(request_text: str, seconds: int) -> None:
    assert only_call(request_text)[1]["duration_s"] == seconds


def test_the_same_gpu_choice_said_twice_is_one_choice() -> None:
    assert only_call("flaming on a GPU with cuda")[1]["use_gpu"] is True
    assert only_call("flaming without gpu, on cpu")[1]["use_gpu"] is False


def test_fire_defaults_and_speed_words_are_said() -> None:
    result = plan("slow flaming")
    assert result.calls[0].body == {
        "data_type": FIRE,
        "devices": 100,
        "families": ["flaming"],
        "use_gpu": False,
    }
    assert result.notes == [
        "'slow' is not selectable: each family draws its growth rates from the scenario catalog",
        "100 devices (the default): say e.g. '200 rooms' for another count",
        "600 s each (the default)",
        "5% faulty sensors (the default)",
    ]


@pytest.mark.parametrize(
    ("request_text", "message"),
    [
        ("make me a sandwich", "cannot read: 'sandwich'"),
        ("200 kitchens with frying and a cat, 10 minutes", "cannot read: 'cat'"),
        ("200 kitchens and smouldering", "cannot read how many smouldering"),
        ("200 kitchens as parquet", "cannot read: 'parquet': fire-sensor data lands in the lake"),
        ("60% flaming and 50% cooking", "its shares add up to 110%"),
        ("200 rooms with 50 flaming", "it covers 25% of the 200 devices"),
        ("200 bananas", "cannot read: '200 bananas' (a count of what?)"),
        ("flaming, seed forty-two-ish", "seed takes a whole number"),
        ("", "cannot read an empty request"),
        ("flaming with {not json}", "not JSON"),
        ("20 flaming and 30 flaming", "two amounts for flaming"),
        ("2.5 kitchens", "a count is a whole number"),
        # a second value for a setting is refused, not picked over the first
        ("flaming for 10 minutes and 20 minutes", "'20 minutes': the duration is given twice"),
        ("flaming for 10 minutes, 10 minutes", "'10 minutes': the duration is given twice"),
        ("flaming 30 min 1 h", "'1 h': the duration is given twice"),  # not larger to smaller
        ("flaming 1 h, 30 min", "'30 min': the duration is given twice"),  # not side by side
        ("200 rooms and 300 rooms with flaming", "'300 rooms': the number of devices is given"),
        ("flaming, seed 7, seed 8", "'seed 8': the seed is given twice"),
        ("flaming, batch 1 and batch 2", "'batch 2': the batch is given twice"),
        ("flaming, 5% faults, 10% faulty sensors", "'10% faulty': the share of faulty sensors"),
        ("flaming with no faults and 5% faults", "'5% faults': the share of faulty sensors is"),
        ("flaming on a GPU with cpu", "'cpu': GPU or CPU is given twice"),
        ("flaming on cpu with cuda", "'cuda': GPU or CPU is given twice"),
        (f"50 rows and 60 rows with {'columns a:uuid'}", "'60 rows': the number of rows is given"),
        ("10 rows with columns a:uuid as csv and parquet", "'parquet': the format is given twice"),
        ("10 rows with columns a:uuid, seed 1, seed 1", "'seed 1': the seed is given twice"),
    ],
)
def test_what_it_cannot_read_it_names(request_text: str, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        plan(request_text)
    assert message in str(caught.value)


COLUMNS = "columns id:uuid unique, age:integer(18..90), email:email nullable"
FIELDS = [
    {"name": "id", "type": "uuid", "constraints": {"unique": True}},
    {"name": "age", "type": "integer", "constraints": {"min": 18, "max": 90}},
    {"name": "email", "type": "email", "constraints": {"nullable": True}},
]


def test_custom_table_in_words() -> None:
    operation, body = only_call(f"generate fifty rows with {COLUMNS} as csv, seed 7, GDPR")
    assert operation == "generateSyntheticData"
    assert body == {
        "data_type": "custom",
        "volume": 50,
        "schema": {"fields": FIELDS},
        "compliance_requirements": ["GDPR"],
        "output_format": "csv",
        "destination": {"type": "inline"},
        "seed": 7,
    }


def test_custom_table_too_large_for_an_answer_goes_to_a_file() -> None:
    result = plan('5000 records of {"fields": [{"name": "a", "type": "string"}]} in parquet')
    body = result.calls[0].body
    assert (body["volume"], body["destination"], body["output_format"]) == (
        5000,
        {"type": "local"},
        "parquet",
    )
    assert result.notes == ["5000 rows are more than an answer holds: written to a file"]


def test_custom_table_needs_a_row_count() -> None:
    with pytest.raises(PlanError, match="how many rows"):
        plan(f"generate a table with {COLUMNS}")


@pytest.mark.parametrize(
    ("request_text", "operation", "body"),
    [
        (
            f"validate {COLUMNS} under GDPR and HIPAA",
            "validateSchema",
            {"schema": {"fields": FIELDS}, "compliance_requirements": ["GDPR", "HIPAA"]},
        ),
        (
            'check {"fields": [{"name": "a", "type": "text"}]}',
            "validateSchema",
            {"schema": {"fields": [{"name": "a", "type": "text"}]}, "compliance_requirements": []},
        ),
        (
            "What does a smouldering fire look like?",
            "searchKnowledgeBase",
            {"query": "What does a smouldering fire look like?"},
        ),
        (
            "how is the fault share applied",
            "searchKnowledgeBase",
            {"query": "how is the fault share applied"},
        ),
        ("list the last 5 generations", "listGenerations", {"limit": 5}),
        ("show generations", "listGenerations", {}),  # the action API's default limit
        ("status of generation 9a38c323aeb4", "getGeneration", {"generation_id": "9a38c323aeb4"}),
        (
            "measure the quality of generation 9a38c323aeb4",
            "calculateQualityMetrics",
            {"generation_id": "9a38c323aeb4"},
        ),
        (
            '{"operationId": "listGenerations", "body": {"limit": 2}}',
            "listGenerations",
            {"limit": 2},
        ),
        (
            '{"schema": {"fields": [{"name": "a", "type": "string"}]}, "data": [{"a": "x"}]}',
            "calculateQualityMetrics",
            {"schema": {"fields": [{"name": "a", "type": "string"}]}, "data": [{"a": "x"}]},
        ),
        (
            '{"families": ["flaming"], "devices": 10}',
            "generateSyntheticData",
            {"data_type": FIRE, "families": ["flaming"], "devices": 10},
        ),
        (
            '{"fields": [{"name": "a", "type": "string"}]}',
            "validateSchema",
            {"schema": {"fields": [{"name": "a", "type": "string"}]}},
        ),
    ],
)
def test_other_operations(request_text: str, operation: str, body: dict[str, Any]) -> None:
    assert only_call(request_text) == (operation, body)


def test_plan_is_deterministic() -> None:
    text = "two hundred kitchens and a few smouldering fires"
    assert plan(text) == plan(text)
    assert isinstance(plan(text), Plan)
