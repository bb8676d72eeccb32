"""The server's middleware, plain ASGI so streams pass through untouched: per-endpoint request
metrics (``Measure``), the API key check (``ApiKey``) and the request body limit (``BodyLimit``).

Each wraps an ASGI app and answers an error in OpenAI's shape; none may read a body it lets
through or know about the routes behind it.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from ragkit.serve.api import APIError


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
