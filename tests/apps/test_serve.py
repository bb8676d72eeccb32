"""``ragkit serve`` as clients use it: a real uvicorn server on a loopback port, a tiny random
model and the hash embedder over the quickstart corpus, talked to with the official ``openai``
package (sync and async, streaming and not) and plain HTTP for the error cases."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("transformers")
openai = pytest.importorskip("openai")

from ragkit.cli import main  # noqa: E402
from ragkit.pipeline import RAGPipeline  # noqa: E402
from ragkit.serve.app import Limits  # noqa: E402
from tests.serve_helpers import (  # noqa: E402
    CORPUS,
    ServerThread,
    build_index,
    chunked_post,
    free_port,
    http,
    tiny_served,
)

QUESTION = "Who built the Eiffel Tower for the exposition?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = build_index(tmp_path_factory.mktemp("serve") / "idx")
    with ServerThread(tiny_served(folder), folder, api_key=None) as s:
        s.folder = folder
        yield s


def client(s, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0)


def ask(c, question: str = QUESTION, **kw):
    extra = {key: kw.pop(key) for key in ("k", "kv_reuse", "filters") if key in kw}
    return c.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": question}],
        extra_body=extra or None, **kw)


def doc_text(doc_id: str) -> str:
    return (CORPUS / doc_id).read_text(encoding="utf-8")


def check_sources(sources, own_text=doc_text) -> None:
    assert sources
    for s in sources:
        assert set(s) - {"metadata"} == {"id", "doc_id", "source", "start", "end", "score",
                                         "text"}
        assert own_text(s["doc_id"])[s["start"]:s["end"]] == s["text"]
        assert s["id"] == f"{s['doc_id']}:{s['start']}-{s['end']}"


def test_models_lists_the_served_model(server):
    models = client(server).models.list().data
    assert [m.id for m in models] == ["SmolLM2-135M-Instruct"]


def test_chat_completion_with_sources_usage_and_timings(server):
    r = ask(client(server), max_tokens=6)
    assert r.object == "chat.completion" and r.model == "SmolLM2-135M-Instruct"
    assert isinstance(r.choices[0].message.content, str) and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    extra = r.model_extra["ragkit"]
    check_sources(extra["sources"])
    assert extra["sources"][0]["doc_id"] == "eiffel-tower.md"
    t = extra["timings"]
    for key in ("retrieve_s", "ttft_s", "tokens_per_s", "prefill_tokens_computed",
                "prefill_tokens_reused"):
        assert key in t
    assert r.usage.prompt_tokens == t["prefill_tokens_computed"] + t["prefill_tokens_reused"] > 0
    assert r.usage.completion_tokens == t["new_tokens"] <= 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_second_request_over_the_same_chunks_reuses_their_kv(tmp_path):
    folder = build_index(tmp_path / "idx")
    with ServerThread(tiny_served(folder), folder) as s:  # a cold chunk-KV store
        c = client(s)
        first = ask(c, max_tokens=4).model_extra["ragkit"]
        second = ask(c, "For the exposition, who built the Eiffel Tower?", max_tokens=4)
        second = second.model_extra["ragkit"]
    assert [h["id"] for h in first["sources"]] == [h["id"] for h in second["sources"]]
    assert first["timings"]["prefill_tokens_reused"] == 0
    assert second["timings"]["prefill_tokens_reused"] > 0
    assert second["timings"]["prefill_tokens_computed"] < first["timings"]["prefill_tokens_computed"]


def test_streaming_gives_the_same_text_and_ends_with_ragkit_and_usage(server):
    c = client(server)
    whole = ask(c, max_tokens=8, temperature=0)
    chunks = list(ask(c, max_tokens=8, temperature=0, stream=True))
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert text == whole.choices[0].message.content
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert all(ch.choices[0].finish_reason is None for ch in chunks[:-1])
    check_sources(last.model_extra["ragkit"]["sources"])
    assert last.model_extra["ragkit"]["sources"] == whole.model_extra["ragkit"]["sources"]
    assert "prefill_tokens_reused" in last.model_extra["ragkit"]["timings"]
    assert last.usage.completion_tokens == whole.usage.completion_tokens


def test_stream_ends_with_done_on_the_wire(server):
    req = urllib.request.Request(server.url + "/v1/chat/completions", method="POST", data=(
        b'{"model": "SmolLM2-135M-Instruct", "stream": true, "max_tokens": 3,'
        b' "messages": [{"role": "user", "content": "bees"}]}'),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_concurrent_async_clients_never_see_each_others_tokens(server):
    questions = ["How do honeybees dance?", "What is TCP slow start?",
                 "Who invented the printing press?", "What does chlorophyll absorb?"]
    sync = client(server)
    alone = {q: ask(sync, q, max_tokens=8).choices[0].message.content for q in questions}

    async def run() -> dict[str, tuple[str, str]]:
        c = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)

        async def one(q: str, stream: bool) -> tuple[str, str]:
            kw = dict(model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": q}],
                      max_tokens=8)
            if stream:
                parts = [ch.choices[0].delta.content or ""
                         async for ch in await c.chat.completions.create(stream=True, **kw)]
                return q, "".join(parts)
            return q, (await c.chat.completions.create(**kw)).choices[0].message.content

        done = await asyncio.gather(*(one(q, i % 2 == 0) for i, q in enumerate(questions * 2)))
        await c.close()
        return done

    for q, text in asyncio.run(run()):
        assert text == alone[q], q


def test_retrieve_endpoint(server):
    status, body = http("POST", server.url + "/v1/retrieve",
                        {"query": "waggle dance of honeybees", "k": 2})
    assert status == 200
    assert len(body["hits"]) == 2 and body["hits"][0]["doc_id"] == "honeybees.md"
    check_sources(body["hits"])
    status, body = http("POST", server.url + "/v1/retrieve",
                        {"query": "waggle dance", "k": 3, "filters": {"doc_id": "tcp.md"}})
    assert status == 200 and {h["doc_id"] for h in body["hits"]} == {"tcp.md"}


def test_documents_add_update_delete_are_searchable_and_saved(server):
    url = server.url
    c = client(server)
    text = "The quokka zebrafinch protocol is spoken only on Rottnest island at dawn."
    status, body = http("POST", url + "/v1/documents",
                        [{"id": "notes/quokka.md", "text": text, "source": "notes/quokka.md"}])
    assert status == 200 and body["added"] == 1 and body["chunks"] == 1
    assert RAGPipeline.load(server.folder).index.doc_hash("notes/quokka.md")  # on disk already
    own = {"notes/quokka.md": text}
    r = ask(c, "quokka zebrafinch protocol", max_tokens=2, k=1)
    check_sources(r.model_extra["ragkit"]["sources"], lambda d: own.get(d) or doc_text(d))
    assert r.model_extra["ragkit"]["sources"][0]["doc_id"] == "notes/quokka.md"

    status, body = http("POST", url + "/v1/documents", [{"id": "notes/quokka.md", "text": text}])
    assert status == 200 and body["added"] == 0 and body["unchanged"] == 1  # a no-op

    new = "Quokkas now speak the marmot heliograph protocol instead."
    status, body = http("POST", url + "/v1/documents", [{"id": "notes/quokka.md", "text": new}])
    assert status == 200 and body["added"] == 1
    status, hits = http("POST", url + "/v1/retrieve", {"query": "quokka zebrafinch", "k": 10})
    mine = [h for h in hits["hits"] if h["doc_id"] == "notes/quokka.md"]
    assert [h["text"] for h in mine] == [new]  # the old chunk is gone

    status, listing = http("GET", url + "/v1/documents?limit=1000")
    assert "notes/quokka.md" in [d["id"] for d in listing["data"]]
    status, doc = http("GET", url + "/v1/documents/notes/quokka.md")
    assert status == 200 and doc["text"] == new and doc["source"] == "notes/quokka.md"

    status, body = http("DELETE", url + "/v1/documents/notes/quokka.md")
    assert status == 200 and body["deleted"] is True and body["chunks"] == 1
    status, hits = http("POST", url + "/v1/retrieve", {"query": "quokka marmot heliograph",
                                                       "k": 50})
    assert "notes/quokka.md" not in {h["doc_id"] for h in hits["hits"]}
    r = ask(c, "quokka marmot heliograph protocol", max_tokens=2, k=50)
    assert "notes/quokka.md" not in {h["doc_id"] for h in r.model_extra["ragkit"]["sources"]}
    assert RAGPipeline.load(server.folder).index.doc_hash("notes/quokka.md") is None
    assert http("DELETE", url + "/v1/documents/notes/quokka.md")[0] == 404
    status, page = http("GET", url + "/v1/documents?offset=1&limit=2")
    assert status == 200 and [d["id"] for d in page["data"]] == ["honeybees.md",
                                                                  "photosynthesis.md"]


def test_document_metadata_is_kept_on_its_chunks_and_filters_use_it(server):
    url = server.url
    texts = {f"meta/{i}.md": f"The lyrebird archive note {i} mentions copper lanterns and "
             f"basalt orchards in paragraph {i}." for i in range(3)}
    body = [{"id": doc_id, "text": text, "metadata": {"team": "birds" if i else "rocks",
                                                       "year": 2020 + i}}
            for i, (doc_id, text) in enumerate(texts.items())]
    status, added = http("POST", url + "/v1/documents", body)
    assert status == 200 and added["added"] == 3
    status, hits = http("POST", url + "/v1/retrieve",
                        {"query": "lyrebird archive copper lanterns", "k": 10,
                         "filters": {"team": "birds"}})
    assert status == 200
    assert {h["doc_id"] for h in hits["hits"]} == {"meta/1.md", "meta/2.md"}
    for h in hits["hits"]:
        assert h["metadata"]["team"] == "birds"
        assert h["metadata"]["year"] == 2020 + int(h["doc_id"][5])
        assert h["metadata"]["source"] == h["doc_id"] and "doc_hash" not in h["metadata"]
        assert texts[h["doc_id"]][h["start"]:h["end"]] == h["text"]
    status, hits = http("POST", url + "/v1/retrieve",
                        {"query": "lyrebird", "k": 10, "filters": {"year": 2020}})
    assert [h["doc_id"] for h in hits["hits"]] == ["meta/0.md"]
    r = ask(client(server), "lyrebird archive copper lanterns", max_tokens=2, k=5,
            filters={"team": "rocks"})
    assert {s["doc_id"] for s in r.model_extra["ragkit"]["sources"]} == {"meta/0.md"}
    # kept on disk with the chunks: the saved folder reopened has it
    chunks = RAGPipeline.load(server.folder).index.doc_chunks("meta/2.md")
    assert chunks and all(c.metadata["team"] == "birds" for c in chunks)
    for doc_id in texts:
        assert http("DELETE", url + "/v1/documents/" + doc_id)[0] == 200


DROP = object()  # a field left out of the body
BAD_FIELDS = [
    ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
    ({"model": "M", "messages": DROP}, 400, "messages"),
    ({"model": "M", "messages": []}, 400, "messages"),
    ({"model": "M", "messages": "hi"}, 400, "messages"),
    ({"model": "M", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ({"model": "M", "messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ({"model": "M", "messages": [{"role": "system", "content": "x"}]}, 400, "messages"),
    ({"model": "M", "messages": [{"role": "user", "content": "  "}]}, 400, "messages"),
    ({"model": "M", "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "M", "max_tokens": "8"}, 400, "max_tokens"),
    ({"model": "M", "max_tokens": 5000}, 400, "max_tokens"),
    ({"model": "M", "temperature": "hot"}, 400, "temperature"),
    ({"model": "M", "temperature": 3}, 400, "temperature"),
    ({"model": "M", "top_p": 0}, 400, "top_p"),
    ({"model": "M", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "M", "stop": 7}, 400, "stop"),
    ({"model": "M", "seed": 1.5}, 400, "seed"),
    ({"model": "M", "stream": "yes"}, 400, "stream"),
    ({"model": "M", "n": 2}, 400, "n"),
    ({"model": "M", "k": 0}, 400, "k"),
    ({"model": "M", "k": 500}, 400, "k"),
    ({"model": "M", "kv_reuse": "turbo"}, 400, "kv_reuse"),
    ({"model": "M", "filters": ["doc_id"]}, 400, "filters"),
    ({"model": "M", "tools": [{"type": "function"}]}, 400, "tools"),
    ({"model": "M", "messages": [{"role": "user", "content": "x" * 9000}]}, 400, "messages"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_FIELDS)
def test_each_bad_field_is_a_4xx_naming_it(server, body, status, field):
    body = {key: v for key, v in {"messages": [{"role": "user", "content": "x"}], **body}.items()
            if v is not DROP}
    if body.get("model") == "M":
        body["model"] = "SmolLM2-135M-Instruct"
    code, reply = http("POST", server.url + "/v1/chat/completions", body)
    assert code == status, reply
    err = reply["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == field or err["message"].startswith(field), err
    assert "Traceback" not in err["message"]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/retrieve", {"query": 3}, "query"),
    ("/v1/retrieve", {"query": "x", "k": "2"}, "k"),
    ("/v1/retrieve", {"query": "x", "extra": 1}, "extra"),
    ("/v1/documents", {"id": "a", "text": "b"}, "body"),
    ("/v1/documents", [{"id": "", "text": "b"}], "0.id"),
    ("/v1/documents", [{"id": "a"}], "0.text"),
    ("/v1/documents", [{"id": "a", "text": "b", "metadata": "m"}], "0.metadata"),
    ("/v1/documents", [{"id": "a", "text": "b"}, {"id": "a", "text": "c"}], "id"),
])
def test_bad_retrieve_and_document_bodies(server, path, body, field):
    code, reply = http("POST", server.url + path, body)
    assert code == 400, reply
    assert reply["error"]["param"] == field, reply


def test_malformed_json_and_unknown_routes(server):
    code, reply = http("POST", server.url + "/v1/chat/completions", raw=b'{"model": ')
    assert code == 400 and reply["error"]["code"] == "invalid_json"
    code, reply = http("GET", server.url + "/v1/nothing")
    assert code == 404 and reply["error"]["type"] == "not_found_error"
    code, reply = http("GET", server.url + "/v1/documents/not-there.md")
    assert code == 404 and reply["error"]["code"] == "document_not_found"


def test_limits_body_size_and_documents_per_add(tmp_path):
    folder = build_index(tmp_path / "idx")
    limits = Limits(max_body_bytes=2000, max_documents=2)
    with ServerThread(tiny_served(folder), folder, limits=limits) as s:
        code, reply = http("POST", s.url + "/v1/documents", [{"id": "big", "text": "x" * 3000}])
        assert code == 413 and reply["error"]["code"] == "body_too_large"
        docs = [{"id": f"d{i}", "text": "small"} for i in range(3)]
        code, reply = http("POST", s.url + "/v1/documents", docs)
        assert code == 413 and reply["error"]["param"] == "documents"
        # a chunked body (no Content-Length) is counted as it is read; the whole
        # request goes out in one write, so the server's early 413 and close
        # cannot race the client's later chunks into a broken pipe
        chunks = [b'{"query": "', b"y" * 2500, b'"}']
        status, reply = chunked_post(s.url + "/v1/retrieve", chunks)
        assert status == 413 and reply["error"]["code"] == "body_too_large"


def test_api_key_is_required_on_v1_but_not_on_health(tmp_path):
    folder = build_index(tmp_path / "idx")
    with ServerThread(tiny_served(folder), folder, api_key="s3cret") as s:
        with pytest.raises(openai.AuthenticationError):
            ask(client(s, "wrong"), max_tokens=2)
        assert http("GET", s.url + "/v1/models")[0] == 401
        assert http("GET", s.url + "/v1/models", headers={"Authorization": "Basic s3cret"})[0] == 401
        assert http("GET", s.url + "/healthz")[0] == 200
        assert http("GET", s.url + "/readyz")[0] == 200
        r = ask(client(s, "s3cret"), max_tokens=2)
        assert r.choices[0].message.content is not None
        status, _ = http("POST", s.url + "/v1/retrieve", {"query": "bees"},
                         headers={"Authorization": "Bearer s3cret"})
        assert status == 200


def test_refuses_a_public_bind_without_a_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAGKIT_API_KEY", raising=False)
    assert main(["serve", "--index", str(tmp_path / "nothing"), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ragkit: error: --host: refusing to serve on 0.0.0.0 without an API key")
    assert len(err.splitlines()) == 1 and "--insecure" in err


def test_a_model_that_fails_to_load_stops_the_server_with_one_line(tmp_path):
    folder = build_index(tmp_path / "idx")
    proc = subprocess.run(
        [sys.executable, "-m", "ragkit.cli", "serve", "--index", str(folder), "--port",
         str(free_port()), "-o", f"generator.model={tmp_path / 'no-model'}"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "ragkit: error: loading the model failed: generator model")
    assert "Traceback" not in proc.stderr


def test_a_client_that_disconnects_stops_its_generation(tmp_path):
    folder = build_index(tmp_path / "idx")
    with ServerThread(tiny_served(folder, max_new_tokens=4000), folder,
                      limits=Limits(max_tokens=4000)) as s:
        engine = s.state.engine
        stream = ask(client(s), max_tokens=4000, stream=True)
        pieces = 0
        for ch in stream:
            pieces += bool(ch.choices[0].delta.content)
            if pieces == 3:
                break
        stream.close()  # the client goes away mid-answer
        deadline = time.monotonic() + 60
        while engine.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.pending == 0
        assert engine.cancelled == 1  # stopped at a piece, not run to its end
        metrics = urllib.request.urlopen(s.url + "/metrics").read().decode()
        assert "ragkit_generations_cancelled_total 1.0" in metrics


def test_a_non_streaming_client_that_disconnects_stops_its_generation(tmp_path):
    folder = build_index(tmp_path / "idx")
    with ServerThread(tiny_served(folder, max_new_tokens=4000), folder,
                      limits=Limits(max_tokens=4000)) as s:
        engine = s.state.engine
        body = json.dumps({"model": "SmolLM2-135M-Instruct", "max_tokens": 4000,
                           "messages": [{"role": "user", "content": QUESTION}]}).encode()
        port = int(s.url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        deadline = time.monotonic() + 60
        while not engine.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.pending == 1  # the answer is being generated; nothing has been sent
        time.sleep(0.3)  # let it produce a few tokens (not asserted on)
        sock.close()  # the client goes away before its answer is ready
        deadline = time.monotonic() + 60
        while engine.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.pending == 0
        assert engine.cancelled == 1  # stopped, not run to its 4000 tokens
        metrics = urllib.request.urlopen(s.url + "/metrics").read().decode()
        assert "ragkit_generations_cancelled_total 1.0" in metrics
        assert 'status="499"' in metrics
        r = ask(client(s), max_tokens=2)  # the server goes on answering
        assert r.choices[0].message.content is not None


def test_a_full_queue_is_a_429(tmp_path):
    folder = build_index(tmp_path / "idx")
    with ServerThread(tiny_served(folder, max_new_tokens=4000), folder,
                      limits=Limits(max_tokens=4000, max_queue=1)) as s:
        stream = ask(client(s), max_tokens=4000, stream=True)
        for ch in stream:
            if ch.choices[0].delta.content:
                break  # the first answer is generating now
        with pytest.raises(openai.RateLimitError) as info:
            ask(client(s), max_tokens=2)
        assert "--max-queue" in str(info.value)
        stream.close()


def test_metrics_report_requests_prefill_kv_store_and_index(server):
    ask(client(server), max_tokens=2)
    ask(client(server), max_tokens=2)
    text = urllib.request.urlopen(server.url + "/metrics").read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    key = 'ragkit_requests_total{endpoint="/v1/chat/completions",method="POST",status="200"}'
    assert values[key] >= 2
    assert values['ragkit_prefill_tokens_total{kind="reused"}'] > 0
    assert values['ragkit_prefill_tokens_total{kind="computed"}'] > 0
    assert values["ragkit_kv_store_hits_total"] > 0 and values["ragkit_kv_store_misses_total"] > 0
    assert values["ragkit_kv_store_bytes_written_total"] > 0
    assert values["ragkit_documents"] >= 6 and values["ragkit_chunks"] >= values["ragkit_documents"]
    assert values["ragkit_ttft_seconds_count"] >= 2
    assert values['ragkit_request_seconds_count{endpoint="/v1/chat/completions"}'] >= 2


def test_two_apps_in_one_process_have_their_own_metrics(server, tmp_path):
    folder = build_index(tmp_path / "idx")
    with ServerThread(tiny_served(folder), folder) as other:
        text = urllib.request.urlopen(other.url + "/metrics").read().decode()
    assert 'endpoint="/v1/chat/completions"' not in text


def test_the_page_and_its_scripts_are_served(server):
    html = urllib.request.urlopen(server.url + "/").read().decode()
    assert '<script src="/static/app.js"></script>' in html
    assert "://" not in html  # nothing from a CDN: every file comes from ragkit
    js = urllib.request.urlopen(server.url + "/static/app.js").read().decode()
    assert "/v1/chat/completions" in js
