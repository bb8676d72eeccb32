"""Names -> import paths, one table, resolved lazily.

``ragkit`` never imports ``chunkers``, ``retrieval`` or ``generation`` directly: it reaches them
only through the strings below, so ``import ragkit`` stays light. Out-of-tree components are named
by their import path, ``"my_pkg.my_mod:MyChunker"``.
"""

from __future__ import annotations

import importlib

from ragkit.errors import ConfigError

_REGISTRY: dict[str, dict[str, str]] = {
    "chunker": {
        "fixed": "chunkers.fixed:FixedChunker",
        "recursive": "chunkers.recursive:RecursiveChunker",
        "sentence": "chunkers.sentence:SentenceChunker",
        "late": "chunkers.late:LateChunker",
        "semantic": "chunkers.semantic:SemanticChunker",
        "cluster": "chunkers.cluster:ClusterChunker",
        "code": "chunkers.code:CodeChunker",
        "lumber": "chunkers.lumber:LumberChunker",
        "perplexity": "chunkers.perplexity:PerplexityChunker",
        # peers, wrapped so they can be measured side by side with ragkit's own chunkers
        "langchain-recursive": "chunkers.langchain:LangChainRecursiveChunker",
        "langchain-token": "chunkers.langchain:LangChainTokenChunker",
    },
    "embedder": {
        "sentence-transformers": "retrieval.embedders:SentenceTransformerEmbedder",
        "hash": "ragkit.testing:HashEmbedder",
    },
    "index": {
        "memory": "retrieval.memory_index:MemoryIndex",
        "faiss": "retrieval.faiss_index:FaissIndex",
        "chroma": "retrieval.chroma_index:ChromaIndex",
        "bm25": "retrieval.bm25_index:BM25Index",
        "hybrid": "retrieval.hybrid:HybridIndex",
    },
    "generator": {
        "transformers": "generation.transformers_backend:TransformersGenerator",
        "vllm": "generation.vllm_backend:VLLMGenerator",
    },
    "kv_store": {
        "tiered": "generation.kv_store:TieredKVStore",
        "memory": "generation.kv_store:MemoryKVStore",
        "disk": "generation.kv_store:DiskKVStore",
    },
    "reranker": {
        "cross-encoder": "retrieval.rerankers:CrossEncoderReranker",
        "llm": "retrieval.rerankers:LLMReranker",
        "query-likelihood": "retrieval.rerankers:QueryLikelihoodReranker",
    },
    "engine": {  # ingestion: where reading, chunking and embedding run (ragkit.ingest)
        "local": "ragkit.ingest.local:LocalEngine",
        "ray": "ragkit.ingest.ray_engine:RayEngine",
    },
    "selector": {
        "top-k": "retrieval.selectors:TopK",
        "score-gap": "retrieval.selectors:ScoreGap",
        "mmr": "retrieval.selectors:MMR",
        "token-budget": "retrieval.selectors:TokenBudget",
        "neighbours": "retrieval.selectors:Neighbours",
    },
}


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
