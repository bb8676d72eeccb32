"""A 200 from ``POST /v1/documents`` means durable: kill -9 the server during a burst of adds,
restart it, and every add that got a 200 is there, searchable and whole (no document has only
part of its chunks). Written against ``ragkit.serve.documents``, the seam the durable add path
(RAGPipeline.add on a loaded folder) replaces."""

from __future__ import annotations

import os
import random
import signal
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("transformers")

from ragkit.pipeline import RAGPipeline  # noqa: E402
from ragkit.types import Document  # noqa: E402
from tests.serve_helpers import (  # noqa: E402
    build_index,
    free_port,
    http,
    serve_subprocess,
    tiny_model_folder,
    wait_ready,
)

WORDS = ("harbour lantern copper orchard glacier signal cipher meadow falcon quarry ember "
         "willow basalt tundra saffron marrow kestrel lichen cobalt").split()


def doc_text(rng: random.Random, doc_id: str) -> str:
    return f"{doc_id} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 220)))


@pytest.mark.slow  # two to three server start-ups
def test_kill_9_during_adds_loses_no_acknowledged_document(tmp_path):
    folder = build_index(tmp_path / "idx")
    model = tiny_model_folder(tmp_path / "tiny")
    args = ("-o", f"generator.model={model}", "-o", f"generator.kv_store.path={tmp_path / 'kv'}")
    chunker = RAGPipeline.load(folder).chunker
    rng = random.Random(0)
    texts: dict[str, str] = {}
    acked: list[str] = []
    log = tmp_path / "server.log"
    for round_ in range(2):
        port = free_port()
        proc = serve_subprocess(folder, port, *args, log=log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc=proc)
            check(url, acked, texts, chunker)  # everything acknowledged before the kill is back
            got_some = threading.Event()
            lock = threading.Lock()

            def writer(w: int) -> None:
                for i in range(1000):
                    batch = []
                    with lock:
                        for j in range(2):
                            doc_id = f"burst/{round_}-{w}-{i}-{j}.md"
                            texts[doc_id] = doc_text(rng, doc_id)
                            batch.append({"id": doc_id, "text": texts[doc_id]})
                    try:
                        status, _ = http("POST", url + "/v1/documents", batch, timeout=60)
                    except OSError:
                        return  # the server is gone
                    if status != 200:
                        return
                    with lock:
                        acked.extend(d["id"] for d in batch)
                        if len(acked) >= 40 * (round_ + 1):
                            got_some.set()

            threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
            for t in threads:
                t.start()
            assert got_some.wait(240), log.read_text()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)  # mid-burst: other adds are in flight
            for t in threads:
                t.join(60)
        finally:
            proc.kill()
            proc.wait(30)
    port = free_port()
    proc = serve_subprocess(folder, port, *args, log=log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc=proc)
        check(f"http://127.0.0.1:{port}", acked, texts, chunker)
    finally:
        proc.kill()
        proc.wait(30)


def check(url: str, acked: list[str], texts: dict[str, str], chunker) -> None:
    """Every acknowledged document is listed and searchable; every burst document in the index
    (acknowledged or not) has exactly the chunks the chunker makes of it."""
    status, listing = http("GET", url + "/v1/documents?limit=1000")
    assert status == 200
    present = {d["id"]: d for d in listing["data"]}
    missing = [d for d in acked if d not in present]
    assert not missing, f"{len(missing)} acknowledged documents lost, e.g. {missing[:3]}"
    for doc_id in [d for d in present if d.startswith("burst/")]:
        want = [(c.start, c.end) for c in chunker.chunk(Document(doc_id, texts[doc_id]))]
        status, doc = http("GET", url + "/v1/documents/" + doc_id)
        assert status == 200
        assert [(c["start"], c["end"]) for c in doc["chunks"]] == want, doc_id  # whole
    for doc_id in acked[:: max(1, len(acked) // 8)]:
        status, body = http("POST", url + "/v1/retrieve",
                            {"query": texts[doc_id][:200], "filters": {"doc_id": doc_id}})
        assert status == 200 and body["hits"], doc_id
        for h in body["hits"]:
            assert texts[doc_id][h["start"]:h["end"]] == h["text"]
