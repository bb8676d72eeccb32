"""The prompt as explicit token segments: ``[instruction prefix][chunk 1]...[chunk n][question]``.

The model's chat template is rendered once around a placeholder user message and split there:
everything before the user content, plus the instruction, is the *prefix*; the question and
everything after the user content (end of turn, the assistant header) is the *question* segment.
Each chunk is tokenized on its own, so its token ids (and so its KV, given the prefix) never
depend on its neighbours or its rank: the same chunk is the same segment in every prompt.

Joining the segments' ids is the prompt the model sees; it may differ from tokenizing the joined
text at the seams (a BPE merge across a boundary), which is the price of stable segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_SLOT = "\u2063RAGKIT_USER_CONTENT\u2063"  # a placeholder no template rewrites

DEFAULT_INSTRUCTION = (
    "Answer the question using only the context below. "
    "If the context does not contain the answer, say so.\n\nContext:\n\n"
)
DEFAULT_CHUNK_FORMAT = "{text}\n\n"
DEFAULT_QUESTION_FORMAT = "Question: {query}"


@dataclass(frozen=True)
class PromptLayout:
    """Token ids of each segment; ``ids`` is their concatenation, the prompt fed to the model."""

    prefix: tuple[int, ...]
    chunks: tuple[tuple[int, ...], ...]
    question: tuple[int, ...]

    @property
    def segments(self) -> list[tuple[int, ...]]:
        return [self.prefix, *self.chunks, self.question]

    @property
    def ids(self) -> list[int]:
        return [t for seg in self.segments for t in seg]

    @property
    def context_len(self) -> int:
        """Tokens before the question: the prefix and every chunk."""
        return len(self.prefix) + sum(len(c) for c in self.chunks)

    def chunk_starts(self) -> list[int]:
        """Position of each chunk's first token in the prompt."""
        starts, pos = [], len(self.prefix)
        for c in self.chunks:
            starts.append(pos)
            pos += len(c)
        return starts


def chat_frame(tok: Any, system: str | None) -> tuple[str, str]:
    """The chat template's text before and after a user message (with the assistant header)."""
    if not getattr(tok, "chat_template", None):  # a base model: plain text after its BOS
        head = "" if system is None else system + "\n\n"
        bos = getattr(tok, "bos_token", None)
        if bos and tok.encode("x")[:1] == [tok.bos_token_id]:  # the tokenizer would start with it
            head = bos + head
        return head, "\nAnswer:"
    messages = [{"role": "user", "content": _SLOT}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head, sep, tail = text.partition(_SLOT)
    if not sep:
        raise ValueError("the chat template does not place the user content verbatim")
    return head, tail


def encode(tok: Any, text: str) -> tuple[int, ...]:
    return tuple(tok.encode(text, add_special_tokens=False))


def build_prompt(
    tok: Any,
    query: str,
    texts: Sequence[str],
    *,
    system: str | None = None,
    instruction: str = DEFAULT_INSTRUCTION,
    chunk_format: str = DEFAULT_CHUNK_FORMAT,
    question_format: str = DEFAULT_QUESTION_FORMAT,
) -> PromptLayout:
    """The segmented prompt for ``query`` over chunk ``texts`` (in the given order)."""
    head, tail = chat_frame(tok, system)
    return PromptLayout(
        prefix=encode(tok, head + instruction),
        chunks=tuple(encode(tok, chunk_format.format(text=t)) for t in texts),
        question=encode(tok, question_format.format(query=query) + tail),
    )


def prefix_ids(tok: Any, *, system: str | None, instruction: str) -> tuple[int, ...]:
    head, _ = chat_frame(tok, system)
    return encode(tok, head + instruction)


def chunk_ids(tok: Any, text: str, chunk_format: str = DEFAULT_CHUNK_FORMAT) -> tuple[int, ...]:
    return encode(tok, chunk_format.format(text=text))
