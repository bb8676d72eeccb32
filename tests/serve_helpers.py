"""Shared by the ``ragkit serve`` tests and benchmark: an index of the quickstart corpus, a real
uvicorn server on a free loopback port (in a thread or a subprocess), and the official client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]
CORPUS = ROOT / "ragkit" / "data" / "corpus"
HASH_CONFIG = {
    "chunker": {"name": "recursive", "chunk_size": 64, "overlap": 0, "tokenizer": "whitespace"},
    "embedder": {"name": "hash", "dim": 256},
    "index": {"name": "memory"},
    "k": 3,
}


def build_index(folder: Path, config: dict | None = None, corpus: Path = CORPUS) -> Path:
    """The corpus indexed with ``config`` (default: hash embedder) and saved to ``folder``."""
    from ragkit.loaders import load_documents
    from ragkit.pipeline import RAGPipeline

    pipe = RAGPipeline.from_config(config or HASH_CONFIG)
    pipe.add(load_documents(corpus))
    pipe.save(folder)
    return folder


def tiny_served(folder: Path, **generator: Any) -> Any:
    """The pipeline saved in ``folder`` with a tiny random-init generator (memory KV store)."""
    from ragkit.generation.testing import tiny_generator
    from ragkit.pipeline import RAGPipeline

    pipe = RAGPipeline.load(folder)
    generator.setdefault("kv_reuse", "independent")
    generator.setdefault("max_new_tokens", 8)
    pipe.generator = tiny_generator(0, **generator)
    return pipe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 300.0, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


class ServerThread:
    """``create_app(pipe, ...)`` served by uvicorn on a free 127.0.0.1 port in a thread."""

    def __init__(self, pipe: Any, folder: Path | None = None, ready_timeout: float = 120,
                 **kwargs: Any) -> None:
        import uvicorn

        from ragkit.serve.app import create_app

        self.app = create_app(pipe, pipe.generator, folder=folder, **kwargs)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.ready_timeout = ready_timeout

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_ready(self.url, timeout=self.ready_timeout)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    @property
    def state(self) -> Any:
        return self.app.state.ragkit


def serve_subprocess(index: Path, port: int, *args: str, log: Path | None = None) -> Any:
    """``ragkit serve --index INDEX --port PORT ARGS`` in a subprocess (output to ``log``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "ragkit.cli", "serve", "--index", str(index), "--port", str(port),
         *args], stdout=out, stderr=subprocess.STDOUT, env=env,
    )


def http(method: str, url: str, body: Any = None, *, raw: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, Any]:
    """``(status, parsed JSON body)`` of one request (errors included)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text.decode(errors="replace")


def chunked_post(url: str, chunks: list[bytes], timeout: float = 30) -> tuple[int, Any]:
    """``(status, parsed JSON body)`` of a POST whose body is sent with chunked transfer
    encoding (no Content-Length), written to the socket in one ``sendall``."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read() or b"null")


def tiny_model_folder(path: Path) -> Path:
    """A random-init tiny Llama and the SmolLM2 tokenizer saved as a model folder."""
    from ragkit.generation.testing import smollm2_tokenizer, tiny_llama

    if not (path / "config.json").is_file():
        tiny_llama(0).save_pretrained(path)
        smollm2_tokenizer().save_pretrained(path)
    return path
