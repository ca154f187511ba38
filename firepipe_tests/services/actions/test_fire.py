"""Fire-scenario requests (recorded, not run), getGeneration/listGenerations, S3 destinations
(moto), searchKnowledgeBase (a test double) and the fire quality refusals, over HTTP."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import polars as pl
import pytest
import requests

from firepipe.core.genai.kb.index import IndexMissingError
from firepipe.services.actions.app import create_app
from firepipe.services.actions.operations import Actions
from firepipe.services.inference.keys import Access
from firepipe_tests.services.actions.conftest import SCHEMA, RecordingRuns, recording_actions
from firepipe_tests.services.inference.serving_sample import running

REGION = "eu-west-1"


@dataclass(frozen=True)
class Found:
    source: str
    heading: str
    text: str
    score: float


class FakeKnowledgeBase:
    """Answers the first k of three passages, in order; says which question it was asked."""

    def __init__(self, missing: bool = False) -> None:
        self.missing = missing
        self.asked: list[tuple[str, int]] = []

    def search(self, question: str, k: int) -> list[Found]:
        self.asked.append((question, k))
        if self.missing:
            raise IndexMissingError("no index in /nowhere/index")
        if not question.strip():
            raise ValueError("the question is empty")
        passages = [
            Found("docs/scenarios.md", "Smouldering", "A smouldering fire grows slowly.", 0.9),
            Found("README.md", "", "firepipe generates fire-sensor data.", 0.5),
            Found("docs/sensors.md", "CO", "CO rises first in smouldering fires.", 0.4),
        ]
        return passages[:k]


@pytest.fixture
def runs() -> RecordingRuns:
    return RecordingRuns(taken={"flaming": {"000", "001"}, "smouldering": {"000"}})


@pytest.fixture
def kb() -> FakeKnowledgeBase:
    return FakeKnowledgeBase()


@pytest.fixture
def actions(tmp_path: Path, runs: RecordingRuns, kb: FakeKnowledgeBase) -> Actions:
    return recording_actions(tmp_path, runs=runs, knowledge_base=kb)


@pytest.fixture
def url(actions: Actions) -> Iterator[str]:
    with running(create_app(Access(None, None), actions=actions)) as url:
        yield url


def fire(http: requests.Session, url: str, **body: object) -> requests.Response:
    return http.post(f"{url}/generate-synthetic-data", json={"data_type": "fire_scenarios", **body})


def test_a_fire_request_becomes_one_run_per_family_in_free_batches(url, http, runs):  # type: ignore[no-untyped-def]
    answer = fire(
        http,
        url,
        mix={"flaming": 0.75, "smouldering": 0.25},
        devices=10,
        duration_s=30,
        seed=9,
        fault_share=0.1,
        use_gpu=True,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [(generation_id, plan)] = runs.launched
    assert body["generation_id"] == generation_id
    assert (body["status"], body["seed"]) == ("queued", 9)
    assert body["output_location"] == "bronze.synthetic_readings"
    # 10 devices: 7.5 and 2.5 by largest remainder (ties to the first family by name)
    assert [(r.family, r.batch, r.settings.devices) for r in plan.runs] == [
        ("flaming", "002", 8),
        ("smouldering", "001", 2),
    ]
    assert body["records_generated"] == 10 * 30
    assert body["partitions"] == ["002|flaming", "001|smouldering"]
    assert [r["status"] for r in body["runs"]] == ["QUEUED", "QUEUED"]
    config = plan.runs[0].run_config()["ops"]["bronze__synthetic_readings"]["config"]
    assert config == {
        "devices": 8,
        "duration_s": 30,
        "seed": 9,
        "fault_share": 0.1,
        "use_gpu": True,
    }
    assert body["data_quality_metrics"] is None
    # the next request does not take the batches this one claimed
    again = fire(http, url, families=["smouldering"], devices=2, duration_s=30, seed=1)
    assert again.json()["partitions"] == ["002|smouldering"]


def test_a_named_batch_is_replaced_and_a_missing_reference_is_said(url, http, runs):  # type: ignore[no-untyped-def]
    body = fire(http, url, families=["nuisance", "flaming"], devices=4, batch=1, seed=2).json()
    assert body["partitions"] == ["001|nuisance", "001|flaming"]
    assert body["warnings"] == [
        "nuisance: the reference batch 000 holds no rows yet, so there is nothing to compare "
        "the distributions with (generate it with batch 0)",
        "flaming: batch 001 holds rows, which this run replaces",
    ]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"families": ["kitchen"]}, 400, "unknown families ['kitchen']"),
        ({"mix": {"flaming": 0.5, "smouldering": 0.4}}, 400, "add up to 0.9, not 1"),
        ({"mix": {"flaming": 1.5, "smouldering": -0.5}}, 400, "must lie in (0, 1]"),
        ({"mix": {"flaming": 1.0}, "families": ["smouldering"]}, 400, "differ"),
        ({"mix": {"flaming": 0.95, "smouldering": 0.05}, "devices": 3}, 400, "leave none to"),
        ({"families": []}, 400, "name at least one family"),
        ({"families": ["flaming", "flaming"]}, 400, "families repeat"),
        ({"devices": 0}, 422, "devices"),
        ({"duration_s": 1}, 422, "duration_s"),
        ({"fault_share": 2}, 422, "fault_share"),
        ({"batch": 16}, 422, "batch"),
    ],
)
def test_bad_fire_requests_say_why(url, http, runs, body, status, words):  # type: ignore[no-untyped-def]
    answer = fire(http, url, **body)
    assert answer.status_code == status
    assert words in answer.text
    assert runs.launched == []


def test_every_batch_taken_is_refused(url, http, runs):  # type: ignore[no-untyped-def]
    runs.taken["baseline"] = {f"{i:03d}" for i in range(16)}
    answer = fire(http, url, families=["baseline"], devices=2)
    assert answer.status_code == 400
    assert "every batch 001-015 of family 'baseline'" in answer.json()["detail"]


def test_generations_are_listed_and_found_by_id(url, http, runs):  # type: ignore[no-untyped-def]
    custom = http.post(
        f"{url}/generate-synthetic-data",
        json={"data_type": "custom", "schema": SCHEMA, "volume": 12, "seed": 5},
    ).json()
    flames = fire(http, url, families=["flaming"], devices=3, duration_s=10, seed=7).json()
    got = http.get(f"{url}/generations/{custom['generation_id']}").json()
    assert (got["data_type"], got["status"], got["records_generated"]) == (
        "custom",
        "completed",
        12,
    )
    assert (got["output_location"], got["seed"]) == ("inline", 5)
    got = http.get(f"{url}/generations/{flames['generation_id']}").json()
    assert (got["data_type"], got["status"]) == ("fire_scenarios", "queued")
    assert got["partitions"] == ["002|flaming"]
    assert got["records_generated"] == 0  # nothing written yet
    [state] = runs.states[flames["generation_id"]]
    runs.states[flames["generation_id"]] = [
        type(state)(state.run_id, state.partition_key, "FAILURE", state.created_at)
    ]
    assert http.get(f"{url}/generations/{flames['generation_id']}").json()["status"] == "failed"
    listed = http.get(f"{url}/generations", params={"limit": 5}).json()["generations"]
    assert [g["generation_id"] for g in listed] == [
        flames["generation_id"],
        custom["generation_id"],
    ]
    assert len(http.get(f"{url}/generations", params={"limit": 1}).json()["generations"]) == 1
    missing = http.get(f"{url}/generations/0123abcd")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no generation '0123abcd'"
    assert http.get(f"{url}/generations", params={"limit": 0}).status_code == 422


def test_fire_quality_refusals(url, http, runs):  # type: ignore[no-untyped-def]
    def measure(**body: object) -> requests.Response:
        return http.post(f"{url}/calculate-quality-metrics", json=body)

    both = measure(schema=SCHEMA, data=[], partitions=["001|flaming"])
    assert both.status_code == 400
    assert "exactly one of" in both.json()["detail"]
    assert "'001|kitchen' is not a partition" in measure(partitions=["001|kitchen"]).text
    no_table = measure(partitions=["001|flaming"])
    assert (no_table.status_code, no_table.json()["detail"]) == (
        400,
        "the lake has no table bronze.synthetic_readings yet: generate fire scenarios first",
    )
    queued = fire(http, url, families=["flaming"], devices=2).json()["generation_id"]
    waiting = measure(generation_id=queued)
    assert waiting.status_code == 409
    assert "is queued" in waiting.json()["detail"]
    assert measure(generation_id="nope").status_code == 404
    assert "schema and data" in measure(schema=SCHEMA).json()["detail"]


def test_search_answers_passages_and_503_without_an_index(url, http, kb, tmp_path):  # type: ignore[no-untyped-def]
    answer = http.post(f"{url}/search-knowledge-base", json={"query": "smouldering CO", "k": 2})
    assert answer.status_code == 200
    assert answer.json()["passages"] == [
        {
            "source": "docs/scenarios.md",
            "heading": "Smouldering",
            "text": "A smouldering fire grows slowly.",
            "score": 0.9,
        },
        {
            "source": "README.md",
            "heading": None,
            "text": "firepipe generates fire-sensor data.",
            "score": 0.5,
        },
    ]
    assert kb.asked == [("smouldering CO", 2)]
    assert http.post(f"{url}/search-knowledge-base", json={"query": "  "}).status_code == 400
    for knowledge_base in (None, FakeKnowledgeBase(missing=True)):
        actions = recording_actions(tmp_path / "other", knowledge_base=knowledge_base)
        with running(create_app(Access(None, None), actions=actions)) as other:
            refused = http.post(f"{other}/search-knowledge-base", json={"query": "CO"})
        assert refused.status_code == 503
        assert "run `firepipe kb build`" in refused.json()["detail"]


def test_s3_destination_writes_the_object(url, http, moto_endpoint, aws_credentials, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    s3.create_bucket(Bucket="gen", CreateBucketConfiguration={"LocationConstraint": REGION})
    for fmt, read in (("parquet", pl.read_parquet), ("csv", pl.read_csv), ("json", pl.read_ndjson)):
        answer = http.post(
            f"{url}/generate-synthetic-data",
            json={
                "data_type": "custom",
                "schema": SCHEMA,
                "volume": 30,
                "seed": 1,
                "output_format": fmt,
                "destination": {"type": "s3", "location": "s3://gen/tables/"},
            },
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        extension = "jsonl" if fmt == "json" else fmt
        assert body["output_location"] == f"s3://gen/tables/{body['generation_id']}.{extension}"
        key = f"tables/{body['generation_id']}.{extension}"
        frame = read(io.BytesIO(s3.get_object(Bucket="gen", Key=key)["Body"].read()))
        assert frame.height == 30
        assert frame["customer_id"].n_unique() == 30
        assert body["data"] is None
    missing = http.post(
        f"{url}/generate-synthetic-data",
        json={
            "data_type": "custom",
            "schema": SCHEMA,
            "volume": 3,
            "destination": {"type": "s3", "location": "s3://no-such-bucket/x"},
        },
    )
    assert missing.status_code == 400
    assert missing.json()["detail"].startswith("cannot write s3://no-such-bucket/x/")


def test_s3_without_credentials_is_a_clear_400(url, http, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    answer = http.post(
        f"{url}/generate-synthetic-data",
        json={
            "data_type": "custom",
            "schema": SCHEMA,
            "volume": 3,
            "destination": {"type": "s3", "location": "s3://gen/x"},
        },
    )
    assert answer.status_code == 400
    assert "needs AWS credentials" in answer.json()["detail"]
