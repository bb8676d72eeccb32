"""The RAG pipeline: chunk -> embed -> index -> retrieve (-> generate, with the generation issue).

Its shape is fixed: ``add(docs)``, ``retrieve(query)``, ``answer(query)``. Its fields are its
config, so a YAML file with ``chunker``, ``embedder``, ``index`` and ``k`` builds one::

    pipe = RAGPipeline.from_config(load_yaml("configs/quickstart.yaml"))
    pipe.add(load_documents("docs/"))
    for hit in pipe.retrieve("how do I reset my password?"):
        print(hit.citation, hit.chunk.text)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ragkit.config import COMPONENT_KIND, build, build_dataclass, model_spec, to_config
from ragkit.errors import ConfigError, IndexMismatchError, RagkitError
from ragkit.types import Answer, Chunk, Document, Hit

CONFIG_FILE = "pipeline.yaml"
INDEX_DIR = "index"


@dataclass
class AddReport:
    """What ``RAGPipeline.add`` did."""

    documents: int = 0
    unchanged: int = 0  # documents skipped: already indexed with the same text
    chunks: int = 0
    tokens: int = 0
    seconds: float = 0.0


@dataclass(kw_only=True)
class RAGPipeline:
    """Chunker, embedder and index, built from specs (dicts or names) or given as objects."""

    chunker: Any = field(
        default_factory=lambda: {"name": "recursive"}, metadata={COMPONENT_KIND: "chunker"}
    )
    embedder: Any = field(
        default_factory=lambda: {"name": "sentence-transformers"},
        metadata={COMPONENT_KIND: "embedder"},
    )
    index: Any = field(default_factory=lambda: {"name": "memory"}, metadata={COMPONENT_KIND: "index"})
    reranker: Any = field(default=None, metadata={COMPONENT_KIND: "reranker"})
    selector: Any = field(default=None, metadata={COMPONENT_KIND: "selector"})
    generator: Any = field(default=None, metadata={COMPONENT_KIND: "generator"})
    k: int = 5
    candidates: int | None = None  # hits fetched before reranking/selection (default: k, or 4k)
    batch_size: int = 64  # chunks embedded per call

    def __post_init__(self) -> None:
        for name in ("chunker", "embedder", "index"):
            setattr(self, name, build(name, getattr(self, name), path=name))
        for name in ("reranker", "selector", "generator"):
            if getattr(self, name) is not None:
                setattr(self, name, build(name, getattr(self, name), path=name))
        if self.candidates is not None and (
            isinstance(self.candidates, bool) or not isinstance(self.candidates, int)
            or self.candidates < 1
        ):
            raise ConfigError(f"must be an int >= 1 or null; got {self.candidates!r}",
                              path="candidates")
        for name in ("k", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be an int >= 1; got {value!r}", path=name)
        own = getattr(self.chunker, "embedder", None)
        if hasattr(self.chunker, "chunk_and_embed") and own is not None:
            if model_spec(own) != model_spec(self.embedder):
                raise ConfigError(
                    f"the chunker embeds chunks with {model_spec(own)} but queries would be "
                    f"embedded with {model_spec(self.embedder)}; give both the same model",
                    path="chunker.embedder",
                )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RAGPipeline:
        """Validate a config mapping (e.g. from ``load_yaml``) and build the pipeline."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"a pipeline config must be a mapping; got {type(config).__name__}")
        return build_dataclass(cls, config)

    def to_config(self) -> dict[str, Any]:
        return to_config(self)

    # -- the three verbs ------------------------------------------------------------------------

    def add(self, docs: Iterable[Document]) -> AddReport:
        """Chunk, embed and index ``docs``. A document already indexed with the same text is
        skipped (content hash); one whose text changed has its old chunks replaced."""
        report = AddReport()
        t0 = time.perf_counter()
        self._bind_index()
        pending: list[Chunk] = []
        for doc in docs:
            if not isinstance(doc, Document):
                raise TypeError(f"RAGPipeline.add takes Documents; got {type(doc).__name__}")
            digest = doc.content_hash
            if hasattr(self.index, "doc_hash") and self.index.doc_hash(doc.id) == digest:
                report.unchanged += 1
                continue
            self.index.delete([doc.id])
            if hasattr(self.chunker, "chunk_and_embed"):  # e.g. late chunking: its own vectors
                chunks, vecs = self.chunker.chunk_and_embed(doc)
                chunks = _stamp(chunks, digest)
                if chunks:
                    self.index.add(chunks, vecs)
                report.documents += 1
                report.chunks += len(chunks)
                report.tokens += sum(int(c.metadata.get("tokens", 0)) for c in chunks)
                continue
            chunks = _stamp(self.chunker.chunk(doc), digest)
            report.documents += 1
            report.chunks += len(chunks)
            report.tokens += sum(int(c.metadata.get("tokens", 0)) for c in chunks)
            pending.extend(chunks)
            while len(pending) >= self.batch_size:
                self._index(pending[: self.batch_size])
                del pending[: self.batch_size]
        if pending:
            self._index(pending)
        report.seconds = time.perf_counter() - t0
        return report

    def retrieve(
        self, query: str, k: int | None = None, filter: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """The hits for ``query``, best first: ``candidates`` from the index, reranked if a
        reranker is configured, then ``k`` of them (default: the pipeline's ``k``) chosen by the
        selector (default: the first ``k``)."""
        if not isinstance(query, str) or not query.strip():
            raise RagkitError(f"query must be a non-empty string; got {query!r}")
        self._check_built_with("embedder", model_spec(self.embedder))
        k = k or self.k
        refine = self.reranker is not None or self.selector is not None
        n = self.candidates or (4 * k if refine else k)
        vec = self.embedder.embed([query])
        hits = self.index.search(vec, max(n, k), filter=filter, queries=[query])[0]
        if self.reranker is not None:
            hits = self.reranker.rerank(query, hits)
        if self.selector is None:
            return list(hits[:k])
        from ragkit.retrieval.base import SelectionContext

        context = SelectionContext(query_vec=vec[0], embed=self.embedder.embed, index=self.index)
        return self.selector.select(query, hits, context)  # the selector decides how many

    def answer(self, query: str, k: int | None = None, stream: Any = None) -> Answer:
        """Retrieve, then generate an answer from the hits (its citations). Without a
        generator, ``Answer.text`` is ``None`` and the cited hits are the whole answer.
        ``stream(piece)`` is called with each generated piece of text as it comes."""
        t0 = time.perf_counter()
        hits = self.retrieve(query, k)
        retrieve_s = time.perf_counter() - t0
        if self.generator is None:
            return Answer(query, None, hits, {"retrieve_s": retrieve_s})
        answer = self.generator.generate(query, hits, stream=stream)
        return replace(answer, timings={"retrieve_s": retrieve_s, **answer.timings})

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the config and the index to folder ``path`` (the index must support ``save``)."""
        import yaml

        path = Path(path)
        if not hasattr(self.index, "save"):
            raise RagkitError(f"index {type(self.index).__name__} cannot be saved to a folder")
        path.mkdir(parents=True, exist_ok=True)
        self.index.save(path / INDEX_DIR)
        tmp = path / (CONFIG_FILE + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_config(), sort_keys=False), encoding="utf-8")
        tmp.replace(path / CONFIG_FILE)

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> RAGPipeline:
        """The pipeline saved in folder ``path``.

        ``overrides`` (``"key.sub=value"``) may change what is decided at query time: ``k``,
        ``candidates``, the reranker, the selector, the generator, and the index settings its
        class lists in ``QUERY_TIME`` (e.g. faiss ``ef_search``/``nprobe``, hybrid ``fusion``).
        Anything fixed when the index was built (chunker, embedder, other index keys) is refused
        with a ConfigError naming the key: change it by building a new index.
        """
        from ragkit.config import apply_overrides, load_yaml

        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise RagkitError(
                f"{str(path)!r} is not a saved ragkit index (no {CONFIG_FILE}); "
                "build one with `ragkit index`"
            )
        saved = load_yaml(path / CONFIG_FILE)
        config = apply_overrides(saved, list(overrides))
        for section in ("chunker", "embedder"):
            if config.get(section) != saved.get(section):
                raise ConfigError(
                    f"fixed when the index was built (saved: {saved.get(section)!r}); build a "
                    "new index to change it", path=section,
                )
        pipe = cls.from_config(config)  # validates every overridden value
        index = type(pipe.index).load(path / INDEX_DIR)
        _apply_query_time(index, pipe.index, saved.get("index"), config.get("index"), "index")
        pipe.index = index
        return pipe

    def _bind_index(self) -> None:
        """Record what the index is built with, or refuse a pipeline that differs from it."""
        info = getattr(self.index, "info", None)
        if info is None:
            return
        want = {"embedder": model_spec(self.embedder), "chunker": to_config(self.chunker, "chunker")}
        if not info and len(self.index) == 0:
            info.update(want)
            return
        for key, spec in want.items():
            self._check_built_with(key, spec)

    def _check_built_with(self, key: str, spec: dict[str, Any]) -> None:
        built = (getattr(self.index, "info", None) or {}).get(key)
        if built is not None and built != spec:
            raise IndexMismatchError(
                f"the index was built with {key} {built}, but this pipeline uses {spec}; "
                f"use the same {key} (or build a new index) so vectors stay comparable"
            )

    def _index(self, chunks: list[Chunk]) -> None:
        vecs = self.embedder.embed([c.text for c in chunks])
        self.index.add(chunks, vecs)



def _stamp(chunks: list[Chunk], digest: str) -> list[Chunk]:
    """The chunks with their document's content hash in metadata (``doc_hash``)."""
    return [replace(c, metadata={**c.metadata, "doc_hash": digest}) for c in chunks]


def _apply_query_time(loaded: Any, built: Any, old: Any, new: Any, path: str) -> None:
    """Copy onto the ``loaded`` index the keys that changed between its saved config ``old`` and
    ``new`` (validated in ``built``), if its class allows them at query time; refuse others."""
    if old == new:
        return
    old = old if isinstance(old, Mapping) else {"name": old}
    new = new if isinstance(new, Mapping) else {"name": new}
    allowed = sorted(getattr(type(loaded), "QUERY_TIME", ()))
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        here = f"{path}.{key}"
        child = getattr(loaded, key, None)
        if key != "name" and isinstance(new.get(key), Mapping) and hasattr(child, "search"):
            _apply_query_time(child, getattr(built, key), old.get(key), new.get(key), here)
        elif key in allowed:
            setattr(loaded, key, getattr(built, key))
        else:
            can = f"settings that can change on a saved {type(loaded).__name__}: " + (
                ", ".join(allowed) if allowed else "none")
            raise ConfigError(
                f"fixed when the index was built (saved: {old.get(key)!r}); {can}; build a new "
                "index to change it", path=here,
            )
