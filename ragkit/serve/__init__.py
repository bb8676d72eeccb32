"""``ragkit serve``: an OpenAI-compatible RAG server over one pipeline and one model.

``pip install 'ragkit[serve]'`` (FastAPI, uvicorn, prometheus-client). The app is
``ragkit.serve.app.create_app``; document changes go through ``ragkit.serve.documents``;
generation is queued to the one model by ``ragkit.serve.engine``.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path
from typing import Any

from ragkit._deps import require
from ragkit.errors import ConfigError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to bind a non-loopback address without an API key, unless ``insecure``."""
    if is_loopback(host) or api_key:
        return
    if not insecure:
        raise ConfigError(
            f"refusing to serve on {host} without an API key: anyone who can reach it could read "
            "and change the index; give --api-key KEY (or RAGKIT_API_KEY), bind 127.0.0.1, or "
            "pass --insecure", path="--host",
        )
    print(f"ragkit: warning: serving on {host} with no API key (--insecure): anyone who can "
          "reach this port can read and change the index", file=sys.stderr)


def run(pipe: Any, *, folder: str | Path | None, host: str = "127.0.0.1", port: int = 8000,
        api_key: str | None = None, limits: Any = None) -> int:
    """Serve ``pipe`` (with its generator) until interrupted; 1 if the model failed to load."""
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, extra="serve", component="ragkit serve")
    import uvicorn

    from ragkit.serve.app import create_app

    failed: list[str] = []
    server: Any = None

    def on_load_error(message: str) -> None:
        failed.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(pipe, pipe.generator, folder=folder, api_key=api_key, limits=limits,
                     on_load_error=on_load_error)
    state = app.state.ragkit
    print(f"ragkit serve: http://{host}:{port}/  model {state.model_id!r}, index {folder} "
          f"({len(pipe.index)} chunks), API key {'required' if api_key else 'off'}",
          file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                           timeout_graceful_shutdown=5))
    server.run()
    if failed:
        print(f"ragkit: error: {failed[0]}", file=sys.stderr)
        return 1
    return 0
