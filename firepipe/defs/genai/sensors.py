"""Rebuild the knowledge base when firepipe's documents change."""

import dagster as dg

from firepipe.core.genai.kb.documents import corpus_sha256
from firepipe.defs.genai.assets import KEY
from firepipe.resources.knowledge_base import KnowledgeBase

# Reading a dozen markdown files and rendering the catalog takes milliseconds; a minute is
# soon enough for an edited document to be searchable.
INTERVAL_S = 60


@dg.sensor(
    name="kb_documents_sensor",
    asset_selection=[KEY],
    minimum_interval_seconds=INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def kb_documents_sensor(
    context: dg.SensorEvaluationContext, knowledge_base: KnowledgeBase
) -> dg.SensorResult | dg.SkipReason:
    """Ask for genai/kb_index when the corpus' hash differs from the last one asked for (the
    cursor); the run key names the hash, so one corpus is indexed once."""
    corpus = corpus_sha256(knowledge_base.documents())
    if corpus == context.cursor:
        return dg.SkipReason(f"documents unchanged ({corpus[:12]})")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"kb_index {corpus}")], cursor=corpus
    )
