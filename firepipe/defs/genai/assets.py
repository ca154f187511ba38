"""genai/kb_index: the knowledge base over firepipe's own documents (the README, docs/, the
NIST source note, the scenario catalog), which `firepipe kb search` and the agent answer from.
Locally a faiss index under FIREPIPE_HOME; in AWS the Bedrock Knowledge Base's S3 data source
and an ingestion job. Only the chunks that changed are embedded again."""

import dagster as dg

from firepipe import names
from firepipe.core.genai.kb import index, minilm
from firepipe.resources.knowledge_base import KnowledgeBase

KEY = dg.AssetKey(names.KB_INDEX)
# What the index is made of besides the documents: the chunking limit and the index format.
CODE_VERSION = f"kb-format-{index.FORMAT}-tokens-{minilm.MAX_TOKENS}"


@dg.asset(
    key=KEY,
    group_name=names.group_name(names.KB_INDEX),
    kinds={"faiss", "bedrock"},
    code_version=CODE_VERSION,
)
def kb_index(knowledge_base: KnowledgeBase) -> dg.MaterializeResult:
    """firepipe's documents chunked, embedded (all-MiniLM-L6-v2) and indexed for search."""
    report = knowledge_base.sync()
    return dg.MaterializeResult(
        metadata={
            "documents": report.documents,
            "chunks": report.chunks,
            "reembedded": report.updated,
            "changed": report.changed,
            "location": dg.MetadataValue.path(report.location),
            "corpus_sha256": report.corpus_sha256,
            "ingestion_job_id": report.ingestion_job_id,
        },
        # The corpus is the index's data: the same documents give the same index.
        data_version=dg.DataVersion(report.corpus_sha256),
    )
