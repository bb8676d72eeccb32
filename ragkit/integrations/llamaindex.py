"""ragkit in LlamaIndex: any chunker as a ``NodeParser``, a saved index as a ``BaseRetriever``.

``pip install 'ragkit[llamaindex]'``::

    from ragkit.integrations.llamaindex import RagkitNodeParser, RagkitRetriever

    parser = RagkitNodeParser(chunker={"name": "sentence", "chunk_size": 128})
    nodes = parser.get_nodes_from_documents(documents)  # exact start/end_char_idx, prev/next
    retriever = RagkitRetriever(index=".ragkit/docs", k=3)
    hits = retriever.retrieve("What is slow start?")    # NodeWithScore, offsets in metadata

LlamaIndex's node parsers set ``start_char_idx`` by searching the document for each node's text
(llama_index #12270), which lands on an earlier copy when text repeats; here the chunk's own
offsets are put back after LlamaIndex's post-processing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragkit._deps import require
from ragkit.integrations import (
    build_chunker,
    check_k,
    chunk_metadata,
    hit_metadata,
    load_pipeline,
)
from ragkit.types import Document

require("llama_index.core", extra="llamaindex", component="ragkit.integrations.llamaindex")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.node_parser import NodeParser  # noqa: E402
from llama_index.core.schema import (  # noqa: E402
    BaseNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from pydantic import Field, PrivateAttr  # noqa: E402

__all__ = ["RagkitNodeParser", "RagkitRetriever"]

# ragkit's bookkeeping in node metadata, kept out of the text that is embedded or shown to an LLM
_HIDDEN = ["chunk_id", "chunk_index", "tokens"]


class RagkitNodeParser(NodeParser):
    """A ragkit chunker (spec dict, name or object) as a LlamaIndex ``NodeParser``.

    Each node has ``start_char_idx``/``end_char_idx`` with ``text[start:end] == node.text``,
    SOURCE, PREVIOUS and NEXT relationships (``include_prev_next_rel``), the input's metadata
    and ``chunk_id``, ``chunk_index`` and ``tokens`` (hidden from embedding and LLM text).
    """

    chunker: Any = Field(default="recursive", description="a ragkit chunker spec or object")
    _chunker: Any = PrivateAttr(default=None)

    def __init__(self, chunker: Any = "recursive", **data: Any) -> None:
        built = build_chunker(chunker)  # ragkit's ConfigError, not pydantic's wrapped one
        super().__init__(chunker=chunker, **data)
        self._chunker = built

    @classmethod
    def class_name(cls) -> str:
        return "RagkitNodeParser"

    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        out: list[BaseNode] = []
        for node in nodes:
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            source = node.as_related_node_info()
            for c in self._chunker.chunk(Document(node.node_id, text)):
                out.append(TextNode(
                    id_=self.id_func(c.index, node), text=c.text,
                    start_char_idx=c.start, end_char_idx=c.end, metadata=chunk_metadata(c),
                    excluded_embed_metadata_keys=[*node.excluded_embed_metadata_keys, *_HIDDEN],
                    excluded_llm_metadata_keys=[*node.excluded_llm_metadata_keys, *_HIDDEN],
                    metadata_seperator=node.metadata_separator,
                    metadata_template=node.metadata_template, text_template=node.text_template,
                    relationships={NodeRelationship.SOURCE: source},
                ))
        return out

    def _postprocess_parsed_nodes(
        self, nodes: list[BaseNode], parent_doc_map: dict
    ) -> list[BaseNode]:
        # LlamaIndex re-derives the offsets with str.find; keep the chunker's exact ones
        spans = [(n.start_char_idx, n.end_char_idx) for n in nodes]
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        for n, (start, end) in zip(nodes, spans, strict=True):
            n.start_char_idx, n.end_char_idx = start, end
        return nodes


class RagkitRetriever(BaseRetriever):
    """A saved ragkit index (``ragkit index ... --out DIR``) as a LlamaIndex retriever.

    ``index`` is the folder (or a ``RAGPipeline``); ``k`` overrides the saved ``k``; ``overrides``
    change query-time keys as ``ragkit query -o`` does. Each ``NodeWithScore`` has the hit's
    score and a ``TextNode`` (id: the chunk id) with ``start_char_idx``/``end_char_idx``, a
    SOURCE relationship to its document and metadata ``score``, ``rank``, ``source``,
    ``doc_id``, ``start``, ``end`` and the chunk's own metadata.
    """

    def __init__(self, index: Any, k: int | None = None, overrides: Sequence[str] = (),
                 callback_manager: CallbackManager | None = None, verbose: bool = False) -> None:
        check_k(k)
        self.index = index
        self.k = k
        self.overrides = tuple(overrides)
        self._pipeline = load_pipeline(index, self.overrides)  # fails here, not on a query
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        out = []
        for h in self._pipeline.retrieve(query_bundle.query_str, self.k):
            c, meta = h.chunk, hit_metadata(h)
            node = TextNode(
                id_=c.id, text=c.text, start_char_idx=c.start, end_char_idx=c.end, metadata=meta,
                excluded_embed_metadata_keys=list(meta),  # the chunk text alone is embedded
                excluded_llm_metadata_keys=[k for k in meta if k != "source"],
                relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=c.doc_id)},
            )
            out.append(NodeWithScore(node=node, score=float(h.score)))
        return out
