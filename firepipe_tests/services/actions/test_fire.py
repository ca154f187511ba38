"""Fire-scenario requests (recorded, not run), getGeneration/listGenerations, S3 destinations
(moto), searchKnowledgeBase (a test double), the fire quality measures on a small lake and
their refusals, mostly over HTTP."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3
import polars as pl
import pytest
import requests

from firepipe.core.genai.kb.index import IndexMissingError
from firepipe.core.history import GenerationRecord
from firepipe.core.simulation.partitions import SEED_STRIDE_PER_CONFIG_SEED
from firepipe.defs.generation import checks
from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.services.actions.app import create_app
from firepipe.services.actions.fire import TABLE
from firepipe.services.actions.generations import FIRE_ASSET
from firepipe.services.actions.models import GenerateRequest, QualityRequest
from firepipe.services.actions.operations import ActionError, Actions
from firepipe.services.actions.runs import RunState
from firepipe.services.inference.keys import Access
from firepipe_tests.defs.test_generation_checks import SECONDS_PER_DEVICE, partition
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


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"destination": {"type": "s3", "location": "s3://gen/x"}}, "destination"),
        ({"destination": {"type": "local"}}, "destination"),
        ({"output_format": "csv"}, "output_format"),
        ({"schema": SCHEMA, "volume": 10}, "volume, schema"),
        ({"compliance_requirements": ["GDPR"]}, "compliance_requirements"),
    ],
)
def test_custom_fields_in_a_fire_request_are_refused_by_name(url, http, runs, body, named):  # type: ignore[no-untyped-def]
    answer = fire(http, url, families=["flaming"], devices=2, **body)
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith(
        f"{named} do not belong to data_type 'fire_scenarios': its own fields are families, "
        "mix, devices, duration_s, fault_share, use_gpu, batch, and seed"
    )
    assert runs.launched == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"families": ["flaming"]}, "families"),
        ({"mix": {"flaming": 1.0}, "devices": 3}, "mix, devices"),
        ({"duration_s": 60, "fault_share": 0.1}, "duration_s, fault_share"),
        ({"use_gpu": False, "batch": 2}, "use_gpu, batch"),
    ],
)
def test_fire_fields_in_a_custom_request_are_refused_by_name(url, http, runs, body, named):  # type: ignore[no-untyped-def]
    custom = {"data_type": "custom", "schema": SCHEMA, "volume": 3, **body}
    answer = http.post(f"{url}/generate-synthetic-data", json=custom)
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith(
        f"{named} do not belong to data_type 'custom': its own fields are volume, schema, "
        "compliance_requirements, output_format, destination, and seed"
    )


def test_the_default_destination_and_a_seed_fit_either_kind(url, http, runs):  # type: ignore[no-untyped-def]
    inline = fire(
        http, url, families=["flaming"], devices=2, seed=4, destination={"type": "inline"}
    )
    assert inline.status_code == 200, inline.text
    assert len(runs.launched) == 1
    # every request field serves one kind, or both: none can be dropped unseen
    from firepipe.services.actions.models import GenerateRequest
    from firepipe.services.actions.operations import _OWN_FIELDS, _SHARED_FIELDS

    kinds = [*_OWN_FIELDS.values(), _SHARED_FIELDS]
    assert sorted(f for fields in kinds for f in fields) == sorted(GenerateRequest.model_fields)


def test_a_generation_summarises_its_bronze_checks(url, http, runs, actions):  # type: ignore[no-untyped-def]
    body = fire(http, url, mix={"flaming": 0.5, "smouldering": 0.5}, devices=4, seed=3).json()
    generation_id = body["generation_id"]
    got = http.get(f"{url}/generations/{generation_id}").json()
    assert got["quality_summary"] is None  # queued: no check has run
    flaming, smouldering = runs.states[generation_id]
    passed = {"schema": True, "physical_ranges": True, "label_consistency": True}
    runs.states[generation_id] = [
        RunState(
            flaming.run_id,
            flaming.partition_key,
            "SUCCESS",
            flaming.created_at,
            {**passed, "scenario_mix": True, "distribution_vs_reference": False},
        ),
        RunState(smouldering.run_id, smouldering.partition_key, "STARTED", smouldering.created_at),
    ]
    actions.history.record(_record(flaming.run_id, flaming.partition_key, rows=1200))
    summary = http.get(f"{url}/generations/{generation_id}").json()["quality_summary"]
    assert summary == {
        "passed": False,
        "partitions": [
            {
                "partition": "002|flaming",
                "passed": ["label_consistency", "physical_ranges", "scenario_mix", "schema"],
                "failed": ["distribution_vs_reference"],
                "rows": 1200,
            }
        ],
    }


def _record(run_id: str, partition_key: str | None, rows: int) -> GenerationRecord:
    return GenerationRecord(
        run_id=run_id,
        asset_key=FIRE_ASSET,
        partition_key=partition_key,
        spec={},
        seed=3 * SEED_STRIDE_PER_CONFIG_SEED,
        rows=rows,
        location="file:///lake/bronze/synthetic_readings",
        started_at=datetime.now(UTC),
        duration_s=1.0,
        backend="numpy",
        status="succeeded",
    )


class CountingRuns(RecordingRuns):
    """RecordingRuns that count the lookups listGenerations makes."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[str] = []

    def runs_of(self, generation_id: str) -> list[RunState]:
        self.lookups.append(f"runs_of {generation_id}")
        return super().runs_of(generation_id)

    def generations(self, limit: int) -> list[tuple[str, datetime]]:
        self.lookups.append(f"generations {limit}")
        return super().generations(limit)


def test_listing_looks_up_only_the_fire_generations_it_lists(tmp_path):  # type: ignore[no-untyped-def]
    runs = CountingRuns()
    actions = recording_actions(tmp_path, runs=runs)
    fires = [
        actions.generate_synthetic_data(
            GenerateRequest.model_validate(
                {"data_type": "fire_scenarios", "families": ["flaming"], "devices": 2}
            )
        ).generation_id
        for _ in range(2)
    ]
    tiny = {
        "data_type": "custom",
        "volume": 1,
        "schema": {"fields": [{"name": "n", "type": "uuid"}]},
    }
    customs = [
        actions.generate_synthetic_data(GenerateRequest.model_validate(tiny)).generation_id
        for _ in range(3)
    ]
    listed = actions.list_generations(4).generations
    assert [g.generation_id for g in listed] == [*reversed(customs), fires[1]]
    # the ids once, then the one fire generation listed, once
    assert runs.lookups == ["generations 4", f"runs_of {fires[1]}"]
    runs.lookups.clear()
    assert len(actions.list_generations(3).generations) == 3
    assert runs.lookups == ["generations 3"]


@pytest.fixture
def bronze(tmp_path: Path) -> LocalLakehouse:
    """A lake whose bronze table holds flaming's reference batch 000 and a batch 001 whose
    h2_ppm sensor is null throughout and whose first reading is stored twice."""
    lake = LocalLakehouse(root=str(tmp_path / "bronze-lake"))
    candidate = partition("flaming", seed=1).with_columns(pl.lit(None, pl.Float32).alias("h2_ppm"))
    rows = pl.concat([partition("flaming", seed=2, batch="000"), candidate, candidate.head(1)])
    tables.write_table(lake.catalog(), TABLE, rows)
    return lake


def test_fire_quality_judges_as_the_bronze_check_and_counts_duplicate_keys(tmp_path, bronze):  # type: ignore[no-untyped-def]
    actions = recording_actions(tmp_path, lakehouse=bronze)
    metrics = actions.calculate_quality_metrics(
        QualityRequest.model_validate({"partitions": ["001|flaming"]})
    )
    rows = 40 * SECONDS_PER_DEVICE + 1
    assert metrics["rows"] == rows
    assert metrics["uniqueness"] == {
        "key": ["device_id", "ts"],
        "duplicate_rows": 1,
        "overall": round(1 - 1 / rows, 6),
    }
    comparison = metrics["distribution_vs_reference"]["flaming"]
    # every channel it has is close to the reference, but one it lacks fails it
    assert comparison["channels_below_floor"] == []
    assert comparison["overall"] > comparison["overall_floor"]
    assert comparison["channels_missing_on_one_side"] == ["h2_ppm"]
    assert comparison["passed"] is False
    check = checks.evaluate_checks(
        bronze.scan(TABLE).filter(pl.col("batch") == "001"),
        family="flaming",
        reference=bronze.scan(TABLE).filter(pl.col("batch") == "000"),
        reference_label="000|flaming",
        names=["distribution_vs_reference"],
    )
    assert [(r.check_name, r.passed) for r in check] == [("distribution_vs_reference", False)]


def test_a_lake_that_cannot_be_read_is_a_503_with_the_reason(tmp_path, bronze):  # type: ignore[no-untyped-def]
    request = QualityRequest.model_validate({"partitions": ["001|flaming"]})
    for data in Path(bronze.root).rglob("*.parquet"):
        data.unlink()
    with pytest.raises(ActionError, match=r"cannot read bronze\.synthetic_readings") as missing:
        recording_actions(tmp_path, lakehouse=bronze).calculate_quality_metrics(request)
    assert missing.value.status == 503
    assert "not found" in missing.value.detail
    broken = tmp_path / "broken-lake"
    broken.mkdir()
    (broken / "catalog.db").write_text("not a database")
    lake = LocalLakehouse(root=str(broken))
    with pytest.raises(ActionError, match=r"cannot read bronze\.synthetic_readings") as unreadable:
        recording_actions(tmp_path, lakehouse=lake).calculate_quality_metrics(request)
    assert unreadable.value.status == 503


def test_unset_aws_settings_are_a_503_that_names_them(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FIREPIPE_ENV", "aws")
    monkeypatch.delenv("FIREPIPE_GENERATION_HISTORY_TABLE", raising=False)
    monkeypatch.delenv("FIREPIPE_LAKE_WAREHOUSE", raising=False)
    actions = Actions(tmp_path, runs=RecordingRuns())
    with pytest.raises(
        ActionError, match="FIREPIPE_GENERATION_HISTORY_TABLE is not set"
    ) as no_history:
        actions.list_generations()
    assert no_history.value.status == 503
    assert no_history.value.detail.startswith("this service has no generation history: ")
    request = QualityRequest.model_validate({"partitions": ["001|flaming"]})
    with pytest.raises(ActionError, match="FIREPIPE_LAKE_WAREHOUSE is not set") as no_lake:
        actions.calculate_quality_metrics(request)
    assert no_lake.value.status == 503


def test_the_default_app_has_the_environments_knowledge_base(firepipe_home, http):  # type: ignore[no-untyped-def]
    # The local knowledge base without its index, not "no knowledge base is configured".
    with running(create_app(Access(None, None))) as default:
        answer = http.post(f"{default}/search-knowledge-base", json={"query": "smouldering"})
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("the knowledge base has no index")
