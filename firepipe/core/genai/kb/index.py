"""The local vector index: exact cosine search (faiss IndexFlatIP over unit vectors) over the
corpus' chunks, with the chunks in a JSON sidecar and a manifest of what was embedded.

An index lives in a folder of versions: each build writes a new version folder, then points
CURRENT at it with os.replace, so a crash at any point leaves the previous index whole and
readers never see half a build. A build re-embeds only the chunks whose sha256 the previous
index lacks (same model), and writes nothing when the corpus and the model are unchanged.
Builds take an exclusive lock on the folder (the sensor's asset run and `firepipe kb build` may
start together): the second waits, then finds the first's index and embeds nothing again.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from firepipe.core.genai.kb.documents import (
    Chunk,
    Document,
    TokenCounter,
    chunk_corpus,
    corpus_sha256,
)
from firepipe.core.genai.kb.minilm import DIM, MAX_TOKENS

FORMAT = 1
POINTER = "CURRENT"
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.json"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = "build.lock"


class IndexMissingError(FileNotFoundError):
    """No index was built in the folder yet."""


class Embedder(TokenCounter, Protocol):
    model_sha256: str

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class Passage:
    source: str
    heading: str
    text: str
    score: float  # cosine similarity locally; the service's relevance score in AWS


@dataclass(frozen=True)
class BuildReport:
    folder: str  # the version folder the index now lives in
    documents: int
    chunks: int
    reembedded: int  # chunks embedded by this build; the others' vectors were reused
    corpus_sha256: str
    changed: bool  # False: the corpus and the model were those of the current index
    seconds: float


@dataclass(frozen=True)
class LoadedIndex:
    folder: Path
    manifest: dict[str, Any]
    chunks: list[Chunk]
    index: Any  # faiss.IndexFlatIP

    def vectors(self) -> NDArray[np.float32]:
        return np.asarray(self.index.reconstruct_n(0, self.index.ntotal), dtype=np.float32)

    def search(self, query: NDArray[np.float32], k: int) -> list[Passage]:
        """The k chunks nearest to the unit vector `query`, best first."""
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        scores, rows = self.index.search(query.reshape(1, -1).astype(np.float32), k)
        return [
            Passage(self.chunks[r].source, self.chunks[r].heading, self.chunks[r].text, float(s))
            for s, r in zip(scores[0], rows[0], strict=True)
            if r >= 0  # faiss pads with -1 when the index holds fewer than k
        ]


def current_folder(root: Path) -> Path:
    pointer = root / POINTER
    if not pointer.is_file():
        raise IndexMissingError(f"no knowledge base index in {root}")
    return root / pointer.read_text().strip()


def load_index(root: Path) -> LoadedIndex:
    folder = current_folder(root)
    try:
        return _read(folder)
    except FileNotFoundError:
        # A build switched CURRENT and removed this version while it was being read: read the
        # version CURRENT names now (whole: a version is written before CURRENT names it).
        now = current_folder(root)
        if now != folder:
            return _read(now)
        if not folder.is_dir():
            raise IndexMissingError(
                f"the knowledge base index in {root} names version {folder.name}, which is gone"
            ) from None
        raise


def _read(folder: Path) -> LoadedIndex:
    import faiss

    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    rows = json.loads((folder / CHUNKS_FILE).read_text())
    chunks = [Chunk(r["source"], r["heading"], r["text"], r["tokens"]) for r in rows]
    index_file = folder / INDEX_FILE
    if not index_file.is_file():  # faiss says so with a RuntimeError
        raise FileNotFoundError(f"no {INDEX_FILE} in {folder}")
    index = faiss.read_index(str(index_file))
    if index.ntotal != len(chunks):
        raise ValueError(f"{folder}: {index.ntotal} vectors for {len(chunks)} chunks")
    return LoadedIndex(folder, manifest, chunks, index)


def _previous(root: Path, model_sha256: str) -> tuple[dict[str, NDArray[np.float32]], Any]:
    """The current index's vectors by chunk sha256 (none when the model differs), and its
    manifest (None without an index)."""
    try:
        old = load_index(root)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError):
        # No index, a CURRENT naming a version that is gone, or a damaged version (bad JSON,
        # a faiss file faiss cannot read): build afresh rather than fail every build after.
        return {}, None
    if old.manifest.get("model_sha256") != model_sha256:
        return {}, old.manifest
    return dict(zip((c.sha256 for c in old.chunks), old.vectors(), strict=True)), old.manifest


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold the folder's build lock; the kernel drops it when the holder dies, so a killed
    build never blocks the next."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_index(root: Path, documents: list[Document], embedder: Embedder) -> BuildReport:
    """Index `documents` in `root`, reusing the current index's vectors of unchanged chunks;
    a build already running in `root` (another process too) is waited for."""
    with _exclusive(root):
        return _build(root, documents, embedder)


def _build(root: Path, documents: list[Document], embedder: Embedder) -> BuildReport:
    import faiss

    started = time.perf_counter()
    corpus = corpus_sha256(documents)
    known, manifest = _previous(root, embedder.model_sha256)
    same = {"corpus_sha256": corpus, "model_sha256": embedder.model_sha256, "format": FORMAT}
    if manifest is not None and all(manifest.get(k) == v for k, v in same.items()):
        return BuildReport(
            str(current_folder(root)),
            len(documents),
            manifest["chunks"],
            0,
            corpus,
            False,
            time.perf_counter() - started,
        )
    chunks = chunk_corpus(documents, embedder)
    missing = sorted({c.sha256: c.passage for c in chunks if c.sha256 not in known}.items())
    if missing:
        fresh = embedder.embed([passage for _, passage in missing])
        known.update(zip((sha for sha, _ in missing), fresh, strict=True))
    vectors = np.stack([known[c.sha256] for c in chunks]) if chunks else np.zeros((0, DIM))
    index = faiss.IndexFlatIP(DIM)
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    folder = root / f"v-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    faiss.write_index(index, str(folder / INDEX_FILE))
    rows = [{**asdict(c), "sha256": c.sha256} for c in chunks]
    (folder / CHUNKS_FILE).write_text(json.dumps(rows, indent=1))
    manifest = {
        **same,
        "model": "all-MiniLM-L6-v2",
        "dim": DIM,
        "max_tokens": MAX_TOKENS,
        "chunks": len(chunks),
        "documents": {d.source: d.sha256 for d in documents},
        "built_at": datetime.now(UTC).isoformat(),
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    _point_at(root, folder)
    return BuildReport(
        str(folder),
        len(documents),
        len(chunks),
        len(missing),
        corpus,
        True,
        time.perf_counter() - started,
    )


def _point_at(root: Path, folder: Path) -> None:
    """Make `folder` the current index (one atomic rename), then remove the other versions: the
    replaced one and any a crashed build left (under the build lock, no other build is
    writing one; a reader still on the replaced one reads the new one, see load_index)."""
    partial = root / f"{POINTER}.{os.getpid()}.partial"
    partial.write_text(folder.name)
    os.replace(partial, root / POINTER)
    for other in root.glob("v-*"):
        if other.name != folder.name:
            shutil.rmtree(other, ignore_errors=True)
