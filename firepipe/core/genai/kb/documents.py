"""The knowledge base's corpus and its chunks.

The corpus: the README, every markdown file under docs/ (and a runbooks/ folder when the
project has one), the packaged NIST source note, and the scenario catalog rendered from the
code. Chunks follow the markdown headings and hold at most MAX_TOKENS wordpieces, heading path
included, counted with the model's own tokenizer: the model reads no further, so a longer chunk
would be embedded by its beginning only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from firepipe.core.genai.kb import catalog
from firepipe.core.genai.kb.minilm import MAX_TOKENS

_PACKAGE = Path(__file__).resolve().parents[3]
NIST_SOURCE_NOTE = _PACKAGE / "data" / "nist_smoke_alarms" / "SOURCE.md"
NIST_SOURCE = "firepipe/data/nist_smoke_alarms/SOURCE.md"
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


class CorpusError(ValueError):
    """The project folder lacks what the knowledge base is built from."""


class TokenCounter(Protocol):
    def count_tokens(self, text: str) -> int: ...

    def token_offsets(self, text: str) -> list[tuple[int, int, bool]]: ...


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Document:
    source: str  # the path relative to the project folder (the code's, for the catalog)
    text: str

    @property
    def sha256(self) -> str:
        return sha256_text(self.text)


@dataclass(frozen=True)
class Chunk:
    source: str
    heading: str  # the heading path: "Synthetic data > Scenarios"
    text: str  # the section's text under that heading (or a part of it)
    tokens: int  # wordpieces of `passage`, [CLS] and [SEP] included

    @property
    def passage(self) -> str:
        """What is embedded and searched: the heading path, then the text."""
        return f"{self.heading}\n{self.text}"

    @property
    def sha256(self) -> str:
        return sha256_text(self.passage)


def default_root() -> Path:
    """The project folder around the installed package (a source checkout)."""
    return _PACKAGE.parent


def project_root(root: Path | None = None) -> Path:
    """`root` (default: the checkout around the package), checked to hold README.md and docs/."""
    folder = (root or default_root()).resolve()
    missing = [name for name in ("README.md", "docs") if not (folder / name).exists()]
    if missing:
        raise CorpusError(
            f"{folder} holds no {' and no '.join(missing)}: the knowledge base is built from a "
            "firepipe project folder (give the folder that holds README.md and docs/)"
        )
    return folder


def collect_documents(root: Path | None = None) -> list[Document]:
    """Every document of the corpus, in a stable order."""
    folder = project_root(root)
    paths = [folder / "README.md", *sorted((folder / "docs").glob("**/*.md"))]
    if (folder / "runbooks").is_dir():
        paths += sorted((folder / "runbooks").glob("**/*.md"))
    documents = [Document(p.relative_to(folder).as_posix(), p.read_text()) for p in paths]
    documents.append(Document(NIST_SOURCE, NIST_SOURCE_NOTE.read_text()))
    documents.append(Document(catalog.SOURCE, catalog.render_catalog()))
    return documents


def corpus_sha256(documents: list[Document]) -> str:
    """One hash of the whole corpus: it changes when any document does."""
    return sha256_text("\n".join(f"{d.source}\t{d.sha256}" for d in documents))


def sections(document: Document) -> Iterator[tuple[str, str]]:
    """(heading path, text) per markdown section; headings inside code fences are code."""
    path: list[tuple[int, str]] = []
    body: list[str] = []
    fenced = False

    def flush() -> tuple[str, str]:
        heading = " > ".join(title for _, title in path) or document.source
        return heading, "\n".join(body).strip()

    for line in document.text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match is None:
            body.append(line)
            continue
        heading, text = flush()
        if text:
            yield heading, text
        level = len(match.group(1))
        path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match.group(2))]
        body = []
    heading, text = flush()
    if text:
        yield heading, text


def chunk_document(
    document: Document, counter: TokenCounter, max_tokens: int = MAX_TOKENS
) -> list[Chunk]:
    """The document's chunks: each section whole when it fits, else its paragraphs packed in
    order, a paragraph too long for one chunk cut between words."""
    chunks = []
    for heading, text in sections(document):
        # The heading's count includes [CLS] and [SEP]; wordpieces add up across the blank
        # lines that join paragraphs (the tokenizer splits on whitespace first).
        budget = max_tokens - counter.count_tokens(heading)
        if budget < max_tokens // 4:
            raise CorpusError(f"{document.source}: heading {heading!r} leaves no room for text")
        for part in _pack(text, counter, budget):
            chunk = Chunk(document.source, heading, part, 0)
            chunks.append(Chunk(chunk.source, heading, part, counter.count_tokens(chunk.passage)))
    return chunks


def _pack(text: str, counter: TokenCounter, budget: int) -> list[str]:
    pieces: list[tuple[str, int]] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip()
        if paragraph:
            pieces += [(p, counter.count_tokens(p) - 2) for p in _cut(paragraph, counter, budget)]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for piece, tokens in pieces:
        if current and used + tokens > budget:
            parts.append("\n\n".join(current))
            current, used = [], 0
        current.append(piece)
        used += tokens
    if current:
        parts.append("\n\n".join(current))
    return parts


def _cut(text: str, counter: TokenCounter, budget: int) -> list[str]:
    """`text` in parts of at most `budget` wordpieces, cut before a word's first wordpiece."""
    offsets = counter.token_offsets(text)
    if len(offsets) <= budget:
        return [text]
    parts = []
    start_token = 0
    while start_token < len(offsets):
        end_token = min(start_token + budget, len(offsets))
        if end_token < len(offsets):
            # Back off to the start of a word, so no word is split across chunks.
            cut = end_token
            while cut > start_token + 1 and not offsets[cut][2]:
                cut -= 1
            end_token = cut
        lo = offsets[start_token][0]
        hi = offsets[end_token][0] if end_token < len(offsets) else len(text)
        parts.append(text[lo:hi].strip())
        start_token = end_token
    return [p for p in parts if p]


def chunk_corpus(documents: list[Document], counter: TokenCounter) -> list[Chunk]:
    return [chunk for document in documents for chunk in chunk_document(document, counter)]
