"""The knowledge base port: passages that answer a question, from firepipe's own documents
(firepipe.core.genai.kb.documents: README, docs/, the NIST source note, the scenario catalog).

- `LocalKnowledgeBase`: all-MiniLM-L6-v2 on ONNX Runtime and an exact faiss index in a folder
  under FIREPIPE_HOME (firepipe.core.genai.kb.index); `sync` re-embeds the changed chunks only.
- `BedrockKnowledgeBase`: a Bedrock Knowledge Base (OpenSearch Serverless) over an S3 data
  source; `search` is bedrock-agent-runtime `retrieve`, `sync` uploads the documents that
  changed (each with a metadata sidecar naming its source), removes the ones firepipe uploaded
  that are gone (only objects carrying firepipe's sha256 metadata: the bucket may hold others)
  and starts an ingestion job.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from firepipe.core.genai.kb.documents import Document, collect_documents, corpus_sha256
from firepipe.core.genai.kb.index import Passage

DEFAULT_K = 5
# Bedrock parses .md but not .py: the rendered scenario catalog is uploaded as markdown.
_MARKDOWN = ".md"
# S3 user metadata holding a document's sha256: an unchanged document is not uploaded again.
_SHA_KEY = "firepipe-sha256"
_SIDECAR = ".metadata.json"
_INGESTED = ".firepipe-ingested"  # the marker of the corpus last ingested (beside the folder)


@dataclass(frozen=True)
class SyncReport:
    location: str  # the index folder, or the data source's s3:// prefix
    documents: int
    chunks: int | None  # Bedrock chunks the documents itself: None in AWS
    updated: int  # chunks re-embedded locally; documents uploaded or removed in AWS
    corpus_sha256: str
    changed: bool
    ingestion_job_id: str | None = None


class KnowledgeBase(dg.ConfigurableResource, ABC):
    project_root: str | None = Field(
        default=None,
        description="the project folder holding README.md and docs/ (default: the checkout "
        "around the installed package)",
    )

    def documents(self) -> list[Document]:
        return collect_documents(Path(self.project_root) if self.project_root else None)

    @abstractmethod
    def search(self, question: str, k: int = DEFAULT_K) -> list[Passage]:
        """The k passages that best answer `question`, best first."""

    @abstractmethod
    def sync(self) -> SyncReport:
        """Bring the knowledge base up to date with the documents."""

    @abstractmethod
    def describe(self) -> str: ...


@lru_cache(maxsize=2)
def _embedder(model_cache: str) -> Any:
    from firepipe.core.genai.kb.minilm import MiniLM

    return MiniLM(Path(model_cache))


@lru_cache(maxsize=2)
def _loaded(folder: str, version: str) -> Any:
    from firepipe.core.genai.kb.index import load_index

    return load_index(Path(folder))


class LocalKnowledgeBase(KnowledgeBase):
    """The faiss index in `folder`; the model's ONNX graph cached in `model_cache`."""

    folder: str = Field(description="the index's folder of versions (built by sync)")
    model_cache: str = Field(description="where the model's ONNX graph is written once")

    def search(self, question: str, k: int = DEFAULT_K) -> list[Passage]:
        from firepipe.core.genai.kb.index import current_folder

        if not question.strip():
            raise ValueError("the question is empty")
        # Keyed by the current version, so a process that searches again after a rebuild
        # (the action API) reads the new index.
        index = _loaded(self.folder, current_folder(Path(self.folder)).name)
        return list(index.search(_embedder(self.model_cache).embed([question])[0], k))

    def sync(self) -> SyncReport:
        from firepipe.core.genai.kb.index import build_index

        report = build_index(Path(self.folder), self.documents(), _embedder(self.model_cache))
        return SyncReport(
            report.folder,
            report.documents,
            report.chunks,
            report.reembedded,
            report.corpus_sha256,
            report.changed,
        )

    def describe(self) -> str:
        return f"local knowledge base in {self.folder}"


class BedrockKnowledgeBase(KnowledgeBase):
    """A Bedrock Knowledge Base and its S3 data source; credentials from the default chain."""

    knowledge_base_id: str
    data_source_id: str
    bucket: str
    prefix: str = Field(description="the data source's key prefix, e.g. 'kb/'")
    region: str
    endpoint_url: str | None = None  # S3's, for tests against moto

    @field_validator("prefix")
    @classmethod
    def _not_the_whole_bucket(cls, prefix: str) -> str:
        # sync removes what is gone under the prefix: it must own a folder, never the bucket.
        if not prefix.strip("/ "):
            raise ValueError(
                "the knowledge base's S3 prefix is empty: name the data source's folder "
                "(e.g. 'kb/'), which firepipe owns; the bucket root is refused"
            )
        return prefix

    @property
    def folder(self) -> str:
        """The prefix as a folder: `kb` must not take in `kb-backup/...`."""
        return f"{self.prefix.rstrip('/')}/"

    def _client(self, service: str) -> Any:
        import boto3

        endpoint = self.endpoint_url if service == "s3" else None
        return boto3.client(service, region_name=self.region, endpoint_url=endpoint)

    @property
    def marker(self) -> str:
        """The key that records the corpus last ingested: beside the folder, not in it, so
        the data source never reads it as a document."""
        return f"{self.prefix.rstrip('/')}{_INGESTED}"

    def key(self, source: str) -> str:
        name = source if source.endswith(_MARKDOWN) else source + _MARKDOWN
        return self.folder + name

    def retrieve_request(self, question: str, k: int) -> dict[str, Any]:
        return {
            "knowledgeBaseId": self.knowledge_base_id,
            "retrievalQuery": {"text": question},
            "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": k}},
        }

    def search(self, question: str, k: int = DEFAULT_K) -> list[Passage]:
        if not question.strip():
            raise ValueError("the question is empty")
        answer = self._client("bedrock-agent-runtime").retrieve(
            **self.retrieve_request(question, k)
        )
        return [self._passage(r) for r in answer.get("retrievalResults", [])]

    def _passage(self, result: dict[str, Any]) -> Passage:
        metadata = result.get("metadata") or {}
        uri = result.get("location", {}).get("s3Location", {}).get("uri", "")
        source = metadata.get("source") or uri
        return Passage(
            str(source),
            str(metadata.get("heading", "")),
            result["content"]["text"],
            float(result.get("score", 0.0)),
        )

    def sync(self) -> SyncReport:
        documents = self.documents()
        s3 = self._client("s3")
        wanted = {self.key(d.source): d for d in documents}
        updated = sum(self._upload_if_changed(s3, key, d) for key, d in wanted.items())
        updated += self._remove_stale(s3, set(wanted))
        corpus = corpus_sha256(documents)
        location = f"s3://{self.bucket}/{self.folder}"
        # The marker, not the uploads, says whether Bedrock has this corpus: a sync whose
        # ingestion job failed to start uploads nothing the next time, yet starts it again.
        if not updated and self._ingested(s3) == corpus:
            return SyncReport(location, len(documents), None, 0, corpus, False)
        job = self._client("bedrock-agent").start_ingestion_job(
            knowledgeBaseId=self.knowledge_base_id,
            dataSourceId=self.data_source_id,
            # The same corpus asks for the same job: a retried sync starts it once.
            clientToken=corpus,
            description=f"firepipe documents {corpus[:12]}",
        )
        job_id = job["ingestionJob"]["ingestionJobId"]
        s3.put_object(
            Bucket=self.bucket, Key=self.marker, Body=job_id.encode(), Metadata={_SHA_KEY: corpus}
        )
        return SyncReport(location, len(documents), None, updated, corpus, True, job_id)

    def _ingested(self, s3: Any) -> str | None:
        """The corpus of the last ingestion job started, or None."""
        from botocore.exceptions import ClientError

        try:
            head = s3.head_object(Bucket=self.bucket, Key=self.marker)
        except ClientError as error:
            if _not_found(error):
                return None
            raise
        found = head.get("Metadata", {}).get(_SHA_KEY)
        return None if found is None else str(found)

    def _upload_if_changed(self, s3: Any, key: str, document: Document) -> bool:
        from botocore.exceptions import ClientError

        try:
            head = s3.head_object(Bucket=self.bucket, Key=key)
            if head.get("Metadata", {}).get(_SHA_KEY) == document.sha256:
                return False
        except ClientError as error:
            if not _not_found(error):
                raise
        # The sidecar first: the document's sha256 says "done", so it must go up last, or a
        # failed sidecar PUT would never be retried.
        sidecar = {"metadataAttributes": {"source": document.source}}
        s3.put_object(
            Bucket=self.bucket,
            Key=key + _SIDECAR,
            Body=json.dumps(sidecar).encode(),
            ContentType="application/json",
            Metadata={_SHA_KEY: document.sha256},  # marks it firepipe's, for _remove_stale
        )
        s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=document.text.encode(),
            ContentType="text/markdown",
            Metadata={_SHA_KEY: document.sha256},
        )
        return True

    def _remove_stale(self, s3: Any, wanted: set[str]) -> int:
        """Remove the documents firepipe uploaded under the prefix that the corpus no longer
        has, with their sidecars; objects without firepipe's sha256 metadata are not ours."""
        removed = 0
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.folder)
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                document_key = key.removesuffix(_SIDECAR)
                if document_key in wanted or not self._is_ours(s3, key):
                    continue
                s3.delete_object(Bucket=self.bucket, Key=key)
                if key == document_key:
                    # Sidecars written before they carried the metadata go with their document.
                    s3.delete_object(Bucket=self.bucket, Key=key + _SIDECAR)
                    removed += 1
        return removed

    def _is_ours(self, s3: Any, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            head = s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:  # removed meanwhile, e.g. as a document's sidecar
            if _not_found(error):
                return False
            raise
        return _SHA_KEY in head.get("Metadata", {})

    def describe(self) -> str:
        return f"Bedrock knowledge base {self.knowledge_base_id} (s3://{self.bucket}/{self.prefix})"


def _not_found(error: Any) -> bool:
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
