"""ragkit retrieval: embedders and indexes (faiss, chroma, bm25 arrive with the index issue)."""
