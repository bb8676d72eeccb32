"""ragkit retrieval: embedders, the embedding cache, indexes (memory, faiss, chroma, bm25, hybrid), rerankers and selectors."""
