"""The knowledge base over firepipe's own documents: the corpus and its chunks (documents,
catalog), the torch-free MiniLM embedder (minilm, minilm_graph), the faiss index (index), the
BM25 baseline (bm25) and the labelled questions with recall@k (evaluation).
docs/knowledge-base.md says what is in it and why it is built this way."""
