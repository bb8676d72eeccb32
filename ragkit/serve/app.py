"""The ASGI app: OpenAI-compatible chat completions over a ``RAGPipeline``, plus retrieval,
documents, health, metrics and a small web page.

``create_app(pipe, generator, ...)`` takes an already built pipeline (its index loaded) and the
generator to serve; ``ragkit.serve.run`` builds them from an index folder and starts uvicorn.
Errors always have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
This module imports FastAPI: ``ragkit.serve.run`` imports it only after checking the extra.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from ragkit.errors import RagkitError
from ragkit.serve import documents
from ragkit.serve.engine import Busy, Cancelled, GenerationEngine
from ragkit.serve.metrics import Metrics
from ragkit.serve.schemas import ChatRequest, DocumentIn, RetrieveRequest, unsupported_field
from ragkit.types import Answer, Document, Hit

log = logging.getLogger(__name__)

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
class _State:
    pipe: Any
    engine: GenerationEngine
    folder: Path | None
    model_id: str
    api_key: str | None
    limits: Limits
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: str | None = None


def create_app(
    pipe: Any,
    generator: Any,
    *,
    folder: str | Path | None = None,
    api_key: str | None = None,
    limits: Limits | None = None,
    model_id: str | None = None,
    on_load_error: Any = None,
) -> Any:
    """The FastAPI app serving ``pipe`` (retrieval, documents) and ``generator`` (answers).

    ``folder``: where the index is saved (document changes are written there before a 200).
    The model loads on a worker thread when the app starts; ``/readyz`` says when it is done,
    and ``on_load_error(message)`` is called if it fails.
    """
    limits = limits or Limits()
    engine = GenerationEngine(generator, max_queue=limits.max_queue)
    state = _State(pipe, engine, Path(folder) if folder is not None else None,
                   model_id or served_model_id(generator), api_key, limits)
    kv_store = getattr(generator, "kv_store", None)
    metrics = Metrics(kv_stats=lambda: kv_store.stats.as_dict() if kv_store is not None else None,
                      counts=lambda: documents.counts(pipe), queue=lambda: engine.pending)

    def load() -> None:
        try:
            engine.load()
            state.ready.set()
        except Exception as exc:  # reported by /readyz and the callback
            if not isinstance(exc, RagkitError):  # ours say what to do in one line
                log.exception("loading the model failed")
            state.load_error = f"loading the model failed: {exc}"
            if on_load_error is not None:
                on_load_error(state.load_error)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        threading.Thread(target=load, name="ragkit-load", daemon=True).start()
        yield
        engine.close()

    app = FastAPI(title="ragkit", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.ragkit = state
    app.state.metrics = metrics

    # -- errors: always OpenAI's shape ---------------------------------------------------------

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Any:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        return JSONResponse(validation_message(exc.errors()).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(APIError(exc.status_code, str(exc.detail), type=kind).body(),
                            status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Any:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(APIError(500, f"internal error ({type(exc).__name__}); see the "
                                     "server log", type="server_error").body(), status_code=500)

    # -- health, metrics, page -----------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        if state.ready.is_set():
            return {"status": "ready", "model": state.model_id}
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Any:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    static = resources.files("ragkit.serve") / "static"

    @app.get("/")
    async def page() -> Any:
        return Response((static / "index.html").read_bytes(), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    # -- the API -------------------------------------------------------------------------------

    @app.get("/v1/models")
    async def models() -> Any:
        return {"object": "list", "data": [{"id": state.model_id, "object": "model",
                                            "created": 0, "owned_by": "ragkit"}]}

    @app.post("/v1/retrieve")
    async def retrieve(body: RetrieveRequest) -> Any:
        query = check_question(body.query, "query", limits)
        k = check_k(body.k, limits)
        hits, _ = await run_retrieve(state, query, k, body.filters)
        return {"object": "list",
                "hits": [{**source_of(h), "metadata": metadata_of(h.chunk)} for h in hits]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        t0 = time.perf_counter()
        if body.model != state.model_id:
            raise APIError(404, f"model: unknown {body.model!r}; this server serves "
                           f"{state.model_id!r} (GET /v1/models)", type="not_found_error",
                           code="model_not_found", param="model")
        bad = unsupported_field(body)
        if bad is not None:
            raise APIError(400, f"{bad}: not supported by ragkit serve", param=bad,
                           code="unsupported_parameter")
        question = check_question(last_user_message(body), "messages", limits)
        settings = generation_settings(body, state)
        k = check_k(body.k, limits)
        if not state.ready.is_set():
            raise APIError(503, state.load_error or "the model is still loading; see /readyz",
                           type="server_error", code="not_ready")
        if engine.pending >= limits.max_queue:
            raise APIError(429, f"server busy: {engine.pending} requests are waiting for the "
                           "model (ragkit serve --max-queue)", type="rate_limit_error",
                           code="queue_full")
        gen = engine.for_request(settings)
        hits, retrieve_s = await run_retrieve(state, question, k, body.filters)
        cancel = threading.Event()
        reply = Reply(state, metrics, t0, hits, retrieve_s, settings["max_new_tokens"])
        pieces = engine.stream(gen, question, hits, cancel)
        if body.stream:
            return StreamingResponse(reply.events(pieces), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        # nothing is sent before the answer is whole, so only a watcher on the connection
        # notices a client that leaves: it cancels the generation at its next piece
        watcher = asyncio.create_task(cancel_on_disconnect(request, cancel))
        try:
            async for item in pieces:
                if isinstance(item, Answer):
                    reply.answer = item
                else:
                    reply.first_piece()
        except Busy as exc:
            raise APIError(429, f"server busy: {exc}", type="rate_limit_error",
                           code="queue_full") from None
        except Cancelled:
            metrics.cancelled.inc()
            raise APIError(499, "the client closed the request before its answer was ready",
                           code="client_closed_request") from None
        finally:
            watcher.cancel()
            await pieces.aclose()
        return reply.completion()

    @app.post("/v1/documents")
    async def add_documents(body: list[DocumentIn]) -> Any:
        if len(body) > limits.max_documents:
            raise APIError(413, f"documents: {len(body)} in one request; at most "
                           f"{limits.max_documents} (ragkit serve --max-documents)",
                           param="documents", code="too_many_documents")
        ids = [d.id for d in body]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise APIError(400, f"documents: id {dup!r} appears twice in one request",
                           param="id")
        try:
            docs = [Document(d.id, d.text, {**(d.metadata or {}), "source": d.source or d.id})
                    for d in body]
            report = await asyncio.to_thread(documents.add, pipe, docs)
        except RagkitError as exc:
            raise APIError(400, f"documents: {exc}", param="documents") from None
        return {"object": "documents.add", "ids": ids, "added": report.documents,
                "unchanged": report.unchanged, "chunks": report.chunks}

    @app.get("/v1/documents")
    async def list_documents(offset: int = 0, limit: int = 100) -> Any:
        if offset < 0:
            raise APIError(400, f"offset: must be >= 0; got {offset}", param="offset")
        if not 1 <= limit <= 1000:
            raise APIError(400, f"limit: must be in [1, 1000]; got {limit}", param="limit")
        data = await asyncio.to_thread(documents.listing, pipe, offset, limit)
        return {"object": "list", "data": data, "offset": offset, "limit": limit}

    @app.get("/v1/documents/{doc_id:path}")
    async def get_document(doc_id: str) -> Any:
        chunks = await asyncio.to_thread(documents.chunks_of, pipe, doc_id)
        if not chunks:
            raise APIError(404, f"document {doc_id!r} is not indexed", type="not_found_error",
                           code="document_not_found", param="id")
        return {"object": "document", "id": doc_id,
                "source": chunks[0].metadata.get("source", doc_id),
                "text": spans_text(chunks),
                "chunks": [{"id": c.id, "start": c.start, "end": c.end} for c in chunks]}

    @app.delete("/v1/documents/{doc_id:path}")
    async def delete_document(doc_id: str) -> Any:
        removed = await asyncio.to_thread(documents.delete, pipe, [doc_id])
        if not removed:
            raise APIError(404, f"document {doc_id!r} is not indexed", type="not_found_error",
                           code="document_not_found", param="id")
        return {"object": "document.deleted", "id": doc_id, "deleted": True, "chunks": removed}

    # outermost first: metrics see every response, then the key, then the body limit
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(ApiKey, key=api_key)
    app.add_middleware(Measure, metrics=metrics)
    return app


# -- request helpers ----------------------------------------------------------------------------


def served_model_id(generator: Any) -> str:
    """The model id clients send: the generator's model name (a folder's last component)."""
    model = str(getattr(generator, "model", None) or type(generator).__name__)
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


def generation_settings(body: ChatRequest, state: _State) -> dict[str, Any]:
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


async def run_retrieve(state: _State, query: str, k: int | None,
                       filters: dict | None) -> tuple[list[Hit], float]:
    t = time.perf_counter()
    try:
        hits = await asyncio.to_thread(documents.retrieve, state.pipe, query, k, filters)
    except RagkitError as exc:
        raise APIError(400, str(exc)) from None
    return hits, time.perf_counter() - t


async def cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set ``cancel`` when the client disconnects. The body has been read, so the next message
    the server gets for this request is ``http.disconnect`` (when the client leaves, or when the
    response is complete, by which time this task is cancelled)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return


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

    def __init__(self, state: _State, metrics: Any, t0: float, hits: list[Hit],
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


# -- middleware (plain ASGI, so streams pass through untouched) ---------------------------------


async def _send_error(send: Any, err: APIError, headers: list | None = None) -> None:
    body = json.dumps(err.body()).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Measure:
    """Counts requests by endpoint (the route's path template) and status, times them to the
    last byte sent."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            self.metrics.requests.labels(endpoint, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


class ApiKey:
    """With a key set, every ``/v1/*`` request needs ``Authorization: Bearer <key>`` (compared
    in constant time); the health checks, metrics and the page stay open."""

    def __init__(self, app: Any, key: str | None) -> None:
        self.app = app
        self.key = key.encode() if key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.key is not None and scope["path"].startswith("/v1/"):
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, given = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.key):
                err = APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                               type="authentication_error", code="invalid_api_key")
                return await _send_error(send, err, [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, by its Content-Length or, for a
    chunked body, by reading at most ``limit + 1`` bytes before passing them on."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        too_big = APIError(413, f"request body over {self.limit} bytes (ragkit serve "
                           "--max-body-bytes)", code="body_too_large")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _send_error(send, too_big)
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.limit:
                return await _send_error(send, too_big)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
