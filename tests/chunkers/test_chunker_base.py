"""The span machinery of chunkers/base.py against the slow, obvious computation.

``TokenIndex`` counts a span from one tokenization of the whole text, and ``inside_clusters``
finds grapheme clusters without walking every one: both must agree exactly with tokenizing the
span again and with ``regex``'s ``\\X``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from ragkit.chunkers.base import TokenIndex, cut_points
from ragkit.chunkers.graphemes import _GLUE, _glue_ranges, grapheme_starts, inside_clusters
from ragkit.tokenizers import load_tokenizer
from tests.chunkers.test_chunker_properties import PROFILE, prose, unicode_text
from tests.contracts.test_chunkers import SAMPLES

WORD_END = re.compile(r"[A-Za-z0-9](?=[\t\n\x0b\x0c\r ])")
# long enough that spans take the counting-from-the-index path (spans under 128 chars do not)
long_text = st.lists(st.one_of(unicode_text, prose), min_size=1, max_size=4).map("".join)
FEWER = settings(PROFILE, max_examples=max(PROFILE.max_examples // 4, 25))  # long inputs are slow


def reference_inside(text: str) -> list[int]:
    starts = {m.start() for m in regex.finditer(r"\X", text)}
    return [i for i in range(len(text)) if i not in starts]


@pytest.mark.parametrize("key", SAMPLES)
def test_inside_clusters_on_the_samples(key):
    text = SAMPLES[key]
    assert inside_clusters(text).tolist() == reference_inside(text)


@FEWER
@given(text=long_text)
def test_inside_clusters_and_grapheme_starts(text):
    inside = reference_inside(text)
    assert inside_clusters(text).tolist() == inside
    starts = grapheme_starts(text)
    if not inside:
        assert starts is None
    else:
        assert starts.tolist() == [m.start() for m in regex.finditer(r"\X", text)]


def test_glue_is_looked_for_everywhere_it_lives():
    every = "".join(map(chr, range(0x110000)))
    found = [(m.start(), m.end()) for m in regex.finditer(_GLUE + "+", every)]
    lo, hi = _glue_ranges()
    assert found == [(13, 14), *zip(lo.tolist(), hi.tolist())]  # CR, then the planes searched


@FEWER
@given(text=long_text, tokenizer=st.sampled_from(["cl100k", "whitespace", "character"]))
def test_cut_points_match_their_definition(text, tokenizer):
    tok = load_tokenizer(tokenizer)
    starts = tok.token_starts(text)
    clusters = {m.start() for m in regex.finditer(r"\X", text)}
    inner = sorted(p for p in set(starts.tolist()) if 0 < p < len(text) and p in clusters)
    cuts, before = cut_points(text, tok)
    assert cuts.tolist() == [0, *inner, len(text)]
    assert before.tolist() == [*np.searchsorted(starts, [0, *inner]).tolist(), len(starts)]


@pytest.mark.parametrize("name", ["cl100k", "whitespace", "character"])
@FEWER
@given(text=long_text, data=st.data())
def test_span_counts_are_exact(name, text, data):
    tok = load_tokenizer(name)
    index = TokenIndex(text, tok)
    for _ in range(8):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, len(text)))
        n = tok.count(text[start:end])
        assert index.count(start, end) == n
        size = data.draw(st.integers(1, max(2 * n, 1)))
        assert index.at_most(start, end, size) == (n <= size)


@FEWER
@given(text=long_text, data=st.data())
def test_cl100k_splits_at_word_ends(text, data):
    # the property ragkit.tokenizers declares for cl100k, which TokenIndex relies on
    enc = load_tokenizer("cl100k")._enc
    ends = [m.end() for m in WORD_END.finditer(text)]
    if not ends:
        return
    whole = enc.encode_ordinary(text)
    for p in data.draw(st.lists(st.sampled_from(ends), max_size=6, unique=True)):
        assert enc.encode_ordinary(text[:p]) + enc.encode_ordinary(text[p:]) == whole


def test_only_checked_tokenizers_split_at_word_ends():
    assert load_tokenizer("cl100k").splits_at_word_ends is True
    assert getattr(load_tokenizer("all-MiniLM-L6-v2"), "splits_at_word_ends", False) is False


# Texts where counting a span from the whole text's tokens is most likely to go wrong: cuts next
# to CJK, emoji ZWJ sequences, combining marks, runs of spaces and newlines, special-token text,
# contractions, digit runs, and a word longer than any chunk.
ADVERSARIAL = {
    "cjk": "日本語のテキストです。Mixed English日本語 text, 中文文本，没有空格。한국어 문장. " * 20,
    "emoji": "Family 👨\u200d👩\u200d👧 and 👍🏽 thumbs.\n🇫🇷 flag, 🤷🏽\u200d♀️ shrug 1\ufe0f\u20e3! " * 20,
    "combining": "Cafe\u0301 re\u0301sume\u0301 a\u0301\u0302\u0303 x. \u0301y \u0600z " * 30,
    "whitespace": "word   \n\n\n  \t word\r\n\r\nx.  \n \n\nY  \t\x0b\x0c z\u3000\u00a0w \n" * 30,
    "special": "a<|endoftext|>b <|endoftext|>. x<|fim_prefix|>\n<|endoftext|>\n\nend " * 30,
    "contractions": "It's don't WE'LL they've I'M 'twas '' 's 12345 3.14159 1,000,000 a1b2 " * 30,
    "long-word": "start " + "a" * 200_000 + " tail. " + "ab" * 3_000 + "\nend",
}


@pytest.mark.parametrize("key", ADVERSARIAL)
def test_span_counts_are_exact_at_ascii_edges(key):
    import random

    from ragkit.tokenizers import ascii_edge

    text = ADVERSARIAL[key]
    tok = load_tokenizer("cl100k")
    index = TokenIndex(text, tok)
    edges = [p for p in range(1, len(text)) if ascii_edge(text, p)]
    anywhere = list(range(0, len(text) + 1, max(len(text) // 500, 1)))
    rnd = random.Random(key)
    for _ in range(150):
        ends = sorted(rnd.sample(edges, 2) if rnd.random() < 0.5 else
                      [rnd.choice(edges), rnd.choice(anywhere)])
        for start, end in (ends, (0, ends[1]), (ends[0], len(text))):
            if end - start > 20_000:
                start = end - rnd.randint(0, 20_000)  # keep tiktoken's own count quick
            assert index.count(start, end) == tok.count(text[start:end]), (start, end)


@pytest.mark.parametrize("key", ADVERSARIAL)
@pytest.mark.parametrize("overlap", [0, 7])
def test_windows_report_their_exact_size(key, overlap):
    # the "tokens" a fixed window reports is its text tokenized alone, and within the budget
    from ragkit.chunkers.base import token_windows

    text = ADVERSARIAL[key]
    tok = load_tokenizer("cl100k")
    windows = token_windows(text, 0, len(text), tok, 40, overlap)
    assert windows
    for start, end, n in windows:
        assert n == tok.count(text[start:end]) <= 40
