"""The generator agent's knowledge base: firepipe's documents, indexed for search."""
