"""The torch-free MiniLM against sentence-transformers' own embeddings (recorded with torch)."""

import json
from pathlib import Path

import numpy as np
import pytest

from firepipe.core.genai.kb import minilm
from firepipe.core.genai.kb.minilm import MAX_TOKENS, MiniLM
from firepipe.core.genai.kb.minilm_graph import read_safetensors

REFERENCE = json.loads((Path(__file__).parent / "minilm_reference.json").read_text())


def test_embeddings_match_sentence_transformers(minilm: MiniLM) -> None:
    got = minilm.embed(REFERENCE["texts"])
    expected = np.array(REFERENCE["embeddings"], dtype=np.float32)
    assert got.shape == (len(REFERENCE["texts"]), 384)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_model_is_the_one_the_reference_used(minilm: MiniLM) -> None:
    assert minilm.model_sha256 == REFERENCE["model_safetensors_sha256"]


def test_long_text_is_truncated_at_256_wordpieces_not_128(minilm: MiniLM) -> None:
    words = [f"word{i} smoke" for i in range(300)]
    text = " ".join(words)
    assert minilm.count_tokens(text) > 2 * MAX_TOKENS
    batch = minilm.wordpieces.batch([text])
    assert batch["input_ids"].shape == (1, MAX_TOKENS)
    # The text cut after its 254th wordpiece ([CLS] and [SEP] make 256) embeds the same; cut
    # after the 126th (tokenizer.json's 128) it does not.
    offsets = minilm.token_offsets(text)
    at_256 = text[: offsets[MAX_TOKENS - 2][0]]
    at_128 = text[: offsets[128 - 2][0]]
    full, cut_256, cut_128 = minilm.embed([text, at_256, at_128])
    assert float(full @ cut_256) > 0.99999
    assert float(full @ cut_128) < 0.999


def test_padding_does_not_change_an_embedding(minilm: MiniLM) -> None:
    short = "A candle burns in the living room."
    alone = minilm.embed([short])[0]
    padded = minilm.embed([short, "a much longer sentence " * 20])[0]
    np.testing.assert_allclose(alone, padded, atol=1e-6)


def test_order_is_kept_when_batches_are_sorted_by_length(model_cache: Path) -> None:
    small_batches = MiniLM(model_cache, batch_size=2)
    texts = ["long text about fire " * 10, "short", "medium length text here", "x"]
    together = small_batches.embed(texts)
    for i, text in enumerate(texts):
        np.testing.assert_allclose(together[i], small_batches.embed([text])[0], atol=1e-6)


def test_graph_is_cached_by_the_weights_sha(model_cache: Path, minilm: MiniLM) -> None:
    graphs = list(model_cache.glob("*.onnx"))
    assert [g.name for g in graphs] == [f"all-minilm-l6-v2-{minilm.model_sha256[:16]}.onnx"]
    before = graphs[0].stat().st_mtime_ns
    MiniLM(model_cache)
    assert graphs[0].stat().st_mtime_ns == before  # reused, not written again
    assert not list(model_cache.glob("*.partial"))
    memo = json.loads((model_cache / "safetensors.sha256.json").read_text())
    assert memo["sha256"] == minilm.model_sha256


def test_missing_weights_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        MiniLM(tmp_path / "cache", source=tmp_path)


def test_safetensors_reader(tmp_path: Path) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = json.dumps({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}})
    path = tmp_path / "t.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + a.tobytes())
    np.testing.assert_array_equal(read_safetensors(path)["a"], a)
    header = json.dumps({"b": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}})
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + b"\0\0")
    with pytest.raises(ValueError, match="BF16"):
        read_safetensors(path)


def test_weights_sha_is_recomputed_when_the_file_changes(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"one")
    first = minilm.weights_sha256(weights, tmp_path / "cache")
    weights.write_bytes(b"two!")
    assert minilm.weights_sha256(weights, tmp_path / "cache") != first
    assert minilm.weights_sha256(weights, tmp_path / "cache") == minilm.file_sha256(weights)
