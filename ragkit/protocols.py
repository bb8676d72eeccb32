"""What a component can do, declared: one ``typing.Protocol`` per ability, checked with
``isinstance`` instead of probing for a method by name.

This module is kernel: it imports nothing of ragkit's but the core types, and nothing heavy
(numpy only for annotations). A component does not inherit from these; it just has the methods,
and ``isinstance(obj, Embeds)`` says whether it does. The roles a pipeline stage must play
(``Index``, ``Reranker``, ``Selector``) stay in their package's ``base.py``; ``Chunker`` is here
(and re-exported by ``ragkit.chunkers.base``) because the kernel's chunk view checks it. The
optional abilities that more than one layer asks about live here:

- models: ``Embeds``, ``Completes``, ``ScoresOptions``, ``TokenLogprobLLM``, ``Fingerprinted``,
  ``NamesTokenizer``, ``LimitsTextTokens``, ``LimitsTokens``, ``NamesModel``, ``LoadsModel``;
- text: ``Tokenizer`` (counts tokens), ``SplitsAtWordEnds``, ``SplitsAtAsciiEdges``,
  ``ReadsTokenizerFile``;
- chunkers: ``Chunker`` (the role), ``ChunksAndEmbeds`` (late chunking), ``HasEmbedder``,
  ``CountsInTokenizer``, ``HasChunkSize``, ``TakesFileSuffixes``;
- indexes: ``HasDocHash``, ``ListsChunks``, ``HasDocChunks``, ``Persistent``, ``RecordsInfo``,
  ``QueryTimeSettings``, ``HasSentenceVectors``;
- generation: ``StreamsTokens`` (the generator role), ``StreamsConcurrently``, ``WarmsKV``,
  ``CachesKV``, ``HasKVStore``;
- anything: ``KeepsStats``, ``Closes``, ``HasWorkers``.

An ability held in a data attribute is a protocol member like a method. On Python < 3.12,
``isinstance`` reads such a member, which runs a property; ``provides(obj, P)`` checks the same
members without running anything (what ``isinstance`` does from 3.12 on), for abilities whose
property is costly (a generator's ``fingerprint`` loads the model).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from ragkit.types import Answer, Chunk, Document, Hit

ProgressCallback = Callable[[int, int], None]  # (done, total)
StreamCallback = Callable[[str], None]  # receives each new piece of decoded text


# -- models ---------------------------------------------------------------------------------------


@runtime_checkable
class Embeds(Protocol):
    """Turns texts into L2-normalised float32 vectors of shape ``(len(texts), dim)``."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class Completes(Protocol):
    """Text completion, for components that prompt a model (rerankers, LLM chunkers, judges):
    the model's answer to ``prompt``."""

    def complete(self, prompt: str) -> str: ...


@runtime_checkable
class ScoresOptions(Protocol):
    """The natural-log probability of each of ``options`` as the continuation of ``prompt`` (all
    of an option's tokens). Missing options count as impossible."""

    def score(self, prompt: str, options: Sequence[str]) -> dict[str, float]: ...


@runtime_checkable
class TokenLogprobLLM(Protocol):
    """Per-token log-probabilities of a text read as one running text (the ``perplexity``
    chunker, the query-likelihood reranker, MoC's chunk-quality metrics).

    ``token_logprobs(segments)`` returns, for each segment, a float array with the natural-log
    probability of each of its tokens given everything before it (earlier segments and the
    segment's own earlier tokens), read after one document-start token. Past ``window`` tokens
    the context slides: every token sees between ``window // 2`` and ``window`` tokens before it.
    ``progress(done, total)``, if given, is called with token counts as the work advances.
    """

    def token_logprobs(
        self,
        segments: Sequence[str],
        *,
        window: int = 1024,
        progress: ProgressCallback | None = None,
    ) -> list[Any]: ...


@runtime_checkable
class Fingerprinted(Protocol):
    """What, besides the input, determines a model's output (weights, tokenizer, dtype): a
    JSON-safe value that keys caches of its results. Check it with ``provides`` (reading it may
    load the model)."""

    @property
    def fingerprint(self) -> Any: ...


@runtime_checkable
class NamesTokenizer(Protocol):
    """A model that names the ragkit tokenizer counting in its own tokens (``tokenizer``), so
    chunk sizes can be counted as it counts them. Check it with ``provides`` (the name may
    come from the loaded model)."""

    @property
    def tokenizer(self) -> str: ...


@runtime_checkable
class LimitsTextTokens(Protocol):
    """The longest text, in tokens of its ``tokenizer`` (no special tokens), a model reads
    without cutting. Check it with ``provides``."""

    @property
    def max_text_tokens(self) -> int: ...


@runtime_checkable
class LimitsTokens(Protocol):
    """The longest input a model reads, special tokens included (``None``: no limit). Check it
    with ``provides``."""

    @property
    def max_tokens(self) -> int | None: ...


@runtime_checkable
class NamesModel(Protocol):
    """A component built on a named model (``model``: a name or a local folder)."""

    model: Any


@runtime_checkable
class LoadsModel(Protocol):
    """A component whose model loads on first use and can be loaded now with ``load_model()``
    (a command loads it before it starts answering, a server before it says it is ready)."""

    def load_model(self) -> None: ...


# -- text -----------------------------------------------------------------------------------------


@runtime_checkable
class Tokenizer(Protocol):
    """Counts tokens and says where each starts (char offsets), so token spans come from char
    spans (``ragkit.tokenizers``)."""

    name: str

    def count(self, text: str) -> int: ...

    def token_starts(self, text: str) -> np.ndarray: ...


@runtime_checkable
class SplitsAtWordEnds(Protocol):
    """A tokenizer that declares ``splits_at_word_ends``: when true, its tokens never cross a
    word end, so counts of adjacent spans add up (``ragkit.tokenizers`` module docstring)."""

    splits_at_word_ends: bool


@runtime_checkable
class SplitsAtAsciiEdges(Protocol):
    """A tokenizer that declares ``splits_at_ascii_edges``: when true, counts add up at every
    ASCII edge too."""

    splits_at_ascii_edges: bool


@runtime_checkable
class ReadsTokenizerFile(Protocol):
    """A tokenizer loaded from a file (``hf:<path>``): two with the same ``path`` are the same."""

    path: str | Path


# -- chunkers -------------------------------------------------------------------------------------


@runtime_checkable
class Chunker(Protocol):
    """The chunker role: ``chunk(doc)`` -> the document's chunks, in order."""

    def chunk(self, doc: Document) -> list[Chunk]: ...


@runtime_checkable
class ChunksBySpans(Protocol):
    """A chunker that can give its chunks as ``(start, end, tokens)`` triples without making
    them: ``chunk(doc)`` is then exactly those spans' chunks, numbered in order, each with the
    document's metadata plus ``tokens`` (``ragkit.chunkers.base.make_chunks``). Callers that take
    a huge document's chunks one at a time (``iter_chunks``) never hold them all."""

    def chunk_spans(self, doc: Document) -> list[tuple[int, int, int]]: ...


@runtime_checkable
class HasChunkSize(Protocol):
    """A chunker with a size budget (``chunk_size``, in its own unit: tokens, characters...)."""

    chunk_size: int


@runtime_checkable
class ChunksAndEmbeds(Protocol):
    """A chunker that embeds its own chunks (late chunking): ``chunk_and_embed(doc) -> (chunks,
    vecs)`` with float32 ``(len(chunks), dim)`` vectors. If it also ``HasEmbedder``, queries must
    be embedded with that model."""

    def chunk_and_embed(self, doc: Document) -> tuple[list[Chunk], np.ndarray]: ...


@runtime_checkable
class HasEmbedder(Protocol):
    """A component that embeds with a nested ``embedder`` (``None`` when it has none)."""

    embedder: Any


@runtime_checkable
class CountsInTokenizer(Protocol):
    """A chunker whose sizes are counted in the tokenizer (or unit) named
    ``resolved_tokenizer`` (its ``tokens`` metadata is in that unit)."""

    @property
    def resolved_tokenizer(self) -> str: ...


@runtime_checkable
class TakesFileSuffixes(Protocol):
    """A chunker that says which files it can take from a folder (the loaders' ``suffixes``)."""

    @property
    def file_suffixes(self) -> tuple[str, ...]: ...


# -- indexes --------------------------------------------------------------------------------------


@runtime_checkable
class HasDocHash(Protocol):
    """The ``doc_hash`` metadata stored with a document's chunks (``None`` if the document is not
    in the index), so re-adding an unchanged document can be skipped."""

    def doc_hash(self, doc_id: str) -> str | None: ...


@runtime_checkable
class ListsChunks(Protocol):
    """Every chunk held, in insertion order."""

    def chunks(self) -> Iterable[Chunk]: ...


@runtime_checkable
class HasDocChunks(Protocol):
    """A document's chunks in order (neighbour expansion)."""

    def doc_chunks(self, doc_id: str) -> list[Chunk]: ...


@runtime_checkable
class HasSentenceVectors(Protocol):
    """Vectors of sentences stored at index time, looked up by document and absolute character
    span: ``(vecs (n, d) float32, found (n,) bool)`` (sentence refinement without embedding)."""

    def sentence_vectors(self, doc_id: str, spans: Sequence[tuple[int, int]]) -> Any: ...


@runtime_checkable
class Persistent(Protocol):
    """Saved to a folder and opened again: ``save(path)`` and a classmethod ``load(path)``."""

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Any: ...


@runtime_checkable
class QueryTimeSettings(Protocol):
    """An index whose search settings may change on a saved index (``QUERY_TIME``: the names of
    those fields, e.g. faiss ``ef_search``); every other field is fixed when it is built."""

    QUERY_TIME: frozenset[str]


@runtime_checkable
class PersistsWrites(Protocol):
    """An index whose writes are durable by themselves where a save to ``folder`` points (a
    Chroma server, or embedded Chroma data under ``folder``), so the document log need not keep
    them once applied."""

    def persists_writes(self, folder: str | Path) -> bool: ...


@runtime_checkable
class RebuildsStore(Protocol):
    """An index that may keep its store inside the saved folder (embedded Chroma), where a kill
    inside the store's own writer can damage it. For such a folder the document log keeps a copy
    of every document, and loading rebuilds a damaged store from it (``ragkit.store_repair``)."""

    def keeps_store_in_folder(self) -> bool:
        """Whether a save puts the store in the folder (not on a server)."""
        ...

    def documents_with_vectors(self) -> list[tuple[list[Any], Any]]:
        """Per document: its chunks in document order and their vectors ``(n, dim)``."""
        ...

    @classmethod
    def empty_beside(cls, path: str | Path) -> Any:
        """A new empty index with the settings saved in folder ``path``, whose store is a new
        folder inside ``path`` (the saved store is left as it is)."""
        ...


@runtime_checkable
class RecordsInfo(Protocol):
    """``info``: what the component was built with (the pipeline records the embedder's and the
    chunker's config in an index's ``info`` and refuses a pipeline that differs)."""

    info: dict[str, Any]


# -- generation -----------------------------------------------------------------------------------


@runtime_checkable
class StreamsTokens(Protocol):
    """The generator role: an ``Answer`` for a query and its hits, each new piece of text passed
    to ``stream`` as soon as it is decoded."""

    def generate(
        self, query: str, hits: Sequence[Hit], stream: StreamCallback | None = None
    ) -> Answer: ...


@runtime_checkable
class StreamsConcurrently(Protocol):
    """A generator whose engine takes many requests at once (vLLM's async engine): ``astream``
    yields the answer's text pieces, then the ``Answer``; calls from one event loop run in the
    engine together, and closing one early aborts its request. ``start_async`` starts the engine
    (blocking: call it off the event loop)."""

    def start_async(self) -> None: ...

    def astream(self, query: str, hits: Sequence[Hit]) -> AsyncIterator[Any]: ...


@runtime_checkable
class WarmsKV(Protocol):
    """A generator that precomputes chunk KVs (``ragkit cache warm``)."""

    def warm(
        self, chunks: Sequence[Chunk | str], progress: ProgressCallback | None = None
    ) -> dict[str, Any]: ...


@runtime_checkable
class CachesKV(Protocol):
    """A chunk-KV store: small ``get/put/contains/close`` with naive defaults."""

    def get(self, key: str) -> Any: ...

    def put(self, key: str, kv: Any) -> None: ...

    def contains(self, key: str) -> bool: ...

    def close(self) -> None: ...


@runtime_checkable
class HasKVStore(Protocol):
    """A generator that reuses chunk KVs from a store (``kv_store``: a ``CachesKV``)."""

    kv_store: Any


# -- anything -------------------------------------------------------------------------------------


@runtime_checkable
class KeepsStats(Protocol):
    """``stats``: a dict of counts a component keeps about its own work (calls, cache hits)."""

    stats: Mapping[str, Any]


@runtime_checkable
class Closes(Protocol):
    """Holds a resource (file, connection, worker) until ``close()``."""

    def close(self) -> None: ...


@runtime_checkable
class HasWorkers(Protocol):
    """Runs on a number of worker processes or actors (``workers``; ``None``: its default)."""

    workers: int | None


def members(protocol: type) -> list[str]:
    """The names a protocol declares (methods, properties and annotated attributes)."""
    out: list[str] = []
    for klass in protocol.__mro__:
        if klass is object or klass is Protocol or not getattr(klass, "_is_protocol", False):
            continue
        names = [*klass.__dict__.get("__annotations__", {}), *klass.__dict__]
        for name in names:
            if name.startswith("_") or name in out:
                continue
            out.append(name)
    return out


def provides(obj: Any, protocol: type) -> bool:
    """``isinstance(obj, protocol)`` without running a property or a ``cached_property``: each
    member must be declared on ``obj`` or its class (as Python 3.12's ``isinstance`` checks)."""
    for name in members(protocol):
        try:
            attr = inspect.getattr_static(obj, name)
        except AttributeError:
            return False
        if attr is None and not isinstance(attr, property | cached_property):
            return False
    return True


def describe(protocol: type) -> str:
    """The methods a protocol asks for, as a reader would write them: ``complete()``."""
    return " and ".join(f"{m}()" for m in members(protocol))
