"""Retrieval-augmented answers, data side: parsing, chunking, embeddings, vector stores, ingestion
and the retriever the worker calls.

Nothing here imports torch or opensearch-py at module load: the local embedding model and the
OpenSearch client load on first use.
"""
