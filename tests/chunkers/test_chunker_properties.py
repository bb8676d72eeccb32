"""Hypothesis searches for documents on which a chunker breaks the contract.

Every registered chunker runs with every fast tokenizer on generated text (any code point but
lone surrogates, with CJK, emoji and ZWJ sequences, combining marks, prepended marks, every kind
of whitespace and "<|endoftext|>" over-represented) and on generated prose (words, sentences,
paragraphs); the invariants are the ones of tests/contracts/test_chunkers.py and must hold with zero
violations. Set CI=1 for a derandomized, repeatable run, and RAGKIT_HYPOTHESIS_EXAMPLES=5000
for a longer search.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragkit import registry
from ragkit.errors import DocumentError
from ragkit.types import Document
from tests.contracts.test_chunkers import contract_violations, make_chunker

settings.register_profile(
    "chunker-properties",
    max_examples=int(os.environ.get("RAGKIT_HYPOTHESIS_EXAMPLES", 300)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "chunker-properties-ci",
    parent=settings.get_profile("chunker-properties"),
    derandomize=True,
    database=None,
)
PROFILE = settings.get_profile(
    "chunker-properties-ci" if os.environ.get("CI") else "chunker-properties"
)

CHUNKERS = registry.names("chunker")
FAST_TOKENIZERS = ("cl100k", "whitespace", "character", "all-MiniLM-L6-v2")

TRICKY = [
    # combining marks, alone and stacked; a space carrying a mark is one grapheme cluster
    "\u0301", "\u0308", "\u20dd", "e\u0301", "a\u0301\u0302\u0303", " \u0301",
    # ZWJ sequences, skin tones, flags (regional indicator pairs), keycaps
    "\u200d", "👨\u200d👩\u200d👧", "🤷🏽\u200d♀️", "👍🏽", "🏽", "🇫", "🇷", "🇫🇷", "1\ufe0f\u20e3",
    # CJK, Hangul syllables and jamo, Indic conjuncts, RTL
    "日", "本語", "。", "！", "？", "，", "한", "\u1100\u1161\u11a8", "क्ष", "\u094d", "ا", "ש",
    # prepended concatenation marks (they join the character after them, even a space)
    "\u0600", "\u06dd", "\u0890",
    # characters cl100k splits into several byte tokens
    "𓀀", "𝔘", "꧁", "﷽", "𒀱",
    # every kind of whitespace and line break
    " ", "  ", "\t", "\n", "\n\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u00a0",
    "\u2003", "\u3000", "\u2028", "\u2029",
    # invisible and control characters
    "\u200b", "\ufeff", "\x00", "\x7f", "\ufffd",
    # separators and special-token text
    ". ", "? ", "! ", "; ", ", ", "<|endoftext|>", "[SEP]",
]

any_char = st.characters(exclude_categories=("Cs",))
unicode_text = st.lists(st.one_of(any_char, st.sampled_from(TRICKY)), max_size=120).map("".join)

word = st.one_of(
    st.text(st.characters(categories=("Ll", "Lu", "Lo", "Mn", "Nd", "So")), min_size=1,
            max_size=12),
    st.sampled_from(["the", "a", "Dr.", "U.S.", "3.14", "e\u0301te\u0301", "日本語", "👨\u200d👩\u200d👧",
                     "<|endoftext|>", "x" * 300]),
)
sentence = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(word, min_size=1, max_size=15),
    st.sampled_from([".", "!", "?", "。", "", "...", ".\u0301"]),
)
paragraph = st.lists(sentence, min_size=1, max_size=6).map(" ".join)
prose = st.builds(
    lambda paras, sep, pad: pad + sep.join(paras) + pad,
    st.lists(paragraph, min_size=1, max_size=6),
    st.sampled_from(["\n\n", "\n", "\r\n\r\n", " ", "\n \n\t\n", "\u2029"]),
    st.sampled_from(["", " ", "\n", "\u3000"]),
)


@st.composite
def budgets(draw, name: str):
    size = draw(st.sampled_from([1, 2, 3, 5, 8, 13, 40]))
    if name == "sentence":  # overlap counts sentences
        return size, draw(st.integers(0, 3))
    return size, draw(st.integers(0, size - 1))


def check(name: str, tokenizer: str, budget: tuple[int, int], text: str) -> None:
    size, overlap = budget
    doc = Document("doc", text)
    chunker = make_chunker(name, tokenizer, size, overlap)
    chunks = chunker.chunk(doc)
    problems = contract_violations(doc, chunks, tokenizer, size, overlap)
    assert not problems, "\n".join(problems[:10])
    assert chunker.chunk(doc) == chunks  # deterministic


@pytest.mark.parametrize("name", CHUNKERS)
@PROFILE
@given(data=st.data(), text=unicode_text, tokenizer=st.sampled_from(FAST_TOKENIZERS))
def test_any_unicode_text(name, data, text, tokenizer):
    check(name, tokenizer, data.draw(budgets(name)), text)


@pytest.mark.parametrize("name", CHUNKERS)
@PROFILE
@given(data=st.data(), text=prose, tokenizer=st.sampled_from(FAST_TOKENIZERS))
def test_generated_prose(name, data, text, tokenizer):
    check(name, tokenizer, data.draw(budgets(name)), text)


@pytest.mark.parametrize("name", CHUNKERS)
@PROFILE
@given(
    data=st.data(),
    text=st.lists(st.sampled_from(TRICKY), max_size=60).map("".join),
    tokenizer=st.sampled_from(FAST_TOKENIZERS),
)
def test_only_tricky_pieces(name, data, text, tokenizer):
    check(name, tokenizer, data.draw(budgets(name)), text)


@PROFILE
@given(
    prefix=st.text(any_char, max_size=10),
    surrogate=st.characters(categories=("Cs",)),
    suffix=st.text(any_char, max_size=10),
)
def test_lone_surrogates_are_rejected_by_document(prefix, surrogate, suffix):
    with pytest.raises(DocumentError, match="lone surrogate"):
        Document("d", prefix + surrogate + suffix)


def test_lone_surrogate_from_surrogateescape():
    text = b"caf\xe9 ok".decode("utf-8", errors="surrogateescape")
    with pytest.raises(DocumentError, match=r"U\+DCE9 at char 3"):
        Document("latin1.txt", text)
