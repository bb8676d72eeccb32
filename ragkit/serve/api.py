"""The plain parts of the served API: request limits, the OpenAI-shaped ``APIError``, the app's
state, the checks a request goes through, and the reply bodies (a completion, a stream chunk,
the ``ragkit`` extension with sources and timings).

No routes and no ASGI here (``ragkit.serve.app``, ``ragkit.serve.middleware``); it must not
generate or retrieve anything itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragkit.protocols import NamesModel, provides
from ragkit.serve.engine import Busy, Cancelled, GenerationEngine
from ragkit.serve.schemas import ChatRequest
from ragkit.types import Answer, Hit

log = logging.getLogger("ragkit.serve.app")


TIMING_KEYS = ("retrieve_s", "queue_s", "ttft_s", "tokens_per_s", "prefill_tokens_computed",
               "prefill_tokens_reused")


@dataclass
class Limits:
    """Request limits; anything over one is a 4xx naming the limit."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_question_chars: int = 8000
    max_tokens: int = 1024
    max_documents: int = 256  # per POST /v1/documents
    max_k: int = 50
    max_queue: int = 64  # chat completions waiting for the model; more get 429


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status, message, type, code, param)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


@dataclass
class State:
    pipe: Any
    engine: GenerationEngine
    folder: Path | None
    model_id: str
    api_key: str | None
    limits: Limits
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: str | None = None


def served_model_id(generator: Any) -> str:
    """The model id clients send: the generator's model name (a folder's last component)."""
    model = generator.model if provides(generator, NamesModel) else None
    model = str(model or type(generator).__name__)
    return Path(model).name or model


def last_user_message(body: ChatRequest) -> str:
    """The question: the last user message (earlier turns and system messages are not used)."""
    for i in range(len(body.messages) - 1, -1, -1):
        if body.messages[i].role == "user":
            return body.messages[i].text()
    raise APIError(400, "messages: needs at least one message with role 'user' (the question)",
                   param="messages")


def check_question(text: str, param: str, limits: Limits) -> str:
    if not text.strip():
        raise APIError(400, f"{param}: the question is empty", param=param)
    if len(text) > limits.max_question_chars:
        raise APIError(400, f"{param}: the question has {len(text)} characters; at most "
                       f"{limits.max_question_chars} (ragkit serve --max-question-chars)",
                       param=param, code="question_too_long")
    return text


def check_k(k: int | None, limits: Limits) -> int | None:
    if k is not None and k > limits.max_k:
        raise APIError(400, f"k: {k} is over the limit {limits.max_k} (ragkit serve --max-k)",
                       param="k")
    return k


def generation_settings(body: ChatRequest, state: State) -> dict[str, Any]:
    """The generator fields this request sets (only those the served generator has)."""
    gen, limits = state.engine.generator, state.limits
    max_tokens = body.max_completion_tokens or body.max_tokens
    name = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise APIError(400, f"{name}: {max_tokens} is over the limit {limits.max_tokens} "
                       "(ragkit serve --max-tokens)", param=name)
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    if stop is not None and (len(stop) > 4 or not all(stop)):
        raise APIError(400, f"stop: up to 4 non-empty strings; got {body.stop!r}", param="stop")
    wanted = {
        "max_new_tokens": max_tokens or min(getattr(gen, "max_new_tokens", 256), limits.max_tokens),
        "temperature": float(body.temperature) if body.temperature is not None else None,
        "top_p": float(body.top_p) if body.top_p is not None else None,
        "stop": stop, "seed": body.seed, "kv_reuse": body.kv_reuse,
    }
    settings = {key: v for key, v in wanted.items() if v is not None}
    for key in settings:
        if key not in state.engine.settable:
            raise APIError(400, f"{key}: the {type(gen).__name__} generator has no such setting",
                           param=key)
    return settings


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|TextPart|DocumentIn)$|[\[(-]")  # union branches


def validation_message(errors: Any) -> APIError:
    """A 400 naming the first bad field of a pydantic validation error."""
    err = errors[0]
    if err.get("type") == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {err.get('ctx', {}).get('error', '')}"
                        .rstrip(": "), code="invalid_json")
    loc = [str(p) for p in err.get("loc", ()) if p != "body" and not _TYPE_TAG.search(str(p))]
    where = ".".join(loc) or "body"
    value = err.get("input")
    shown = json.dumps(value)[:80] if value is not None and err.get("type") != "missing" else ""
    got = f"; got {shown}" if shown else ""
    return APIError(400, f"{where}: {err.get('msg', 'invalid')}{got}", param=where,
                    code="invalid_value")


def source_of(hit: Hit) -> dict[str, Any]:
    c = hit.chunk
    return {"id": c.id, "doc_id": c.doc_id, "source": c.metadata.get("source", c.doc_id),
            "start": c.start, "end": c.end, "score": hit.score, "text": c.text}


def metadata_of(chunk: Any) -> dict[str, Any]:
    """A chunk's metadata as clients see it: its document's (``POST /v1/documents``
    ``metadata``, ``source``) and the chunker's (``tokens``...), without the content hash."""
    return {key: value for key, value in chunk.metadata.items() if key != "doc_hash"}


def spans_text(chunks: list[Any]) -> str:
    """A document's text rebuilt from its chunks at their offsets, so that every chunk's
    ``[start:end]`` is exact. Only whitespace lies between chunks (the chunker contract) and the
    index does not store it: a one-character gap comes back as a space, a longer one as a
    paragraph break (padded with spaces to its length)."""
    chars = [" "] * max(c.end for c in chunks)
    for c in chunks:
        chars[c.start:c.end] = c.text
    text = "".join(chars)
    covered = sorted((c.start, c.end) for c in chunks)
    pos, gaps = 0, []
    for start, end in covered:
        if start - pos >= 2:
            gaps.append((pos, start))
        pos = max(pos, end)
    for start, end in reversed(gaps):
        text = text[:start] + "\n\n" + " " * (end - start - 2) + text[end:]
    return text


class Reply:
    """One chat completion's answer, as a ``chat.completion`` or as stream events."""

    def __init__(self, state: State, metrics: Any, t0: float, hits: list[Hit],
                 retrieve_s: float, max_tokens: int) -> None:
        self.state, self.metrics, self.t0 = state, metrics, t0
        self.hits, self.retrieve_s, self.max_tokens = hits, retrieve_s, max_tokens
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.answer: Answer | None = None
        self.t_first: float | None = None

    def first_piece(self) -> None:
        if self.t_first is None:
            self.t_first = time.perf_counter()
            self.metrics.ttft.observe(self.t_first - self.t0)

    def ragkit(self) -> dict[str, Any]:
        timings = {"retrieve_s": self.retrieve_s, **self.answer.timings}
        if self.t_first is not None:
            timings["request_ttft_s"] = self.t_first - self.t0  # as the client sees it
        first = [k for k in TIMING_KEYS if k in timings]
        return {"sources": [source_of(h) for h in self.hits],
                "timings": {k: timings[k] for k in first + [k for k in timings if k not in first]}}

    def usage(self) -> dict[str, int]:
        t = self.answer.timings
        prompt = int(t.get("prefill_tokens_computed", 0) + t.get("prefill_tokens_reused", 0))
        completion = int(t.get("new_tokens", 0))
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def finish_reason(self) -> str:
        return "length" if self.answer.timings.get("new_tokens", 0) >= self.max_tokens else "stop"

    def _done(self) -> None:
        self.metrics.observe_answer(dict(self.answer.timings))
        if self.t_first is None:  # an empty answer: its first token was the end
            self.first_piece()

    def completion(self) -> dict[str, Any]:
        self._done()
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.state.model_id,
                "choices": [{"index": 0, "finish_reason": self.finish_reason(), "logprobs": None,
                             "message": {"role": "assistant", "content": self.answer.text or ""}}],
                "usage": self.usage(), "ragkit": self.ragkit()}

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.state.model_id,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                             "logprobs": None}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def events(self, pieces: AsyncIterator[Any]) -> AsyncIterator[str]:
        """Server-sent events: a first chunk with the role (and the sources), one per text
        piece, a last one with ``finish_reason``, ``usage`` and ``ragkit``, then ``[DONE]``.
        A client that leaves closes this iterator, which cancels the generation."""
        try:
            yield self.chunk({"role": "assistant", "content": ""},
                             ragkit={"sources": [source_of(h) for h in self.hits]})
            async for item in pieces:
                if isinstance(item, Answer):
                    self.answer = item
                    break
                self.first_piece()
                yield self.chunk({"content": item})
            self._done()
            yield self.chunk({}, self.finish_reason(), usage=self.usage(), ragkit=self.ragkit())
        except Cancelled:
            self.metrics.cancelled.inc()
            return
        except (asyncio.CancelledError, GeneratorExit):
            self.metrics.cancelled.inc()
            raise
        except Busy as exc:
            err = APIError(429, f"server busy: {exc}", type="rate_limit_error", code="queue_full")
            yield f"data: {json.dumps(err.body())}\n\n"
        except Exception as exc:
            log.exception("generation failed")
            err = APIError(500, f"generation failed ({type(exc).__name__}: {exc})",
                           type="server_error")
            yield f"data: {json.dumps(err.body())}\n\n"
        finally:
            await pieces.aclose()
        yield "data: [DONE]\n\n"
