"""genai/kb_index and the sensor that rebuilds it when the documents change."""

from pathlib import Path

import dagster as dg
import pytest

from firepipe import names
from firepipe.defs.genai.assets import KEY, kb_index
from firepipe.defs.genai.sensors import kb_documents_sensor
from firepipe.resources.knowledge_base import LocalKnowledgeBase
from firepipe_tests.core.genai.kb.shared import MODEL_CACHE, write_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project")


@pytest.fixture
def knowledge_base(tmp_path: Path, project: Path) -> LocalKnowledgeBase:
    return LocalKnowledgeBase(
        folder=str(tmp_path / "kb"), model_cache=str(MODEL_CACHE), project_root=str(project)
    )


def _materialize(knowledge_base: LocalKnowledgeBase) -> dict[str, object]:
    result = dg.materialize([kb_index], resources={"knowledge_base": knowledge_base})
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_kb_index_builds_then_reembeds_only_what_changed(
    knowledge_base: LocalKnowledgeBase, project: Path
) -> None:
    assert KEY == dg.AssetKey(["genai", "kb_index"]) == dg.AssetKey(names.KB_INDEX)
    first = _materialize(knowledge_base)
    assert first["documents"] == 5
    assert first["reembedded"] == first["chunks"]
    assert first["changed"] is True
    assert str(first["location"]).startswith(knowledge_base.folder)
    assert _materialize(knowledge_base)["reembedded"] == 0
    (project / "docs" / "smoke.md").write_text("# Smoke\n\nA new sentence about smoke.\n")
    third = _materialize(knowledge_base)
    assert (third["reembedded"], third["chunks"], third["changed"]) == (1, first["chunks"], True)
    assert third["corpus_sha256"] != first["corpus_sha256"]
    assert knowledge_base.search("a new sentence about smoke", k=1)[0].source == "docs/smoke.md"


def test_kb_index_data_version_is_the_corpus_hash(knowledge_base: LocalKnowledgeBase) -> None:
    result = dg.materialize([kb_index], resources={"knowledge_base": knowledge_base})
    (event,) = result.get_asset_materialization_events()
    tags = event.materialization.tags or {}
    assert tags["dagster/data_version"] == event.materialization.metadata["corpus_sha256"].value


def test_sensor_asks_for_a_build_when_the_corpus_changes(
    knowledge_base: LocalKnowledgeBase, project: Path
) -> None:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"knowledge_base": knowledge_base}
        )
        first = kb_documents_sensor(context)
        assert isinstance(first, dg.SensorResult)
        (request,) = first.run_requests or []
        assert first.cursor is not None
        assert request.run_key == f"kb_index {first.cursor}"

        context = dg.build_sensor_context(
            instance=instance, cursor=first.cursor, resources={"knowledge_base": knowledge_base}
        )
        assert isinstance(kb_documents_sensor(context), dg.SkipReason)

        (project / "docs" / "lake.md").write_text("# Lake\n\nChanged.\n")
        changed = kb_documents_sensor(context)
        assert isinstance(changed, dg.SensorResult)
        assert changed.cursor not in (None, first.cursor)
