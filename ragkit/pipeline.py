"""The RAG pipeline: chunk -> embed -> index -> retrieve (-> generate, with the generation issue).

Its shape is fixed: ``add(docs)``, ``retrieve(query)``, ``answer(query)``. Its fields are its
config, so a YAML file with ``chunker``, ``embedder``, ``index`` and ``k`` builds one::

    pipe = RAGPipeline.from_config(load_yaml("configs/quickstart.yaml"))
    pipe.add(load_documents("docs/"))
    for hit in pipe.retrieve("how do I reset my password?"):
        print(hit.citation, hit.chunk.text)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ragkit.concurrency import Guarded
from ragkit.config import COMPONENT_KIND, build, build_dataclass, model_spec, to_config
from ragkit.doclog import Delete, DocumentInfo, Put
from ragkit.errors import ConfigError, IndexMismatchError, RagkitError
from ragkit.protocols import (
    ChunksAndEmbeds,
    HasDocHash,
    HasEmbedder,
    Persistent,
    PersistsWrites,
    QueryTimeSettings,
    RebuildsStore,
    RecordsInfo,
    provides,
)
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
        # State, not config: the folder this pipeline writes to and its log (``load``/``save``),
        # the last log operation applied to the index, and the lock that orders this process's
        # writers (log first, then index, in the same order).
        self._folder: Path | None = None
        self._log: Any = None
        self._applied = 0
        self._writer = threading.RLock()
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
        own = self.chunker.embedder if isinstance(self.chunker, HasEmbedder) else None
        if isinstance(self.chunker, ChunksAndEmbeds) and own is not None:
            if model_spec(own) != model_spec(self.embedder):
                raise ConfigError(
                    f"the chunker embeds chunks with {model_spec(own)} but queries would be "
                    f"embedded with {model_spec(self.embedder)}; give both the same model",
                    path="chunker.embedder",
                )
        own = self.index.embedder if isinstance(self.index, HasEmbedder) else None
        if own is not None and model_spec(own) != model_spec(self.embedder):
            raise ConfigError(
                f"the index embeds sentences with {model_spec(own)} but queries would be "
                f"embedded with {model_spec(self.embedder)}; give both the same model",
                path="index.embedder",
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, allow_import: bool = False) -> RAGPipeline:
        """Validate a config mapping (e.g. from ``load_yaml``) and build the pipeline.
        ``allow_import``: let it name components by import path (``pkg.mod:Class``), which runs
        that module's code; see ``ragkit.registry``."""
        from ragkit.registry import imports_allowed

        if not isinstance(config, Mapping):
            raise ConfigError(f"a pipeline config must be a mapping; got {type(config).__name__}")
        with imports_allowed(allow_import):
            return build_dataclass(cls, config)

    def to_config(self) -> dict[str, Any]:
        return to_config(self)

    # -- the three verbs ------------------------------------------------------------------------

    def add(self, docs: Iterable[Document]) -> AddReport:
        """Chunk, embed and index ``docs``. A document already indexed with the same text is
        skipped (content hash); one whose text changed has its old chunks replaced.

        Each document goes in whole or not at all: its chunks, vectors and content hash are
        committed together (``commit``), and readers on other threads see it entirely before or
        entirely after. On a pipeline with a folder (``load``/``save``) a document is durable
        once ``add`` has passed it: the folder's log holds it, so a crash loses none of it."""
        report = AddReport()
        t0 = time.perf_counter()
        self.bind_index()
        group: list[tuple[Document, list[Chunk], Any]] = []  # chunked, not yet committed
        waiting = 0  # chunks in ``group`` still to embed
        for doc in docs:
            if not isinstance(doc, Document):
                raise TypeError(f"RAGPipeline.add takes Documents; got {type(doc).__name__}")
            digest = doc.content_hash
            if self.doc_hash(doc.id) == digest:
                report.unchanged += 1
                continue
            if isinstance(self.chunker, ChunksAndEmbeds):  # e.g. late chunking: its own vectors
                chunks, vecs = self.chunker.chunk_and_embed(doc)
                chunks = stamp(chunks, digest)
            else:
                chunks, vecs = stamp(self.chunker.chunk(doc), digest), None
                waiting += len(chunks)
            group.append((doc, chunks, vecs))
            report.documents += 1
            report.chunks += len(chunks)
            report.tokens += sum(int(c.metadata.get("tokens", 0)) for c in chunks)
            if waiting >= self.batch_size:
                self._commit_group(group)
                group, waiting = [], 0
        if group:
            self._commit_group(group)
        report.seconds = time.perf_counter() - t0
        return report

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Remove every chunk of the given documents (durably, on a pipeline with a folder);
        returns how many chunks were removed. Unknown ids are ignored."""
        if isinstance(doc_ids, str):
            raise TypeError("delete takes a sequence of document ids, not a single str")
        return self.commit([Delete(str(d)) for d in doc_ids])

    def doc_hash(self, doc_id: str) -> str | None:
        """The content hash the index holds for document ``doc_id``, or ``None``."""
        if self._log is not None:
            return self._log.hash_of(doc_id)
        if isinstance(self.index, HasDocHash):
            return self.index.doc_hash(doc_id)
        return None

    def documents(self, offset: int = 0, limit: int | None = None) -> list[DocumentInfo]:
        """The indexed documents (id, source, content hash, number of chunks), by id."""
        if self._log is not None:
            return self._log.documents(offset, limit)
        docs = _documents_of(self.index)
        ids = sorted(docs)[offset : None if limit is None else offset + limit]
        return [docs[i] for i in ids]

    def commit(self, ops: Sequence[Put | Delete]) -> int:
        """The one write step under ``add``, ``delete``, ``ragkit index`` and the server: write
        ``ops`` to the folder's log in one transaction (if the pipeline has a folder), then apply
        them to the index in one write (``Put`` replaces a document's chunks with its new ones,
        ``Delete`` removes them). Returns how many chunks were removed."""
        for op in ops:
            if not isinstance(op, (Put, Delete)):
                raise TypeError(f"commit takes Put and Delete operations; got {type(op).__name__}")
        if not ops:
            return 0
        with self._writer:
            seq = 0
            if self._log is not None:
                self._log.acquire_writer()
                seq = self._log.commit(ops)
            removed = self._apply(ops)
            if self._log is not None:
                self._applied = seq
                if _persists_writes(self.index, self._folder):
                    self._log.checkpoint(seq)
        return removed

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
        if not provides(self.index, Persistent):
            raise RagkitError(f"index {type(self.index).__name__} cannot be saved to a folder")
        path.mkdir(parents=True, exist_ok=True)
        with self._writer, _reading(self.index):  # a snapshot of whole documents
            seq = self._applied
            self.index.save(path / INDEX_DIR)
            tmp = path / (CONFIG_FILE + ".tmp")
            tmp.write_text(yaml.safe_dump(self.to_config(), sort_keys=False), encoding="utf-8")
            tmp.replace(path / CONFIG_FILE)
            if self._folder is None or self._folder.resolve() != path.resolve():
                self._open_folder(path, fresh=True)  # the folder this pipeline now writes to
            else:
                self._log.checkpoint(seq)  # the snapshot holds everything up to seq

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = (), *,
             allow_import: bool = False) -> RAGPipeline:
        """The pipeline saved in folder ``path``.

        ``overrides`` (``"key.sub=value"``) may change what is decided at query time: ``k``,
        ``candidates``, the reranker, the selector, the generator, and the index settings its
        class lists in ``QUERY_TIME`` (e.g. faiss ``ef_search``/``nprobe``, hybrid ``fusion``).
        Anything fixed when the index was built (chunker, embedder, other index keys) is refused
        with a ConfigError naming the key: change it by building a new index. A saved config
        that names a component by import path is refused unless ``allow_import`` (loading an
        index someone hands you never runs code you have not allowed).

        The pipeline writes to ``path`` from now on: ``add`` and ``delete`` are durable there as
        soon as they return (the folder's log; ``save`` writes a new snapshot). What a crash left
        in the log is applied now. Another process's writes appear after ``reload()``.
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
        pipe = cls.from_config(config, allow_import=allow_import)  # validates every override
        from ragkit.retrieval.index_files import StoreDamagedError

        try:
            index = type(pipe.index).load(path / INDEX_DIR)
        except StoreDamagedError as damaged:  # rebuilt from the log's copy, if it has one
            from ragkit.store_repair import rebuild_store

            index = rebuild_store(pipe, path, damaged)
        _apply_query_time(index, pipe.index, saved.get("index"), config.get("index"), "index")
        pipe.index = index
        pipe._open_folder(path)
        return pipe

    def reload(self) -> int:
        """See what another process committed to this pipeline's folder since it was opened
        (a reader process does not see other writers' documents until it reloads). Returns the
        number of operations applied."""
        if self._log is None:
            raise RagkitError("reload needs a pipeline opened from a folder (RAGPipeline.load)")
        with self._writer:
            if self._log.checkpoint_seq() > self._applied:  # the log was compacted: reopen
                fresh = type(self.index).load(self._folder / INDEX_DIR)
                for key in getattr(type(fresh), "QUERY_TIME", ()):
                    setattr(fresh, key, getattr(self.index, key))
                self._applied = self._log.checkpoint_seq()
                n = self._replay(fresh)
                self.index = fresh
                return n
            return self._replay(self.index)

    def close(self) -> None:
        """Release the folder's log (and its write lock, if this process took it)."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RAGPipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the folder's log -----------------------------------------------------------------------

    def _open_folder(self, path: Path, *, fresh: bool = False) -> None:
        """Bind the pipeline to folder ``path`` and its log; replay what the snapshot lacks.
        ``fresh``: the snapshot was just written from this pipeline's index."""
        from ragkit.doclog import DocLog

        if self._log is not None:
            self._log.close()
        self._folder, self._log = Path(path), DocLog(path)
        if fresh or (self._log.last_seq() == 0 and self._log.count() == 0):
            new_log = self._log.last_seq() == 0 and self._log.count() == 0
            if new_log and isinstance(self.index, RebuildsStore) and (
                    self.index.keeps_store_in_folder()):
                self._log.keep_copy(_puts_of(self.index))  # a new log: keep every document
            elif self._log.count() == 0 and len(self.index):  # a folder saved before the log
                self._log.seed(_documents_of(self.index))
            self._applied = self._log.last_seq()
            self._log.checkpoint(self._applied)
            return
        self._applied = self._log.checkpoint_seq()
        self._replay(self.index)

    def _replay(self, index: Any) -> int:
        """Apply the log's operations after the last one applied (repairing a crash)."""
        n = 0
        with _writing(index):
            for seq, op in self._log.pending(self._applied):
                self._apply([op], index)
                self._applied, n = seq, n + 1
        if n and _persists_writes(index, self._folder):
            self._log.checkpoint(self._applied)
        return n

    def _apply(self, ops: Sequence[Put | Delete], index: Any = None) -> int:
        index = self.index if index is None else index
        removed = 0
        with _writing(index):
            for op in ops:
                if isinstance(op, Delete):
                    removed += index.delete([op.doc_id])
                elif isinstance(index, Guarded):
                    removed += index.replace([op.doc_id], op.chunks, op.vecs)
                else:
                    removed += index.delete([op.doc_id])
                    if op.chunks:
                        index.add(op.chunks, op.vecs)
        return removed

    def _commit_group(self, group: list[tuple[Document, list[Chunk], Any]]) -> None:
        """Embed the chunks of ``group`` that have no vectors yet, then commit its documents."""
        texts = [c.text for _, chunks, vecs in group if vecs is None for c in chunks]
        embedded = self._embed(texts)
        ops, at = [], 0
        for doc, chunks, vecs in group:
            if vecs is None:
                vecs, at = embedded[at : at + len(chunks)], at + len(chunks)
            ops.append(Put(doc.id, doc.metadata.get("source"), doc.content_hash, chunks, vecs))
        self.commit(ops)

    def _embed(self, texts: list[str]) -> Any:
        from ragkit.retrieval.embedders import embed_sorted

        return embed_sorted(self.embedder, texts, self.batch_size)

    def bind_index(self) -> None:
        """Record in the index what it is built with (chunker, embedder), or refuse, with an
        ``IndexMismatchError``, a pipeline that differs from what it was built with."""
        info = self.index.info if isinstance(self.index, RecordsInfo) else None
        if info is None:
            return
        want = {"embedder": model_spec(self.embedder), "chunker": to_config(self.chunker, "chunker")}
        if not info and len(self.index) == 0:
            info.update(want)
            return
        for key, spec in want.items():
            self._check_built_with(key, spec)

    def _check_built_with(self, key: str, spec: dict[str, Any]) -> None:
        built = ((self.index.info if isinstance(self.index, RecordsInfo) else None) or {}).get(key)
        if built is not None and built != spec:
            raise IndexMismatchError(
                f"the index was built with {key} {built}, but this pipeline uses {spec}; "
                f"use the same {key} (or build a new index) so vectors stay comparable"
            )


def _persists_writes(index: Any, folder: Path | None) -> bool:
    """Whether ``index`` makes each write durable itself where ``folder`` points (Chroma), so
    the log need not keep it."""
    return folder is not None and isinstance(index, PersistsWrites) and index.persists_writes(folder)


def _writing(index: Any) -> Any:
    return index.lock.write() if isinstance(index, Guarded) else nullcontext()


def _reading(index: Any) -> Any:
    return index.lock.read() if isinstance(index, Guarded) else nullcontext()


def _documents_of(index: Any) -> dict[str, DocumentInfo]:
    """Per document, what an index's chunks say of it (for a folder saved before the log)."""
    docs: dict[str, DocumentInfo] = {}
    for c in index.chunks():
        d = docs.get(c.doc_id)
        docs[c.doc_id] = DocumentInfo(c.doc_id, c.metadata.get("source"),
                                      c.metadata.get("doc_hash"), (d.chunks if d else 0) + 1)
    return docs


def _puts_of(index: Any) -> list[Put]:
    """Every document of ``index`` as a put (the first copy in a new folder's log)."""
    return [Put(c[0].doc_id, c[0].metadata.get("source"), c[0].metadata.get("doc_hash"), c, v)
            for c, v in index.documents_with_vectors()]


def stamp(chunks: list[Chunk], digest: str) -> list[Chunk]:
    """The chunks with their document's content hash in metadata (``doc_hash``)."""
    return [replace(c, metadata={**c.metadata, "doc_hash": digest}) for c in chunks]


def _apply_query_time(loaded: Any, built: Any, old: Any, new: Any, path: str) -> None:
    """Copy onto the ``loaded`` index the keys that changed between its saved config ``old`` and
    ``new`` (validated in ``built``), if its class allows them at query time; refuse others."""
    from ragkit.retrieval.base import Index

    if old == new:
        return
    old = old if isinstance(old, Mapping) else {"name": old}
    new = new if isinstance(new, Mapping) else {"name": new}
    allowed = sorted(loaded.QUERY_TIME) if isinstance(loaded, QueryTimeSettings) else []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        here = f"{path}.{key}"
        child = getattr(loaded, key, None)
        if key != "name" and isinstance(new.get(key), Mapping) and isinstance(child, Index):
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
