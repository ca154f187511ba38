"""The knowledge base port: the local faiss index, and Bedrock (retrieve and the ingestion job
through botocore's Stubber, since moto has neither; the S3 data source on moto)."""

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from pydantic import ValidationError

from firepipe.core.genai.kb import catalog
from firepipe.core.genai.kb.documents import (
    NIST_SOURCE,
    chunk_corpus,
    collect_documents,
    corpus_sha256,
)
from firepipe.core.genai.kb.index import IndexMissingError, Passage
from firepipe.core.genai.kb.minilm import WordPieces
from firepipe.resources import LOCAL, resource_for
from firepipe.resources.knowledge_base import BedrockKnowledgeBase, LocalKnowledgeBase
from firepipe.settings import LocalPaths
from firepipe_tests.core.genai.kb.shared import MODEL_CACHE, write_project

REGION = "eu-west-1"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project")


def _local(tmp_path: Path, project: Path) -> LocalKnowledgeBase:
    return LocalKnowledgeBase(
        folder=str(tmp_path / "kb"), model_cache=str(MODEL_CACHE), project_root=str(project)
    )


def test_local_search_after_sync(tmp_path: Path, project: Path) -> None:
    kb = _local(tmp_path, project)
    with pytest.raises(IndexMissingError):
        kb.search("anything")
    report = kb.sync()
    packaged = chunk_corpus(collect_documents(project)[3:], WordPieces())  # NIST note, catalog
    chunks = 3 + len(packaged)  # one per project document
    assert (report.documents, report.chunks, report.updated, report.changed) == (
        5,
        chunks,
        chunks,
        True,
    )
    assert report.location.startswith(str(tmp_path / "kb"))
    passages = kb.search("where does the Iceberg catalog keep its snapshots?", k=2)
    assert passages[0].source == "docs/lake.md"
    assert len(passages) == 2
    assert kb.sync().changed is False
    with pytest.raises(ValueError, match="empty"):
        kb.search("  ")


def test_local_search_reads_a_rebuilt_index(tmp_path: Path, project: Path) -> None:
    kb = _local(tmp_path, project)
    kb.sync()
    assert kb.search("Iceberg snapshots", k=1)[0].text.startswith("The Iceberg catalog")
    (project / "docs" / "lake.md").write_text("# Lake\n\nDuckDB answers the lake's queries.\n")
    assert kb.sync().updated == 1
    lake = [p.text for p in kb.search("Iceberg snapshots", k=10) if p.source == "docs/lake.md"]
    assert lake == ["DuckDB answers the lake's queries."]


def test_local_factory_puts_the_index_under_the_home(tmp_path: Path) -> None:
    kb = resource_for("knowledge_base", LOCAL, LocalPaths(home=tmp_path))
    assert isinstance(kb, LocalKnowledgeBase)
    assert kb.folder == str(tmp_path / "knowledge_base" / "index")
    assert kb.model_cache == str(tmp_path / "knowledge_base" / "model")


def _bedrock(project: Path, **extra: Any) -> BedrockKnowledgeBase:
    fields: dict[str, Any] = {
        "knowledge_base_id": "KB12345678",
        "data_source_id": "DS12345678",
        "bucket": "kb-docs",
        "prefix": "firepipe/",
        "region": REGION,
        "project_root": str(project),
    }
    return BedrockKnowledgeBase(**(fields | extra))


def _use(monkeypatch: pytest.MonkeyPatch, clients: dict[str, Any]) -> None:
    monkeypatch.setattr(BedrockKnowledgeBase, "_client", lambda self, service: clients[service])


def test_bedrock_search_is_retrieve(
    project: Path, monkeypatch: pytest.MonkeyPatch, aws_credentials: None
) -> None:
    runtime = boto3.client("bedrock-agent-runtime", region_name=REGION)
    kb = _bedrock(project)
    with Stubber(runtime) as stub:
        stub.add_response(
            "retrieve",
            {
                "retrievalResults": [
                    {
                        "content": {"type": "TEXT", "text": "Smouldering fires raise CO."},
                        "location": {
                            "type": "S3",
                            "s3Location": {"uri": "s3://kb-docs/firepipe/docs/smoke.md"},
                        },
                        "metadata": {"source": "docs/smoke.md"},
                        "score": 0.71,
                    },
                    {
                        "content": {"type": "TEXT", "text": "No sidecar here."},
                        "location": {"type": "S3", "s3Location": {"uri": "s3://kb-docs/x.md"}},
                        "score": 0.2,
                    },
                ]
            },
            {
                "knowledgeBaseId": "KB12345678",
                "retrievalQuery": {"text": "which gas first?"},
                "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 3}},
            },
        )
        _use(monkeypatch, {"bedrock-agent-runtime": runtime})
        passages = kb.search("which gas first?", k=3)
        stub.assert_no_pending_responses()
    assert passages == [
        Passage("docs/smoke.md", "", "Smouldering fires raise CO.", 0.71),
        Passage("s3://kb-docs/x.md", "", "No sidecar here.", 0.2),
    ]


def _keys(s3: Any, bucket: str = "kb-docs") -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def _ingestion(stub: Stubber, corpus: str, job_id: str) -> None:
    stub.add_response(
        "start_ingestion_job",
        {
            "ingestionJob": {
                "knowledgeBaseId": "KB12345678",
                "dataSourceId": "DS12345678",
                "ingestionJobId": job_id,
                "status": "STARTING",
                "startedAt": "2026-12-06T00:00:00Z",
                "updatedAt": "2026-12-06T00:00:00Z",
            }
        },
        {
            "knowledgeBaseId": "KB12345678",
            "dataSourceId": "DS12345678",
            "clientToken": corpus,
            "description": f"firepipe documents {corpus[:12]}",
        },
    )


def test_bedrock_sync_uploads_changed_documents_then_ingests(
    project: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, aws_credentials: None
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    s3.create_bucket(Bucket="kb-docs", CreateBucketConfiguration={"LocationConstraint": REGION})
    gone = {"Bucket": "kb-docs", "Metadata": {"firepipe-sha256": "an older corpus"}}
    s3.put_object(Key="firepipe/docs/gone.md", Body=b"# Gone\n", **gone)
    s3.put_object(Key="firepipe/docs/gone.md.metadata.json", Body=b"{}", **gone)
    s3.put_object(Bucket="kb-docs", Key="elsewhere/keep.md", Body=b"# Not ours\n")
    agent = boto3.client("bedrock-agent", region_name=REGION)
    kb = _bedrock(project, endpoint_url=moto_endpoint)
    _use(monkeypatch, {"s3": s3, "bedrock-agent": agent})
    documents = collect_documents(project)
    with Stubber(agent) as stub:
        _ingestion(stub, corpus_sha256(documents), "JOB0000001")
        report = kb.sync()
        stub.assert_no_pending_responses()
    assert (report.documents, report.updated, report.changed) == (5, 6, True)  # 5 up, 1 gone
    assert report.ingestion_job_id == "JOB0000001"
    assert report.location == "s3://kb-docs/firepipe/"
    catalog_key = f"firepipe/{catalog.SOURCE}.md"
    assert _keys(s3) == {
        "elsewhere/keep.md",
        *(
            k
            for d in ("README.md", "docs/lake.md", "docs/smoke.md", NIST_SOURCE)
            for k in (f"firepipe/{d}", f"firepipe/{d}.metadata.json")
        ),
        catalog_key,
        catalog_key + ".metadata.json",
        "firepipe.firepipe-ingested",  # the corpus ingested, beside the data source's folder
    }
    sidecar = s3.get_object(Bucket="kb-docs", Key=catalog_key + ".metadata.json")["Body"].read()
    assert json.loads(sidecar) == {"metadataAttributes": {"source": catalog.SOURCE}}
    body = s3.get_object(Bucket="kb-docs", Key=catalog_key)["Body"].read().decode()
    assert body.startswith("# Scenario catalog")

    with Stubber(agent):  # nothing changed: no upload, no ingestion job (none is stubbed)
        again = kb.sync()
    assert (again.updated, again.changed, again.ingestion_job_id) == (0, False, None)

    (project / "docs" / "lake.md").write_text("# Lake\n\nNow on DuckDB.\n")
    documents = collect_documents(project)
    with Stubber(agent) as stub:
        _ingestion(stub, corpus_sha256(documents), "JOB0000002")
        third = kb.sync()
    assert (third.updated, third.ingestion_job_id) == (1, "JOB0000002")
    lake = s3.get_object(Bucket="kb-docs", Key="firepipe/docs/lake.md")["Body"].read()
    assert lake == b"# Lake\n\nNow on DuckDB.\n"


def _bucket(moto_endpoint: str, name: str) -> Any:
    """A bucket of its own: the moto server lives for the whole session."""
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return s3


def _synced(kb: BedrockKnowledgeBase, s3: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    agent = boto3.client("bedrock-agent", region_name=REGION)
    _use(monkeypatch, {"s3": s3, "bedrock-agent": agent})
    with Stubber(agent) as stub:
        _ingestion(stub, corpus_sha256(kb.documents()), "JOB0000003")
        return kb.sync()


@pytest.mark.parametrize("prefix", ["", "/", " "])
def test_bedrock_refuses_the_bucket_root(project: Path, prefix: str) -> None:
    with pytest.raises(ValidationError, match="S3 prefix is empty"):
        _bedrock(project, prefix=prefix)


def test_bedrock_sync_removes_only_its_own_objects(
    project: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, aws_credentials: None
) -> None:
    s3 = _bucket(moto_endpoint, "kb-shared")
    foreign = {
        "firepipe-backup/README.md": b"# A sibling prefix's copy\n",  # shares the bare prefix
        "firepipe/notes/manual.md": b"# Put here by hand, no firepipe metadata\n",
        "firepipe/notes/manual.md.metadata.json": b"{}",
    }
    for key, body in foreign.items():
        s3.put_object(Bucket="kb-shared", Key=key, Body=body)
    ours = {"Bucket": "kb-shared", "Metadata": {"firepipe-sha256": "gone"}}
    s3.put_object(Key="firepipe/docs/old.md", Body=b"# Old\n", **ours)
    s3.put_object(Bucket="kb-shared", Key="firepipe/docs/old.md.metadata.json", Body=b"{}")
    # No trailing slash: `firepipe-backup/` must still not count as under it.
    kb = _bedrock(project, bucket="kb-shared", prefix="firepipe", endpoint_url=moto_endpoint)
    report = _synced(kb, s3, monkeypatch)
    assert (report.updated, report.location) == (6, "s3://kb-shared/firepipe/")  # 5 up, 1 gone
    keys = _keys(s3, "kb-shared")
    assert set(foreign) <= keys
    assert "firepipe/docs/lake.md.metadata.json" in keys
    assert not {"firepipe/docs/old.md", "firepipe/docs/old.md.metadata.json"} & keys
    for key, body in foreign.items():
        assert s3.get_object(Bucket="kb-shared", Key=key)["Body"].read() == body


def test_bedrock_sync_retries_a_failed_sidecar(
    project: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, aws_credentials: None
) -> None:
    s3 = _bucket(moto_endpoint, "kb-retry")
    sidecar = "firepipe/docs/lake.md.metadata.json"
    failed: list[str] = []

    def fail_once(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == sidecar and not failed:
            failed.append(sidecar)
            raise ConnectionError("the sidecar PUT failed")

    s3.meta.events.register("before-parameter-build.s3.PutObject", fail_once)
    kb = _bedrock(project, bucket="kb-retry", endpoint_url=moto_endpoint)
    _use(monkeypatch, {"s3": s3})
    with pytest.raises(ConnectionError):
        kb.sync()
    report = _synced(kb, s3, monkeypatch)
    assert failed == [sidecar]
    assert {"firepipe/docs/lake.md", sidecar} <= _keys(s3, "kb-retry")
    assert json.loads(s3.get_object(Bucket="kb-retry", Key=sidecar)["Body"].read()) == {
        "metadataAttributes": {"source": "docs/lake.md"}
    }
    assert report.updated == 4  # all but the README, which went up before the failure


def test_bedrock_sync_starts_again_an_ingestion_that_failed_to_start(
    project: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, aws_credentials: None
) -> None:
    s3 = _bucket(moto_endpoint, "kb-ingest")
    kb = _bedrock(project, bucket="kb-ingest", endpoint_url=moto_endpoint)
    agent = boto3.client("bedrock-agent", region_name=REGION)
    _use(monkeypatch, {"s3": s3, "bedrock-agent": agent})
    corpus = corpus_sha256(kb.documents())
    with Stubber(agent) as stub:
        stub.add_client_error("start_ingestion_job", "ThrottlingException", http_status_code=429)
        with pytest.raises(ClientError, match="Throttling"):
            kb.sync()  # the documents are up, the job is not started
    with Stubber(agent) as stub:
        _ingestion(stub, corpus, "JOB0000009")
        retried = kb.sync()
        stub.assert_no_pending_responses()
    assert (retried.updated, retried.ingestion_job_id) == (0, "JOB0000009")
    with Stubber(agent):  # ingested now: nothing to start (none is stubbed)
        assert kb.sync().ingestion_job_id is None
