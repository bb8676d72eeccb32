"""Test doubles shipped with the library: fast, deterministic, no model and no download.

``import ragkit`` does not import this module (it needs numpy); the registry reaches it by name
(embedder ``"hash"``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ragkit.checks import check_int
from ragkit.errors import ConfigError

_WORD = re.compile(r"\w+")


@dataclass(kw_only=True)
class HashEmbedder:
    """A fake embedder for tests and quick runs: a bag of words of sha256-seeded random vectors.

    Each lowercase word token (regex ``\\w+``) gets a fixed random vector drawn from a generator
    seeded by the sha256 of the token; a text's vector is the L2-normalised sum of its tokens'
    vectors. Texts that share words land close together, so retrieval tests behave sensibly, but
    it knows nothing about meaning (``"car"`` and ``"automobile"`` are unrelated). A text with no
    word gets the zero vector. Same input, same output, in every process and on every machine.
    """

    dim: int = 256

    max_tokens = None  # no context limit (a class attribute, not a config field)

    def __post_init__(self) -> None:
        check_int(self.dim, "dim", min=1)

    @cached_property
    def _vocab(self) -> _TokenTable:
        return _TokenTable(self.dim)  # lives in __dict__, so it never affects equality

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dim)``; rows L2-normalised (zero for a text with no word)."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not a single str; wrap it in a list")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, d)
        for i, text in enumerate(texts):
            ids = self._vocab.ids(_WORD.findall(text.lower()))  # (tokens,)
            if len(ids):
                self._vocab.table[ids].sum(axis=0, out=out[i])
        norms = np.linalg.norm(out, axis=1, keepdims=True)  # (n, 1)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


class _TokenTable:
    """token -> row of a growing float32 table of sha256-seeded random vectors."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.index: dict[str, int] = {}
        self._table = np.empty((0, dim), dtype=np.float32)  # (capacity, d)

    @property
    def table(self) -> np.ndarray:
        return self._table[: len(self.index)]  # (tokens seen, d)

    def ids(self, tokens: list[str]) -> np.ndarray:
        index = self.index
        for token in tokens:
            if token not in index:
                self._append(token)
        return np.fromiter((index[t] for t in tokens), np.intp, len(tokens))

    def _append(self, token: str) -> None:
        row = len(self.index)
        if row == len(self._table):
            grown = np.empty((max(1024, 2 * row), self.dim), dtype=np.float32)
            grown[:row] = self._table[:row]
            self._table = grown
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        self._table[row] = rng.standard_normal(self.dim)
        self.index[token] = row


# -- a scripted LLM (appended; its imports stay here to leave the module above untouched) --------

from collections.abc import Callable  # noqa: E402

from ragkit.errors import RagkitError  # noqa: E402


@dataclass(kw_only=True)
class ScriptedLLM:
    """A fake LLM for tests: answers ``complete(prompt)`` from a script and records the prompts.

    ``answers`` is a list of answers given in turn (a prompt past its end is an error naming how
    many answers there were), or a callable ``prompt -> answer``. ``prompts`` holds every prompt
    received, in order. It has only ``complete`` (the ``ragkit.retrieval.rerankers.LLM`` protocol).
    """

    answers: Sequence[str] | Callable[[str], str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.answers, str) or not (
            callable(self.answers) or isinstance(self.answers, Sequence)
        ):
            raise ConfigError(
                f"must be a list of answers or a callable prompt -> answer; got {self.answers!r}",
                path="answers",
            )
        self.prompts: list[str] = []

    def complete(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if callable(self.answers):
            return self.answers(prompt)
        if len(self.prompts) > len(self.answers):
            raise RagkitError(
                f"ScriptedLLM has {len(self.answers)} scripted answers but got prompt number "
                f"{len(self.prompts)}: {prompt[:80]!r}"
            )
        return self.answers[len(self.prompts) - 1]


# -- a fake language model (appended, like ScriptedLLM) ------------------------------------------

_LM_TOKEN = re.compile(r"\s*\S+")


@dataclass(kw_only=True)
class FakeLM:
    """A deterministic fake language model for tests and dry runs: no weights, no download.

    It has the three LLM abilities ragkit's components use:

    - ``token_logprobs(segments)`` (``ragkit.generation.base.TokenLogprobLLM``): tokens are
      whitespace-separated words (with the whitespace before them). A word already seen among
      the last ``window`` tokens of the running text gets log-probability ``log(seen)``; an
      unseen one a value in ``[log(1e-4), log(1e-2)]`` fixed by its sha256. So text that repeats
      the words of its context has low perplexity and a change of vocabulary looks like a
      change of topic, which makes hand-made cases with a known answer easy to write.
    - ``complete(prompt)``: ``"Answer: ID <n>"`` with ``n`` in 1..9 chosen by the prompt's
      sha256 (often not a valid answer, which exercises the callers' fallbacks).
    - ``score(prompt, options)``: a log-probability per option fixed by the sha256 of prompt and
      option.
    """

    seen: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.seen, bool) or not isinstance(self.seen, int | float) or not (
            0 < self.seen <= 1
        ):
            raise ConfigError(f"must be a probability in (0, 1]; got {self.seen!r}", path="seen")

    def token_logprobs(
        self, segments: Sequence[str], *, window: int = 1024, progress: Callable | None = None
    ) -> list[np.ndarray]:
        import math

        from collections import deque

        recent: deque[str] = deque()  # the last `window` words, oldest first
        counts: dict[str, int] = {}
        out: list[np.ndarray] = []
        total = sum(len(_LM_TOKEN.findall(s)) for s in segments)
        done = 0
        for segment in segments:
            values = []
            for token in _LM_TOKEN.findall(segment):
                word = token.strip().lower()
                if counts.get(word, 0) > 0:
                    values.append(math.log(self.seen))
                else:
                    h = int.from_bytes(hashlib.sha256(word.encode("utf-8", "surrogatepass"))
                                       .digest()[:4], "little")
                    values.append(math.log(1e-4) + (h / 2**32) * (math.log(1e-2) - math.log(1e-4)))
                recent.append(word)
                counts[word] = counts.get(word, 0) + 1
                if len(recent) > window:
                    old = recent.popleft()
                    counts[old] -= 1
            out.append(np.asarray(values, dtype=np.float32))
            done += len(values)
            if progress is not None:
                progress(done, total)
        return out

    def complete(self, prompt: str, max_new_tokens: int | None = None) -> str:
        digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()
        return f"Answer: ID {1 + digest[0] % 9}"

    def score(self, prompt: str, options: Sequence[str]) -> dict[str, float]:
        out = {}
        for option in options:
            digest = hashlib.sha256(f"{prompt}\x00{option}".encode("utf-8", "surrogatepass"))
            out[option] = -1.0 - 5.0 * digest.digest()[0] / 255
        return out
