"""The LangChain and LlamaIndex adapters, run through the frameworks' own entry points.

Splitters: every offset they report is exact (``text[start:end] == chunk``), including on text
that repeats, where the frameworks' own ``str.find`` bookkeeping lands on an earlier copy.
Retrievers: a saved index (``hash`` embedder, built here in a fraction of a second) answers
through ``invoke`` / ``retrieve`` with the same hits as ``RAGPipeline.retrieve``. The README's
two examples run as they are printed there.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ragkit import ConfigError, RagkitError, load_documents
from ragkit.config import load_yaml
from ragkit.pipeline import RAGPipeline

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_text_splitters")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document as LCDocument  # noqa: E402
from langchain_text_splitters import TextSplitter  # noqa: E402
from llama_index.core import Document as LIDocument  # noqa: E402
from llama_index.core.ingestion import IngestionPipeline  # noqa: E402
from llama_index.core.schema import NodeRelationship  # noqa: E402

from ragkit.integrations import langchain as lc  # noqa: E402
from ragkit.integrations import llamaindex as li  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "ragkit" / "data" / "corpus"
QUESTION = "What is slow start?"

# Chunks overlap and repeat: "c a b c" also starts inside the chunk before it, so finding each
# chunk's text again (what both frameworks do) gives wrong offsets here.
REPEATS = "a b c a b c d a b c a b c d\n\nx a a a a a a"
OVERLAPPING = {"name": "fixed", "chunk_size": 4, "overlap": 2, "tokenizer": "whitespace"}
CHUNKERS = [
    OVERLAPPING,
    {"name": "recursive", "chunk_size": 48, "overlap": 8, "tokenizer": "whitespace"},
    {"name": "sentence", "chunk_size": 40, "tokenizer": "whitespace"},
]


def _texts() -> list[str]:
    return [REPEATS] + [p.read_text(encoding="utf-8") for p in sorted(CORPUS.glob("*.md"))]


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory) -> Path:
    """A saved index of the bundled corpus with the hash embedder (configs/hash.yaml)."""
    out = tmp_path_factory.mktemp("index") / "hash"
    pipe = RAGPipeline.from_config(load_yaml(ROOT / "configs" / "hash.yaml"))
    pipe.add(load_documents(CORPUS))
    pipe.save(out)
    return out


def _readme_example(module: str) -> str:
    """The README's python block that starts by importing ``module``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    found = [b for b in blocks if b.startswith(f"from {module} import")]
    assert len(found) == 1, f"README.md needs one python block starting 'from {module} import'"
    return found[0]


@pytest.fixture
def readme_dir(tmp_path, monkeypatch, saved_index) -> Path:
    """A folder laid out like a clone after the quickstart: the corpus and .ragkit/quickstart."""
    shutil.copytree(CORPUS, tmp_path / "ragkit" / "data" / "corpus")
    shutil.copytree(saved_index, tmp_path / ".ragkit" / "quickstart")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- LangChain ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", CHUNKERS, ids=[s["name"] for s in CHUNKERS])
def test_langchain_splitter_offsets_are_exact(spec) -> None:
    splitter = lc.RagkitTextSplitter(chunker=spec)
    texts = _texts()
    inputs = [LCDocument(page_content=t, metadata={"source": f"doc{i}", "lang": "en"})
              for i, t in enumerate(texts)]
    docs = splitter.split_documents(inputs)
    assert docs == splitter.transform_documents(inputs)  # LangChain's transformer entry point
    for d in docs:
        text = texts[int(d.metadata["source"][3:])]
        start, end = d.metadata["start_index"], d.metadata["end_index"]
        assert text[start:end] == d.page_content
        assert d.metadata["lang"] == "en" and d.metadata["tokens"] <= spec["chunk_size"]
    by_source = [[d.page_content for d in docs if d.metadata["source"] == f"doc{i}"]
                 for i in range(len(texts))]
    assert by_source == [splitter.split_text(t) for t in texts]


def test_langchain_own_start_index_misses_repeats_ours_does_not() -> None:
    splitter = lc.RagkitTextSplitter(chunker=OVERLAPPING)
    ours = splitter.create_documents([REPEATS])
    theirs = TextSplitter.create_documents(splitter, [REPEATS])  # LangChain's str.find version
    assert [d.page_content for d in ours] == [d.page_content for d in theirs]
    assert all(REPEATS[d.metadata["start_index"]:d.metadata["end_index"]] == d.page_content
               for d in ours)
    wrong = [d for d in theirs
             if REPEATS[d.metadata["start_index"]:][:len(d.page_content)] != d.page_content]
    assert wrong, "this text was meant to defeat LangChain's start_index search"


def test_langchain_splitter_takes_a_name_a_spec_or_an_object() -> None:
    from ragkit import build

    obj = build("chunker", OVERLAPPING)
    by_spec = lc.RagkitTextSplitter(chunker=OVERLAPPING).split_text(REPEATS)
    assert lc.RagkitTextSplitter(chunker=obj).split_text(REPEATS) == by_spec
    assert lc.RagkitTextSplitter(chunker="sentence").chunker == build("chunker", "sentence")
    with pytest.raises(ConfigError, match=r"chunker\.name: unknown"):
        lc.RagkitTextSplitter(chunker={"name": "nope"})
    with pytest.raises(ConfigError, match="chunker: expected a chunker spec"):
        lc.RagkitTextSplitter(chunker=42)


def test_langchain_retriever_serves_a_saved_index(saved_index) -> None:
    retriever = lc.RagkitRetriever(index=saved_index, k=3)
    docs = retriever.invoke(QUESTION)
    hits = RAGPipeline.load(saved_index).retrieve(QUESTION, 3)
    assert [d.id for d in docs] == [h.chunk.id for h in hits] and len(docs) == 3
    assert [d.metadata["score"] for d in docs] == pytest.approx([h.score for h in hits])
    assert [d.metadata["rank"] for d in docs] == [0, 1, 2]
    for d in docs:
        source = (CORPUS / d.metadata["source"]).read_text(encoding="utf-8")
        assert source[d.metadata["start"]:d.metadata["end"]] == d.page_content
    assert docs[0].metadata["source"] == "tcp.md"  # the word overlap is enough for hashing
    assert retriever.batch([QUESTION, "honeybees"])[0] == docs  # a Runnable, like any retriever


def test_langchain_retriever_fails_when_built(tmp_path, saved_index) -> None:
    with pytest.raises(RagkitError, match="not a saved ragkit index"):
        lc.RagkitRetriever(index=tmp_path)
    with pytest.raises(ConfigError, match="k: must be an int >= 1"):
        lc.RagkitRetriever(index=saved_index, k=0)
    with pytest.raises(ConfigError, match="chunker"):
        lc.RagkitRetriever(index=saved_index, overrides=["chunker.chunk_size=9"])


def test_langchain_readme_example_runs(readme_dir, capsys) -> None:
    code = _readme_example("ragkit.integrations.langchain")
    assert len(code.strip().splitlines()) <= 6  # the import, a blank line, five lines at most
    scope: dict = {}
    exec(compile(code, "README.md (LangChain example)", "exec"), scope)
    text = (CORPUS / "tcp.md").read_text(encoding="utf-8")
    assert scope["docs"] and all(
        text[d.metadata["start_index"]:d.metadata["end_index"]] == d.page_content
        for d in scope["docs"])
    assert "'source': 'tcp.md'" in capsys.readouterr().out


# -- LlamaIndex -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", CHUNKERS, ids=[s["name"] for s in CHUNKERS])
def test_llamaindex_parser_offsets_are_exact(spec) -> None:
    texts = _texts()
    docs = [LIDocument(text=t, id_=f"doc{i}", metadata={"lang": "en"}) for i, t in enumerate(texts)]
    parser = li.RagkitNodeParser(chunker=spec)
    nodes = IngestionPipeline(transformations=[parser]).run(documents=docs)  # the framework's way
    assert [n.text for n in nodes] == [n.text for n in parser.get_nodes_from_documents(docs)]
    for n in nodes:
        text = texts[int(n.ref_doc_id[3:])]
        assert text[n.start_char_idx:n.end_char_idx] == n.text
        assert n.metadata["lang"] == "en" and n.metadata["tokens"] <= spec["chunk_size"]
        assert "tokens" not in n.get_content(metadata_mode="embed")  # bookkeeping stays hidden
    for i in range(len(texts)):  # prev/next chain each document's nodes in order
        mine = [n for n in nodes if n.ref_doc_id == f"doc{i}"]
        assert [n.metadata["chunk_index"] for n in mine] == list(range(len(mine)))
        for a, b in zip(mine, mine[1:]):
            assert a.relationships[NodeRelationship.NEXT].node_id == b.node_id
            assert b.relationships[NodeRelationship.PREVIOUS].node_id == a.node_id
        assert NodeRelationship.PREVIOUS not in mine[0].relationships
        assert NodeRelationship.NEXT not in mine[-1].relationships


def test_llamaindex_own_offsets_miss_repeats_ours_do_not() -> None:
    doc = LIDocument(text=REPEATS, id_="r")
    nodes = li.RagkitNodeParser(chunker=OVERLAPPING).get_nodes_from_documents([doc])
    assert all(REPEATS[n.start_char_idx:n.end_char_idx] == n.text for n in nodes)
    # LlamaIndex's post-processing searches each node's text from just after the previous start
    found = [REPEATS.find(b.text, a.start_char_idx + 1) for a, b in zip(nodes, nodes[1:])]
    assert found != [n.start_char_idx for n in nodes[1:]], "meant to defeat LlamaIndex's search"


def test_llamaindex_parser_refuses_a_bad_chunker() -> None:
    with pytest.raises(ConfigError, match=r"chunker\.chunk_size"):
        li.RagkitNodeParser(chunker={"name": "fixed", "chunk_size": 0})


def test_llamaindex_retriever_serves_a_saved_index(saved_index) -> None:
    retriever = li.RagkitRetriever(index=str(saved_index), k=3)
    results = retriever.retrieve(QUESTION)
    hits = RAGPipeline.load(saved_index).retrieve(QUESTION, 3)
    assert [r.node.node_id for r in results] == [h.chunk.id for h in hits]
    assert [r.score for r in results] == pytest.approx([h.score for h in hits])
    for r in results:
        source = (CORPUS / r.node.metadata["source"]).read_text(encoding="utf-8")
        assert source[r.node.start_char_idx:r.node.end_char_idx] == r.node.text
        assert r.node.relationships[NodeRelationship.SOURCE].node_id == r.node.metadata["doc_id"]
        assert r.node.get_content(metadata_mode="embed") == r.node.text
    with pytest.raises(ConfigError, match="k: must be an int >= 1"):
        li.RagkitRetriever(index=saved_index, k=-1)


def test_llamaindex_readme_example_runs(readme_dir, capsys) -> None:
    code = _readme_example("ragkit.integrations.llamaindex")
    assert len(code.strip().splitlines()) <= 7  # two imports, a blank line, five lines at most
    scope: dict = {}
    exec(compile(code, "README.md (LlamaIndex example)", "exec"), scope)
    texts = {d.doc_id: d.text for d in scope["docs"]}
    assert scope["nodes"] and all(
        texts[n.ref_doc_id][n.start_char_idx:n.end_char_idx] == n.text for n in scope["nodes"])
    assert "'source': 'tcp.md'" in capsys.readouterr().out
