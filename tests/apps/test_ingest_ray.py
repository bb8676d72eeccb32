"""Ingestion on a real local Ray cluster (2 CPUs, started once for this module): the same chunks
and vectors as the local engine, chunk for chunk; a killed Ray run resumed without duplicates;
workers writing to a Chroma server; bad input reported through Ray."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from ragkit.chunkers.parallel import cpu_count

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from ragkit import RAGPipeline  # noqa: E402
from ragkit.errors import ConfigError, DocumentError  # noqa: E402
from ragkit.ingest import index_state, ingest  # noqa: E402
from tests.ingest_helpers import CONFIG, make_corpus  # noqa: E402
from tests.apps.test_ingest import PICKY, _poison, assert_same_index, config, reference  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray cluster: about a minute for the module

ROOT = Path(__file__).parents[2]
RAY = {"name": "ray", "workers": 2}


@pytest.fixture(autouse=True)
def _test_components(monkeypatch):
    """These tests name their own chunkers and embedders by import path (tests.ingest_helpers)."""
    monkeypatch.setenv("RAGKIT_ALLOW_IMPORT", "1")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs for the module; its GCS address (for subprocesses).
    Its session folder (logs, sockets) is a short temporary path removed afterwards."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage reporting
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    temp = tempfile.mkdtemp(prefix="rk-ray-")  # short: Ray's unix sockets live under it
    info = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                    logging_level=logging.WARNING, object_store_memory=300 * 2**20,
                    _temp_dir=temp)
    try:
        yield info.address_info["gcs_address"]
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-corpus")
    n = make_corpus(root, md=60, jsonl_shards=6, per_shard=40, seed=7)
    assert n == 300
    return root, n


def test_ray_gives_the_local_engines_chunks_and_vectors(cluster, corpus, tmp_path):
    root, n = corpus
    local = ingest(root, CONFIG, tmp_path / "local")
    on_ray = ingest(root, CONFIG, tmp_path / "ray", engine=RAY, batch_size=16)
    assert on_ray.engine == "ray" and on_ray.workers == 2
    # how many of the 2 workers got blocks is Ray's scheduling: on an idle machine the first
    # actor can finish every block before the second is up, so only the bounds are asserted;
    # the local engine runs one process per core by default (--workers)
    assert 1 <= on_ray.workers_seen <= 2 and 1 <= local.workers_seen <= cpu_count()
    a = RAGPipeline.load(tmp_path / "local")
    b = RAGPipeline.load(tmp_path / "ray")
    chunks_a, chunks_b = list(a.index.chunks()), list(b.index.chunks())
    assert len(chunks_a) > n
    for x, y in zip(chunks_a, chunks_b, strict=True):  # chunk for chunk: id, offsets, text, meta
        assert (x.id, x.start, x.end, x.index, x.text, dict(x.metadata)) == \
               (y.id, y.start, y.end, y.index, y.text, dict(y.metadata))
    np.testing.assert_array_equal(a.index._vecs[: len(a.index)], b.index._vecs[: len(b.index)])
    for key in ("documents", "chunks", "tokens", "shards_processed", "index_chunks"):
        assert getattr(local, key) == getattr(on_ray, key), key
    ref, _ = reference(root)  # and both are what RAGPipeline.add gives
    assert_same_index(tmp_path / "ray", ref)


def test_ray_builds_a_faiss_index_from_the_workers_results(cluster, corpus, tmp_path):
    pytest.importorskip("faiss")
    root, _ = corpus
    cfg = config(index={"name": "faiss", "kind": "hnsw"})
    ingest(root, cfg, tmp_path / "ray", engine=RAY, batch_size=32)
    ref, _ = reference(root, config(index={"name": "faiss", "kind": "hnsw"}))
    got = RAGPipeline.load(tmp_path / "ray")
    assert list(got.index.chunks()) == list(ref.index.chunks())
    q = ref.embedder.embed(["iron lattice tower", "comet orbit saturn", "bees nectar hive"])
    assert [[h.chunk.id for h in row] for row in got.index.search(q, 5)] == \
           [[h.chunk.id for h in row] for row in ref.index.search(q, 5)]


KILL_SCRIPT = """
import sys
import ragkit.ingest
ragkit.ingest.PART_ROWS = 4
from ragkit.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_killed_ray_run_resumes_without_duplicates(cluster, corpus, tmp_path):
    root, n = corpus
    out = tmp_path / "out"
    cfg = config(embedder={"name": "tests.ingest_helpers:SlowHashEmbedder", "dim": 32,
                           "delay": 0.1})
    (tmp_path / "slow.yaml").write_text(json.dumps(cfg))
    args = ["index", str(root), "-c", str(tmp_path / "slow.yaml"), "--out", str(out),
            "--no-progress", "--batch-size", "4", "--engine", "ray", "--workers", "2",
            "--allow-import"]
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, *args, "--ray-address", cluster],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ledger = out / "ingest" / "ledger.jsonl"
    deadline = time.monotonic() + 120
    while not (ledger.exists() and len(ledger.read_text().splitlines()) >= 10):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the Ray run did not finish 10 shards in 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the driver dies; Ray ends its job's workers
    proc.wait(timeout=30)
    proc.stderr.close()
    finished = len(ledger.read_text().splitlines())
    assert 10 <= finished < 66

    report = ingest(root, cfg, out, engine=RAY, batch_size=4)
    assert report.shards_resumed >= finished
    assert report.documents + report.resumed_documents == n
    lines = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert len(lines) == 66 and len({e["shard"] for e in lines}) == 66  # every shard once
    ref, _ = reference(root, cfg)
    assert_same_index(out, ref)


def test_ray_into_a_chroma_server_commits_through_the_driver(cluster, corpus, tmp_path):
    """Workers never write to the server: their chunks come back to the driver, which keeps them
    in parts and commits each document through the pipeline's write step (document log first)."""
    pytest.importorskip("chromadb")
    from tests.retrieval.index_helpers import chroma_server, free_port

    root, n = corpus
    port = free_port()
    cfg = config(index={"name": "chroma", "host": "127.0.0.1", "port": port,
                        "collection": "ray-ingest"})
    with chroma_server(tmp_path / "server", port):
        report = ingest(root, cfg, tmp_path / "out", engine=RAY, batch_size=16)
        assert report.documents == n and report.index_chunks > n
        assert list((tmp_path / "out" / "ingest" / "parts").iterdir())  # the driver's parts
        got = RAGPipeline.load(tmp_path / "out")
        docs = got.documents()  # from the folder's document log: every document, whole
        ref, _ = reference(root)
        assert {d.id for d in docs} == {c.doc_id for c in ref.index.chunks()}
        assert all(d.content_hash for d in docs)
        assert sum(d.chunks for d in docs) == report.index_chunks
        assert sorted(got.index.chunks(), key=lambda c: c.id) == \
               sorted(ref.index.chunks(), key=lambda c: c.id)
        stored = got.index._connect().get(ids=[c.id for c in ref.index.chunks()],
                                          include=["embeddings"])
        by_id = dict(zip(stored["ids"], np.asarray(stored["embeddings"], np.float32)))
        want = ref.index._vecs[: len(ref.index)]
        have = np.stack([by_id[c.id] for c in ref.index.chunks()])
        np.testing.assert_allclose(have, want, atol=1e-6)
        got.index.close()


def test_ray_reports_bad_input_with_paths(cluster, tmp_path):
    root = tmp_path / "c"
    n = make_corpus(root, md=12, jsonl_shards=2, per_shard=10, seed=3)
    bad = _poison(root)
    with pytest.raises(DocumentError, match="the index was not finished"):
        ingest(root, PICKY, tmp_path / "strict", engine=RAY)
    assert index_state(tmp_path / "strict") == "unfinished"
    report = ingest(root, PICKY, tmp_path / "out", engine=RAY, on_error="skip")
    assert {f.path for f in report.failures} == {str(p) for p in bad.values()}
    assert report.documents == n + 1
    local = ingest(root, PICKY, tmp_path / "local", on_error="skip")
    assert sorted(map(str, local.failures)) == sorted(map(str, report.failures))
    a, b = RAGPipeline.load(tmp_path / "local"), RAGPipeline.load(tmp_path / "out")
    assert list(a.index.chunks()) == list(b.index.chunks())


def test_more_workers_than_cpus_is_refused(cluster, tmp_path):
    (tmp_path / "a.md").write_text("words", encoding="utf-8")
    with pytest.raises(ConfigError, match="engine.workers: 3 workers need 3 CPUs but the Ray "
                                          "cluster has 2"):
        ingest(tmp_path, CONFIG, tmp_path / "out", engine={"name": "ray", "workers": 3})
