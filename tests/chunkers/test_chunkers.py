"""What each chunking strategy does, beyond the shared contract (tests/contracts/test_chunkers.py)."""

from __future__ import annotations

import pytest

from ragkit.chunkers.base import trim
from ragkit.chunkers.fixed import FixedChunker
from ragkit.chunkers.recursive import RecursiveChunker
from ragkit.chunkers.sentence import SentenceChunker, sentence_spans
from ragkit import registry
from ragkit.config import build
from ragkit.errors import ConfigError
from ragkit.tokenizers import load_tokenizer
from ragkit.types import Document
from tests.contracts.test_chunkers import CONTRACT_SPECS

WORDS = " ".join(f"w{i}" for i in range(40))
PARAGRAPHS = "First paragraph is short.\n\nSecond one is here too.\n\nThird paragraph ends it."


def chunk(spec: dict, text: str, **meta):
    return build("chunker", spec).chunk(Document("d", text, meta))


def _fields(name: str) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(registry.resolve("chunker", name)) if f.init}


def _spec(name: str, **params) -> dict:
    """``name`` with those of ``params`` its class has (late chunking has no budget of its own)."""
    spec = {"name": name, **{k: v for k, v in params.items() if k in _fields(name)}}
    if "llm" in _fields(name):  # LLM chunkers: a fast deterministic fake (real model: slow tests)
        spec["llm"] = "ragkit.testing:FakeLM"
    return spec


# -- fixed --------------------------------------------------------------------------------------


def test_fixed_windows_share_exactly_overlap_words():
    spec = {"name": "fixed", "chunk_size": 10, "overlap": 3, "tokenizer": "whitespace"}
    chunks = chunk(spec, WORDS)
    words = [c.text.split() for c in chunks]
    assert words[0] == [f"w{i}" for i in range(10)]
    for prev, nxt in zip(words, words[1:]):
        assert prev[-3:] == nxt[:3]
    assert [len(w) for w in words] == [10, 10, 10, 10, 10, 5]
    assert [c.metadata["tokens"] for c in chunks] == [10, 10, 10, 10, 10, 5]


def test_fixed_windows_share_about_overlap_tokens():
    text = ("The quick brown fox jumps over the lazy dog while the cat sleeps. " * 40).strip()
    tok = load_tokenizer("cl100k")
    chunks = chunk({"name": "fixed", "chunk_size": 50, "overlap": 10}, text)
    assert len(chunks) > 5
    for prev, nxt in zip(chunks, chunks[1:]):
        assert nxt.start < prev.end
        shared = tok.count(text[nxt.start : prev.end])
        assert 8 <= shared <= 12, (prev.text, nxt.text)
    assert all(c.metadata["tokens"] <= 50 for c in chunks)
    assert all(c.metadata["tokens"] >= 45 for c in chunks[:-1])  # windows are nearly full


def test_fixed_without_overlap_tiles_the_text():
    chunks = chunk({"name": "fixed", "chunk_size": 7, "tokenizer": "whitespace"}, WORDS)
    assert " ".join(c.text for c in chunks) == WORDS


def test_fixed_overlap_never_repeats_a_window_around_an_unbreakable_unit():
    # The family emoji is 13 cl100k tokens; the windows before it used to shrink back onto
    # themselves ("flag. Family", ". Family", "Family").
    text = "Family 👨‍👩‍👧 and 👍🏽 thumbs 🇫🇷 flag. " * 2
    chunks = chunk({"name": "fixed", "chunk_size": 8, "overlap": 3}, text)
    for prev, nxt in zip(chunks, chunks[1:]):
        assert prev.start < nxt.start and prev.end < nxt.end
    assert "👨‍👩‍👧" in [c.text for c in chunks]  # over budget, alone, whole


# -- recursive ----------------------------------------------------------------------------------


def test_recursive_splits_at_paragraphs_first():
    chunks = chunk({"name": "recursive", "chunk_size": 8}, PARAGRAPHS)
    assert [c.text for c in chunks] == PARAGRAPHS.split("\n\n")


def test_recursive_packs_paragraphs_that_fit_together():
    chunks = chunk({"name": "recursive", "chunk_size": 12}, PARAGRAPHS)
    assert [c.text for c in chunks] == [PARAGRAPHS.rsplit("\n\n", 1)[0], "Third paragraph ends it."]


def test_recursive_whole_text_when_it_fits():
    chunks = chunk({"name": "recursive", "chunk_size": 100}, "  " + PARAGRAPHS + "\n")
    assert [c.text for c in chunks] == [PARAGRAPHS]


def test_recursive_falls_back_to_sentences_then_words():
    text = "Alpha beta gamma delta. Epsilon zeta eta theta. Iota kappa lambda mu nu xi omicron pi."
    chunks = chunk({"name": "recursive", "chunk_size": 4, "tokenizer": "whitespace"}, text)
    assert [c.text for c in chunks] == [
        "Alpha beta gamma delta.",
        "Epsilon zeta eta theta.",
        "Iota kappa lambda mu",
        "nu xi omicron pi.",
    ]


def test_recursive_packs_pieces_greedily():
    text = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota kappa lambda mu nu xi omicron."
    chunks = chunk({"name": "recursive", "chunk_size": 4, "tokenizer": "whitespace"}, text)
    assert [c.text for c in chunks] == [
        "Alpha beta gamma.",
        "Delta epsilon zeta. Eta",  # the next sentence's first word still fits
        "theta iota kappa lambda",
        "mu nu xi omicron.",
    ]


def test_recursive_overlap_carries_whole_trailing_pieces():
    text = "a b c. d e f. g h i. j k l. m n o."
    spec = {"name": "recursive", "chunk_size": 8, "overlap": 3, "tokenizer": "whitespace"}
    assert [c.text for c in chunk(spec, text)] == [
        "a b c. d e f.",
        "d e f. g h i.",
        "g h i. j k l.",
        "j k l. m n o.",
    ]


def test_recursive_does_not_split_a_space_from_its_combining_mark():
    # " \u0301" is one grapheme cluster: the space is not a separator there, and is not trimmed.
    text = "alpha \u0301beta gamma delta"
    chunks = chunk({"name": "recursive", "chunk_size": 1, "tokenizer": "whitespace"}, text)
    assert [c.text for c in chunks] == ["alpha \u0301beta", "gamma", "delta"]


# -- sentence -----------------------------------------------------------------------------------

SENTENCES = [
    "One two three.",
    "Four five six.",
    "Seven eight nine.",
    "Ten eleven twelve.",
    "Thirteen fourteen.",
]


def _sentences_of(text: str) -> list[str]:
    return [s for part in text.split(". ") for s in [part if part.endswith(".") else part + "."]]


def test_sentence_keeps_sentences_whole():
    text = " ".join(SENTENCES)
    chunks = chunk({"name": "sentence", "chunk_size": 7, "tokenizer": "whitespace"}, text)
    assert [c.text for c in chunks] == [
        "One two three. Four five six.",
        "Seven eight nine. Ten eleven twelve.",
        "Thirteen fourteen.",
    ]
    for c in chunks:
        assert set(_sentences_of(c.text)) <= set(SENTENCES)


def test_sentence_overlap_carries_whole_sentences():
    text = " ".join(SENTENCES)
    spec = {"name": "sentence", "chunk_size": 8, "overlap": 1, "tokenizer": "whitespace"}
    chunks = chunk(spec, text)
    assert [c.text for c in chunks] == [
        "One two three. Four five six.",
        "Four five six. Seven eight nine.",
        "Seven eight nine. Ten eleven twelve. Thirteen fourteen.",
    ]
    for prev, nxt in zip(chunks, chunks[1:]):
        assert _sentences_of(prev.text)[-1] == _sentences_of(nxt.text)[0]


def test_sentence_overlap_two_sentences():
    text = " ".join(SENTENCES)
    spec = {"name": "sentence", "chunk_size": 9, "overlap": 2, "tokenizer": "whitespace"}
    texts = [c.text for c in chunk(spec, text)]
    assert texts[0] == "One two three. Four five six. Seven eight nine."
    assert texts[1].startswith("Four five six. Seven eight nine.")


def test_sentence_longer_than_budget_is_cut_into_windows():
    long = "This sentence is far longer than the budget allows here."
    text = f"Short one. {long} End."
    chunks = chunk({"name": "sentence", "chunk_size": 4, "tokenizer": "whitespace"}, text)
    assert chunks[0].text == "Short one."
    assert all(c.metadata["tokens"] <= 4 for c in chunks)
    middle = [c.text for c in chunks[1:]]
    assert " ".join(middle) == f"{long} End."
    assert len(middle) >= 3


def test_sentence_spans_tile_the_text_and_respect_graphemes():
    text = "Hi there. \u0301Foo bar! Baz?"
    spans = sentence_spans(text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert 10 not in {s for s, _ in spans}  # spaCy starts a sentence at the mark; we do not


# -- every strategy -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", registry.names("chunker"))
def test_chunks_carry_the_document_source(name):
    spec = {**_spec(name, chunk_size=8), **CONTRACT_SPECS.get(name, {})}
    chunks = chunk(spec, PARAGRAPHS, source="notes/a.md")
    assert chunks and all(c.metadata["source"] == "notes/a.md" for c in chunks)
    assert chunks[0].id == f"d:{chunks[0].start}-{chunks[0].end}"


def test_trim_keeps_whole_grapheme_clusters():
    assert trim("  ab  ", 0, 6) == (2, 4)
    assert trim("   ", 0, 3)[0] == trim("   ", 0, 3)[1]
    assert trim("x \u0301y ", 1, 5) == (1, 4)  # the space carries the mark
    assert trim(" a\u0600 ", 0, 4) == (1, 4)  # U+0600 is prepended to the space after it


# -- config errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fixed", "recursive"])
@pytest.mark.parametrize("overlap", [8, 9])
def test_overlap_must_be_below_chunk_size(name, overlap):
    with pytest.raises(ConfigError) as info:
        build("chunker", {"name": name, "chunk_size": 8, "overlap": overlap})
    assert info.value.path == "chunker.overlap"
    assert "chunker.overlap" in str(info.value) and str(overlap) in str(info.value)
    assert "chunk_size=8" in str(info.value)


@pytest.mark.parametrize("name", registry.names("chunker"))
@pytest.mark.parametrize(
    ("field", "value"),
    [("chunk_size", 0), ("chunk_size", -5), ("overlap", -1), ("tokenizer", "no-such-tokenizer")],
)
def test_bad_values_name_field_and_value(name, field, value):
    if field not in _fields(name):
        pytest.skip(f"chunker {name!r} has no {field!r}")
    with pytest.raises(ConfigError) as info:
        build("chunker", {"name": name, field: value})
    message = str(info.value)
    assert info.value.path == f"chunker.{field}"
    assert message.startswith(f"chunker.{field}:") and str(value) in message
    if field == "tokenizer":
        assert "cl100k" in message and "whitespace" in message  # lists the choices


@pytest.mark.parametrize("cls", [FixedChunker, RecursiveChunker, SentenceChunker])
def test_direct_construction_validates_too(cls):
    with pytest.raises(ConfigError, match=r"^chunk_size: .*got 0"):
        cls(chunk_size=0)
    with pytest.raises(ConfigError, match="tokenizer"):
        cls(tokenizer="nope")


def test_sentence_overlap_is_counted_in_sentences():
    assert SentenceChunker(chunk_size=4, overlap=6).overlap == 6  # not compared with chunk_size


def test_recursive_separators_must_be_non_empty_strings():
    with pytest.raises(ConfigError, match=r"chunker\.separators"):
        build("chunker", {"name": "recursive", "separators": ["\n\n", ""]})
