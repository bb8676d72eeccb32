"""The ASGI app: OpenAI-compatible chat completions over a ``RAGPipeline``, plus retrieval,
documents, health, metrics and a small web page.

``create_app(pipe, generator, ...)`` takes an already built pipeline (its index loaded) and the
generator to serve; ``ragkit.serve.run`` builds them from an index folder and starts uvicorn.
Errors always have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
This module imports FastAPI: ``ragkit.serve.run`` imports it only after checking the extra.
It holds the routes; request checks and reply bodies are in ``ragkit.serve.api``, the ASGI
middleware in ``ragkit.serve.middleware``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from ragkit.errors import RagkitError
from ragkit.protocols import HasKVStore, provides
from ragkit.serve import documents
from ragkit.serve.api import (
    APIError,
    Limits,
    Reply,
    State,
    check_k,
    check_question,
    generation_settings,
    last_user_message,
    metadata_of,
    served_model_id,
    source_of,
    spans_text,
    validation_message,
)
from ragkit.serve.engine import Busy, Cancelled, GenerationEngine
from ragkit.serve.metrics import Metrics
from ragkit.serve.middleware import ApiKey, BodyLimit, Measure
from ragkit.serve.schemas import ChatRequest, DocumentIn, RetrieveRequest, unsupported_field
from ragkit.types import Answer, Document, Hit

log = logging.getLogger(__name__)

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
    state = State(pipe, engine, Path(folder) if folder is not None else None,
                   model_id or served_model_id(generator), api_key, limits)
    kv_store = generator.kv_store if provides(generator, HasKVStore) else None
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


async def run_retrieve(state: State, query: str, k: int | None,
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
