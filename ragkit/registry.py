"""Names -> import paths, one table, resolved lazily.

``ragkit`` never imports ``chunkers``, ``retrieval`` or ``generation`` directly: it reaches them
only through the strings below, so ``import ragkit`` stays light. Out-of-tree components are named
by their import path, ``"my_pkg.my_mod:MyChunker"``, but only where the user allows it: importing
a module runs its code, so a config (or the ``pipeline.yaml`` inside an index folder someone hands
you) must not be able to import anything by itself. Allow imports with ``RAGKIT_ALLOW_IMPORT=1``,
the CLI's ``--allow-import``, ``allow_imports(True)`` or ``with imports_allowed():`` (what
``RAGPipeline.from_config(..., allow_import=True)`` and ``load(..., allow_import=True)`` do).
Paths inside ``ragkit`` itself run no foreign code and are always allowed.
"""

from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from contextvars import ContextVar
from collections.abc import Iterator

from ragkit.errors import ConfigError

_REGISTRY: dict[str, dict[str, str]] = {
    "chunker": {
        "fixed": "ragkit.chunkers.fixed:FixedChunker",
        "recursive": "ragkit.chunkers.recursive:RecursiveChunker",
        "sentence": "ragkit.chunkers.sentence:SentenceChunker",
        "late": "ragkit.chunkers.late:LateChunker",
        "semantic": "ragkit.chunkers.semantic:SemanticChunker",
        "cluster": "ragkit.chunkers.cluster:ClusterChunker",
        "code": "ragkit.chunkers.code:CodeChunker",
        "lumber": "ragkit.chunkers.lumber:LumberChunker",
        "perplexity": "ragkit.chunkers.perplexity:PerplexityChunker",
        # peers, wrapped so they can be measured side by side with ragkit's own chunkers
        "langchain-recursive": "ragkit.chunkers.langchain:LangChainRecursiveChunker",
        "langchain-token": "ragkit.chunkers.langchain:LangChainTokenChunker",
    },
    "embedder": {
        "sentence-transformers": "ragkit.retrieval.embedders:SentenceTransformerEmbedder",
        "model2vec": "ragkit.retrieval.static:Model2VecEmbedder",
        "hash": "ragkit.testing:HashEmbedder",
    },
    "index": {
        "memory": "ragkit.retrieval.memory_index:MemoryIndex",
        "faiss": "ragkit.retrieval.faiss_index:FaissIndex",
        "chroma": "ragkit.retrieval.chroma_index:ChromaIndex",
        "bm25": "ragkit.retrieval.bm25_index:BM25Index",
        "hybrid": "ragkit.retrieval.hybrid:HybridIndex",
        "sentence-vectors": "ragkit.retrieval.sentence_index:SentenceVectorIndex",
    },
    "generator": {
        "transformers": "ragkit.generation.transformers_backend:TransformersGenerator",
        "vllm": "ragkit.generation.vllm_backend:VLLMGenerator",
    },
    "kv_store": {
        "tiered": "ragkit.generation.kv_store:TieredKVStore",
        "memory": "ragkit.generation.kv_store:MemoryKVStore",
        "disk": "ragkit.generation.kv_store:DiskKVStore",
    },
    "reranker": {
        "cross-encoder": "ragkit.retrieval.rerankers:CrossEncoderReranker",
        "llm": "ragkit.retrieval.rerankers:LLMReranker",
        "query-likelihood": "ragkit.retrieval.rerankers:QueryLikelihoodReranker",
    },
    "engine": {  # ingestion: where reading, chunking and embedding run (ragkit.ingest)
        "local": "ragkit.ingest.local:LocalEngine",
        "ray": "ragkit.ingest.ray_engine:RayEngine",
    },
    "selector": {
        "top-k": "ragkit.retrieval.selectors:TopK",
        "score-gap": "ragkit.retrieval.selectors:ScoreGap",
        "mmr": "ragkit.retrieval.selectors:MMR",
        "token-budget": "ragkit.retrieval.selectors:TokenBudget",
        "neighbours": "ragkit.retrieval.selectors:Neighbours",
        "sentence-refine": "ragkit.retrieval.refiners:SentenceRefiner",
        "set-refine": "ragkit.retrieval.set_refiner:SetRefiner",
    },
}


_allowed: ContextVar[bool] = ContextVar("ragkit_allow_import", default=False)
_allowed_globally = False


def allow_imports(allow: bool = True) -> None:
    """Allow (or stop allowing) ``package.module:Class`` import paths in configs, process-wide."""
    global _allowed_globally
    _allowed_globally = bool(allow)
    if allow:  # worker processes (the Ray engine) build the same config
        os.environ["RAGKIT_ALLOW_IMPORT"] = "1"
    else:
        os.environ.pop("RAGKIT_ALLOW_IMPORT", None)


@contextmanager
def imports_allowed(allow: bool = True) -> Iterator[None]:
    """Allow import paths in configs within the block (this thread or task only)."""
    token = _allowed.set(bool(allow) or _allowed.get())
    try:
        yield
    finally:
        _allowed.reset(token)


def imports_are_allowed() -> bool:
    return _allowed_globally or _allowed.get() or os.environ.get("RAGKIT_ALLOW_IMPORT") == "1"


def kinds() -> list[str]:
    return sorted(_REGISTRY)


# Components that wrap another library for side-by-side measurement. They keep that library's
# behaviour, so ragkit's contracts (size budget, exact coverage) are not promised for them.
PEERS = frozenset({"langchain-recursive", "langchain-token"})


def names(kind: str, *, peers: bool = False) -> list[str]:
    """Registered names of a kind, in registration order; ``peers=True`` adds the peer wrappers."""
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown component kind {kind!r}; choose one of {', '.join(kinds())}")
    return [n for n in _REGISTRY[kind] if peers or n not in PEERS]


def import_path(kind: str, name: str) -> str:
    if ":" in name:
        module = name.partition(":")[0]
        if not (module == "ragkit" or module.startswith("ragkit.")) and not imports_are_allowed():
            raise ConfigError(
                f"{kind} {name!r} is an import path, and importing a module runs its code; "
                "allow it with --allow-import (CLI), RAGKIT_ALLOW_IMPORT=1, or "
                "allow_import=True (Python), or use a registered name")
        return name
    table = _REGISTRY.get(kind)
    if table is None:
        raise ConfigError(f"unknown component kind {kind!r}; choose one of {', '.join(kinds())}")
    if name not in table:
        raise ConfigError(
            f"unknown {kind} {name!r}; choose one of {', '.join(table)} "
            "(or an import path 'package.module:Class')"
        )
    return table[name]


def resolve(kind: str, name: str) -> type:
    """The class registered as ``name`` (or at import path ``name``) for ``kind``."""
    path = import_path(kind, name)
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{kind} import path {name!r} must look like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"{kind} {name!r}: module {module_name!r} not found") from exc
        raise
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{kind} {name!r}: module {module_name!r} has no {attr!r}") from None


def name_of(kind: str, cls: type) -> str:
    """The registered name of ``cls``, or its import path if it is not registered."""
    path = f"{cls.__module__}:{cls.__qualname__}"
    for name, registered in _REGISTRY.get(kind, {}).items():
        if registered == path:
            return name
    return path


def register(kind: str, name: str, path: str) -> None:
    """Register an out-of-tree component under a short name (``path`` is ``'pkg.mod:Class'``)."""
    if ":" not in path:
        raise ConfigError(f"register: path must look like 'package.module:Class'; got {path!r}")
    _REGISTRY.setdefault(kind, {})[name] = path
