"""Rebuilding a saved index's damaged store from the folder's document log.

An embedded Chroma keeps its store inside the index folder, and a kill inside Chroma's own writer
can leave that store unreadable (chroma-core/chroma#7678). A folder made for such an index keeps
a copy of every document's chunks and vectors in its log (``ragkit.doclog``), so opening the
folder (``RAGPipeline.load``: ``ragkit index --append``, ``query``, ``ask``, ``serve`` ...)
rebuilds the store instead of failing:

1. the folder's write lock is taken (one writer process at a time, as for any write);
2. a new, empty store is made beside the damaged one (``index/data-<UTC time>``) and every
   document of the log's copy is added to it, with the pipeline's chunker and embedder recorded
   in it as a clean build records them;
3. the index pointer (``index/chroma.json``) is rewritten to name the new store, atomically
   (write and rename): until then the folder still names the damaged store, so a crash during
   the rebuild leaves a folder that rebuilds again on the next open;
4. the damaged store is renamed ``<store>.damaged-<UTC time>`` and kept (never deleted);
5. one warning (the ``ragkit`` logger; the CLI prints it on stderr) names what was rebuilt, from
   what, and both paths.

A folder without the copy (written before it existed) keeps the error naming
``ragkit index --replace``: there is nothing to rebuild from.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ragkit.protocols import RebuildsStore

log = logging.getLogger(__name__)


def rebuild_store(pipe: Any, folder: Path, damaged: Any) -> Any:
    """The index of ``pipe``'s kind with its store rebuilt from ``folder``'s log, swapped in for
    the damaged store ``damaged.store`` (a ``StoreDamagedError``), which is kept aside; raises
    ``damaged`` itself if the log keeps no copy."""
    from ragkit.doclog import FILE, DocLog
    from ragkit.pipeline import INDEX_DIR

    index_dir = folder / INDEX_DIR
    doclog = DocLog(folder)
    try:
        if not (isinstance(pipe.index, RebuildsStore) and doclog.keeps_copy()):
            raise damaged
        doclog.acquire_writer()
        fresh = type(pipe.index).empty_beside(index_dir)
        pipe.index = fresh
        pipe.bind_index()  # record the chunker and embedder, as a clean build does
        docs, chunks = _fill(fresh, doclog)
        fresh.save(index_dir)  # the pointer now names the new store
        aside = damaged.store.with_name(
            f"{damaged.store.name}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        os.replace(damaged.store, aside)
        doclog.checkpoint(doclog.last_seq())  # the new store holds every logged operation
        log.warning(
            "%s: %s; rebuilt it from the copy in the document log %s (%d documents, %d chunks) "
            "into %s; the damaged store is kept at %s (delete it when you no longer need it)",
            damaged.store, _cause(damaged),
            folder / FILE, docs, chunks, fresh.path, aside)
        return fresh
    finally:
        doclog.close()


def _fill(index: Any, doclog: Any, batch: int = 2048) -> tuple[int, int]:
    """Add every document of the log's copy to the empty ``index``, ``batch`` chunks per call;
    returns (documents, chunks). The copy holds one operation per document, so on an empty
    index the puts are the whole state and a delete (of a document the store no longer had to
    hold) has nothing to remove."""
    import numpy as np

    from ragkit.doclog import Put

    docs = total = 0
    chunks: list[Any] = []
    vecs: list[Any] = []
    for _, op in doclog.pending(0):
        if isinstance(op, Put) and op.chunks:
            chunks.extend(op.chunks)
            vecs.append(op.vecs)
            docs += 1
        if len(chunks) >= batch:
            index.add(chunks, np.concatenate(vecs))
            total, chunks, vecs = total + len(chunks), [], []
    if chunks:
        index.add(chunks, np.concatenate(vecs))
        total += len(chunks)
    return docs, total


def _cause(exc: BaseException) -> str:
    """What Chroma said, without the advice to rebuild by hand (it was rebuilt)."""
    text = str(exc).splitlines()[0] if str(exc).strip() else "no message"
    return text.split("; rebuild it with", 1)[0].split(": ", 1)[-1]
