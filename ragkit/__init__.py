"""ragkit: pluggable chunking, retrieval and generation, measured.

``import ragkit`` is light: the core types, errors and config helpers. Components (chunkers,
embedders, indexes, generators) are imported on first use through the registry.
"""

from ragkit.config import build, load_yaml, to_config
from ragkit.errors import (
    ConfigError,
    DocumentError,
    IndexMismatchError,
    MissingDependencyError,
    RagkitError,
)
from ragkit.types import Answer, Chunk, Document, Hit

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "Chunk",
    "ConfigError",
    "Document",
    "DocumentError",
    "Hit",
    "IndexMismatchError",
    "MissingDependencyError",
    "RAGPipeline",
    "RagkitError",
    "build",
    "load_documents",
    "load_yaml",
    "show",
    "to_config",
]


def __getattr__(name: str):  # lazy: the pipeline and loaders pull in numpy
    if name == "RAGPipeline":
        from ragkit.pipeline import RAGPipeline

        return RAGPipeline
    if name == "load_documents":
        from ragkit.loaders import load_documents

        return load_documents
    if name == "show":  # the chunk view (ragkit.view): stdlib only, loaded when first used
        from ragkit.view import show

        return show
    raise AttributeError(f"module 'ragkit' has no attribute {name!r}")
