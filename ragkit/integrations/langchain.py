"""ragkit in LangChain: any chunker as a ``TextSplitter``, a saved index as a ``BaseRetriever``.

``pip install 'ragkit[langchain]'``::

    from ragkit.integrations.langchain import RagkitTextSplitter, RagkitRetriever

    splitter = RagkitTextSplitter(chunker={"name": "recursive", "chunk_size": 128})
    docs = splitter.create_documents([text])      # metadata["start_index"] is exact
    retriever = RagkitRetriever(index=".ragkit/docs", k=3)
    hits = retriever.invoke("What is slow start?")  # metadata: score, source, start/end

LangChain's own splitters find each chunk's ``start_index`` again with ``str.find`` and miss when
text repeats (langchain #21475, #17642, #29884); here it is the chunk's own offset.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ragkit._deps import require
from ragkit.integrations import (
    build_chunker,
    check_k,
    chunk_metadata,
    hit_metadata,
    load_pipeline,
)
from ragkit.protocols import HasChunkSize, provides
from ragkit.types import Document

require("langchain_core", extra="langchain", component="ragkit.integrations.langchain")
require("langchain_text_splitters", extra="langchain", component="ragkit.integrations.langchain")

from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document as LCDocument  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_text_splitters import TextSplitter  # noqa: E402
from pydantic import ConfigDict, PrivateAttr  # noqa: E402

__all__ = ["RagkitRetriever", "RagkitTextSplitter"]


class RagkitTextSplitter(TextSplitter):
    """A ragkit chunker (spec dict, name or object) as a LangChain ``TextSplitter``.

    ``create_documents`` / ``split_documents`` give each chunk's metadata ``start_index`` and
    ``end_index`` (``text[start_index:end_index] == page_content``), ``chunk_index``,
    ``chunk_id`` and the chunker's own metadata (``tokens``...), on top of the input document's.
    """

    def __init__(self, chunker: Any = "recursive") -> None:
        self.chunker = build_chunker(chunker)
        size = self.chunker.chunk_size if provides(self.chunker, HasChunkSize) else None
        size = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 4000
        # LangChain's size fields are unused: the ragkit chunker decides every cut
        super().__init__(chunk_size=size, chunk_overlap=0, add_start_index=True)

    def split_text(self, text: str) -> list[str]:
        return [c.text for c in self.chunker.chunk(Document("text", text))]

    def create_documents(
        self, texts: list[str], metadatas: list[dict[Any, Any]] | None = None
    ) -> list[LCDocument]:
        metadatas = metadatas or [{}] * len(texts)
        out = []
        for i, (text, meta) in enumerate(zip(texts, metadatas, strict=True)):
            doc_id = str(meta.get("source") or f"text-{i}")
            for c in self.chunker.chunk(Document(doc_id, text)):
                out.append(LCDocument(page_content=c.text, metadata={
                    **copy.deepcopy(meta), "start_index": c.start, "end_index": c.end,
                    **chunk_metadata(c)}))
        return out

    def split_documents(self, documents: Iterable[LCDocument]) -> list[LCDocument]:
        documents = list(documents)
        return self.create_documents([d.page_content for d in documents],
                                     [d.metadata for d in documents])


class RagkitRetriever(BaseRetriever):
    """A saved ragkit index (``ragkit index ... --out DIR``) as a LangChain retriever.

    ``index`` is the folder (or a ``RAGPipeline``); ``k`` overrides the saved ``k``; ``overrides``
    change query-time keys as ``ragkit query -o`` does. Each ``Document`` has the chunk's text,
    ``id`` the chunk id, and metadata ``score``, ``rank``, ``source``, ``doc_id``, ``start``,
    ``end`` (character offsets into the source document) and the chunk's own metadata.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any
    k: int | None = None
    overrides: Sequence[str] = ()
    _pipeline: Any = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        check_k(data.get("k"))  # ragkit's errors, not pydantic's wrapped ones
        super().__init__(**data)
        if isinstance(self.index, Path):
            self.index = str(self.index)
        self._pipeline = load_pipeline(self.index, self.overrides)  # fails here, not on a query

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[LCDocument]:
        return [LCDocument(id=h.chunk.id, page_content=h.chunk.text, metadata=hit_metadata(h))
                for h in self._pipeline.retrieve(query, self.k)]
