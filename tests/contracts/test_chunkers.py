"""One contract, every registered chunker, every built-in tokenizer.

New chunkers are covered as soon as they are registered: the suite iterates
``ragkit.registry.names("chunker")``. ``contract_violations`` is shared with the Hypothesis
suite (tests/chunkers/test_chunker_properties.py), so both check exactly the same invariants.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
import regex

from ragkit.chunkers.base import cut_points
from ragkit import registry
from ragkit.config import build, to_config
from ragkit.tokenizers import load_tokenizer
from ragkit.types import Chunk, Document

CHUNKERS = registry.names("chunker")
FAKE_LM = "ragkit.testing:FakeLM"  # for chunkers with an `llm`: the contract holds for any LM
TOKENIZERS = ("cl100k", "whitespace", "character", "all-MiniLM-L6-v2")
BUDGETS = ((8, 0), (8, 3), (32, 0), (32, 8), (200, 0), (200, 40))  # (chunk_size, overlap)

from tests.dev_data import CORPORA, require
CORPUS_CHARS = 20_000  # enough for many chunks at every budget, small enough to stay fast

SAMPLES = {
    "empty": "",
    "whitespace-only": " \n\t\r\n \u00a0\u3000\u2028 ",
    "one-char": "x",
    "cjk": "日本語のテキストです。これは二番目の文です！第三の文？\n\n中文文本，没有空格。"
    "한국어 문장입니다. 한글은 조합됩니다.\n" * 6,
    "emoji": "Family 👨‍👩‍👧 and 👍🏽 thumbs, 🇫🇷🇩🇪 flags. 🤷🏽‍♀️ shrug! " * 8 + "👨‍👩‍👧‍👦" * 30,
    "combining": "Cafe\u0301 re\u0301sume\u0301 na\u0131\u0308ve. " * 12
    + "e\u0301" * 60
    + " a\u0301\u0302\u0303\u0304\u0305 Z\u0351\u0352\u0357\u035b " * 8,
    "space-with-mark": "word \u0301accent. \u0301\u0301 next \u200d joined. " * 10,
    "prepend": "\u0600 \u0601 number \u06dd signs \u0600\u0600 " * 12,
    "rtl": "مرحبا بالعالم. هذا نص عربي للاختبار. שלום עולם, זה טקסט בעברית. " * 10,
    "indic": "नमस्ते दुनिया। क्षत्रिय और द्वार। தமிழ் எழுத்து. " * 10,
    "multibyte-tokens": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꧁꧂ 𓀀𓀁𓀂 🜁🜂🜃 ﷽ 𒀱 " * 10,  # cl100k cuts inside these chars
    "crlf": "line one\r\nline two\r\n\r\nsecond paragraph\r\n\r\n\r\n" * 10,
    "long-word": "pneumonoultramicroscopicsilicovolcanoconiosis" * 450,  # ~20k chars, no space
    "long-run": "a" * 20_000,
    "special-tokens": "Hello <|endoftext|> world <|fim_prefix|><|fim_middle|> x <|endofprompt|> "
    * 10,
    "unicode-spaces": "a\u00a0b\u2003c\td\u3000e\u2028f\u2029g\x0bh\x0ci\x1cj\x85k\u200bl\ufeffm "
    * 10,
    "controls": "nul\x00 bell\x07 esc\x1b del\x7f repl\ufffd end " * 10,
    "hangul-jamo": "\u1100\u1161\u11a8 \u1100\u1161 " * 20,
}


@functools.cache
def corpus_samples() -> dict[str, str]:
    require(CORPORA)
    return {
        f"corpus:{p.stem}": p.read_text(encoding="utf-8")[:CORPUS_CHARS]
        for p in sorted(CORPORA.glob("*.md"))
    }


CORPUS_NAMES = ("chatlogs", "state_of_the_union", "wikitexts")
SAMPLE_IDS = [*SAMPLES, *(f"corpus:{n}" for n in CORPUS_NAMES)]


def sample_text(sample: str) -> str:
    if sample in SAMPLES:
        return SAMPLES[sample]
    corpora = corpus_samples()
    if sample not in corpora:
        pytest.fail(f"evaluation corpus {sample.split(':', 1)[1]}.md not found under {CORPORA}")
    return corpora[sample]


# -- the contract -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def grapheme_bounds(text: str) -> frozenset[int]:
    return frozenset(m.start() for m in regex.finditer(r"\X", text)) | {len(text)}


def contract_violations(
    doc: Document, chunks: list[Chunk], tokenizer_name: str, chunk_size: int | None, overlap: int
) -> list[str]:
    """Every way ``chunks`` break the chunker contract for ``doc``; ``[]`` if none."""
    text = doc.text
    tok = load_tokenizer(tokenizer_name)
    out: list[str] = []
    if not text.strip():
        return [f"{len(chunks)} chunks for a blank document"] if chunks else []
    bounds = grapheme_bounds(text) if not text.isascii() or "\r\n" in text else None
    covered = np.zeros(len(text) + 1, dtype=np.int64)
    ids: set[str] = set()
    prev: Chunk | None = None
    for i, c in enumerate(chunks):
        where = f"chunk {i} [{c.start}:{c.end}] {c.text[:30]!r}"
        if not isinstance(c, Chunk):
            out.append(f"chunk {i} is a {type(c).__name__}, not a Chunk")
            continue
        if c.doc_id != doc.id:
            out.append(f"{where}: doc_id {c.doc_id!r} != {doc.id!r}")
        if text[c.start : c.end] != c.text:
            out.append(f"{where}: text differs from doc.text[start:end]")
        if c.index != i:
            out.append(f"{where}: index {c.index}")
        if c.id in ids:
            out.append(f"{where}: duplicate id {c.id}")
        ids.add(c.id)
        if not c.text.strip():
            out.append(f"{where}: empty or blank")
            continue
        clusters = regex.findall(r"\X", c.text)
        # A whitespace char that shares a grapheme cluster with a mark (" \u0301") is not trimmed.
        if clusters[0].isspace() or clusters[-1].isspace():
            out.append(f"{where}: leading or trailing whitespace")
        if bounds is not None and (c.start not in bounds or c.end not in bounds):
            out.append(f"{where}: a boundary splits a grapheme cluster")
        n = tok.count(c.text)
        if c.metadata.get("tokens") != n:
            out.append(f"{where}: metadata tokens={c.metadata.get('tokens')} but counts {n}")
        if chunk_size is not None and n > chunk_size:
            cuts, _ = cut_points(c.text, tok)
            if len(cuts) > 2:
                out.append(f"{where}: {n} > {chunk_size} tokens with {len(cuts) - 2} cut points")
        if prev is not None:
            if (c.start, c.end) <= (prev.start, prev.end):
                out.append(f"{where}: not after chunk {i - 1} [{prev.start}:{prev.end}]")
            if c.start <= prev.start:
                out.append(f"{where}: start does not increase")
            if c.end <= prev.end:
                out.append(f"{where}: inside chunk {i - 1} [{prev.start}:{prev.end}]")
            if overlap == 0 and c.start < prev.end:
                out.append(f"{where}: overlaps chunk {i - 1} though overlap=0")
        covered[c.start] += 1
        covered[c.end] -= 1
        prev = c
    inside = np.cumsum(covered)[:-1] > 0
    missing = [j for j in np.flatnonzero(~inside) if not text[j].isspace()]
    if missing:
        j = int(missing[0])
        out.append(f"{len(missing)} non-space chars in no chunk, first at {j}: {text[j:j + 20]!r}")
    return out


# What a chunker needs besides a budget to take any text. The code chunker refuses a document in
# no known language unless told one: these documents (no code file suffix) are parsed as Python,
# which tree-sitter does for any text, wrapping what it cannot parse in ERROR nodes.
CONTRACT_SPECS: dict[str, dict] = {"code": {"language": "python"}}


def make_chunker(name: str, tokenizer: str, chunk_size: int, overlap: int):
    """``name`` built with the given budget, passing only the fields it has."""
    cls = registry.resolve("chunker", name)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    if not {"chunk_size", "tokenizer"} <= fields:
        pytest.skip(f"chunker {name!r} has no chunk_size/tokenizer budget")
    spec = {"name": name, "chunk_size": chunk_size, "tokenizer": tokenizer,
            **CONTRACT_SPECS.get(name, {})}
    if "embedder" in fields:  # the budget contract does not depend on the model: the fast fake
        spec["embedder"] = "hash"
    if "llm" in fields:  # nor on the language model: a deterministic fake
        spec["llm"] = FAKE_LM
    if "overlap" in fields:
        spec["overlap"] = overlap
    return build("chunker", spec)


def assert_contract(chunker, doc: Document, tokenizer: str, chunk_size: int | None, overlap: int):
    chunks = chunker.chunk(doc)
    problems = contract_violations(doc, chunks, tokenizer, chunk_size, overlap)
    assert not problems, f"{len(problems)} violations:\n" + "\n".join(problems[:20])
    return chunks


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CHUNKERS)
def test_builds_with_defaults_and_round_trips(name):
    chunker = build("chunker", name)
    assert build("chunker", to_config(chunker, "chunker")) == chunker
    custom = make_chunker(name, "whitespace", 32, 8)
    spec = to_config(custom, "chunker")
    assert spec["name"] == name
    assert build("chunker", spec) == custom
    assert build("chunker", spec) != chunker


@pytest.mark.parametrize("name", CHUNKERS)
def test_defaults_keep_the_contract(name):
    chunker = build("chunker", {"name": name, **CONTRACT_SPECS.get(name, {})})
    if "llm" in {f.name for f in dataclasses.fields(chunker)}:
        # every other default stays; the real LM runs in the LLM chunkers' own slow tests
        chunker = dataclasses.replace(chunker, llm=FAKE_LM)
    owner = getattr(chunker, "boundary", chunker)  # late chunking: the boundary chunker's budget
    tokenizer = getattr(owner, "resolved_tokenizer", None) or getattr(owner, "tokenizer", "cl100k")
    size = getattr(owner, "resolved_chunk_size", getattr(owner, "chunk_size", None))
    overlap = getattr(owner, "overlap", 0)
    for sample in ("emoji", "corpus:state_of_the_union"):
        text = sample_text(sample)
        assert_contract(chunker, Document(sample, text), tokenizer, size, overlap)


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
@pytest.mark.parametrize("name", CHUNKERS)
def test_deterministic(name, tokenizer):
    doc = Document("d", sample_text("emoji") + sample_text("cjk") + sample_text("combining"))
    first = make_chunker(name, tokenizer, 16, 4)
    a, b = first.chunk(doc), first.chunk(doc)
    c = make_chunker(name, tokenizer, 16, 4).chunk(doc)
    assert a == b == c
    assert [x.id for x in a] == [x.id for x in c]
    assert [dict(x.metadata) for x in a] == [dict(x.metadata) for x in c]


@pytest.mark.parametrize("name", CHUNKERS)
def test_every_chunk_carries_its_documents_metadata(name):
    chunker = build("chunker", {"name": name, **CONTRACT_SPECS.get(name, {})})
    if "llm" in {f.name for f in dataclasses.fields(chunker)}:
        chunker = dataclasses.replace(chunker, llm=FAKE_LM)
    meta = {"source": "notes/speech.txt", "team": "search", "year": 2024, "tags": ["a", "b"]}
    doc = Document("speech", sample_text("corpus:state_of_the_union")[:6000], meta)
    chunks = chunker.chunk(doc)
    assert chunks
    for c in chunks:
        assert {key: c.metadata.get(key) for key in meta} == meta, c.id


@pytest.mark.parametrize("text", ["", " ", "\n\n\t  \r\n", "\u3000\u00a0\u2028"])
@pytest.mark.parametrize("name", CHUNKERS)
def test_blank_document_gives_no_chunks(name, text):
    assert make_chunker(name, "cl100k", 8, 0).chunk(Document("blank", text)) == []


@pytest.mark.parametrize("sample", SAMPLE_IDS)
@pytest.mark.parametrize("budget", BUDGETS, ids=lambda b: f"{b[0]}-{b[1]}")
@pytest.mark.parametrize("tokenizer", TOKENIZERS)
@pytest.mark.parametrize("name", CHUNKERS)
def test_contract(name, tokenizer, budget, sample):
    size, overlap = budget
    text = sample_text(sample)
    chunker = make_chunker(name, tokenizer, size, overlap)
    assert_contract(chunker, Document(sample, text), tokenizer, size, overlap)


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
@pytest.mark.parametrize("name", CHUNKERS)
def test_very_long_line(name, tokenizer):
    text = "x" + "abcdefghij" * 20_000 + "\n\n" + "日本" * 1000  # 200k chars of one word
    chunker = make_chunker(name, tokenizer, 200, 20)
    assert_contract(chunker, Document("long", text), tokenizer, 200, 20)


@pytest.mark.parametrize("name", CHUNKERS)
def test_special_token_text_is_plain_text(name):
    text = "<|endoftext|>" * 20 + " tail <|endoftext|>"
    doc = Document("eot", text)
    chunks = assert_contract(make_chunker(name, "cl100k", 8, 0), doc, "cl100k", 8, 0)
    assert "".join(c.text for c in chunks).count("<|endoftext|>") == text.count("<|endoftext|>")
