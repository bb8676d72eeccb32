"""One contract, every built-in tokenizer (``ragkit.tokenizers.BUILTIN``; tokenizers are named,
not registered components): counts agree with token starts, starts are ascending offsets inside
the text, loading is cached, and a declared ``splits_at_word_ends`` holds on real text.
"""

from __future__ import annotations

import pytest
import regex

from ragkit.protocols import SplitsAtWordEnds, Tokenizer
from ragkit.tokenizers import BUILTIN, load_tokenizer
from tests.contracts.test_chunkers import SAMPLES

TEXTS = {k: v for k, v in SAMPLES.items() if k != "long-run"} | {
    "prose": "The quick brown fox, 42 times; jumps over the lazy dog.\nSecond line here. " * 4,
}
WORD_END = regex.compile(r"(?<=[A-Za-z0-9])(?=[ \t\n])")


@pytest.mark.parametrize("name", BUILTIN)
def test_loads_once_and_is_a_tokenizer(name):
    tok = load_tokenizer(name)
    assert tok is load_tokenizer(name)
    assert isinstance(tok, Tokenizer)
    assert tok.name == name


@pytest.mark.parametrize("text", TEXTS.values(), ids=list(TEXTS))
@pytest.mark.parametrize("name", BUILTIN)
def test_count_and_starts_agree(name, text):
    tok = load_tokenizer(name)
    starts = tok.token_starts(text)
    assert tok.count(text) == len(starts)
    assert all(0 <= s < len(text) for s in starts)
    assert list(starts) == sorted(starts)  # ascending; repeats allowed inside a character
    assert tok.count("") == 0 and len(tok.token_starts("")) == 0


@pytest.mark.parametrize("name", BUILTIN)
def test_declared_word_ends_split_counts_exactly(name):
    tok = load_tokenizer(name)
    if not (isinstance(tok, SplitsAtWordEnds) and tok.splits_at_word_ends):
        pytest.skip(f"{name} does not declare splits_at_word_ends")
    text = TEXTS["prose"]
    cuts = [m.start() for m in WORD_END.finditer(text)]
    assert cuts
    for p in cuts[::3]:
        assert tok.count(text) == tok.count(text[:p]) + tok.count(text[p:]), p
