"""``ragkit serve`` with the real models of the quickstart: all-MiniLM-L6-v2 into an embedded
Chroma index, SmolLM2-135M-Instruct answering with per-chunk KV reuse (slow: loads both)."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("chromadb")
openai = pytest.importorskip("openai")

from ragkit.cli_generate import pipeline_with_generator  # noqa: E402
from tests.serve_helpers import CORPUS, ROOT, ServerThread, build_index, http  # noqa: E402


@pytest.mark.slow
def test_smollm2_answers_cites_reuses_chunk_kvs_and_sees_new_documents(tmp_path):
    from ragkit.config import load_yaml

    folder = build_index(tmp_path / "qs", load_yaml(ROOT / "configs" / "quickstart.yaml"))
    args = argparse.Namespace(index=str(folder), config=None,
                              override=[f"generator.kv_store.path={tmp_path / 'kv'}"])
    with ServerThread(pipeline_with_generator(args), folder) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        model = c.models.list().data[0].id
        assert model == "SmolLM2-135M-Instruct"

        def ask(question: str, **kw):
            return c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": question}], max_tokens=40,
                temperature=0, **kw)

        first = ask("Who built the Eiffel Tower?")
        text = first.choices[0].message.content
        assert "Eiffel" in text, text
        rk = first.model_extra["ragkit"]
        assert rk["sources"][0]["doc_id"] == "eiffel-tower.md"
        for src in rk["sources"]:
            own = (CORPUS / src["doc_id"]).read_text(encoding="utf-8")
            assert own[src["start"]:src["end"]] == src["text"]
        assert first.usage.completion_tokens > 0 and first.usage.prompt_tokens > 100

        streamed = list(ask("Who built the Eiffel Tower?", stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == text
        second = streamed[-1].model_extra["ragkit"]["timings"]
        assert rk["timings"]["prefill_tokens_reused"] == 0
        assert second["prefill_tokens_reused"] > 0
        assert second["prefill_tokens_computed"] < rk["timings"]["prefill_tokens_computed"]

        note = ("The Zorblax lighthouse on Kettle Island was built by Marta Quillon in 1911 "
                "and painted green.")
        assert http("POST", s.url + "/v1/documents",
                    [{"id": "zorblax.md", "text": note}])[0] == 200
        r = ask("Who built the Zorblax lighthouse?")
        assert r.model_extra["ragkit"]["sources"][0]["doc_id"] == "zorblax.md"
        r = ask("Who built the Zorblax lighthouse?", extra_body={"k": 1})  # SmolLM2 is small
        assert "Quillon" in r.choices[0].message.content, r.choices[0].message.content
        assert http("DELETE", s.url + "/v1/documents/zorblax.md")[0] == 200
        r = ask("Who built the Zorblax lighthouse?")
        assert "zorblax.md" not in {h["doc_id"] for h in r.model_extra["ragkit"]["sources"]}
