"""Readers and a writer on one pipeline at once: the workload behind the concurrency test and
``benchmarks/concurrency_bench.py``.

One writer thread adds new documents, replaces documents with new versions of their text and
deletes documents, through ``RAGPipeline.add``/``delete``; reader threads query meanwhile. A hit
is *wrong* if its id, offsets and text disagree, or if its text is not the span
``[start:end]`` of the document version it claims (its ``doc_hash``). A *torn* read is a
document whose stored chunks mix versions or miss some: each reader also checks, after every
query, one document's chunks from the index (``doc_chunks``) against the chunker's output for
the version they claim. A correct index shows neither, and raises nothing.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ragkit.types import Document

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()


def version_text(doc_id: str, version: int, words: int = 120) -> str:
    """A deterministic text for ``doc_id`` at ``version`` (a different text per version)."""
    rng = random.Random(f"{doc_id}/{version}")
    return " ".join(rng.choice(WORDS) + (str(rng.randrange(50)) if i % 7 == 0 else "")
                    for i in range(words)) + f" {doc_id} v{version}."


@dataclass
class StressReport:
    seconds: float = 0.0
    queries: int = 0
    writes: int = 0  # documents added, replaced or deleted
    exceptions: list[str] = field(default_factory=list)
    wrong_hits: int = 0
    torn_documents: int = 0

    @property
    def queries_per_s(self) -> float:
        return self.queries / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (f"{self.queries} queries ({self.queries_per_s:.0f}/s), {self.writes} writes, "
                f"{len(self.exceptions)} exceptions, {self.wrong_hits} wrong hits, "
                f"{self.torn_documents} torn documents in {self.seconds:.1f} s")


def run(pipe: Any, *, readers: int = 8, seconds: float = 5.0, writes: int | None = None,
        docs: int = 20, k: int = 10, seed: int = 0,
        write: bool = True) -> StressReport:
    """Seed ``docs`` documents, then run ``readers`` query threads for ``seconds`` while one
    writer (unless ``write=False``) adds, replaces and deletes documents (stopping early after
    ``writes`` writes, if given). Returns what the readers saw."""
    texts: dict[str, str] = {}  # content hash -> text, every version ever written
    sizes: dict[str, int] = {}  # content hash -> number of chunks the chunker makes
    lock = threading.Lock()
    report = StressReport()
    rng = random.Random(seed)

    def document(doc_id: str, version: int) -> Document:
        doc = Document(doc_id, version_text(doc_id, version), {"source": f"{doc_id}.txt"})
        with lock:
            texts[doc.content_hash] = doc.text
            sizes[doc.content_hash] = len(pipe.chunker.chunk(doc))
        return doc

    versions = {f"d{i}": 0 for i in range(docs)}
    pipe.add([document(d, 0) for d in versions])
    stop = threading.Event()

    def check(hit_chunk: Any) -> bool:
        meta = hit_chunk.metadata
        text = texts.get(meta.get("doc_hash"))
        c = hit_chunk
        return (text is not None and text[c.start : c.end] == c.text
                and c.id == f"{c.doc_id}:{c.start}-{c.end}")

    def reader(i: int) -> None:
        r = random.Random(seed * 1000 + i)
        n = wrong = torn = 0
        while not stop.is_set():
            try:
                hits = pipe.retrieve(" ".join(r.sample(WORDS, 3)), k=k)
                wrong += sum(not check(h.chunk) for h in hits)
                doc_id = f"d{r.randrange(len(versions) + 5)}"
                chunks = pipe.index.doc_chunks(doc_id)
                if chunks:
                    hashes = {c.metadata.get("doc_hash") for c in chunks}
                    h = next(iter(hashes))
                    if len(hashes) != 1 or sizes.get(h) != len(chunks):
                        torn += 1
                    wrong += sum(not check(c) for c in chunks)
            except Exception as exc:  # noqa: BLE001 - counting them is the point
                with lock:
                    report.exceptions.append(f"{type(exc).__name__}: {exc}")
            n += 1
        with lock:
            report.queries += n
            report.wrong_hits += wrong
            report.torn_documents += torn

    def writer() -> None:
        done, next_id = 0, len(versions)
        while not stop.is_set() and (writes is None or done < writes):
            try:
                roll = rng.random()
                if roll < 0.2:  # a new document
                    doc_id, next_id = f"d{next_id}", next_id + 1
                    versions[doc_id] = 0
                    pipe.add([document(doc_id, 0)])
                elif roll < 0.35 and versions:  # a deletion
                    doc_id = rng.choice(sorted(versions))
                    pipe.delete([doc_id])
                    del versions[doc_id]
                else:  # a new version of a document
                    doc_id = rng.choice(sorted(versions))
                    versions[doc_id] += 1
                    pipe.add([document(doc_id, versions[doc_id])])
                done += 1
            except Exception as exc:  # noqa: BLE001
                with lock:
                    report.exceptions.append(f"writer {type(exc).__name__}: {exc}")
        report.writes = done

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(readers)]
    if write:
        threads.append(threading.Thread(target=writer, daemon=True))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        if writes is not None and write and not threads[-1].is_alive():
            break  # the writer is done: the readers have seen every write
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    report.seconds = time.perf_counter() - t0
    return report


